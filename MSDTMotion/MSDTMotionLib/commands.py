"""Motion subcommands of ``msdt``: emg and imu (added through ``add_commands``)."""

from __future__ import annotations

from pathlib import Path


def _emg(args) -> dict:
    from .motionworkflow import run_emg

    return run_emg(args.file, args.out, args.channels, args.fs, args.window_s)


def _imu(args) -> dict:
    from .motionworkflow import run_imu

    return run_imu(args.file, args.out, args.fs, args.reference)


def add_commands(subparsers) -> None:
    """Add ``msdt emg`` and ``msdt imu``; each sets ``handler`` (args -> summary dict)."""
    emg = subparsers.add_parser("emg", help="sEMG filtering and fatigue features (IEMG, RMS, MNF, MDF, slopes)")
    emg.add_argument("file", type=Path, help="C3D (analog channels) or CSV/TXT recording")
    emg.add_argument("--channels", help="comma-separated channel names (default: all)")
    emg.add_argument("--fs", type=float, help="sample rate in Hz when the file does not give it")
    emg.add_argument("--window-s", type=float, default=1.0, help="feature window length (s, default 1)")
    emg.add_argument("--out", type=Path, required=True, help="output folder")
    emg.set_defaults(handler=_emg)
    imu = subparsers.add_parser("imu", help="IMU orientation (VQF), trunk angles, error against a reference")
    imu.add_argument("file", type=Path, help="BROAD HDF5 or CSV with gyroscope/accelerometer(/magnetometer) columns")
    imu.add_argument("--fs", type=float, help="sample rate in Hz when the file does not give it")
    imu.add_argument("--reference", help="'file' (the recording's own reference) or a .npy/.csv of quaternions")
    imu.add_argument("--out", type=Path, required=True, help="output folder")
    imu.set_defaults(handler=_imu)
