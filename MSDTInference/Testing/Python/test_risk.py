"""Calibrated surgery-risk model: synthetic cohort with a known risk, UCI vertebral column, workflow."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from MSDTInferenceLib import cohort
from MSDTInferenceLib.risk import (
    RiskModel,
    auc,
    calibration_slope_intercept,
    cross_validate,
    expected_calibration_error,
    suggest_exams,
)
from MSDTInferenceLib.riskworkflow import flatten_numeric, predict_patient, read_cohort_csv, train_from_csv
from MSDTLib.errors import MSDTError

ROOT = Path(__file__).resolve().parents[3]
UCI = ROOT / "Testing" / "Data" / "uci_vertebral_column" / "column_2C_weka.csv"


@pytest.fixture(scope="module")
def trained():
    X, y, _, names = cohort.synthetic_cohort(3000, seed=1)
    return RiskModel().fit(X, y, names)


@pytest.fixture(scope="module")
def test_set():
    return cohort.synthetic_cohort(50000, seed=99)


def test_synthetic_discrimination_and_calibration(trained, test_set):
    Xt, yt, rt, _ = test_set
    p = trained.predict_proba(Xt)
    model_auc, oracle_auc = auc(yt, p), auc(yt, rt)
    assert abs(model_auc - oracle_auc) <= 0.02, (model_auc, oracle_auc)
    slope, intercept = calibration_slope_intercept(yt, p)
    assert 0.9 <= slope <= 1.1, slope
    assert abs(intercept) < 0.1, intercept
    assert expected_calibration_error(yt, p) <= 0.05
    # the training-time out-of-fold calibration check agrees
    assert 0.85 <= trained.calibration["oof_slope"] <= 1.15
    # coefficients recover the known per-SD log-odds
    for name, (_, _, beta) in cohort.FEATURES.items():
        assert abs(trained.coefficients[name] - beta) < 0.15, name


def test_interval_coverage_of_true_risk(test_set):
    # coverage of the true risk by the 90 % Laplace interval, averaged over independent training cohorts
    # (within one cohort the misses are correlated through the shared parameter error)
    Xt, _, _, names = test_set
    Xt = Xt[:1000]
    true_logit = cohort.true_logit(Xt, names)
    cover = []
    for rep in range(20):
        X, y, _, _ = cohort.synthetic_cohort(3000, seed=100 + rep)
        m = RiskModel(l2=1.0).fit(X, y, names, check_calibration=False)
        mean, sd = m.predict_logit_interval(Xt)
        cover.append(np.mean(np.abs(mean - true_logit) <= 1.6448536 * sd))
    assert 0.85 <= np.mean(cover) <= 0.95, np.mean(cover)


def test_contributions_sum_to_logit(trained):
    feats = {
        "lordosis_deg": 35,
        "disc_height_L4_L5_mm": 7.5,
        "emg_mdf_slope_pct_per_min": -1.4,
        "trunk_rom_deg": 50,
        "l1_hu": 120,
    }
    r = trained.predict(feats)
    assert r.missing == [] and r.warnings == []
    assert r.intercept + sum(r.contributions.values()) == pytest.approx(r.logit, abs=1e-9)
    assert r.interval[0] < r.risk < r.interval[1]
    # lower disc height -> higher risk and a positive contribution
    assert r.contributions["disc_height_L4_L5_mm"] > 0
    # partial: still sums, missing features contribute w * conditional mean
    r2 = trained.predict({"trunk_rom_deg": 50})
    assert r2.intercept + sum(r2.contributions.values()) == pytest.approx(r2.logit, abs=1e-9)


def test_missing_feature_marginalised_not_zero_filled(trained):
    names = list(cohort.FEATURES)
    full = {
        "lordosis_deg": 35.0,
        "disc_height_L4_L5_mm": 6.0,
        "emg_mdf_slope_pct_per_min": -0.8,
        "trunk_rom_deg": 42.0,
        "l1_hu": 150.0,
    }
    partial = {k: v for k, v in full.items() if k != "disc_height_L4_L5_mm"}
    r_full = trained.predict(full)
    r_marg = trained.predict(partial)
    r_zero = trained.predict(partial, zero_fill=True)
    assert r_marg.missing == ["disc_height_L4_L5_mm"]
    width = lambda r: r.interval[1] - r.interval[0]  # noqa: E731
    assert width(r_marg) > width(r_full)
    assert width(r_marg) > width(r_zero)
    # truth: E[true risk | observed] under the known Gaussian model (Monte Carlo)
    j = names.index("disc_height_L4_L5_mm")
    o = [i for i in range(len(names)) if i != j]
    R = cohort.CORRELATION
    means = np.array([cohort.FEATURES[n][0] for n in names])
    sds = np.array([cohort.FEATURES[n][1] for n in names])
    z_o = (np.array([full[names[i]] for i in o]) - means[o]) / sds[o]
    k = np.linalg.solve(R[np.ix_(o, o)], R[o, j])
    mu, var = k @ z_o, R[j, j] - R[j, o] @ k
    draws = np.random.default_rng(0).normal(mu, np.sqrt(var), 200000)
    X = np.tile([full[n] for n in names], (len(draws), 1))
    X[:, j] = means[j] + draws * sds[j]
    expected = cohort.true_risk(X).mean()
    assert abs(r_marg.risk - expected) < abs(r_zero.risk - expected)
    assert abs(r_marg.risk - expected) < 0.03, (r_marg.risk, expected)
    # the conditional mean (low ROM -> low disc height) moves the risk up from the zero-filled value
    assert r_marg.risk > r_zero.risk


def test_uci_vertebral_column_repeated_cv():
    X, y, names, info = read_cohort_csv(str(UCI), "status", "Abnormal")
    assert X.shape == (310, 6) and int(y.sum()) == 210 and info["positive"] == "Abnormal"
    cv = cross_validate(X, y, repeats=5, folds=5, seed=0, names=names)
    m, b = cv["model"], cv["baseline"]
    assert m["auc"]["mean"] > 0.9 and m["auc"]["sd"] < 0.05
    assert m["brier"]["mean"] < 0.13
    assert 0.7 <= m["calibration_slope"]["mean"] <= 1.4
    assert abs(m["calibration_intercept"]["mean"]) < 0.3
    assert m["ece"]["mean"] < 0.08
    for key in ("auc", "brier", "calibration_slope", "calibration_intercept", "ece"):
        assert set(m[key]) == {"mean", "sd"} and set(b[key]) == {"mean", "sd"}
    assert b["auc"]["mean"] > 0.8


def test_bad_cohorts():
    X, y, _, names = cohort.synthetic_cohort(200, seed=3)
    with pytest.raises(MSDTError, match="one outcome class"):
        RiskModel().fit(X, np.zeros_like(y), names)
    with pytest.raises(MSDTError, match="too few rows"):
        RiskModel().fit(X[:10], np.r_[np.zeros(5), np.ones(5)].astype(int), names)
    y2 = np.zeros(len(y), dtype=int)
    y2[:3] = 1
    with pytest.raises(MSDTError, match="fewer rows per class than CV folds"):
        cross_validate(X, y2, folds=5)
    with pytest.raises(MSDTError, match="not trained"):
        RiskModel().predict({})


def test_patient_warnings(trained):
    r = trained.predict({"lordosis_deg": 40, "shoe_size": 43})
    assert any("unknown feature 'shoe_size'" in w for w in r.warnings)
    r = trained.predict({"lordosis_deg": 400})
    assert any("outside the cohort range" in w and "lordosis_deg" in w for w in r.warnings)
    r = trained.predict({"disc_height_L4_L5_mm": 100.0})
    assert any("check units (mm vs cm)" in w for w in r.warnings)
    r = trained.predict({"disc_height_L4_L5_mm": 1.0})
    assert any("check units" in w for w in r.warnings)
    assert trained.predict({"lordosis_deg": 44}).warnings == []


def test_exam_suggestions_ranked(trained):
    exams = {
        "DXA": ["l1_hu"],
        "MRI": ["disc_height_L4_L5_mm"],
        "EMG": ["emg_mdf_slope_pct_per_min"],
        "repeat lordosis": ["lordosis_deg"],
    }
    out = suggest_exams(trained, {"lordosis_deg": 44, "trunk_rom_deg": 60}, exams, draws=100)
    order = [s["exam"] for s in out]
    assert order.index("MRI") < order.index("DXA")
    assert out[0]["exam"] == "MRI"
    assert out[0]["expected_interval_width_reduction"] > 0
    assert out[0]["expected_change"] > 0
    repeat = next(s for s in out if s["exam"] == "repeat lordosis")
    assert repeat["expected_interval_width_reduction"] == 0.0


def test_save_load_round_trip(trained, tmp_path, test_set):
    trained.save(tmp_path)
    loaded = RiskModel.load(tmp_path)
    for feats in ({"lordosis_deg": 30, "l1_hu": 90}, {n: cohort.FEATURES[n][0] for n in cohort.FEATURES}):
        a, b = trained.predict(feats), loaded.predict(feats)
        assert a.to_dict() == b.to_dict()
    np.testing.assert_array_equal(
        trained.predict_proba(test_set[0][:100]), loaded.predict_proba(test_set[0][:100])
    )
    with pytest.raises(MSDTError, match="not found"):
        RiskModel.load(tmp_path / "nope")


def test_workflow_csv_and_patient(tmp_path):
    X, y, _, names = cohort.synthetic_cohort(400, seed=5)
    names = [("vertebrae.L1.hu_mean" if n == "l1_hu" else n) for n in names]
    path = tmp_path / "cohort.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(names + ["site", "surgery"])
        for row, label in zip(X, y, strict=True):
            w.writerow([f"{v:.4f}" for v in row] + ["lyon", "yes" if label else "no"])
    with pytest.raises(MSDTError, match="say which is positive"):
        train_from_csv(str(path), "surgery", out_dir=str(tmp_path / "m"))
    with pytest.raises(MSDTError, match="target column 'outcome'"):
        train_from_csv(str(path), "outcome", out_dir=str(tmp_path / "m"))
    summary = train_from_csv(str(path), "surgery", "yes", str(tmp_path / "m"), repeats=2)
    assert summary["ignored_columns"] == ["site"] and summary["features"] == names
    on_disk = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert on_disk["cv"]["model"]["auc"]["mean"] > 0.7 and "baseline" in on_disk["cv"]

    (tmp_path / "spine_summary.json").write_text(
        json.dumps({"lordosis_deg": 38.0, "vertebrae": {"L1": {"hu_mean": 140.0, "label": "L1"}}, "ok": True})
    )
    patient = {
        "patient_id": "P1",
        "features": {"trunk_rom_deg": 55, "lordosis_deg": 41.0, "shoe_size": 9},
        "summaries": ["spine_summary.json"],
    }
    ppath = tmp_path / "PATIENT.json"
    ppath.write_text(json.dumps(patient))
    res = predict_patient(str(ppath), str(tmp_path / "m"))
    assert 0 < res["interval"][0] < res["risk"] < res["interval"][1] < 1
    assert sorted(res["missing"]) == ["disc_height_L4_L5_mm", "emg_mdf_slope_pct_per_min"]
    assert "vertebrae.L1.hu_mean" in res["feature_sources"]
    assert "lordosis_deg" in res["contributions"]
    assert res["suggested_exams"][0]["exam"] == "measure disc_height_L4_L5_mm"
    assert any("shoe_size" in w for w in res["warnings"])
    assert flatten_numeric({"a": {"b": [1, 2.5]}, "c": True, "d": "x"}) == {"a.b.0": 1.0, "a.b.1": 2.5}


def test_synthetic_visits_drift():
    X, risk, names = cohort.synthetic_visits(500, visits=3, seed=0)
    assert X.shape == (500, 3, len(names)) and risk.shape == (500, 3)
    assert risk[:, 2].mean() > risk[:, 0].mean()
    with pytest.raises(MSDTError, match="unknown synthetic feature"):
        cohort.synthetic_cohort(10, features=["bogus"])


def test_platt_option_and_cli(tmp_path, capsys):
    from MSDTInferenceLib.riskworkflow import main

    X, y, _, names = cohort.synthetic_cohort(600, seed=7)
    m = RiskModel(calibrate=True).fit(X, y, names)
    assert m.calibration["platt_applied"] and m.platt[1] == pytest.approx(m.calibration["oof_slope"])
    r = m.predict({"lordosis_deg": 30})
    assert r.intercept + sum(r.contributions.values()) == pytest.approx(r.logit, abs=1e-9)
    assert main(["train", str(UCI), "--target", "status", "--out", str(tmp_path / "m")]) == 2
    assert "say which is positive" in capsys.readouterr().err
    rc = main(
        [
            "train",
            str(UCI),
            "--target",
            "status",
            "--positive",
            "Abnormal",
            "--out",
            str(tmp_path / "m"),
            "--repeats",
            "1",
        ]
    )
    assert rc == 0 and (tmp_path / "m" / "risk_model.json").is_file()
