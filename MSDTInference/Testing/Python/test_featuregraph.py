"""Per-patient feature graph (MSDTInferenceLib.featuregraph) and visit history (MSDTInferenceLib.longitudinal)."""

import json
from pathlib import Path

import numpy as np
import pytest

from MSDTInferenceLib.featuregraph import GRAPH_ATTRIBUTE, FeatureGraph, summary_kind, unit_of
from MSDTInferenceLib.longitudinal import PatientHistory, trajectory_plot, trajectory_png
from MSDTLib.errors import MSDTError

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "Testing" / "Data" / "totalsegmentator_ct_mr_spine"

EMG_SUMMARY = {
    "channels": {
        "left erector spinae": {"name": "left erector spinae", "unit": "mV", "fs_hz": 2000.0, "rms": 0.12,
                                "mdf_hz": 82.5, "mnf_hz": 90.1, "mdf_slope_pct_per_min": -6.5,
                                "mdf_slope_ci_pct_per_min": [-8.0, -5.0], "windows": [], "error": None},
        "right erector spinae": {"name": "right erector spinae", "unit": "mV", "fs_hz": 2000.0, "rms": 0.10,
                                 "mdf_hz": 85.0, "mdf_slope_pct_per_min": -4.0, "windows": []},
        "broken": {"error": "all NaN"},
    },
    "symmetry": {"erector spinae": {"rms": 18.2}},
}
IMU_SUMMARY = {
    "fs_hz": 100.0,
    "trunk_angles": {"range_of_motion": {"flexion": {"min": -5.0, "max": 55.0, "range": 60.0},
                                         "lateral_bending": {"min": -10.0, "max": 12.0, "range": 22.0},
                                         "axial_rotation": {"min": -8.0, "max": 9.0, "range": 17.0}},
                     "peak_angular_velocity_deg_s": {"flexion": 80.0},
                     "note": "relative to the first 2 s"},
    "rmse_deg": {"total": 2.1, "inclination": 0.9, "heading": 1.8},
}


@pytest.fixture(scope="module")
def spine_summary(tmp_path_factory) -> Path:
    from MSDTLib import cli

    out = tmp_path_factory.mktemp("spine")
    code = cli.main(["spine", str(SAMPLE / "example_ct.nii.gz"), "--labels",
                     str(SAMPLE / "spine_report" / "totalseg.nii.gz"), "--no-report", "--out", str(out)])
    assert code in (0, None)
    return out / "summary.json"


@pytest.fixture(scope="module")
def graph(spine_summary) -> FeatureGraph:
    graph = FeatureGraph.from_summaries("P001", [spine_summary, EMG_SUMMARY, IMU_SUMMARY], date="2025-03-01")
    graph.add_clinical({"age": 61, "sex": "F", "pain_score": {"value": 7, "unit": "NRS 0-10"}, "smoker": True})
    return graph


def test_units_and_kinds():
    assert unit_of("height_middle_mm") == "mm" and unit_of("hu_mean") == "HU" and unit_of("hu") == "HU"
    assert unit_of("mdf_slope_pct_per_min") == "%/min" and unit_of("mdf_hz") == "Hz"
    assert unit_of("area_cm2") == "cm2" and unit_of("volume_ml") == "ml" and unit_of("lordosis_deg") == "deg"
    assert summary_kind(EMG_SUMMARY) == "emg" and summary_kind(IMU_SUMMARY) == "imu"
    assert summary_kind({"skin": {}, "vertebrae": {}}) == "segment"
    with pytest.raises(MSDTError, match="Unrecognised summary"):
        FeatureGraph.from_summaries("P", [{"foo": 1}])
    with pytest.raises(MSDTError):
        FeatureGraph.from_summaries("P", ["/nonexistent/summary.json"])


def test_features_from_real_spine_summary(graph, spine_summary):
    summary = json.loads(spine_summary.read_text())
    features = graph.features()
    l4 = features["L4.height_middle_mm"]
    assert l4["value"] == pytest.approx(summary["vertebrae"]["L4"]["height_middle_mm"])
    assert (l4["unit"], l4["scale"], l4["region"], l4["date"]) == ("mm", "meso", "L4", "2025-03-01")
    assert features["L1.hu_mean"]["unit"] == "HU" and features["L1.hu_mean"]["scale"] == "micro"
    disc = features["L4-L5.height_middle_mm"]
    assert disc["value"] == pytest.approx(summary["discs"]["L4-L5"]["height_middle_mm"]) and disc["scale"] == "meso"
    assert features["spine.cobb_angle_deg"]["value"] == pytest.approx(summary["cobb"][0]["angle_deg"])
    assert features["spine.lordosis_deg"]["unit"] == "deg"
    assert "spine.kyphosis_deg" not in features  # None in the summary: not a feature
    assert features["osteoporosis.hu"]["value"] == pytest.approx(summary["osteoporosis"]["hu"])
    assert features["skin.volume_ml"]["scale"] == "macro" and features["skin.area_cm2"]["unit"] == "cm2"
    # EMG and IMU
    emg = features["emg.left erector spinae.mdf_slope_pct_per_min"]
    assert (emg["value"], emg["unit"], emg["scale"]) == (-6.5, "%/min", "meso")
    assert features["emg.left erector spinae.rms"]["unit"] == "mV"
    assert not any(name.startswith("emg.broken") for name in features)
    assert features["imu.flexion_range_deg"]["value"] == 60.0 and features["imu.flexion_range_deg"]["unit"] == "deg"
    assert features["clinical.age"]["unit"] == "years" and features["clinical.sex"]["text"] == "F"
    assert features["clinical.smoker"]["value"] == 1.0
    # anatomy edges: vertebra, disc, regions up to the trunk
    anatomy = {(a, b) for a, b, _ in graph.edges("anatomy")}
    assert ("L1.hu_mean", "L1") in anatomy and ("L4-L5.height_middle_mm", "L4-L5") in anatomy
    assert ("L4-L5", "lumbar spine") in anatomy and ("lumbar spine", "spine") in anatomy
    assert ("left erector spinae", "trunk left") in anatomy and ("spine", "trunk") in anatomy
    provenance = {(a, b) for a, b, _ in graph.edges("provenance")}
    assert ("osteoporosis.hu", f"{summary['osteoporosis']['level']}.hu_mean") in provenance
    assert ("L4.height_middle_mm", str(spine_summary)) in provenance


def test_graphml_and_json_round_trips(graph, tmp_path):
    reference = graph.features()
    for loaded in (FeatureGraph.from_graphml(graph.to_graphml(tmp_path / "g.graphml")),
                   FeatureGraph.from_json(graph.to_json(tmp_path / "g.json") and tmp_path / "g.json"),
                   FeatureGraph.from_json(graph.to_json())):
        assert loaded.patient_id == "P001"
        features = loaded.features()
        assert set(features) == set(reference)
        for name, data in reference.items():
            assert features[name].get("value") == data.get("value")
            assert features[name]["unit"] == data["unit"] and features[name]["scale"] == data["scale"]
        assert len(loaded.edges("anatomy")) == len(graph.edges("anatomy"))
    with pytest.raises(MSDTError):
        FeatureGraph.from_json("{not json")


def test_feature_vector(graph):
    vector = graph.feature_vector(["L4.height_middle_mm", "spine.kyphosis_deg", "clinical.age", "clinical.sex"])
    assert set(vector) == {"L4.height_middle_mm", "clinical.age"}  # missing and text features are absent
    assert vector["clinical.age"] == 61.0


def test_associations_from_synthetic_cohort():
    rng = np.random.default_rng(0)
    n = 400
    a = rng.normal(size=n)
    b = 0.8 * a + 0.6 * rng.normal(size=n)  # r = 0.8
    c = rng.normal(size=n)  # unrelated
    d = -0.5 * a + np.sqrt(0.75) * rng.normal(size=n)  # r = -0.5
    x = np.column_stack([a, b, c, d])
    x[5, 2] = np.nan
    graph = FeatureGraph("P2")
    for name in "abcd":
        graph.add_feature(name, 1.0)
    added = graph.add_associations(x, list("abcd"), min_abs_r=0.3)
    pairs = {(p, q): r for p, q, r in added}
    assert set(pairs) == {("a", "b"), ("a", "d"), ("b", "d")}  # b ~ d through a: r = 0.8 * -0.5
    assert pairs[("a", "b")] == pytest.approx(0.8, abs=0.05)
    assert pairs[("a", "d")] == pytest.approx(-0.5, abs=0.07)
    assert pairs[("b", "d")] == pytest.approx(-0.4, abs=0.08)
    edges = graph.edges("association")
    assert all(data["n"] == n for _, _, data in edges)
    matrix = graph.association_matrix(list("abcd"))
    assert matrix[1, 0] == pytest.approx(pairs[("a", "b")]) and matrix[2, 0] == 0
    # a feature absent from the patient: no edge unless asked
    assert graph.add_associations(np.column_stack([a, b]), ["a", "zz"], 0.3) == []
    with pytest.raises(MSDTError):
        graph.add_associations(x, ["a", "b"])


def test_scene_table_round_trip_through_mrb(graph, scene, tmp_path):
    from MSDTLib import io
    from MSDTLib.app import shutdown_scene
    from MSDTLib.hierarchy import TwinHierarchy

    table = graph.to_scene(scene, study="Inference", scale="micro")
    assert table.GetNumberOfRows() == len(graph.features())
    assert TwinHierarchy(scene, "P001").path_of(table) == ["P001", "micro", "Inference", table.GetName()]
    names = [table.GetCellText(r, 0) for r in range(table.GetNumberOfRows())]
    row = names.index("L4.height_middle_mm")
    assert float(table.GetCellText(row, 1)) == pytest.approx(graph.value("L4.height_middle_mm"))
    assert table.GetCellText(row, 3) == "mm" and table.GetCellText(row, 5) == "L4"
    loaded_scene = io.load_mrb(io.save_mrb(scene, tmp_path / "graph.mrb"))
    try:
        nodes = [loaded_scene.GetNthNodeByClass(i, "vtkMRMLTableNode")
                 for i in range(loaded_scene.GetNumberOfNodesByClass("vtkMRMLTableNode"))]
        stored = [n for n in nodes if n.GetAttribute(GRAPH_ATTRIBUTE)]
        assert len(stored) == 1
        loaded = FeatureGraph.from_scene(stored[0])
        assert loaded.feature_vector() == graph.feature_vector()
        assert len(loaded.edges("anatomy")) == len(graph.edges("anatomy"))
        # without the attribute the features come back from the table rows
        stored[0].RemoveAttribute(GRAPH_ATTRIBUTE)
        rebuilt = FeatureGraph.from_scene(stored[0])
        assert set(rebuilt.feature_vector()) == set(graph.feature_vector())
        assert rebuilt.features()["L4.height_middle_mm"]["unit"] == "mm"
    finally:
        shutdown_scene(loaded_scene)


def test_history_of_three_visits(scene, tmp_path):
    history = PatientHistory("P001")
    history.add_visit("2025-06-01", {"a": 2.0}, {"risk": 0.35, "interval": [0.25, 0.46]})
    history.add_visit("2025-01-10", FeatureGraph("P001"), {"probability": 0.2, "ci": (0.12, 0.3)})
    history.add_visit("2025-03-15", {"a": 1.5, "b": float("nan")}, 0.28)
    dates, risks, lows, highs = history.risk_trajectory()
    assert [d.isoformat() for d in dates] == ["2025-01-10", "2025-03-15", "2025-06-01"]
    assert risks.tolist() == [0.2, 0.28, 0.35]
    assert lows[0] == 0.12 and np.isnan(lows[1]) and highs[2] == 0.46
    assert history.visits[1]["features"] == {"a": 1.5}
    loaded = PatientHistory.load(history.save(tmp_path / "history.json"))
    assert loaded.patient_id == "P001" and loaded.visits == history.visits
    chart = trajectory_plot(scene, history)
    assert chart.IsA("vtkMRMLPlotChartNode") and chart.GetNumberOfPlotSeriesNodes() == 3
    series = chart.GetNthPlotSeriesNode(0)
    table = series.GetTableNode()
    assert table.GetNumberOfRows() == 3 and float(table.GetCellText(2, 1)) == (dates[2] - dates[0]).days
    png = trajectory_png(history, tmp_path / "trajectory.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(MSDTError):
        history.add_visit("2025-07-01", {}, 1.5)
    with pytest.raises(MSDTError):
        history.add_visit("not a date", {})
