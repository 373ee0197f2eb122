"""Self-contained HTML report of an Anatomy run: renders, skin numbers and the vertebra table."""

from __future__ import annotations

import html
from pathlib import Path

LANDMARK_TITLES = {"centroid": "centroid", "spinous": "spinous tip", "transverse_left": "TP left",
                   "transverse_right": "TP right"}


def _cell(value, digits=1) -> str:
    if value is None:
        return "<td class='na'>n/a</td>"
    if isinstance(value, float):
        return f"<td>{value:.{digits}f}</td>"
    return f"<td>{html.escape(str(value))}</td>"


def _vertebra_rows(vertebrae: dict) -> str:
    rows = []
    for level, v in vertebrae.items():
        cells = [_cell(level + (" (cut by FOV)" if v.get("truncated") else "")), _cell(v["volume_ml"], 2)]
        cells += [_cell(c) for c in v["centroid_ras"]]
        cells += [_cell(v["skin_depth_mm"].get(name)) for name in LANDMARK_TITLES]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(rows)


def write_anatomy_report(out_dir: str | Path, summary: dict, images: dict[str, str], title: str) -> Path:
    """Write ``out_dir/report.html`` showing ``images`` (caption -> file name in out_dir) and the numbers."""
    out_dir = Path(out_dir)
    skin = summary["skin"]
    figures = "\n".join(
        f"<figure><img src='{html.escape(name)}' alt='{html.escape(caption)}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>" for caption, name in images.items())
    depth_headers = "".join(f"<th>skin depth {t} (mm)</th>" for t in LANDMARK_TITLES.values())
    bone = summary.get("bone")
    if not bone:
        bone_line = ""
    elif bone.get("error"):
        bone_line = f"<li>Bone: not segmented ({html.escape(bone['error'])})</li>"
    else:
        bone_line = f"<li>Bone (≥ {bone['threshold_hu']:g} HU): {bone['volume_ml']:.1f} ml</li>"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }} img {{ max-width: 420px; border: 1px solid #ccc; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #bbb; padding: 3px 8px; text-align: right; }}
th {{ background: #f0f0f0; }} td.na {{ color: #999; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Modality {html.escape(summary['modality'].upper())}. Depths are measured from each landmark posteriorly
(along the vertebra's own anterior-posterior axis) to where the ray leaves the body surface.</p>
<h2>Surfaces</h2>
<ul><li>Skin (threshold {skin['threshold']:g} {html.escape(skin['threshold_unit'])}): {skin['volume_ml']:.1f} ml,
surface {skin['area_cm2']:.1f} cm² (of which {skin['fov_cap_area_cm2']:.1f} cm² are the flat caps where the
field of view cuts the body)</li>{bone_line}</ul>
{figures}
<h2>Vertebrae</h2>
<table><tr><th>level</th><th>volume (ml)</th><th>R (mm)</th><th>A (mm)</th><th>S (mm)</th>{depth_headers}</tr>
{_vertebra_rows(summary['vertebrae'])}
</table>
</body></html>
"""
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
