"""Bone density (HU) in a sphere at each vertebral-body centroid and the L1 osteoporosis screen."""

from __future__ import annotations

from .. import density
from .base import PluginResult, SpineStatisticsPlugin, rounded


class BoneDensityPlugin(SpineStatisticsPlugin):
    name = "density"
    table_name = "Vertebral body density"
    columns = density.DENSITY_COLUMNS

    def compute(self, context) -> PluginResult:
        result = PluginResult(summary={"vertebrae": {}})
        measured = {}
        for level, body in context.bodies.items():
            reason = None
            if context.modality != "ct" or context.image is None:
                reason = "bone density needs a CT in Hounsfield units (MR intensities are not calibrated)"
            elif body.truncated:
                reason = "the body is cut by the field of view: its centre and trabecular core are unknown"
            if reason:
                result.summary["vertebrae"][level] = {"hu_mean": None, "hu_median": None, "hu_std": None,
                                                      "hu_reason": reason}
                result.rows.append({"level": level, "note": reason})
                continue
            # Sphere at the middle of the body (not the centroid of its voxels, which the pedicle roots pull
            # backwards): a trabecular HU gradient across the body then cancels out.
            value = density.body_density(context.image, context.grid, body.mask(context.grid.shape),
                                         context.sphere_radius_mm, level=level, center_ras=body.center)
            measured[level] = value
            entry = {"hu_mean": rounded(value.hu_mean, 1), "hu_median": rounded(value.hu_median, 1),
                     "hu_std": rounded(value.hu_std, 1), "hu_sphere_radius_mm": value.radius_mm,
                     "hu_center_ras": [round(c, 2) for c in value.center_ras] if value.center_ras else None}
            if value.reason or value.note:
                entry["hu_reason" if value.reason else "hu_note"] = value.reason or value.note
            result.summary["vertebrae"][level] = entry
            result.rows.append(density.density_row(value))
        result.summary["osteoporosis"] = density.osteoporosis_screen(measured.get("L1"), context.modality)
        return result
