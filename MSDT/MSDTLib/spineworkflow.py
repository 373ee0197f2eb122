"""The spine characterisation workflow: vertebral bodies, heights, curvature, discs and bone density of a
labelled CT/MR, as MRML nodes (tables with units, endplate lines, spine curve, a plot) and a summary dict.

The Slicer module and ``msdt spine`` both call :func:`characterise_spine`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import alignment, labels, spine
from .app import scene_transaction
from .errors import MSDTError
from .grid import Grid
from .hierarchy import TwinHierarchy
from .spinestats import SpineContext, compute_spine_statistics
from .tables import Column, table_from_rows

log = logging.getLogger("msdt")
DISC_NAMES = ("intervertebral_discs", "intervertebral_disc", "discs", "disc")


@dataclass
class SpineOptions:
    modality: str = "ct"
    sphere_radius_mm: float = 8.0
    label_names: str | Path | dict | None = None
    patient: str | None = None
    study: str | None = None


@dataclass
class SpineResult:
    summary: dict
    bodies: dict
    tables: dict = field(default_factory=dict)
    lines: list = field(default_factory=list)
    curve_node: object | None = None
    chart_node: object | None = None


def _vertebra_levels(class_table: dict[int, str]) -> dict[int, str]:
    return {value: level for value, name in class_table.items() if (level := labels.vertebra_level(name))}


def _disc_mask(label_array: np.ndarray, class_table: dict[int, str]) -> np.ndarray | None:
    values = [v for v, name in class_table.items() if name.lower() in DISC_NAMES]
    mask = np.isin(label_array, values) if values else None
    return mask if mask is not None and mask.any() else None


def _in_plane_direction(normal: np.ndarray, plane: str) -> np.ndarray:
    """Unit direction of an endplate's trace on the coronal (R-S) or sagittal (A-S) plane."""
    axis = 0 if plane == "coronal" else 1
    trace = np.zeros(3)
    trace[axis], trace[2] = normal[2], -normal[axis]
    return trace / max(np.linalg.norm(trace), 1e-9)


def _endplate_line(scene, name: str, endplate, length_mm: float, plane: str):
    direction = _in_plane_direction(endplate.normal, plane)
    line = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", name)
    for sign in (-0.5, 0.5):
        line.AddControlPoint(*(endplate.center + sign * length_mm * direction).tolist())
    line.CreateDefaultDisplayNodes()
    line.SetLocked(True)
    return line


def _angle_lines(scene, summary: dict, bodies: dict) -> list:
    """Endplate lines of each Cobb curve (coronal) and of lordosis/kyphosis (sagittal)."""
    lines = []
    curves = [("Cobb", c, "coronal", ("superior", "inferior")) for c in summary["cobb"] if c.get("angle_deg")]
    for key in ("lordosis", "kyphosis"):
        if summary[key].get("angle_deg") is not None:
            lower_plate = "superior" if key == "lordosis" and summary[key]["lower"] == "S1" else "inferior"
            curves.append((key.capitalize(), summary[key], "sagittal", ("superior", lower_plate)))
    for title, curve, plane, plates in curves:
        for level, plate in zip((curve["upper"], curve["lower"]), plates, strict=True):
            body = bodies[level]
            lines.append(_endplate_line(scene, f"{title} {level} {plate} endplate", getattr(body, plate),
                                        body.width_mm if plane == "coronal" else body.depth_mm, plane))
    return lines


def _spine_curve(scene, bodies: dict):
    curve = scene.AddNewNodeByClass("vtkMRMLMarkupsCurveNode", "Spine curve (body centres)")
    for body in bodies.values():
        curve.AddControlPoint(*body.center.tolist(), body.level)
    curve.CreateDefaultDisplayNodes()
    curve.SetLocked(True)
    return curve


def _height_chart(scene, summary: dict):
    """Plot chart of the body heights per level (anterior, middle, posterior) in a Slicer plot view."""
    levels = [lv for lv, v in summary["vertebrae"].items() if v.get("height_middle_mm") is not None]
    if not levels:
        return None
    rows = [{"index": float(index), "level": level,
             **{name: summary["vertebrae"][level][f"height_{name}_mm"] for name in ("anterior", "middle", "posterior")}}
            for index, level in enumerate(levels)]
    columns = [Column("index", description="vertebra order, cranial to caudal"), Column("level", kind=str)]
    columns += [Column(name, "mm") for name in ("anterior", "middle", "posterior")]
    table = table_from_rows(scene, "Spine chart data", columns, rows)
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", "Vertebral body heights")
    chart.SetTitle("Vertebral body heights (mm) from " + " to ".join((levels[0], levels[-1])))
    chart.SetXAxisTitle("vertebra (cranial to caudal)")
    chart.SetYAxisTitle("height (mm)")
    for name, color in (("anterior", (0.85, 0.3, 0.2)), ("middle", (0.2, 0.5, 0.85)),
                        ("posterior", (0.2, 0.65, 0.3))):
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} height")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("index")
        series.SetYColumnName(name)
        series.SetPlotType(series.PlotTypeScatter)
        series.SetColor(*color)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart


def characterise_labels(image: np.ndarray | None, grid: Grid, label_array: np.ndarray, class_table: dict,
                        options: SpineOptions) -> tuple[dict, dict, dict]:
    """Pure computation: (summary, bodies, plugin results) from arrays; no scene involved."""
    levels = _vertebra_levels(class_table)
    bodies = spine.vertebral_bodies(label_array, grid, levels, image)
    if not bodies:
        raise MSDTError("The label map holds no vertebra (names such as 'vertebrae_L1'); nothing to measure. "
                        "Use --label-names to name the labels.")
    context = SpineContext(image, grid, label_array, class_table, bodies, options.modality,
                           options.sphere_radius_mm, _disc_mask(label_array, class_table))
    summary, results = compute_spine_statistics(context)
    problems = alignment.order_problems(bodies)
    if problems:
        log.warning("Vertebra order: %s", "; ".join(problems))
    if len(bodies) == 1:
        summary["notes"] = ["only one vertebra: curvature and disc measures need at least two"]
    summary["measurement_method"] = spine.__doc__.strip().split("\n\n", 1)[1]
    return summary, bodies, results


def characterise_spine(scene, volume_node, label_input, options: SpineOptions | None = None,
                       progress=None) -> SpineResult:
    """Measure the spine of ``volume_node`` from a vertebra label map (node or file) onto ``scene``."""
    from .pipeline import AnatomyOptions, _check_volume, class_table_of, labels_for_volume

    options = options or SpineOptions()
    progress = progress or (lambda fraction, message: log.info("[%3d%%] %s", round(100 * fraction), message))
    image = _check_volume(volume_node).astype(np.float32)
    grid = Grid.of_node(volume_node)
    class_table = class_table_of(label_input, AnatomyOptions(modality=options.modality,
                                                             label_names=options.label_names))
    progress(0.1, "Resampling the label map onto the image grid")
    label_array = labels_for_volume(label_input, volume_node)
    progress(0.3, "Fitting vertebral bodies and endplates")
    summary, bodies, results = characterise_labels(image if options.modality == "ct" else None, grid,
                                                   label_array, class_table, options)
    patient = options.patient or volume_node.GetAttribute("DICOM.PatientName") or "Patient"
    study = options.study or f"{options.modality.upper()} {volume_node.GetName()}"
    hierarchy = TwinHierarchy(scene, patient)
    progress(0.8, "Writing tables, endplate lines and charts")
    with scene_transaction(scene), hierarchy.collect("meso", study):
        result = SpineResult(summary, bodies)
        for name, (plugin, plugin_result) in results.items():
            result.tables[name] = table_from_rows(scene, plugin.table_name, plugin.columns, plugin_result.rows)
        result.lines = _angle_lines(scene, summary, bodies)
        result.curve_node = _spine_curve(scene, bodies)
        result.chart_node = _height_chart(scene, summary)
    progress(1.0, "Spine characterised")
    return result


__all__ = ["SpineOptions", "SpineResult", "characterise_labels", "characterise_spine"]
