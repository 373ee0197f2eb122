"""Surgery-risk workflow: train a RiskModel from a cohort CSV and predict one patient from PATIENT.json.

python -m MSDTInferenceLib.riskworkflow train COHORT.csv --target status --positive Abnormal --out DIR
python -m MSDTInferenceLib.riskworkflow predict PATIENT.json --model DIR
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys

import numpy as np

from MSDTLib.errors import MSDTError

from .risk import RiskModel, cross_validate, suggest_exams

SUMMARY_FILE = "summary.json"
_MISSING_TOKENS = {"", "na", "nan", "n/a", "none", "null", "?"}


def _to_float(text):
    t = text.strip()
    if t.lower() in _MISSING_TOKENS:
        return math.nan
    return float(t)


def read_cohort_csv(path, target, positive=None):
    """Read a cohort CSV. Every numeric column except ``target`` is a feature.

    Returns (X, y, names, info) with info listing ignored (non-numeric) columns and the positive class.
    """
    if not os.path.isfile(path):
        raise MSDTError(f"cohort CSV not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise MSDTError(f"cohort CSV {path} has no data rows")
    header = [h.strip() for h in rows[0]]
    if target not in header:
        raise MSDTError(f"target column '{target}' not in cohort CSV {path} (columns: {header})")
    body = rows[1:]
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise MSDTError(
            f"cohort CSV {path}: rows {bad[:5]} have a different number of columns than the header"
        )
    t = header.index(target)
    labels = [r[t].strip() for r in body]
    keep = [i for i, lab in enumerate(labels) if lab.lower() not in _MISSING_TOKENS]
    body = [body[i] for i in keep]
    labels = [labels[i] for i in keep]
    classes = sorted(set(labels))
    if positive is None:
        if set(classes) <= {"0", "1"} or set(classes) <= {"0.0", "1.0"}:
            positive = classes[-1] if len(classes) > 1 else "1"
        elif len(classes) == 1:
            raise MSDTError(f"target '{target}' has only one class {classes}: a risk model needs two")
        else:
            raise MSDTError(f"target '{target}' has classes {classes}: say which is positive (positive=...)")
    positive = str(positive)
    if positive not in classes:
        raise MSDTError(f"positive class '{positive}' not found in target '{target}' (classes: {classes})")
    y = np.array([lab == positive for lab in labels], dtype=int)
    names, cols, ignored = [], [], []
    for j, h in enumerate(header):
        if j == t:
            continue
        try:
            col = [_to_float(r[j]) for r in body]
        except ValueError:
            ignored.append(h)
            continue
        if all(math.isnan(v) for v in col):
            ignored.append(h)
            continue
        names.append(h)
        cols.append(col)
    if not names:
        raise MSDTError(f"cohort CSV {path} has no numeric feature columns besides '{target}'")
    X = np.array(cols, dtype=float).T
    info = {"target": target, "positive": positive, "classes": classes, "ignored_columns": ignored}
    return X, y, names, info


def train_from_csv(
    path, target, positive=None, out_dir=None, repeats=5, folds=5, seed=0, l2="cv", calibrate=False
):
    """Train the risk model on a cohort CSV, cross-validate it against the boosting baseline, write
    ``risk_model.json`` and ``summary.json`` into ``out_dir``; returns the summary dict."""
    if out_dir is None:
        raise MSDTError("train_from_csv needs an output directory (out_dir)")
    X, y, names, info = read_cohort_csv(path, target, positive)
    cv = cross_validate(X, y, repeats=repeats, folds=folds, seed=seed, l2=l2, names=names)
    model = RiskModel(l2=l2, calibrate=calibrate).fit(X, y, names, seed=seed)
    os.makedirs(out_dir, exist_ok=True)
    model_path = model.save(out_dir)
    summary = {
        "cohort": os.path.abspath(path),
        **info,
        "n": int(len(y)),
        "n_positive": int(y.sum()),
        "features": names,
        "coefficients_per_sd": model.coefficients,
        "intercept": float(model.theta[0]),
        "training_calibration": model.calibration,
        "cv": cv,
        "model_file": model_path,
    }
    with open(os.path.join(out_dir, SUMMARY_FILE), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=1)
    return summary


def flatten_numeric(obj, prefix=""):
    """Numeric leaves of a JSON object as {dotted.name: value} (bools skipped; list items by index)."""
    out = {}
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        return out
    for k, v in items:
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            if math.isfinite(float(v)):
                out[key] = float(v)
        elif isinstance(v, (dict, list)):
            out.update(flatten_numeric(v, key))
    return out


def predict_patient(patient_json_path, model_dir, exams=None, draws=100, seed=0):
    """Risk for one patient. PATIENT.json: {"patient_id", "features": {name: value}, "summaries": [paths]};
    summary paths are relative to the PATIENT.json folder; their numeric leaves (dotted names) that match
    model features are used unless ``features`` gives the same name. ``exams``: {exam: [features]}
    (default: the patient JSON's "exams", else one exam per model feature)."""
    if not os.path.isfile(patient_json_path):
        raise MSDTError(f"patient JSON not found: {patient_json_path}")
    try:
        with open(patient_json_path, encoding="utf-8") as fh:
            patient = json.load(fh)
    except json.JSONDecodeError as exc:
        raise MSDTError(f"patient JSON {patient_json_path} is not valid JSON: {exc}") from exc
    if not isinstance(patient, dict):
        raise MSDTError(f"patient JSON {patient_json_path} must be an object with 'features' / 'summaries'")
    model = RiskModel.load(model_dir)
    base = os.path.dirname(os.path.abspath(patient_json_path))
    features = {}
    sources = {}
    for s in patient.get("summaries", []) or []:
        p = s if os.path.isabs(s) else os.path.join(base, s)
        if not os.path.isfile(p):
            raise MSDTError(f"summary file listed in {patient_json_path} not found: {p}")
        with open(p, encoding="utf-8") as fh:
            try:
                flat = flatten_numeric(json.load(fh))
            except json.JSONDecodeError as exc:
                raise MSDTError(f"summary file {p} is not valid JSON: {exc}") from exc
        for k, v in flat.items():
            if k in model.names:
                features[k] = v
                sources[k] = p
    explicit = patient.get("features", {}) or {}
    if not isinstance(explicit, dict):
        raise MSDTError(f"'features' in {patient_json_path} must be an object name -> value")
    features.update(explicit)
    result = model.predict(features)
    if exams is None:
        exams = patient.get("exams") or {f"measure {n}": [n] for n in model.names}
    suggestions = suggest_exams(model, features, exams, draws=draws, seed=seed) if result.missing else []
    suggestions = [s for s in suggestions if s["features"]]
    return {
        "patient_id": patient.get("patient_id"),
        "risk": result.risk,
        "interval": result.interval,
        "logit": result.logit,
        "intercept": result.intercept,
        "contributions": result.contributions,
        "missing": result.missing,
        "suggested_exams": suggestions,
        "warnings": result.warnings,
        "feature_sources": sources,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(prog="msdt-risk", description="MSDT calibrated surgery-risk estimate")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("csv")
    t.add_argument("--target", required=True)
    t.add_argument("--positive")
    t.add_argument("--out", required=True)
    t.add_argument("--repeats", type=int, default=5)
    t.add_argument("--folds", type=int, default=5)
    p = sub.add_parser("predict")
    p.add_argument("patient")
    p.add_argument("--model", required=True)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "train":
            res = train_from_csv(args.csv, args.target, args.positive, args.out, args.repeats, args.folds)
        else:
            res = predict_patient(args.patient, args.model)
    except MSDTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
