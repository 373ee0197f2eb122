"""Intervertebral disc heights (mm), disc volume (ml) and the degeneration flag."""

from __future__ import annotations

from .. import discs
from .base import Column, PluginResult, SpineStatisticsPlugin, rounded


class DiscSpacePlugin(SpineStatisticsPlugin):
    name = "discs"
    table_name = "Intervertebral discs"
    columns = (Column("disc", kind=str), Column("height_anterior", "mm"), Column("height_middle", "mm"),
               Column("height_posterior", "mm"), Column("volume", "ml"), Column("flag", kind=str), Column("notes", kind=str))

    def compute(self, context) -> PluginResult:
        spaces = discs.disc_spaces(context.bodies, context.grid, context.disc_mask)
        result = PluginResult(summary={"discs": {}})
        if not spaces:
            result.summary["discs_reason"] = "no two adjacent vertebrae with complete endplates"
        for space in spaces:
            entry = {f"height_{name}_mm": rounded(value) for name, value in space.heights_mm.items()}
            entry["volume_ml"] = rounded(space.volume_ml, 3)
            if space.volume_ml is None:
                entry["volume_reason"] = "no disc label in the label map"
            entry["flag"] = space.flag
            if space.reason:
                entry["reason"] = space.reason
            if space.notes:
                entry["notes"] = space.notes
            result.summary["discs"][space.name] = entry
            result.rows.append({"disc": space.name, **{f"height_{k}": v for k, v in space.heights_mm.items()},
                                "volume": space.volume_ml, "flag": space.flag or "",
                                "notes": "; ".join(space.notes) or (space.reason or "")})
        return result
