"""Bone density of the vertebral bodies: grey levels in a sphere at each body centroid, trabecular bone only.

The MS-DT paper extends tissue characterisation into the vertebral bodies by reading the grey-level
distribution inside a 3D sphere centred at each vertebra's centroid. Here the sphere is centred at the
centroid of the vertebral BODY mask (not the whole vertebra with its arch) and is kept inside trabecular bone:
the body mask is eroded by a physical distance (:func:`trabecular_region`) so that the cortical shell and
the partial-volume edge are left out, and the sphere only counts voxels of that eroded region. If the sphere
does not fit (a small or thin body) its radius is shrunk and the result says so.

On CT the values are Hounsfield units and L1 feeds the opportunistic osteoporosis screen of Pickhardt et al.
(:func:`osteoporosis_screen`). MR grey levels are not calibrated, so the screen refuses them with a reason.

Arrays are indexed (k, j, i); geometry comes from :class:`MSDTLib.grid.Grid` (any spacing and orientation).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from . import labels
from .errors import MSDTError
from .grid import Grid
from .tables import Column, table_from_rows

PICKHARDT_REFERENCE = (
    "Pickhardt PJ, Pooler BD, Lauder T, del Rio AM, Bruce RJ, Binkley N. Opportunistic screening for "
    "osteoporosis using abdominal computed tomography scans obtained for other indications. "
    "Ann Intern Med. 2013;158(8):588-595. doi:10.7326/0003-4819-158-8-201304160-00003"
)
OSTEOPOROSIS_HU = 110.0  # L1 trabecular attenuation <= 110 HU: likely osteoporosis (specificity > 90 %)
NORMAL_HU = 160.0  # >= 160 HU: likely normal (sensitivity > 90 % for ruling osteoporosis out)
CATEGORY_OSTEOPOROSIS = "likely osteoporosis"
CATEGORY_INDETERMINATE = "indeterminate (osteopenia possible)"
CATEGORY_NORMAL = "likely normal"

FOCAL_SCLEROSIS_HU = 400.0  # trabecular bone stays below; denser voxels are bone islands or sclerotic foci
MIN_TRABECULAR_FRACTION = 0.5  # a sphere "fits" when at least this share of its voxels is trabecular bone


@dataclass(frozen=True)
class SphereStats:
    """Grey levels of the voxels whose centre lies inside a sphere (optionally restricted to a mask).

    ``mean``/``median``/``std`` are None when no voxel qualifies (``n_voxels`` 0); ``std`` is the population
    standard deviation (ddof 0).
    """

    mean: float | None
    median: float | None
    std: float | None
    n_voxels: int
    radius_mm: float
    center_ras: tuple[float, float, float]


@dataclass(frozen=True)
class BodyDensity:
    """Density of one vertebral body.

    ``hu_*``, ``n_voxels`` and ``radius_mm`` describe the sphere at the body centroid restricted to trabecular
    bone; ``trabecular_*`` describe the whole trabecular region (the eroded body mask). Values are None, never
    NaN, when they cannot be measured; ``reason`` then says why. ``note`` explains a shrunk sphere or a
    fallback. ``radius_mm`` is None when the whole trabecular region was used instead of a sphere.
    """

    level: str | None
    hu_mean: float | None
    hu_median: float | None
    hu_std: float | None
    n_voxels: int
    radius_mm: float | None
    center_ras: tuple[float, float, float] | None
    trabecular_hu_mean: float | None = None
    trabecular_hu_median: float | None = None
    trabecular_n_voxels: int = 0
    cortex_mm: float = 3.0
    reason: str | None = None
    note: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------ helpers

def _check_grid(array: np.ndarray, grid: Grid, what: str) -> None:
    if tuple(np.shape(array)) != tuple(grid.shape):
        raise MSDTError(f"The {what} has shape {tuple(np.shape(array))} but the grid is {tuple(grid.shape)} "
                        "(k, j, i); they must describe the same voxels.")


def _stats(values: np.ndarray) -> tuple[float | None, float | None, float | None]:
    if values.size == 0:
        return None, None, None
    values = values.astype(np.float64, copy=False)
    return float(np.mean(values)), float(np.median(values)), float(np.std(values))


def _sphere_box(grid: Grid, center_ras: np.ndarray, radius_mm: float) -> tuple[slice, slice, slice] | None:
    """Index ranges (k, j, i) of the voxels that may lie inside the sphere, clipped to the grid."""
    ras_to_ijk = np.linalg.inv(grid.ijk_to_ras[:3, :3])
    half_ijk = radius_mm * np.linalg.norm(ras_to_ijk, axis=1)  # extent of the sphere along each index axis
    centre_kji = grid.kji_from_ras(center_ras)
    half_kji = half_ijk[::-1]
    low = np.maximum(np.floor(centre_kji - half_kji).astype(int), 0)
    high = np.minimum(np.ceil(centre_kji + half_kji).astype(int) + 1, np.asarray(grid.shape))
    if np.any(high <= low):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))


def sphere_mask(grid: Grid, center_ras, radius_mm: float) -> np.ndarray:
    """Boolean mask (k, j, i) of the voxels whose centre lies within ``radius_mm`` of ``center_ras`` (mm)."""
    if not radius_mm > 0:
        raise MSDTError(f"The sphere radius must be positive (got {radius_mm} mm).")
    center = np.asarray(center_ras, dtype=float).reshape(3)
    mask = np.zeros(grid.shape, dtype=bool)
    box = _sphere_box(grid, center, radius_mm)
    if box is None:
        return mask
    axes = (np.arange(s.start, s.stop, dtype=float) for s in box)
    kji = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    distance_sq = np.sum((grid.ras_from_kji(kji) - center) ** 2, axis=-1)
    mask[box] = distance_sq <= radius_mm**2 * (1.0 + 1e-12)
    return mask


# --------------------------------------------------------------------------------------------------- API

def sphere_stats(image: np.ndarray, grid: Grid, center_ras, radius_mm: float = 8.0,
                 within: np.ndarray | None = None) -> SphereStats:
    """Mean, median and standard deviation of ``image`` over the voxels whose centre lies in the sphere.

    Distances are measured in mm in RAS, so anisotropic and oblique grids give a true sphere. ``within``
    (boolean, same grid) restricts the voxels further, e.g. to trabecular bone.
    """
    _check_grid(image, grid, "image")
    selected = sphere_mask(grid, center_ras, radius_mm)
    if within is not None:
        _check_grid(within, grid, "restricting mask")
        selected &= np.asarray(within, dtype=bool)
    mean, median, std = _stats(np.asarray(image)[selected])
    center = tuple(float(v) for v in np.asarray(center_ras, dtype=float).reshape(3))
    return SphereStats(mean, median, std, int(np.count_nonzero(selected)), float(radius_mm), center)


def trabecular_region(body_mask: np.ndarray, grid: Grid, cortex_mm: float = 3.0) -> np.ndarray:
    """The body mask eroded by ``cortex_mm`` (mm), leaving out the cortical shell and partial-volume edge.

    A voxel is kept when its centre is farther than ``cortex_mm`` from the centre of every voxel outside
    the mask (Euclidean distance transform in mm, so the erosion is the same physical depth along every axis
    of an anisotropic grid). The grid border counts as outside. Example: on a 3 mm grid ``cortex_mm=3``
    or ``4`` removes the one layer of voxels that touch the outside through a face (a 6-connected erosion).
    """
    _check_grid(body_mask, grid, "body mask")
    if cortex_mm < 0:
        raise MSDTError(f"The cortex thickness must not be negative (got {cortex_mm} mm).")
    mask = np.asarray(body_mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    # Work in the mask's bounding box padded by one outside voxel: the distance to the nearest outside voxel
    # is the same as on the whole grid, at a fraction of the cost.
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    core = (slice(1, -1),) * 3
    distance = ndimage.distance_transform_edt(np.pad(mask[box], 1), sampling=grid.spacing_kji)[core]
    trabecular = np.zeros_like(mask)
    trabecular[box] = mask[box] & (distance > cortex_mm)
    return trabecular


def _without_focal_sclerosis(image: np.ndarray, used: np.ndarray, limit: float | None):
    """Drop sphere voxels denser than ``limit`` HU (bone islands, sclerotic foci, as a reader placing the
    ROI by hand avoids them); returns the mask and a note when any were dropped (None if all would be)."""
    if limit is None:
        return used, None
    dense = used & (image > limit)
    count = int(np.count_nonzero(dense))
    if count == 0 or count == int(np.count_nonzero(used)):
        return used, None
    return used & ~dense, (f"{count} voxel(s) above {limit:g} HU (focal sclerosis or bone island) were left out "
                           "of the sphere, as a reader placing the region by hand would avoid them.")


def body_density(image: np.ndarray, grid: Grid, body_mask: np.ndarray, radius_mm: float = 8.0,
                 cortex_mm: float = 3.0, level: str | None = None, step_mm: float = 1.0,
                 min_radius_mm: float | None = None, center_ras=None,
                 exclude_above_hu: float | None = FOCAL_SCLEROSIS_HU) -> BodyDensity:
    """Trabecular density of one vertebral body from a sphere at the centroid of ``body_mask`` (or at
    ``center_ras``, e.g. the midpoint of the fitted endplate centres).

    The sphere counts only voxels of :func:`trabecular_region`. If fewer than half of its voxels are
    trabecular the radius is reduced by ``step_mm`` until it fits or reaches ``min_radius_mm`` (default: the
    largest voxel spacing); ``note`` records why. If even that sphere holds no trabecular voxel the whole
    trabecular region is used (``radius_mm`` None). An empty body or trabecular region gives None values
    and a ``reason``.
    """
    _check_grid(image, grid, "image")
    _check_grid(body_mask, grid, "body mask")
    if not radius_mm > 0 or not step_mm > 0:
        raise MSDTError(f"Sphere radius and step must be positive (got {radius_mm} mm and {step_mm} mm).")
    mask = np.asarray(body_mask, dtype=bool)
    image = np.asarray(image)
    what = f"vertebral body {level}" if level else "vertebral body"
    if not mask.any():
        return BodyDensity(level, None, None, None, 0, None, None, cortex_mm=cortex_mm,
                           reason=f"The {what} mask is empty: nothing to measure.")
    center = (np.asarray(center_ras, float) if center_ras is not None
              else grid.ras_from_kji(np.argwhere(mask).mean(axis=0)))
    center_ras = tuple(float(v) for v in center)
    trabecular = trabecular_region(mask, grid, cortex_mm)
    if not trabecular.any():
        return BodyDensity(level, None, None, None, 0, None, center_ras, cortex_mm=cortex_mm,
                           reason=f"The {what} ({int(mask.sum())} voxels) is thinner than twice the "
                                  f"{cortex_mm:g} mm cortex margin: no trabecular bone is left after the "
                                  "erosion, so its density cannot be measured without cortical bone.")
    trab_mean, trab_median, _ = _stats(image[trabecular])
    n_trabecular = int(np.count_nonzero(trabecular))
    smallest = float(min_radius_mm) if min_radius_mm is not None else float(np.max(grid.spacing))
    smallest = min(smallest, radius_mm)

    radius, note, used = float(radius_mm), None, None
    first_fraction = None
    while True:
        sphere = sphere_mask(grid, center, radius)
        inside = sphere & trabecular
        n_sphere, n_inside = int(np.count_nonzero(sphere)), int(np.count_nonzero(inside))
        fraction = n_inside / n_sphere if n_sphere else 0.0
        if first_fraction is None:
            first_fraction = fraction
        if fraction >= MIN_TRABECULAR_FRACTION:
            used = inside
            break
        if radius <= smallest + 1e-9:
            used = inside if n_inside else None
            break
        radius = max(round(radius - step_mm, 6), smallest)

    if used is None:
        note = (f"No trabecular voxel lies within {radius:g} mm of the body centroid (the smallest sphere "
                f"tried); the whole trabecular region ({n_trabecular} voxels) was used instead.")
        return BodyDensity(level, trab_mean, trab_median, _stats(image[trabecular])[2], n_trabecular, None,
                           center_ras, trab_mean, trab_median, n_trabecular, cortex_mm, None, note)
    if radius != float(radius_mm) or fraction < MIN_TRABECULAR_FRACTION:
        note = (f"A {radius_mm:g} mm sphere does not fit inside the trabecular bone of the {what} "
                f"({first_fraction:.0%} of its voxels are more than {cortex_mm:g} mm inside the body, "
                f"{MIN_TRABECULAR_FRACTION:.0%} needed)")
        if fraction >= MIN_TRABECULAR_FRACTION:
            note += f"; the radius was reduced to {radius:g} mm."
        else:
            note += (f"; even at the smallest radius, {radius:g} mm, only {fraction:.0%} is trabecular: the "
                     f"value rests on {int(np.count_nonzero(used))} voxels.")
    used, focal_note = _without_focal_sclerosis(image, used, exclude_above_hu)
    if focal_note:
        note = f"{note} {focal_note}" if note else focal_note
    mean, median, std = _stats(image[used])
    return BodyDensity(level, mean, median, std, int(np.count_nonzero(used)), radius, center_ras,
                       trab_mean, trab_median, n_trabecular, cortex_mm, None, note)


def body_densities(image: np.ndarray, grid: Grid, body_labels: np.ndarray, levels: dict[int, str],
                   radius_mm: float = 8.0, cortex_mm: float = 3.0) -> list[BodyDensity]:
    """:func:`body_density` for every level of a vertebral-body label map, cranial to caudal.

    ``levels`` maps label values to levels ("L1", or names such as "vertebrae_L1"); a level missing from
    the label map gives a result with a ``reason``.
    """
    _check_grid(body_labels, grid, "body label map")
    results = []
    for value, name in levels.items():
        level = labels.vertebra_level(name) or name
        results.append(body_density(image, grid, np.asarray(body_labels) == value, radius_mm, cortex_mm,
                                    level=level))
    return sorted(results, key=lambda d: labels.VERTEBRA_ORDER.get(d.level, len(labels.VERTEBRA_ORDER)))


def osteoporosis_screen(l1_density: BodyDensity | float | None, modality: str = "ct") -> dict:
    """Opportunistic osteoporosis screen from L1 trabecular attenuation on CT (Pickhardt et al. 2013).

    <= 110 HU: likely osteoporosis; >= 160 HU: likely normal; in between: indeterminate (osteopenia
    possible). MR, or a missing/unmeasurable L1, gives ``hu`` and ``category`` None and a ``reason``.
    Thresholds apply to the mean HU of trabecular bone (the sphere mean of :func:`body_density`).
    """
    result = {"level": "L1", "hu": None, "category": None, "thresholds_hu": [OSTEOPOROSIS_HU, NORMAL_HU],
              "reason": None, "reference": PICKHARDT_REFERENCE}
    modality = str(modality).lower()
    if modality not in ("ct", "mr"):
        raise MSDTError(f"Unknown modality '{modality}'; expected 'ct' or 'mr'.")
    if isinstance(l1_density, BodyDensity) and l1_density.level not in (None, "L1"):
        raise MSDTError(f"The osteoporosis screen uses L1, but the density given is of {l1_density.level}.")
    if modality == "mr":
        result["reason"] = ("MR grey levels are not calibrated in Hounsfield units, so the CT attenuation "
                            "thresholds (110/160 HU at L1) do not apply; screening needs CT.")
        return result
    if l1_density is None:
        result["reason"] = "L1 is not in the label map or the field of view, so there is no L1 density."
        return result
    hu = l1_density.hu_mean if isinstance(l1_density, BodyDensity) else l1_density
    if hu is None or not math.isfinite(float(hu)):
        why = l1_density.reason if isinstance(l1_density, BodyDensity) and l1_density.reason else None
        result["reason"] = "The L1 density could not be measured" + (f": {why}" if why else ".")
        return result
    hu = float(hu)
    result["hu"] = round(hu, 1)
    if hu <= OSTEOPOROSIS_HU:
        result["category"] = CATEGORY_OSTEOPOROSIS
    elif hu >= NORMAL_HU:
        result["category"] = CATEGORY_NORMAL
    else:
        result["category"] = CATEGORY_INDETERMINATE
    return result


DENSITY_COLUMNS = (Column("level", kind=str), Column("hu_mean", "HU"), Column("hu_median", "HU"),
                   Column("hu_std", "HU"), Column("n_voxels", kind=int), Column("radius", "mm"),
                   Column("note", kind=str))


def density_row(density: BodyDensity) -> dict:
    """One table row of a :class:`BodyDensity` (keys are :data:`DENSITY_COLUMNS` names)."""
    return {"level": density.level or "", "hu_mean": density.hu_mean, "hu_median": density.hu_median,
            "hu_std": density.hu_std, "n_voxels": density.n_voxels, "radius": density.radius_mm,
            "note": density.reason or density.note or ""}


def density_table(scene, densities, name: str = "Vertebral body density"):
    """Table node, one row per vertebral body, columns with units; a value that could not be measured is
    NaN (a number column has no empty cell, and 0 would read as 0 HU) and the ``note`` column says why."""
    return table_from_rows(scene, name, DENSITY_COLUMNS, [density_row(d) for d in densities])


__all__ = ["BodyDensity", "SphereStats", "body_densities", "body_density", "density_table",
           "osteoporosis_screen", "sphere_mask", "sphere_stats", "trabecular_region"]
