"""Spine chart (PNG) and HTML report of a spine characterisation.

The chart has four panels: coronal and sagittal views of the body centres with every endplate trace (the
end vertebrae of each measured angle drawn bold), body and disc heights per level, and trabecular HU per
level against the opportunistic-CT osteoporosis thresholds.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from .spineworkflow import _in_plane_direction

HEIGHTS = ("anterior", "middle", "posterior")


def _trace(axis, body, plate: str, plane: str, bold: bool) -> None:
    endplate = getattr(body, plate)
    direction = _in_plane_direction(endplate.normal, plane)
    length = body.width_mm if plane == "coronal" else body.depth_mm
    ends = np.array([endplate.center - 0.5 * length * direction, endplate.center + 0.5 * length * direction])
    column = 0 if plane == "coronal" else 1
    axis.plot(ends[:, column], ends[:, 2], color="crimson" if bold else "0.45", lw=2.5 if bold else 1.0)


def _view(axis, bodies: dict, plane: str, bold: set, title: str) -> None:
    column = 0 if plane == "coronal" else 1
    centers = np.array([b.center for b in bodies.values()])
    axis.plot(centers[:, column], centers[:, 2], "o-", color="steelblue", ms=4)
    for body in bodies.values():
        axis.annotate(body.level, (body.center[column], body.center[2]), textcoords="offset points", xytext=(6, 0),
                      fontsize=8)
        if not body.truncated:
            for plate in ("superior", "inferior"):
                _trace(axis, body, plate, plane, (body.level, plate) in bold)
    axis.set_aspect("equal", adjustable="datalim")
    axis.set_title(title, fontsize=10)
    axis.set_xlabel("R (mm)" if plane == "coronal" else "A (mm)")
    axis.set_ylabel("S (mm)")
    if plane == "coronal":
        axis.invert_xaxis()  # radiological convention: patient right on the image left


def _bold_plates(summary: dict) -> tuple[set, set]:
    coronal = set()
    for curve in summary["cobb"]:
        if curve.get("angle_deg") is not None:
            coronal |= {(curve["upper"], "superior"), (curve["lower"], "inferior")}
    sagittal = set()
    lordosis = summary["lordosis"]
    if lordosis.get("angle_deg") is not None:
        sagittal |= {("L1", "superior"), (lordosis["lower"], "superior" if lordosis["lower"] == "S1" else "inferior")}
    if summary["kyphosis"].get("angle_deg") is not None:
        sagittal |= {(summary["kyphosis"]["upper"], "superior"), (summary["kyphosis"]["lower"], "inferior")}
    return coronal, sagittal


def _angle_text(summary: dict) -> tuple[str, str]:
    major = summary["cobb"][0] if summary["cobb"] else {}
    cobb = (f"Cobb {major['angle_deg']:.1f}° ({major['upper']}-{major['lower']}, apex {major['apex']})"
            if major.get("angle_deg") is not None else "Cobb: n/a")
    sagittal = [f"lordosis {summary['lordosis_deg']:.1f}°" if summary["lordosis_deg"] is not None else "",
                f"kyphosis {summary['kyphosis_deg']:.1f}°" if summary["kyphosis_deg"] is not None else ""]
    return cobb, ", ".join(s for s in sagittal if s) or "lordosis/kyphosis: n/a"


def spine_chart(summary: dict, bodies: dict, path: str | Path) -> Path:
    """Write the four-panel spine chart to ``path`` (PNG) and return it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, 4, figsize=(17, 5.5), gridspec_kw={"width_ratios": [1, 1, 1.4, 1.2]})
    coronal, sagittal = _bold_plates(summary)
    cobb_text, sagittal_text = _angle_text(summary)
    _view(axes[0], bodies, "coronal", coronal, f"Coronal: {cobb_text}")
    _view(axes[1], bodies, "sagittal", sagittal, f"Sagittal: {sagittal_text}")

    vertebrae = summary["vertebrae"]
    levels = list(vertebrae)
    x = np.arange(len(levels))
    for offset, name in zip((-0.25, 0, 0.25), HEIGHTS, strict=True):
        values = [vertebrae[lv].get(f"height_{name}_mm") or np.nan for lv in levels]
        axes[2].bar(x + offset, values, width=0.25, label=f"body {name}")
    discs = summary.get("discs", {})
    disc_x = [levels.index(name.split("-")[0]) + 0.5 for name in discs if name.split("-")[0] in levels]
    axes[2].plot(disc_x, [d["height_middle_mm"] for d in discs.values()][: len(disc_x)], "kD-", label="disc middle")
    for name, disc in discs.items():
        if disc.get("flag") == "reduced":
            axes[2].annotate("reduced", (levels.index(name.split("-")[0]) + 0.5, disc["height_middle_mm"]),
                             color="crimson", fontsize=8, ha="center", xytext=(0, -12), textcoords="offset points")
    axes[2].set_xticks(x, levels)
    axes[2].set_ylabel("height (mm)")
    axes[2].set_title("Vertebral body and disc heights", fontsize=10)
    axes[2].legend(fontsize=7, loc="lower right")

    hu = [vertebrae[lv].get("hu_mean") for lv in levels]
    axes[3].bar(x, [np.nan if v is None else v for v in hu], color="tan")
    for threshold, label in ((110, "≤110 HU: likely osteoporosis"), (160, "≥160 HU: likely normal")):
        axes[3].axhline(threshold, ls="--", color="crimson" if threshold == 110 else "seagreen", lw=1, label=label)
    axes[3].set_xticks(x, levels)
    axes[3].set_ylabel("trabecular HU (sphere at body centre)")
    axes[3].set_title("Bone density (Pickhardt 2013 thresholds at L1)", fontsize=10)
    axes[3].legend(fontsize=7)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def _rows(entries: dict, keys: tuple[str, ...]) -> str:
    def cell(value):
        if value is None:
            return "<td class='na'>n/a</td>"
        return f"<td>{value:.2f}</td>" if isinstance(value, float) else f"<td>{html.escape(str(value))}</td>"

    return "\n".join("<tr><td>" + html.escape(name) + "</td>" + "".join(cell(entry.get(k)) for k in keys) + "</tr>"
                     for name, entry in entries.items())


def write_spine_report(out_dir: str | Path, summary: dict, images: dict[str, str], title: str) -> Path:
    """Write ``out_dir/report.html``: the chart, angles, body, disc and density tables, the method."""
    out_dir = Path(out_dir)
    figures = "\n".join(f"<figure><img src='{html.escape(n)}' alt='{html.escape(c)}'><figcaption>{html.escape(c)}"
                        "</figcaption></figure>" for c, n in images.items())
    angles = {f"Cobb {i + 1}": c for i, c in enumerate(summary["cobb"])}
    angles.update({"Lordosis": summary["lordosis"], "Kyphosis": summary["kyphosis"]})
    body_keys = ("height_anterior_mm", "height_middle_mm", "height_posterior_mm", "height_difference_ratio",
                 "hu_mean", "hu_median", "hu_std", "reason")
    disc_keys = ("height_anterior_mm", "height_middle_mm", "height_posterior_mm", "volume_ml", "flag", "reason")
    screen = summary["osteoporosis"]
    screen_text = (f"L1 {screen['hu']:.0f} HU: <b>{html.escape(screen['category'])}</b>" if screen.get("hu") is not None
                   else html.escape(screen.get("reason") or "not available"))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }} img {{ max-width: 100%; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }} td, th {{ border: 1px solid #bbb; padding: 3px 8px; }}
th {{ background: #f0f0f0; }} td.na {{ color: #999; }} pre {{ white-space: pre-wrap; color: #444; }}</style></head><body>
<h1>{html.escape(title)}</h1>
{figures}
<h2>Angles (degrees)</h2>
<table><tr><th>measure</th><th>angle (plane)</th><th>angle (3D)</th><th>upper</th><th>lower</th><th>apex</th><th>reason</th></tr>
{_rows(angles, ("angle_deg", "angle_3d_deg", "upper", "lower", "apex", "reason"))}</table>
<h2>Vertebral bodies</h2>
<table><tr><th>level</th><th>anterior (mm)</th><th>middle (mm)</th><th>posterior (mm)</th><th>height difference ratio</th>
<th>HU mean</th><th>HU median</th><th>HU sd</th><th>reason</th></tr>
{_rows(summary["vertebrae"], body_keys)}</table>
<h2>Intervertebral discs</h2>
<table><tr><th>disc</th><th>anterior (mm)</th><th>middle (mm)</th><th>posterior (mm)</th><th>volume (ml)</th><th>flag</th>
<th>reason</th></tr>
{_rows(summary.get("discs", {}), disc_keys)}</table>
<h2>Osteoporosis screening</h2><p>{screen_text}. Reference: {html.escape(screen["reference"])}</p>
<h2>How the measurements are made</h2><pre>{html.escape(summary.get("measurement_method", ""))}</pre>
</body></html>
"""
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
