"""Inference subcommands of ``msdt``: risk-train and risk (added through ``add_commands``)."""

from __future__ import annotations

import json
from pathlib import Path


def _train(args) -> dict:
    from MSDTLib.outputs import staged_output

    from .riskworkflow import train_from_csv

    with staged_output(args.out) as staging:
        return train_from_csv(args.cohort, args.target, args.positive, str(staging))


def _risk(args) -> dict:
    from MSDTLib.outputs import staged_output

    from .riskreport import write_risk_outputs

    with staged_output(args.out) as staging:
        summary = write_risk_outputs(args.patient, args.model, staging, args.history)
        summary["files"] = sorted(p.name for p in staging.iterdir()) + ["summary.json"]
        (staging / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        return summary


def add_commands(subparsers) -> None:
    """Add ``msdt risk-train`` and ``msdt risk``; each sets ``handler`` (args -> summary dict)."""
    train = subparsers.add_parser("risk-train", help="train and cross-validate the surgery-risk model on a cohort")
    train.add_argument("cohort", type=Path, help="cohort CSV: numeric feature columns and a target column")
    train.add_argument("--target", required=True, help="target column")
    train.add_argument("--positive", help="target value counted as positive (needed unless the target is 0/1)")
    train.add_argument("--out", type=Path, required=True, help="model folder")
    train.set_defaults(handler=_train)
    risk = subparsers.add_parser("risk", help="risk, interval, contributions and next exams for one patient")
    risk.add_argument("patient", type=Path, help="PATIENT.json: features and/or paths to MSDT summaries")
    risk.add_argument("--model", type=Path, required=True, help="model folder from msdt risk-train")
    risk.add_argument("--history", type=Path, help="the patient's history JSON: this visit is added (created if missing)")
    risk.add_argument("--out", type=Path, required=True, help="output folder")
    risk.set_defaults(handler=_risk)
