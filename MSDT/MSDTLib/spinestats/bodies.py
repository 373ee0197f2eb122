"""Vertebral body heights and deformity ratio (mm) per level."""

from __future__ import annotations

from .base import Column, PluginResult, SpineStatisticsPlugin, rounded


class VertebralBodyPlugin(SpineStatisticsPlugin):
    name = "bodies"
    table_name = "Vertebral bodies"
    columns = (Column("level", kind=str), Column("height_anterior", "mm"), Column("height_middle", "mm"),
               Column("height_posterior", "mm"), Column("height_difference_ratio", "", "(max-min)/max of the 3"),
               Column("body_volume", "ml"), Column("depth", "mm"), Column("width", "mm"), Column("notes", kind=str))

    def compute(self, context) -> PluginResult:
        result = PluginResult(summary={"vertebrae": {}})
        voxel_ml = context.grid.voxel_volume_mm3 / 1000.0
        for level, body in context.bodies.items():
            entry = {"body_volume_ml": rounded(len(body.kji) * voxel_ml, 3), "separated_from_arch": body.separated}
            if body.truncated:
                entry["reason"] = "; ".join(body.notes)
                heights = {}
            else:
                heights = body.heights_mm
                entry.update({f"height_{name}_mm": rounded(value) for name, value in heights.items()})
                entry["height_difference_ratio"] = rounded(body.height_difference_ratio, 3)
                if body.notes:
                    entry["notes"] = body.notes
            result.summary["vertebrae"][level] = entry
            result.rows.append({"level": level, "height_anterior": heights.get("anterior"),
                                "height_middle": heights.get("middle"), "height_posterior": heights.get("posterior"),
                                "height_difference_ratio": None if body.truncated else body.height_difference_ratio,
                                "body_volume": len(body.kji) * voxel_ml, "depth": body.depth_mm,
                                "width": body.width_mm, "notes": "; ".join(body.notes)})
        return result
