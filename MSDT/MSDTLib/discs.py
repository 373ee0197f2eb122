"""Intervertebral spaces between adjacent vertebral bodies: disc heights, disc volume, degeneration flag.

The disc frame: axis along the mean of the bounding endplate normals, centre halfway between the endplate
centres. Heights are distances along that axis between the inferior endplate plane of the upper body and the
superior endplate plane of the lower body, in the mid-sagittal plane at the anterior, middle and posterior
positions used for body heights (see :mod:`MSDTLib.spine`). A disc is flagged "reduced" when its middle
height is below 75 % of the median middle height of the other discs (at least two others needed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .grid import Grid
from .labels import VERTEBRA_ORDER
from .spine import _frame_from_axis, heights_between, sagittal_extent

REDUCED_FRACTION = 0.75


@dataclass
class DiscSpace:
    upper: str
    lower: str
    heights_mm: dict[str, float]
    center: np.ndarray
    volume_ml: float | None = None
    flag: str | None = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.upper}-{self.lower}"


def adjacent_pairs(bodies: dict) -> list[tuple]:
    """Consecutive levels (e.g. L1, L2) that are both present and not cut by the field of view."""
    chain = [b for b in bodies.values() if not b.truncated]
    return [(a, b) for a, b in zip(chain, chain[1:], strict=False)
            if VERTEBRA_ORDER[b.level] == VERTEBRA_ORDER[a.level] + 1]


def disc_space(upper, lower, grid: Grid) -> DiscSpace:
    """Heights of the space between two adjacent bodies (mm)."""
    axis = upper.inferior.normal + lower.superior.normal
    frame = _frame_from_axis(axis / np.linalg.norm(axis))
    center = (upper.inferior.center + lower.superior.center) / 2
    union = np.vstack([upper.points, lower.points])
    back, front, _ = sagittal_extent(union, frame, grid)
    shift = float(np.dot(union.mean(axis=0) - center, frame.anterior))
    heights = heights_between(upper.inferior, lower.superior, center, frame, back + shift, front + shift)
    return DiscSpace(upper.level, lower.level, heights, center)


def assign_disc_volumes(discs: list[DiscSpace], pairs: list[tuple], disc_mask: np.ndarray, grid: Grid,
                        margin_mm: float | None = None, radius_mm: float = 40.0) -> None:
    """Split a disc label (one value for all discs) among the spaces; volumes in ml.

    A voxel belongs to a space when it lies between the bounding endplate planes (within ``margin_mm``,
    default one voxel) and within ``radius_mm`` of its centre; voxels claimed twice go to the nearest centre.
    Disc voxels next to a vertebra cut by the field of view belong to no measured space and are not counted.
    """
    points = grid.ras_from_kji(np.argwhere(disc_mask))
    if not discs or len(points) == 0:
        return
    margin = float(grid.spacing.max()) if margin_mm is None else margin_mm
    inside = np.zeros((len(points), len(discs)), bool)
    for index, (disc, (upper, lower)) in enumerate(zip(discs, pairs, strict=True)):
        below_upper = (points - upper.inferior.center) @ upper.inferior.normal <= margin
        above_lower = (points - lower.superior.center) @ lower.superior.normal >= -margin
        near = np.linalg.norm(points - disc.center, axis=1) <= radius_mm
        inside[:, index] = below_upper & above_lower & near
    distance = np.linalg.norm(points[:, None, :] - np.array([d.center for d in discs])[None], axis=2)
    owner = np.where(inside.any(axis=1), np.argmin(np.where(inside, distance, np.inf), axis=1), -1)
    counts = np.bincount(owner[owner >= 0], minlength=len(discs))
    for disc, count in zip(discs, counts, strict=True):
        disc.volume_ml = float(count) * grid.voxel_volume_mm3 / 1000.0


def flag_reduced(discs: list[DiscSpace]) -> None:
    """Mark each disc 'reduced' or 'normal' against the median of the others, or give the reason why not."""
    for disc in discs:
        others = [d.heights_mm["middle"] for d in discs if d is not disc]
        if len(others) < 2:
            disc.reason = "fewer than three discs in the field of view: no neighbours to compare with"
            continue
        reference = float(np.median(others))
        disc.flag = "reduced" if disc.heights_mm["middle"] < REDUCED_FRACTION * reference else "normal"
        if disc.flag == "reduced":
            disc.notes.append(f"middle height {disc.heights_mm['middle']:.1f} mm < {REDUCED_FRACTION:.0%} of the "
                              f"other discs' median {reference:.1f} mm: possible degeneration")


def disc_spaces(bodies: dict, grid: Grid, disc_mask: np.ndarray | None = None) -> list[DiscSpace]:
    """All intervertebral spaces between adjacent complete bodies, with volumes when a disc label exists."""
    pairs = adjacent_pairs(bodies)
    discs = [disc_space(upper, lower, grid) for upper, lower in pairs]
    if disc_mask is not None and disc_mask.any():
        assign_disc_volumes(discs, pairs, disc_mask, grid)
    flag_reduced(discs)
    return discs
