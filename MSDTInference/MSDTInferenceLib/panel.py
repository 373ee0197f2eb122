"""Risk panel: chord diagram of feature associations (self-contained HTML/SVG and PNG), contribution bars,
risk gauge and an HTML report that embeds them (no external JS, CSS or fonts)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np

from MSDTLib.errors import MSDTError

POSITIVE = "#c62828"  # raises the risk
NEGATIVE = "#1565c0"  # lowers the risk
NEUTRAL = "#9e9e9e"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _check_matrix(names, matrix) -> np.ndarray:
    matrix = np.asarray(matrix, float)
    if matrix.shape != (len(names), len(names)):
        raise MSDTError(f"The association matrix is {matrix.shape}; expected {len(names)} x {len(names)}.")
    return np.nan_to_num(matrix)


def chords(names, association_matrix, min_abs_r: float = 0.3) -> list[tuple[int, int, float]]:
    """(i, j, r) of the pairs i < j with ``|r| >= min_abs_r`` (the chords drawn)."""
    matrix = _check_matrix(names, association_matrix)
    return [(i, j, float(matrix[i, j])) for i in range(len(names)) for j in range(i + 1, len(names))
            if abs(matrix[i, j]) >= min_abs_r]


def _mix(color: str, fraction: float) -> str:
    """``color`` blended towards white: fraction 1 = the colour, 0 = white."""
    rgb = [int(color[k:k + 2], 16) for k in (1, 3, 5)]
    fraction = min(max(fraction, 0.0), 1.0)
    return "#" + "".join(f"{round(255 - (255 - c) * fraction):02x}" for c in rgb)


def contribution_color(value, largest: float) -> str:
    """Red for a positive contribution (log-odds), blue for a negative one, paler when smaller."""
    if value is None or not np.isfinite(value) or value == 0 or largest <= 0:
        return NEUTRAL
    return _mix(POSITIVE if value > 0 else NEGATIVE, 0.3 + 0.7 * min(abs(value) / largest, 1.0))


def _layout(n: int):
    """Angles (radians, clockwise from the top) of ``n`` features evenly on a circle."""
    return [2 * math.pi * k / max(n, 1) - math.pi / 2 for k in range(n)]


def chord_diagram_svg(names, association_matrix, contributions: dict | None = None, min_abs_r: float = 0.3,
                      size: int = 800) -> str:
    """Inline SVG: features on a circle (arc and dot coloured by their contribution), one quadratic Bezier
    ``<path class="chord">`` per pair with ``|r| >= min_abs_r``, width and opacity by |r|, solid for r > 0 and
    dashed for r < 0."""
    names = list(names)
    contributions = contributions or {}
    matrix = _check_matrix(names, association_matrix)
    centre, radius, height = size / 2, 0.2 * size, 0.6 * size  # room for the labels left and right
    angles = _layout(len(names))
    largest = max([abs(v) for v in contributions.values() if v is not None and np.isfinite(v)] or [0.0])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chord-diagram" width="{size}" height="{height:.0f}" '
             f'viewBox="0 {centre - height / 2:.0f} {size} {height:.0f}" font-family="sans-serif" font-size="11">',
             f'<circle cx="{centre}" cy="{centre}" r="{radius}" fill="none" stroke="#eeeeee"/>']
    step = 2 * math.pi / max(len(names), 1)
    for name, angle in zip(names, angles, strict=True):  # arcs: the features' segments of the circle
        value = contributions.get(name)
        a0, a1 = angle - 0.4 * step, angle + 0.4 * step
        x0, y0 = centre + (radius + 6) * math.cos(a0), centre + (radius + 6) * math.sin(a0)
        x1, y1 = centre + (radius + 6) * math.cos(a1), centre + (radius + 6) * math.sin(a1)
        large = 1 if a1 - a0 > math.pi else 0
        parts.append(f'<path class="arc" d="M{x0:.1f},{y0:.1f} A{radius + 6:.1f},{radius + 6:.1f} 0 {large} 1 '
                     f'{x1:.1f},{y1:.1f}" fill="none" stroke="{contribution_color(value, largest)}" '
                     f'stroke-width="8"><title>{html.escape(name)}</title></path>')
    for i, j, r in chords(names, matrix, min_abs_r):
        xi, yi = centre + radius * math.cos(angles[i]), centre + radius * math.sin(angles[i])
        xj, yj = centre + radius * math.cos(angles[j]), centre + radius * math.sin(angles[j])
        dash = "" if r > 0 else ' stroke-dasharray="6,3"'
        parts.append(f'<path class="chord" d="M{xi:.1f},{yi:.1f} Q{centre:.1f},{centre:.1f} {xj:.1f},{yj:.1f}" '
                     f'fill="none" stroke="{"#6d4c41" if r > 0 else "#00796b"}" stroke-width="{1 + 7 * abs(r):.2f}" '
                     f'stroke-opacity="{0.25 + 0.6 * abs(r):.2f}"{dash}>'
                     f'<title>{html.escape(names[i])} ~ {html.escape(names[j])}: r = {r:.2f}</title></path>')
    for name, angle in zip(names, angles, strict=True):
        value = contributions.get(name)
        x, y = centre + radius * math.cos(angle), centre + radius * math.sin(angle)
        dot = 4 + (8 * abs(value) / largest if value is not None and largest > 0 and np.isfinite(value) else 0)
        label = f"{name}" + (f" ({value:+.2f})" if value is not None and np.isfinite(value) else "")
        lx, ly = centre + (radius + 18) * math.cos(angle), centre + (radius + 18) * math.sin(angle)
        anchor = "start" if math.cos(angle) > 0.2 else "end" if math.cos(angle) < -0.2 else "middle"
        baseline = "hanging" if math.sin(angle) > 0.5 else "auto" if math.sin(angle) < -0.5 else "middle"
        parts.append(f'<circle class="feature" cx="{x:.1f}" cy="{y:.1f}" r="{dot:.1f}" '
                     f'fill="{contribution_color(value, largest)}" stroke="#333" stroke-width="0.5">'
                     f'<title>{html.escape(label)}</title></circle>')
        parts.append(f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}" dominant-baseline="{baseline}">'
                     f'{html.escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


_LEGEND = (f'<p class="legend"><span style="color:{POSITIVE}">&#9679;</span> raises the risk &nbsp; '
           f'<span style="color:{NEGATIVE}">&#9679;</span> lowers the risk (dot size: |log-odds contribution|); '
           'chords: cohort correlation, width by |r|, solid r &gt; 0, dashed r &lt; 0.</p>')


def chord_diagram_html(names, association_matrix, contributions: dict | None, path, min_abs_r: float = 0.3,
                       title: str = "Feature associations") -> Path:
    """Self-contained HTML page with the chord diagram as inline SVG (see :func:`chord_diagram_svg`)."""
    path = Path(path)
    svg = chord_diagram_svg(names, association_matrix, contributions, min_abs_r)
    path.write_text(f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
                    f"<style>body{{font-family:sans-serif;margin:1em}}</style></head><body>\n"
                    f"<h1>{html.escape(title)}</h1>\n{svg}\n{_LEGEND}\n</body></html>\n", encoding="utf-8")
    return path


def chord_diagram_png(names, association_matrix, contributions: dict | None, path, min_abs_r: float = 0.3,
                      size_in: float = 7.0, dpi: int = 100) -> Path:
    """The chord diagram drawn with matplotlib (quadratic Bezier chords through the centre)."""
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    plt = _pyplot()
    names = list(names)
    contributions = contributions or {}
    matrix = _check_matrix(names, association_matrix)
    angles = _layout(len(names))
    largest = max([abs(v) for v in contributions.values() if v is not None and np.isfinite(v)] or [0.0])
    figure, axes = plt.subplots(figsize=(size_in, size_in * 1.5 / 2.3), dpi=dpi)
    try:
        figure.subplots_adjust(0, 0, 1, 1)
        # y is flipped (clockwise from the top, as in the SVG)
        points = [(math.cos(a), -math.sin(a)) for a in angles]
        step = 2 * math.pi / max(len(names), 1)
        for name, angle in zip(names, angles, strict=True):
            arc = np.linspace(angle - 0.4 * step, angle + 0.4 * step, 20)
            axes.plot(1.05 * np.cos(arc), -1.05 * np.sin(arc), lw=6, solid_capstyle="butt",
                      color=contribution_color(contributions.get(name), largest))
        for i, j, r in chords(names, matrix, min_abs_r):
            bezier = MplPath([points[i], (0.0, 0.0), points[j]], [MplPath.MOVETO, MplPath.CURVE3, MplPath.CURVE3])
            axes.add_patch(PathPatch(bezier, fill=False, lw=1 + 5 * abs(r), alpha=0.25 + 0.6 * abs(r),
                                     edgecolor="#6d4c41" if r > 0 else "#00796b", ls="-" if r > 0 else "--"))
        for name, angle, (x, y) in zip(names, angles, points, strict=True):
            value = contributions.get(name)
            known = value is not None and np.isfinite(value)
            axes.scatter([x], [y], s=30 + (200 * abs(value) / largest if known and largest > 0 else 0),
                         color=contribution_color(value, largest), edgecolors="#333", zorder=3)
            lx, ly = 1.15 * math.cos(angle), -1.15 * math.sin(angle)
            cos, sin = math.cos(angle), math.sin(angle)
            axes.text(lx, ly, name + (f" ({value:+.2f})" if known else ""), fontsize=8,
                      ha="left" if cos > 0.2 else "right" if cos < -0.2 else "center",
                      va="top" if sin > 0.5 else "bottom" if sin < -0.5 else "center")
        axes.set_xlim(-2.3, 2.3)
        axes.set_ylim(-1.5, 1.5)
        axes.set_aspect("equal")
        axes.axis("off")
        figure.savefig(path, dpi=dpi)
    finally:
        plt.close(figure)
    return Path(path)


def contributions_png(contributions: dict, path, top: int | None = 20, dpi: int = 100) -> Path:
    """Horizontal bars of the per-feature log-odds contributions, sorted (largest |value| at the top with
    ``top``), positive red and negative blue."""
    plt = _pyplot()
    items = [(k, float(v)) for k, v in contributions.items() if v is not None and np.isfinite(v)]
    if not items:
        raise MSDTError("No finite contributions to draw.")
    items.sort(key=lambda item: abs(item[1]), reverse=True)
    items = items[:top] if top else items
    items.sort(key=lambda item: item[1])
    labels, values = zip(*items, strict=True)
    figure, axes = plt.subplots(figsize=(7, 0.35 * len(items) + 1.2), dpi=dpi)
    try:
        axes.barh(range(len(values)), values, color=[POSITIVE if v > 0 else NEGATIVE for v in values])
        axes.set_yticks(range(len(values)), labels, fontsize=8)
        axes.axvline(0, color="#333", lw=0.8)
        axes.set_xlabel("Contribution (log-odds)")
        axes.set_title("Feature contributions to the risk")
        axes.grid(axis="x", alpha=0.3)
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)
    return Path(path)


def risk_gauge_png(risk: float, interval=None, path=None, dpi: int = 100) -> Path:
    """Half-circle gauge 0-100 % (green-amber-red), the interval as a dark band and the risk as a needle."""
    from matplotlib.patches import Wedge

    if path is None:
        raise MSDTError("risk_gauge_png needs a path.")
    if risk is None or not np.isfinite(risk) or not 0 <= risk <= 1:
        raise MSDTError(f"Risk {risk} is not a probability in [0, 1].")
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4, 2.4), dpi=dpi)
    try:
        for start, stop, color in ((0, 0.2, "#66bb6a"), (0.2, 0.5, "#ffca28"), (0.5, 1.0, "#ef5350")):
            axes.add_patch(Wedge((0, 0), 1, 180 - 180 * stop, 180 - 180 * start, width=0.3, color=color))
        if interval is not None and None not in tuple(interval):
            low, high = sorted(float(v) for v in interval)
            axes.add_patch(Wedge((0, 0), 0.68, 180 - 180 * min(high, 1), 180 - 180 * max(low, 0), width=0.08,
                                 color="#424242"))
        angle = math.pi * (1 - risk)
        axes.plot([0, 0.85 * math.cos(angle)], [0, 0.85 * math.sin(angle)], color="#212121", lw=3)
        axes.add_patch(plt.Circle((0, 0), 0.05, color="#212121"))
        text = f"{risk:.0%}"
        if interval is not None and None not in tuple(interval):
            text += f"\n({min(interval):.0%} - {max(interval):.0%})"
        axes.text(0, -0.25, text, ha="center", va="center", fontsize=12, fontweight="bold")
        axes.set_xlim(-1.1, 1.1)
        axes.set_ylim(-0.5, 1.1)
        axes.set_aspect("equal")
        axes.axis("off")
        figure.savefig(path)
    finally:
        plt.close(figure)
    return Path(path)


def _picture_html(title: str, picture) -> str:
    path = Path(picture)
    if not path.exists():
        return f"<h2>{html.escape(title)}</h2><p>(missing: {html.escape(str(path))})</p>"
    if path.suffix.lower() in (".html", ".htm", ".svg"):
        text = path.read_text(encoding="utf-8")
        start, stop = text.find("<svg"), text.rfind("</svg>")
        if start >= 0 and stop > start:
            return f"<h2>{html.escape(title)}</h2>\n{text[start:stop + 6]}"
        return f'<h2>{html.escape(title)}</h2><p><a href="{html.escape(path.name)}">{html.escape(path.name)}</a></p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    kind = "png" if path.suffix.lower() == ".png" else path.suffix.lower().lstrip(".")
    return (f'<h2>{html.escape(title)}</h2>\n<img alt="{html.escape(title)}" style="max-width:100%" '
            f'src="data:image/{kind};base64,{data}">')


def risk_report_html(path, patient_id: str, risk_result_dict: dict, pictures=None) -> Path:
    """One self-contained HTML page: the risk (and interval), the other scalar results, the contributions
    table and the ``pictures`` ({title: path} or a list of paths; PNGs embedded, SVG of HTML/SVG files inlined).
    """
    from .longitudinal import parse_risk

    path = Path(path)
    risk, (low, high) = parse_risk(risk_result_dict)
    lines = [f"<h1>Risk of surgery: {html.escape(str(patient_id))}</h1>"]
    if risk is not None:
        interval = f" (interval {low:.1%} - {high:.1%})" if low is not None and high is not None else ""
        lines.append(f'<p class="risk"><b>{risk:.1%}</b>{interval}</p>')
    rows = [(k, v) for k, v in (risk_result_dict or {}).items()
            if not isinstance(v, (dict, list, tuple)) and k not in ("risk", "probability", "p")]
    if rows:
        lines.append("<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                                         for k, v in rows) + "</table>")
    contributions = (risk_result_dict or {}).get("contributions")
    if isinstance(contributions, dict) and contributions:
        ordered = sorted(contributions.items(), key=lambda kv: -abs(kv[1] if kv[1] is not None else 0))
        lines.append("<h2>Contributions (log-odds)</h2><table><tr><th>feature</th><th>contribution</th></tr>" + "".join(
            f'<tr><td>{html.escape(str(k))}</td><td style="color:{POSITIVE if (v or 0) > 0 else NEGATIVE}">'
            f"{html.escape(_fmt(v))}</td></tr>" for k, v in ordered) + "</table>")
    for key in ("next_exams", "suggested_exams", "notes"):
        value = (risk_result_dict or {}).get(key)
        if isinstance(value, (list, tuple)) and value:
            lines.append(f"<h2>{html.escape(key.replace('_', ' ').capitalize())}</h2><ul>"
                         + "".join(f"<li>{html.escape(_fmt(item))}</li>" for item in value) + "</ul>")
    if isinstance(pictures, dict):
        items = list(pictures.items())
    else:
        items = [(Path(p).stem.replace("_", " "), p) for p in (pictures or [])]
    lines += [_picture_html(title, picture) for title, picture in items]
    style = ("body{font-family:sans-serif;margin:1.5em;max-width:60em}table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}.risk{font-size:1.6em}")
    path.write_text(f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>MSDT risk: "
                    f"{html.escape(str(patient_id))}</title><style>{style}</style></head><body>\n"
                    + "\n".join(lines) + f"\n{_LEGEND}\n</body></html>\n", encoding="utf-8")
    return path


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)
