"""Base of the spine-statistics plugins (the Segment Statistics pattern: one base class, one plugin per
family of measurements, results as rows with units that become a table node)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..grid import Grid
from ..tables import Column  # noqa: F401  (re-exported for the plugins)


@dataclass
class SpineContext:
    """What every plugin may read: the image, its grid, the label map and the fitted vertebral bodies."""

    image: np.ndarray | None          # (k, j, i) grey levels (HU for CT); None when not available
    grid: Grid
    labels: np.ndarray                # (k, j, i) label values on the image grid
    class_table: dict[int, str]
    bodies: dict                      # level -> spine.VertebralBody, cranial to caudal
    modality: str = "ct"
    sphere_radius_mm: float = 8.0
    disc_mask: np.ndarray | None = None


@dataclass
class PluginResult:
    """Summary entries (merged into summary.json) and table rows keyed by the first column."""

    summary: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)


class SpineStatisticsPlugin:
    """One family of spine measurements. Subclasses set ``name``, ``table_name``, ``columns`` and compute."""

    name = "base"
    table_name = ""
    columns: tuple[Column, ...] = ()

    def compute(self, context: SpineContext) -> PluginResult:
        raise NotImplementedError


def rounded(value, digits: int = 2):
    """JSON-friendly rounding: floats rounded, NaN turned into None (callers add a reason field)."""
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else round(float(value), digits)
    return value
