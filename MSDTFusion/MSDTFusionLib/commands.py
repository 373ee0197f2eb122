"""Fusion subcommands of ``msdt``: register, igt-sim, igt-record (added through ``add_commands``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _register(args: argparse.Namespace) -> dict:
    from .registerworkflow import register_files

    return register_files(args.fixed, args.moving, args.out, args.fixed_landmarks, args.moving_landmarks,
                          args.modality)


def _igt_sim(args: argparse.Namespace) -> dict:
    from . import igtsim

    return igtsim.command(args)


def _igt_record(args: argparse.Namespace) -> dict:
    from . import recording

    return recording.command(args)


def add_commands(subparsers) -> None:
    """Add the Fusion subcommands to ``msdt``'s subparsers; each sets ``handler`` (args -> summary dict)."""
    from . import igtsim, recording

    register = subparsers.add_parser("register", help="markerless camera-cloud to skin-surface registration")
    register.add_argument("--fixed", type=Path, required=True, help="skin surface (VTK/VTP/STL/PLY/OBJ) or image")
    register.add_argument("--moving", type=Path, required=True, help="point cloud (PLY/PCD/XYZ/CSV/NPY)")
    register.add_argument("--fixed-landmarks", type=Path, help="landmarks in the fixed frame (.mrk.json/.fcsv/...)")
    register.add_argument("--moving-landmarks", type=Path, help="the same landmarks in the moving frame")
    register.add_argument("--modality", choices=("ct", "mr"), default="ct", help="when --fixed is an image")
    register.add_argument("--out", type=Path, required=True, help="output folder")
    register.set_defaults(handler=_register)
    simulator = subparsers.add_parser("igt-sim", help="replay a PLUS tracked-ultrasound file as an OpenIGTLink server")
    igtsim.add_arguments(simulator).set_defaults(handler=_igt_sim)
    record = subparsers.add_parser("igt-record", help="record what an OpenIGTLink server sends")
    recording.add_arguments(record).set_defaults(handler=_igt_record)
