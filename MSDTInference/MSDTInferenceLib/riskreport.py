"""``msdt risk`` outputs: the prediction, the patient's feature graph and contributions on a scene, and the risk
panel (gauge, contributions, chord diagram of the cohort associations) in report.html."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import panel
from .featuregraph import FeatureGraph
from .risk import RiskModel
from .riskworkflow import predict_patient


def _summaries(patient_path: Path) -> list[Path]:
    patient = json.loads(Path(patient_path).read_text(encoding="utf-8"))
    base = Path(patient_path).resolve().parent
    return [(base / s) if not Path(s).is_absolute() else Path(s) for s in patient.get("summaries", []) or []]


def patient_graph(patient_path: Path, result: dict) -> FeatureGraph:
    """Feature graph of the patient: the summaries' features plus the model features given directly."""
    graph = FeatureGraph.from_summaries(result.get("patient_id") or "Patient", [str(p) for p in _summaries(patient_path)])
    patient = json.loads(Path(patient_path).read_text(encoding="utf-8"))
    graph.add_clinical({k: v for k, v in (patient.get("features") or {}).items() if isinstance(v, (int, float))})
    return graph


def update_history(history_path: Path, patient_path: Path, result: dict, graph: FeatureGraph):
    """Add this visit (date from PATIENT.json "date", else today) to the patient's history file (created when
    missing) and return the history."""
    import datetime

    from .longitudinal import PatientHistory

    patient = json.loads(Path(patient_path).read_text(encoding="utf-8"))
    history = (PatientHistory.load(history_path) if Path(history_path).is_file()
               else PatientHistory(result.get("patient_id") or "Patient", []))
    history.add_visit(patient.get("date") or datetime.date.today().isoformat(), graph, result)
    history.save(history_path)
    return history


def panel_pictures(result: dict, model_dir: Path, out: Path) -> dict[str, Path]:
    """The risk panel as PNGs in ``out`` (gauge with the interval, contributions, chord diagram of the cohort
    associations with the patient's contributions) and the chord diagram as HTML; caption -> path."""
    model = RiskModel.load(str(model_dir))
    contributions = result["contributions"]
    out = Path(out)
    pictures = {
        "Risk with its 90 % interval": panel.risk_gauge_png(result["risk"], result["interval"], out / "risk_gauge.png"),
        "Per-feature contributions (log-odds)": panel.contributions_png(contributions, out / "contributions.png"),
        "Feature associations in the cohort": panel.chord_diagram_png(
            list(model.names), np.asarray(model.R), contributions, out / "chord_diagram.png"),
    }
    panel.chord_diagram_html(list(model.names), np.asarray(model.R), contributions, out / "chord_diagram.html")
    return pictures


def contributions_table(scene, result: dict):
    """Table node of the per-feature contributions (log-odds, largest first) under patient / macro / Inference."""
    from MSDTLib.hierarchy import TwinHierarchy
    from MSDTLib.tables import Column, table_from_rows

    missing = set(result.get("missing") or [])
    ordered = sorted((result.get("contributions") or {}).items(), key=lambda item: abs(item[1]), reverse=True)
    rows = [{"feature": name, "contribution": value, "observed": "no" if name in missing else "yes"}
            for name, value in ordered]
    columns = [Column("feature", kind=str),
               Column("contribution", "log-odds", "contribution to the log-odds of surgery"),
               Column("observed", kind=str, description="no: missing, marginalised over the cohort")]
    patient = str(result.get("patient_id") or "Patient")
    table = table_from_rows(scene, f"Risk contributions {patient}", columns, rows)
    TwinHierarchy(scene, patient).place(table, "macro", "Inference")
    return table


def write_risk_outputs(patient_path: Path, model_dir: Path, out: Path, history_path: Path | None = None) -> dict:
    """Prediction summary; writes scene.mrb, the panel PNGs/HTML and report.html into ``out``; with
    ``history_path`` the visit is added to the patient's history and the risk trajectory is drawn."""
    from MSDTLib import io
    from MSDTLib.app import new_scene

    result = predict_patient(str(patient_path), str(model_dir))
    pictures = panel_pictures(result, model_dir, out)
    scene = new_scene()
    graph = patient_graph(patient_path, result)
    graph.to_scene(scene)
    if history_path is not None:
        from .longitudinal import trajectory_plot, trajectory_png

        history = update_history(history_path, patient_path, result, graph)
        trajectory_plot(scene, history)
        pictures["Risk over the visits"] = trajectory_png(history, out / "risk_trajectory.png")
        result["visits"] = len(history.visits)
    contributions_table(scene, result)
    io.save_mrb(scene, out / "scene.mrb")
    panel.risk_report_html(out / "report.html", result.get("patient_id") or "Patient", result,
                           list(pictures.values()) + [out / "chord_diagram.html"])
    return json.loads(json.dumps(result, default=float))
