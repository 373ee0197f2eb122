"""Charts of motion signals in the scene (``vtkMRMLPlotChartNode``) and the same charts as PNG / HTML.

:func:`plot_signals` and :func:`plot_trend` build plot chart and series nodes over table nodes, so Slicer's
plot view shows them; :func:`save_chart_png` draws a chart node (or plain arrays) with matplotlib's Agg
backend, and :func:`html_report` assembles PNGs and tables into one HTML page for the command line report.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from MSDTLib.errors import MSDTError

# Matplotlib's default cycle, so scene and PNG use the same colours.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


def _rgb(hex_color: str) -> tuple[float, float, float]:
    return tuple(int(hex_color[i:i + 2], 16) / 255.0 for i in (1, 3, 5))


def _hex(rgb) -> str:
    return "#" + "".join(f"{int(round(max(0.0, min(1.0, c)) * 255)):02x}" for c in rgb)


def _place_near(node, reference_node) -> None:
    """Put ``node`` beside ``reference_node`` in the twin hierarchy when the reference is placed there."""
    from MSDTLib.hierarchy import place_beside

    try:
        place_beside(node, reference_node)
    except ValueError:
        pass  # reference not under patient / scale / study: leave the node where it is


def _column(table_node, name: str) -> np.ndarray:
    from MSDTMotionLib.importers import table_column

    return table_column(table_node, name)


def plot_signals(scene, table_node, x_column: str, y_columns, title: str = "", y_title: str = "",
                 units: str = "", x_title: str | None = None, name: str | None = None):
    """A line chart of ``y_columns`` against ``x_column`` of ``table_node``: one series node per column."""
    table = table_node.GetTable()
    y_columns = [y_columns] if isinstance(y_columns, str) else list(y_columns)
    for column in [x_column, *y_columns]:
        if table.GetColumnByName(column) is None:
            raise MSDTError(f"Table '{table_node.GetName()}' has no column '{column}' to plot.")
    if not y_columns:
        raise MSDTError("plot_signals needs at least one y column.")
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name or title or f"{table_node.GetName()} chart")
    chart.SetTitle(title)
    x_unit = table_node.GetColumnUnitLabel(x_column)
    chart.SetXAxisTitle(x_title if x_title is not None else (f"{x_column} ({x_unit})" if x_unit else x_column))
    chart.SetYAxisTitle(f"{y_title} ({units})" if units and y_title else (y_title or units))
    chart.SetLegendVisibility(len(y_columns) > 1)
    for index, column in enumerate(y_columns):
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{chart.GetName()}: {column}")
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName(x_column)
        series.SetYColumnName(column)
        series.SetPlotType(series.PlotTypeScatter)
        series.SetMarkerStyle(series.MarkerStyleNone)
        series.SetLineStyle(series.LineStyleSolid)
        series.SetColor(*_rgb(PALETTE[index % len(PALETTE)]))
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
        _place_near(series, table_node)
    _place_near(chart, table_node)
    return chart


def plot_trend(scene, times, values, fit=None, title: str = "Trend", x_title: str = "Time (s)",
               y_title: str = "", units: str = "", name: str | None = None, reference_node=None):
    """Points ``values`` over ``times`` with the line ``slope * t + intercept`` (``fit``; least squares when
    ``None``), e.g. the EMG median frequency over a fatiguing contraction. The data go into a new table
    (``time_s``, ``value``, ``trend``); the chart is returned. ``reference_node`` places table and chart
    beside it in the twin hierarchy."""
    from MSDTMotionLib.importers import table_from_arrays

    times = np.asarray(times, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if times.shape != values.shape or times.ndim != 1 or len(times) == 0:
        raise MSDTError("plot_trend needs one-dimensional times and values of the same, non-zero length.")
    if fit is None:
        finite = np.isfinite(times) & np.isfinite(values)
        if finite.sum() < 2:
            raise MSDTError("plot_trend needs at least two finite points to fit a trend line.")
        slope, intercept = np.polyfit(times[finite], values[finite], 1)
    else:
        slope, intercept = fit
    label = name or title
    table = table_from_arrays(scene, f"{label} data",
                              {"time_s": times, "value": values, "trend": slope * times + intercept},
                              {"time_s": "s", "value": units, "trend": units})
    table.SetAttribute("MSDT.TrendSlope", f"{slope:.6g}")
    table.SetAttribute("MSDT.TrendIntercept", f"{intercept:.6g}")
    if reference_node is not None:
        _place_near(table, reference_node)
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", label)
    chart.SetTitle(title)
    chart.SetXAxisTitle(x_title)
    chart.SetYAxisTitle(f"{y_title} ({units})" if units and y_title else (y_title or units))
    for column, color, is_points in (("value", PALETTE[0], True), ("trend", PALETTE[3], False)):
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{label}: {column}")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("time_s")
        series.SetYColumnName(column)
        series.SetPlotType(series.PlotTypeScatter)
        if is_points:
            series.SetMarkerStyle(series.MarkerStyleCircle)
            series.SetLineStyle(series.LineStyleNone)
        else:
            series.SetMarkerStyle(series.MarkerStyleNone)
            series.SetLineStyle(series.LineStyleDash)
        series.SetColor(*_rgb(color))
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
        _place_near(series, table)
    _place_near(chart, table)
    chart.SetAttribute("MSDT.TrendSlope", f"{slope:.6g}")
    return chart


# --------------------------------------------------------------------------------------------- PNG / HTML

def _chart_content(chart_node) -> dict:
    """Title, axis titles and series (label, x, y, colour, line, marker) of a chart node."""
    series_list = []
    for index in range(chart_node.GetNumberOfPlotSeriesNodes()):
        series = chart_node.GetNthPlotSeriesNode(index)
        table = series.GetTableNode()
        if table is None:
            continue
        line = series.GetLineStyle()
        marker = series.GetMarkerStyle()
        series_list.append({
            "label": series.GetYColumnName(),
            "x": _column(table, series.GetXColumnName()) if series.GetXColumnName() else None,
            "y": _column(table, series.GetYColumnName()),
            "color": _hex(series.GetColor()),
            "linestyle": {series.LineStyleNone: "none", series.LineStyleDash: "--", series.LineStyleDot: ":",
                          series.LineStyleDashDot: "-."}.get(line, "-"),
            "marker": "o" if marker not in (series.MarkerStyleNone,) else None,
        })
    return {"title": chart_node.GetTitle() or chart_node.GetName(), "x_title": chart_node.GetXAxisTitle(),
            "y_title": chart_node.GetYAxisTitle(), "series": series_list}


def _arrays_content(arrays) -> dict:
    """``(x, {label: y})``, ``(x, y)`` or ``{"x":..., "y": {label: y} or array, "title", "x_title", "y_title"}``."""
    if isinstance(arrays, dict):
        x, ys = arrays.get("x"), arrays.get("y")
        meta = arrays
    else:
        x, ys = arrays
        meta = {}
    if not isinstance(ys, dict):
        ys = {meta.get("label", "y"): ys}
    series = [{"label": label, "x": None if x is None else np.asarray(x, float), "y": np.asarray(y, float),
               "color": PALETTE[i % len(PALETTE)], "linestyle": "-", "marker": None}
              for i, (label, y) in enumerate(ys.items())]
    return {"title": meta.get("title", ""), "x_title": meta.get("x_title", ""),
            "y_title": meta.get("y_title", ""), "series": series}


def save_chart_png(chart, path: str | Path, width_px: int = 800, height_px: int = 450, dpi: int = 100,
                   max_points: int = 20000) -> Path:
    """Draw a ``vtkMRMLPlotChartNode`` (or arrays, see :func:`_arrays_content`) to a PNG of exactly
    ``width_px`` x ``height_px``; long series are decimated to about ``max_points`` points for drawing."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    content = _chart_content(chart) if hasattr(chart, "GetNumberOfPlotSeriesNodes") else _arrays_content(chart)
    if not content["series"]:
        raise MSDTError(f"The chart '{content['title']}' has no data series to draw.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for series in content["series"]:
        y = series["y"]
        x = series["x"] if series["x"] is not None else np.arange(len(y))
        step = max(1, len(y) // max_points)
        axes.plot(x[::step], y[::step], color=series["color"], linestyle=series["linestyle"],
                  marker=series["marker"], markersize=4, linewidth=1.0, label=series["label"])
    axes.set_title(content["title"])
    axes.set_xlabel(content["x_title"])
    axes.set_ylabel(content["y_title"])
    axes.grid(True, alpha=0.3)
    if len(content["series"]) > 1:
        axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=dpi, format="png")
    return path


def _table_html(table, max_rows: int) -> str:
    if hasattr(table, "GetTable"):  # vtkMRMLTableNode
        vtk_table = table.GetTable()
        headers = []
        for c in range(vtk_table.GetNumberOfColumns()):
            name = vtk_table.GetColumnName(c)
            unit = table.GetColumnUnitLabel(name)
            headers.append(f"{name} ({unit})" if unit else name)
        rows = [[vtk_table.GetValue(r, c).ToString() for c in range(vtk_table.GetNumberOfColumns())]
                for r in range(min(max_rows, vtk_table.GetNumberOfRows()))]
        total = vtk_table.GetNumberOfRows()
    else:  # list of dicts
        table = list(table)
        headers = list(dict.fromkeys(key for row in table for key in row))
        rows = [[_cell(row.get(h)) for h in headers] for row in table[:max_rows]]
        total = len(table)
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in headers) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows]
    out.append("</table>")
    if total > len(rows):
        out.append(f"<p class='note'>{len(rows)} of {total} rows shown.</p>")
    return "\n".join(out)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def html_report(path: str | Path, title: str, sections, embed_images: bool = False, max_rows: int = 50) -> Path:
    """Write an HTML page: ``sections`` is a list of dicts with optional ``heading``, ``text``, ``images``
    (PNG paths, linked relative to the page or embedded as data URIs with ``embed_images``) and ``tables``
    (table nodes or lists of row dicts; the first ``max_rows`` rows are shown)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}img{max-width:100%}"
             ".note{color:#666}</style>", "</head><body>", f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        if section.get("heading"):
            parts.append(f"<h2>{html.escape(section['heading'])}</h2>")
        if section.get("text"):
            parts.append(f"<p>{html.escape(section['text'])}</p>")
        for image in section.get("images", []):
            image = Path(image)
            if not image.is_file():
                raise MSDTError(f"Report image '{image}' does not exist.")
            if embed_images:
                source = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode("ascii")
            else:
                try:
                    source = image.resolve().relative_to(path.parent.resolve()).as_posix()
                except ValueError:
                    source = image.resolve().as_uri()
            parts.append(f"<p><img src='{html.escape(source)}' alt='{html.escape(image.stem)}'></p>")
        for table in section.get("tables", []):
            parts.append(_table_html(table, max_rows))
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
