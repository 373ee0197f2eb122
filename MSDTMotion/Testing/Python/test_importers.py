"""Recording importers: real Vicon C3D, jittery CSV, whitespace text, bad input, scene placement, .mrb."""

from pathlib import Path

import numpy as np
import pytest

from MSDTLib.errors import MSDTError
from MSDTLib.hierarchy import TwinHierarchy
from MSDTMotionLib import importers

C3D = Path(__file__).resolve().parents[3] / "Testing" / "Data" / "pyomeca_c3d_markers_emg" / "markers_analogs.c3d"


@pytest.fixture(scope="module")
def c3d_recording():
    return importers.read_c3d(C3D)


def test_read_c3d_channels_rates_units_markers(c3d_recording):
    recording = c3d_recording
    assert len(recording.signals) == 38
    names = list(recording.signals)
    assert names[:6] == [f"Voltage.{i}" for i in range(1, 7)]
    assert {"Delt_ant.EMG1", "Biceps.EMG4", "Trap_inf.EMG7", "Gd_dors.IM EMG13"} <= set(names)
    biceps = recording.signals["Biceps.EMG4"]
    assert biceps.fs_hz == 2000.0 and biceps.unit == "V" and biceps.values.dtype == np.float64
    assert len(biceps.values) == 11600 and biceps.duration_s == pytest.approx(5.8)
    assert np.std(biceps.values) > 0
    assert recording.markers.shape == (580, 51, 3)
    assert len(recording.marker_names) == 51 and recording.marker_names[0] == "boite:gauche_ext"
    assert recording.marker_rate_hz == 100.0 and recording.marker_unit == "mm"
    fraction_missing = np.isnan(recording.markers[..., 0]).mean()
    assert 0 < fraction_missing < 0.05  # about 1 % occluded
    assert np.nanmax(np.abs(recording.markers)) > 100  # millimetres, not metres


def _jittery_csv(path: Path, fs=500.0, frequency=5.0, seconds=2.0, header="time,emg (mV),acc (g)"):
    rng = np.random.default_rng(0)
    count = int(seconds * fs)
    times = np.arange(count) / fs + rng.uniform(-0.2, 0.2, count) / fs
    times[0] = 0.0
    lines = [header]
    for t in times:
        lines.append(f"{t:.7f},{np.sin(2 * np.pi * frequency * t):.7f},{2 * t:.7f}")
    path.write_text("\n".join(lines) + "\n")
    return times


def test_jittery_csv_is_resampled_onto_a_uniform_grid(tmp_path):
    path = tmp_path / "imu.csv"
    _jittery_csv(path)
    recording = importers.read_csv(path)
    emg = recording.signals["emg"]
    assert emg.unit == "mV" and recording.signals["acc"].unit == "g"
    assert emg.fs_hz == pytest.approx(500.0, rel=0.01)
    assert recording.metadata["resampled"] and "resampled" in recording.metadata["note"]
    truth = np.sin(2 * np.pi * 5.0 * emg.times)
    assert np.max(np.abs(emg.values - truth)) < 5e-3
    np.testing.assert_allclose(recording.signals["acc"].values, 2 * recording.signals["acc"].times, atol=1e-6)


def test_sample_rate_from_comment_argument_and_whitespace_text(tmp_path):
    csv = tmp_path / "emg.csv"
    csv.write_text("# Delsys export\n# fs=2000\nemg1,emg2\n" + "\n".join(f"{k},{-k}" for k in range(100)))
    recording = importers.read_csv(csv)
    assert recording.signals["emg1"].fs_hz == 2000 and recording.metadata["fs_source"] == "comment"
    np.testing.assert_array_equal(recording.signals["emg2"].values, -np.arange(100))
    assert importers.read_csv(csv, fs=1000).signals["emg1"].fs_hz == 1000
    txt = tmp_path / "trial.txt"
    txt.write_text("t   ax   ay\n" + "\n".join(f"{k / 100:.2f}  {k}  {k * 2}" for k in range(50)))
    recording = importers.read_recording(txt)
    assert set(recording.signals) == {"ax", "ay"}
    assert recording.signals["ax"].fs_hz == pytest.approx(100.0)
    assert not recording.metadata["resampled"]
    np.testing.assert_array_equal(recording.signals["ay"].values, 2 * np.arange(50))


def test_real_xio_csv_header_units(tmp_path):
    source = Path("/work/shared/data/xio_fusion_imu/sensor_data.csv")
    if not source.is_file():
        pytest.skip("x-io sample not available")
    path = tmp_path / "xio.csv"
    path.write_text("\n".join(source.read_text().splitlines()[:501]))
    recording = importers.read_csv(path)
    assert recording.signals["Gyroscope X"].unit == "deg/s"
    assert recording.signals["Accelerometer Z"].unit == "g"
    assert recording.signals["Gyroscope X"].fs_hz == pytest.approx(100, rel=0.05)


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("time,a\n0,1\n0.01,2\n0.005,3\n", "goes backwards"),
    ("time,a\n", "no data rows"),
    ("a,b\n1,2\n3,4\n", "No sample rate"),
    ("time,a\n0,1\n0.1,x\n", "not numeric"),
])
def test_bad_input_raises_msdt_error(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(MSDTError, match=message):
        importers.read_csv(path)


def test_unknown_type_and_missing_file(tmp_path):
    (tmp_path / "x.xyz").write_text("1")
    with pytest.raises(MSDTError, match="Unknown recording file type"):
        importers.read_recording(tmp_path / "x.xyz")
    with pytest.raises(MSDTError, match="does not exist"):
        importers.read_c3d(tmp_path / "missing.c3d")


def test_recording_to_scene_and_mrb_round_trip(scene, c3d_recording, tmp_path):
    from MSDTLib import io
    from MSDTLib.app import shutdown_scene

    nodes = importers.recording_to_scene(scene, c3d_recording, scale="macro", study="Shoulder EMG")
    hierarchy = TwinHierarchy(scene)
    table = nodes["signals"]
    assert hierarchy.path_of(table) == ["Patient", "macro", "Shoulder EMG", "markers_analogs"]
    assert table.GetNumberOfColumns() == 39 and table.GetNumberOfRows() == 11600
    assert table.GetColumnUnitLabel("time_s") == "s" and table.GetColumnUnitLabel("Biceps.EMG4") == "V"
    markers = nodes["markers"]
    assert markers.IsA("vtkMRMLMarkupsFiducialNode") and markers.GetNumberOfControlPoints() == 51
    assert markers.GetNthControlPointLabel(0) == "boite:gauche_ext"
    assert hierarchy.path_of(markers)[:3] == ["Patient", "macro", "Shoulder EMG"]
    trajectories = nodes["marker_trajectories"]
    assert trajectories.GetNumberOfRows() == 580 and trajectories.GetNumberOfColumns() == 1 + 51 * 3
    assert trajectories.GetColumnUnitLabel("boite:gauche_ext_X") == "mm"

    loaded = io.load_mrb(io.save_mrb(scene, tmp_path / "motion.mrb"))
    try:
        again = loaded.GetFirstNodeByName("markers_analogs")
        assert again is not None and again.GetNumberOfRows() == 11600
        assert again.GetColumnUnitLabel("Biceps.EMG4") == "V"
        np.testing.assert_allclose(importers.table_column(again, "Biceps.EMG4"),
                                   c3d_recording.signals["Biceps.EMG4"].values, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(importers.table_column(again, "time_s")[[0, -1]], [0, 11599 / 2000])
        assert loaded.GetFirstNodeByName("markers_analogs markers").GetNumberOfControlPoints() == 51
    finally:
        shutdown_scene(loaded)
