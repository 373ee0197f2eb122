"""Motion workflows behind ``msdt emg`` and ``msdt imu``: files in, a scene (tables, plots), PNG charts, an HTML
report and a JSON summary out. The Motion module calls the same functions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from MSDTLib.errors import MSDTError
from MSDTLib.outputs import staged_output

from . import emg, importers, imu, plots

GRAVITY = 9.80665


# ---------------------------------------------------------------------------------------------------- sEMG

def emg_signals(recording: importers.Recording) -> dict:
    """``{name: (values, fs_hz, unit)}`` of every signal of a recording (the input of emg.analyse_recording)."""
    return {name: (s.values, s.fs_hz, s.unit) for name, s in recording.signals.items()}


def _emg_charts(scene, recording, summary: dict, reference_node, out: Path) -> list[Path]:
    """Per channel: MDF over time with its trend (scene chart + PNG) and the raw/envelope PNG."""
    pictures = []
    for name, result in summary["channels"].items():
        windows = result.get("windows") or []
        valid = [w for w in windows if w.get("mdf_hz") is not None]
        if result.get("error") or len(valid) < 2:
            continue
        times = np.array([w["t_s"] for w in valid], float)
        mdf = np.array([w["mdf_hz"] for w in valid], float)
        # The trend is the least-squares line through the window MDFs: the fatigue slope of the summary.
        chart = plots.plot_trend(scene, times, mdf, title=f"{name}: median frequency", y_title="MDF", units="Hz",
                                 reference_node=reference_node)
        pictures.append(plots.save_chart_png(chart, out / f"emg_mdf_{_safe(name)}.png"))
        signal = recording.signals[name]
        envelope = emg.linear_envelope(emg.rectify(emg.bandpass(np.nan_to_num(signal.values), signal.fs_hz)),
                                       signal.fs_hz)
        pictures.append(plots.save_chart_png(
            (signal.times, {"raw": signal.values, "envelope": envelope}), out / f"emg_raw_{_safe(name)}.png"))
    return pictures


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "channel"


def run_emg(path: Path, out: Path, channels=None, fs=None, window_s: float = 1.0) -> dict:
    """``msdt emg``: summary.json, scene.mrb (signal table, MDF charts), PNGs and report.html in ``out``."""
    from MSDTLib import io
    from MSDTLib.app import new_scene

    recording = importers.read_recording(path, **({"fs": fs} if fs else {}))
    selected = [c.strip() for c in channels.split(",") if c.strip()] if isinstance(channels, str) else channels
    summary = emg.analyse_recording(emg_signals(recording), selected, window_s)
    with staged_output(out) as staging:
        scene = new_scene()
        nodes = importers.recording_to_scene(scene, recording, scale="meso", study=f"sEMG {recording.name}")
        pictures = _emg_charts(scene, recording, summary, nodes["signals"], staging)
        written = [io.save_mrb(scene, staging / "scene.mrb"), *pictures]
        rows = [{"channel": n, **{k: v for k, v in r.items() if not isinstance(v, (list, dict))}}
                for n, r in summary["channels"].items()]
        written.append(plots.html_report(staging / "report.html", f"MSDT sEMG: {Path(path).name}", [
            {"heading": "Channels", "tables": [rows]},
            {"heading": "Median frequency and signals", "images": pictures},
            {"heading": "Left/right symmetry (%)", "tables": [[{"pair": k, **v} for k, v in summary["symmetry"].items()]]},
        ]))
        return _finish(summary, staging, written)


# ---------------------------------------------------------------------------------------------------- IMU

_AXES = "xyz"


def _columns(recording: importers.Recording, keyword: str) -> list[str]:
    names = [n for n in recording.signals if keyword in n.lower()]
    return sorted(names, key=lambda n: _AXES.index(n.strip()[-1].lower()) if n.strip()[-1].lower() in _AXES else 9)


def imu_from_table(recording: importers.Recording) -> imu.ImuRecording:
    """An IMU recording from CSV columns named like gyroscope/accelerometer/magnetometer X, Y, Z (x-io style),
    converted to rad/s, m/s² and µT from their units."""
    gyr, acc, mag = (_columns(recording, k) for k in ("gyr", "acc", "mag"))
    if len(gyr) != 3 or len(acc) != 3:
        raise MSDTError(f"'{recording.name}' needs three gyroscope and three accelerometer columns; found "
                        f"gyroscope {gyr or 'none'}, accelerometer {acc or 'none'}.")

    def stack(names, scale_by_unit):
        signal = recording.signals[names[0]]
        scale = scale_by_unit.get(signal.unit.lower().replace(" ", ""), 1.0)
        return np.column_stack([recording.signals[n].values for n in names]) * scale, signal.fs_hz

    gyr_values, fs = stack(gyr, {"deg/s": np.pi / 180.0, "°/s": np.pi / 180.0, "dps": np.pi / 180.0})
    acc_values, _ = stack(acc, {"g": GRAVITY})
    mag_values = stack(mag, {"nt": 1e-3, "gauss": 100.0})[0] if len(mag) == 3 else None
    return imu.ImuRecording(gyr_values, acc_values, fs, mag_values, name=recording.name)


def read_imu(path: Path, fs=None) -> imu.ImuRecording:
    """BROAD HDF5 (with its optical reference) or a CSV/TXT table of gyroscope/accelerometer(/magnetometer)."""
    path = Path(path)
    if path.suffix.lower() in (".hdf5", ".h5"):
        return imu.read_broad(path)
    return imu_from_table(importers.read_recording(path, **({"fs": fs} if fs else {})))


def _reference(recording: imu.ImuRecording, reference) -> np.ndarray | bool | None:
    """``--reference``: 'file' (the recording's own optical reference) or a file of (N, 4) quaternions w,x,y,z."""
    if reference is None:
        return True if recording.ref_quat is not None else None
    if str(reference) == "file":
        if recording.ref_quat is None:
            raise MSDTError(f"'{recording.name}' carries no reference orientation.")
        return True
    quaternions = np.loadtxt(reference, delimiter=",") if str(reference).endswith(".csv") else np.load(reference)
    if quaternions.shape != (recording.n_samples, 4):
        raise MSDTError(f"Reference '{reference}' has shape {quaternions.shape}; expected ({recording.n_samples}, 4).")
    return quaternions


def run_imu(path: Path, out: Path, fs=None, reference=None) -> dict:
    """``msdt imu``: orientation statistics (and RMSE against a reference), trunk angles as a table and a chart,
    summary.json, scene.mrb and report.html in ``out``."""
    from MSDTLib import io
    from MSDTLib.app import new_scene

    recording = read_imu(path, fs)
    summary = imu.analyse_imu(recording, _reference(recording, reference))
    if "rmse_deg" in summary:  # VQF is the answer, Madgwick the baseline measured in the same run
        errors = summary.pop("rmse_deg")
        summary["rmse_deg"] = errors["vqf"]
        summary["baseline_rmse_deg"] = {name: value for name, value in errors.items() if name != "vqf"}
    quaternions = imu.orientation_vqf(recording.gyr, recording.acc, recording.mag, recording.fs)
    angles = imu.trunk_angles(quaternions, recording.fs, recording.acc)
    summary["trunk_angles"] = {"range_of_motion": angles["range_of_motion"],
                               "peak_angular_velocity_deg_s": angles["peak_angular_velocity_deg_s"],
                               "note": "relative to the first 2 s (calibration pose), sensor x taken as anterior"}
    with staged_output(out) as staging:
        scene = new_scene()
        names = ("flexion", "lateral_bending", "axial_rotation")
        table = importers.table_from_arrays(scene, f"Trunk angles {recording.name}",
                                            {"time_s": angles["time_s"], **{n: angles[n] for n in names}},
                                            {"time_s": "s", **{n: "deg" for n in names}})
        from MSDTLib.hierarchy import TwinHierarchy

        TwinHierarchy(scene).place(table, "macro", f"IMU {recording.name}")
        chart = plots.plot_signals(scene, table, "time_s", list(names), title="Trunk angles", y_title="angle",
                                   units="deg")
        picture = plots.save_chart_png(chart, staging / "trunk_angles.png")
        written = [io.save_mrb(scene, staging / "scene.mrb"), picture]
        rmse = {"vqf": summary["rmse_deg"], **summary["baseline_rmse_deg"]} if "rmse_deg" in summary else {}
        written.append(plots.html_report(staging / "report.html", f"MSDT IMU: {Path(path).name}", [
            {"heading": "Orientation", "text": json.dumps({k: v for k, v in summary.items() if "rmse" not in k},
                                                          indent=1, default=str)},
            {"heading": "Error against the reference (deg)", "tables": [[{"filter": k, **v} for k, v in rmse.items()]]},
            {"heading": "Trunk angles", "images": [picture]},
        ]))
        return _finish(summary, staging, written)


def _finish(summary: dict, staging: Path, written: list[Path]) -> dict:
    summary["files"] = sorted(str(p.relative_to(staging)) for p in written) + ["summary.json"]
    (staging / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default), encoding="utf-8")
    return json.loads(json.dumps(summary, default=_json_default))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
