"""Longitudinal updates: the visits of one patient (features and risk with its interval) and their trajectory."""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from MSDTLib.errors import MSDTError


def parse_date(value) -> _dt.date:
    """``datetime.date`` from a date, a datetime or an ISO text ("2025-03-01", "2025-03-01T10:00")."""
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    try:
        return _dt.date.fromisoformat(str(value)[:10])
    except ValueError as error:
        raise MSDTError(f"'{value}' is not a date (expected YYYY-MM-DD).") from error


def _finite(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def parse_risk(risk_result) -> tuple[float | None, tuple[float | None, float | None]]:
    """(risk, (low, high)) from a number or a risk result dict.

    Understood keys: ``risk`` / ``probability`` / ``p``, and ``interval`` / ``ci`` / ``credible_interval``
    (a pair) or ``low`` / ``high`` (``lower`` / ``upper``)."""
    if risk_result is None:
        return None, (None, None)
    if not isinstance(risk_result, dict):
        return _finite(risk_result), (None, None)
    risk = next((_finite(risk_result[k]) for k in ("risk", "probability", "p") if k in risk_result), None)
    interval = next((risk_result[k] for k in ("interval", "ci", "credible_interval") if k in risk_result), None)
    if interval is not None and len(interval) == 2:
        low, high = _finite(interval[0]), _finite(interval[1])
    else:
        low = next((_finite(risk_result[k]) for k in ("low", "lower") if k in risk_result), None)
        high = next((_finite(risk_result[k]) for k in ("high", "upper") if k in risk_result), None)
    return risk, (low, high)


@dataclass
class PatientHistory:
    """Visits of one patient: each ``{"date", "features", "risk", "interval"}`` (kept sorted by date)."""

    patient_id: str
    visits: list = field(default_factory=list)

    def add_visit(self, date, graph_or_features, risk_result=None) -> dict:
        """Add (or replace, same date) a visit from a :class:`FeatureGraph` or a ``{name: value}`` dict."""
        if hasattr(graph_or_features, "feature_vector"):
            features = graph_or_features.feature_vector()
        elif isinstance(graph_or_features, dict) or graph_or_features is None:
            features = {k: float(v) for k, v in (graph_or_features or {}).items() if _finite(v) is not None}
        else:
            raise MSDTError(f"A visit needs a FeatureGraph or a feature dict, got {type(graph_or_features).__name__}.")
        risk, interval = parse_risk(risk_result)
        if risk is not None and not 0.0 <= risk <= 1.0:
            raise MSDTError(f"Risk {risk} is not a probability in [0, 1].")
        visit = {"date": parse_date(date).isoformat(), "features": features, "risk": risk,
                 "interval": list(interval)}
        self.visits = [v for v in self.visits if v["date"] != visit["date"]] + [visit]
        self.visits.sort(key=lambda v: v["date"])
        return visit

    def risk_trajectory(self):
        """(dates (list of ``datetime.date``), risks, lows, highs) ordered by date; NaN where unknown."""
        visits = sorted(self.visits, key=lambda v: v["date"])
        dates = [parse_date(v["date"]) for v in visits]

        def array(values):
            return np.array([np.nan if x is None else float(x) for x in values], float)

        return (dates, array(v["risk"] for v in visits), array(v["interval"][0] for v in visits),
                array(v["interval"][1] for v in visits))

    def feature_trajectory(self, name: str):
        """(dates, values) of one feature over the visits (NaN where it was not measured)."""
        visits = sorted(self.visits, key=lambda v: v["date"])
        return ([parse_date(v["date"]) for v in visits],
                np.array([v["features"].get(name, np.nan) for v in visits], float))

    def to_dict(self) -> dict:
        return {"patient_id": self.patient_id, "visits": self.visits}

    def save(self, path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict) -> PatientHistory:
        if "patient_id" not in data:
            raise MSDTError("Not a patient history: no 'patient_id'.")
        history = cls(str(data["patient_id"]))
        for visit in data.get("visits", []):
            interval = visit.get("interval") or [None, None]
            history.add_visit(visit["date"], visit.get("features") or {},
                              {"risk": visit.get("risk"), "interval": interval})
        return history

    @classmethod
    def load(cls, path) -> PatientHistory:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise MSDTError(f"Patient history '{path}' could not be read: {error}") from error
        return cls.from_dict(data)


def trajectory_plot(scene, history: PatientHistory, study: str = "Inference"):
    """Chart of the risk over the visits (x: days since the first visit) with the interval bounds as dashed
    series; the table and chart sit under patient / macro / ``study``. Returns the ``vtkMRMLPlotChartNode``."""
    from MSDTLib.hierarchy import TwinHierarchy
    from MSDTLib.tables import Column, table_from_rows

    dates, risks, lows, highs = history.risk_trajectory()
    if not dates:
        raise MSDTError(f"Patient '{history.patient_id}' has no visits to plot.")
    rows = [{"date": d.isoformat(), "day": float((d - dates[0]).days), "risk": r, "low": lo, "high": hi}
            for d, r, lo, hi in zip(dates, risks, lows, highs, strict=True)]
    columns = [Column("date", kind=str), Column("day", "d", "days since the first visit"),
               Column("risk", "", "probability of surgery"), Column("low", "", "interval low"),
               Column("high", "", "interval high")]
    table = table_from_rows(scene, f"Risk trajectory {history.patient_id}", columns, rows)
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"Risk trajectory {history.patient_id} chart")
    chart.SetTitle(f"Risk of surgery: {history.patient_id}")
    chart.SetXAxisTitle(f"Days since {dates[0].isoformat()}")
    chart.SetYAxisTitle("Risk")
    styles = {"risk": ((0.8, 0.1, 0.1), "solid"), "low": ((0.5, 0.5, 0.5), "dash"),
              "high": ((0.5, 0.5, 0.5), "dash")}
    hierarchy = TwinHierarchy(scene, history.patient_id)
    for column, (color, style) in styles.items():
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{chart.GetName()}: {column}")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("day")
        series.SetYColumnName(column)
        series.SetLabelColumnName("date")
        series.SetPlotType(series.PlotTypeScatter)
        series.SetLineStyle(series.LineStyleSolid if style == "solid" else series.LineStyleDash)
        series.SetMarkerStyle(series.MarkerStyleCircle if column == "risk" else series.MarkerStyleNone)
        series.SetColor(*color)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
        hierarchy.place(series, "macro", study)
    hierarchy.place(table, "macro", study)
    hierarchy.place(chart, "macro", study)
    return chart


def trajectory_png(history: PatientHistory, path, width_in: float = 7.0, height_in: float = 3.5) -> Path:
    """PNG of the risk trajectory: risk line with markers, interval band and error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dates, risks, lows, highs = history.risk_trajectory()
    if not dates:
        raise MSDTError(f"Patient '{history.patient_id}' has no visits to plot.")
    path = Path(path)
    figure, axes = plt.subplots(figsize=(width_in, height_in), dpi=100)
    try:
        x = np.array(dates, dtype="datetime64[D]")
        band = np.isfinite(lows) & np.isfinite(highs)
        if band.any():
            axes.fill_between(x[band], lows[band], highs[band], color="#e57373", alpha=0.25, label="interval")
        axes.plot(x, risks, "o-", color="#c62828", label="risk")
        for xi, r in zip(x, risks, strict=True):
            if np.isfinite(r):
                axes.annotate(f"{r:.0%}", (xi, r), textcoords="offset points", xytext=(0, 7), ha="center",
                              fontsize=8)
        axes.set_ylim(0, 1)
        axes.set_ylabel("Risk of surgery")
        axes.set_title(f"Risk trajectory: {history.patient_id}")
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", fontsize=8)
        figure.autofmt_xdate()
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)
    return path
