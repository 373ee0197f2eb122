"""Coronal Cobb angles, lumbar lordosis and thoracic kyphosis (degrees), planar and 3D."""

from __future__ import annotations

from .. import alignment
from .base import Column, PluginResult, SpineStatisticsPlugin


class CurvaturePlugin(SpineStatisticsPlugin):
    name = "curvature"
    table_name = "Spinal curvature"
    columns = (Column("measure", kind=str), Column("angle", "deg", "in the radiologist's plane"),
               Column("angle_3d", "deg", "between the 3D endplate normals"), Column("upper", kind=str), Column("lower", kind=str),
               Column("apex", kind=str), Column("reason", kind=str))

    def compute(self, context) -> PluginResult:
        cobbs = alignment.cobb_angles(context.bodies)
        lordosis = alignment.lordosis(context.bodies)
        kyphosis = alignment.kyphosis(context.bodies)
        summary = {"cobb": [c.as_dict() for c in cobbs],
                   "lordosis_deg": lordosis.as_dict()["angle_deg"], "lordosis": lordosis.as_dict(),
                   "kyphosis_deg": kyphosis.as_dict()["angle_deg"], "kyphosis": kyphosis.as_dict()}
        problems = alignment.order_problems(context.bodies)
        if problems:
            summary["order_problems"] = problems
        rows = [self._row(f"Cobb {index + 1}" if index else "Cobb (major)", c) for index, c in enumerate(cobbs)]
        rows += [self._row("Lumbar lordosis", lordosis), self._row("Thoracic kyphosis", kyphosis)]
        return PluginResult(summary, rows)

    @staticmethod
    def _row(measure: str, curve) -> dict:
        return {"measure": measure, "angle": curve.angle_deg, "angle_3d": curve.angle_3d_deg, "upper": curve.upper,
                "lower": curve.lower, "apex": curve.apex, "reason": curve.reason or "; ".join(curve.notes)}
