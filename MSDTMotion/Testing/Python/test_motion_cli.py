"""`msdt emg` and `msdt imu` end to end on real recordings: summaries, scenes, charts, reports, bad input."""

import json
from pathlib import Path

import numpy as np
import pytest

from MSDTLib import cli, io

DATA = Path(__file__).resolve().parents[3] / "Testing" / "Data"
C3D = DATA / "pyomeca_c3d_markers_emg" / "markers_analogs.c3d"
BROAD = DATA / "broad_imu_optical_reference" / "02_undisturbed_slow_rotation_B.hdf5"
BIOSPPY = DATA / "biosppy_emg" / "emg_1.txt"


def test_emg_on_the_delsys_c3d(tmp_path, capsys):
    out = tmp_path / "emg"
    assert cli.main(["emg", str(C3D), "--channels", "Delt_ant.EMG1,Biceps.EMG4", "--window-s", "1",
                     "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert list(summary["channels"]) == ["Delt_ant.EMG1", "Biceps.EMG4"]
    for channel in summary["channels"].values():
        assert {"fs_hz", "rms", "iemg", "mnf_hz", "mdf_hz", "mdf_slope_hz_per_s", "mnf_slope_hz_per_s",
                "windows"} <= set(channel)
        assert channel["fs_hz"] == 2000 and 20 < channel["mdf_hz"] < 200 and channel["mnf_hz"] > 0
        assert len(channel["windows"]) >= 5
    for name in ("scene.mrb", "report.html", "emg_mdf_Delt_ant.EMG1.png", "summary.json"):
        assert (out / name).is_file() and name in summary["files"]
    scene = io.load_mrb(out / "scene.mrb")
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode") >= 2
    assert "emg_mdf_Biceps.EMG4.png" in (out / "report.html").read_text()


def test_emg_unknown_channel_exits_2(tmp_path, capsys):
    assert cli.main(["emg", str(C3D), "--channels", "Nope", "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert "Nope" in error and "Delt_ant.EMG1" in error and not (tmp_path / "o").exists()


def test_emg_on_biosppy_text_with_sample_rate(tmp_path, capsys):
    if not BIOSPPY.exists():
        pytest.skip("BioSPPy sample not bundled")
    assert cli.main(["emg", str(BIOSPPY), "--fs", "1000", "--out", str(tmp_path / "b")]) == 0
    summary = json.loads(capsys.readouterr().out)
    channel = next(iter(summary["channels"].values()))
    assert channel["fs_hz"] == 1000 and 20 < channel["mdf_hz"] < 200


def test_imu_on_broad_meets_the_accuracy_target(tmp_path, capsys):
    out = tmp_path / "imu"
    assert cli.main(["imu", str(BROAD), "--reference", "file", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rmse_deg"]["total"] <= 2.5 and summary["rmse_deg"]["inclination"] <= 0.8
    assert summary["rmse_deg"]["total"] < summary["baseline_rmse_deg"]["madgwick"]["total"]
    assert summary["mode"] == "9D" and set(summary["trunk_angles"]["range_of_motion"]) >= {"flexion"}
    for name in ("scene.mrb", "report.html", "trunk_angles.png"):
        assert (out / name).is_file()


def test_imu_from_csv_columns(tmp_path, capsys):
    """x-io style CSV (deg/s, g): a constant rotation about z at 10 deg/s for 20 s."""
    fs, seconds = 100.0, 20.0
    t = np.arange(int(fs * seconds)) / fs
    rows = ["Time (s),Gyroscope X (deg/s),Gyroscope Y (deg/s),Gyroscope Z (deg/s),"
            "Accelerometer X (g),Accelerometer Y (g),Accelerometer Z (g)"]
    rows += [f"{ti:.4f},0,0,{10.0 if ti >= 2 else 0.0},0,0,1" for ti in t]
    path = tmp_path / "imu.csv"
    path.write_text("\n".join(rows) + "\n")
    assert cli.main(["imu", str(path), "--out", str(tmp_path / "o")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["fs_hz"] == pytest.approx(fs) and summary["mode"] == "6D"
    rotation = summary["trunk_angles"]["range_of_motion"]["axial_rotation"]
    assert rotation["range"] == pytest.approx(180.0, abs=5.0)  # 18 s at 10 deg/s
