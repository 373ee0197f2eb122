"""`msdt risk-train` and `msdt risk` end to end on the UCI vertebral column cohort."""

import json
from pathlib import Path

import pytest

from MSDTLib import cli, io

UCI = Path(__file__).resolve().parents[3] / "Testing" / "Data" / "uci_vertebral_column" / "column_2C_weka.csv"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m"
    assert cli.main(["risk-train", str(UCI), "--target", "status", "--positive", "Abnormal", "--out", str(out)]) == 0
    return out


def test_training_reports_cross_validated_metrics_and_the_baseline(model_dir):
    summary = json.loads((model_dir / "summary.json").read_text())
    model, baseline = summary["cv"]["model"], summary["cv"]["baseline"]
    assert model["auc"]["mean"] > 0.9 and model["auc"]["sd"] < 0.05
    for key in ("brier", "calibration_slope", "calibration_intercept", "ece"):
        assert {"mean", "sd"} <= set(model[key]) and {"mean", "sd"} <= set(baseline[key])
    assert 0.8 < model["calibration_slope"]["mean"] < 1.3 and model["ece"]["mean"] < 0.08
    assert summary["n"] == 310 and summary["n_positive"] == 210


def test_patient_risk_with_missing_feature_and_outputs(model_dir, tmp_path, capsys):
    patient = tmp_path / "patient.json"
    patient.write_text(json.dumps({"patient_id": "P001", "features": {
        "pelvic_incidence": 63.0, "pelvic_tilt numeric": 22.5, "lumbar_lordosis_angle": 39.6,
        "sacral_slope": 40.5, "degree_spondylolisthesis": 5.0, "shoe_size": 44}}))
    out = tmp_path / "risk"
    capsys.readouterr()
    assert cli.main(["risk", str(patient), "--model", str(model_dir), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    low, high = summary["interval"]
    assert 0.0 <= low <= summary["risk"] <= high <= 1.0
    assert summary["missing"] == ["pelvic_radius"]
    assert summary["suggested_exams"][0]["features"] == ["pelvic_radius"]
    assert summary["suggested_exams"][0]["expected_interval_width_reduction"] > 0
    assert any("shoe_size" in warning for warning in summary["warnings"])  # unknown feature named, not used
    assert abs(summary["intercept"] + sum(summary["contributions"].values()) - summary["logit"]) < 1e-6
    for name in ("report.html", "scene.mrb", "contributions.png", "chord_diagram.png", "risk_gauge.png"):
        assert (out / name).is_file()
    scene = io.load_mrb(out / "scene.mrb")
    assert scene.GetFirstNodeByName("Risk contributions P001").GetNumberOfRows() == 6


def test_one_class_cohort_is_refused(tmp_path, capsys):
    rows = UCI.read_text().splitlines()
    one_class = [rows[0]] + [r for r in rows[1:] if r.endswith("Abnormal")]
    cohort = tmp_path / "one_class.csv"
    cohort.write_text("\n".join(one_class) + "\n")
    assert cli.main(["risk-train", str(cohort), "--target", "status", "--positive", "Abnormal",
                     "--out", str(tmp_path / "m")]) == 2
    assert "class" in capsys.readouterr().err and not (tmp_path / "m").exists()


def test_visits_build_a_risk_history(model_dir, tmp_path, capsys):
    history = tmp_path / "history.json"
    for date, spondylolisthesis in (("2026-01-10", 2.0), ("2026-06-10", 40.0)):
        patient = tmp_path / f"visit_{date}.json"
        patient.write_text(json.dumps({"patient_id": "P002", "date": date, "features": {
            "pelvic_incidence": 60.0, "pelvic_tilt numeric": 18.0, "lumbar_lordosis_angle": 45.0,
            "sacral_slope": 42.0, "pelvic_radius": 115.0, "degree_spondylolisthesis": spondylolisthesis}}))
        assert cli.main(["risk", str(patient), "--model", str(model_dir), "--history", str(history),
                         "--out", str(tmp_path / date)]) == 0
    capsys.readouterr()
    visits = json.loads(history.read_text())["visits"]
    assert [v["date"] for v in visits] == ["2026-01-10", "2026-06-10"]
    assert visits[1]["risk"] > visits[0]["risk"]  # a progressing slip raises the risk
    assert (tmp_path / "2026-06-10" / "risk_trajectory.png").is_file()
