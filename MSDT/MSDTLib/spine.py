"""Vertebral-body geometry from a vertebra label map (pure numpy): body separated from the posterior
elements, a local frame, superior and inferior endplate planes, and body heights.

All positions are RAS millimetres. For each vertebra the frame of :mod:`MSDTLib.landmarks` (superior along
the spine, anterior, left) gives coordinates (u = left, a = anterior, s = superior) around the centroid.

* Body: in a midline slab (|u| <= 5 mm) the anterior-posterior occupancy profile runs body, spinal canal
  (empty), arch. The body is what lies anterior to the canal and within the lateral reach of the body's
  anterior 60 % (so pedicle roots and transverse processes that reach forward are left out). A label without a canal (a body-only label,
  the sacrum) is used whole, with a note.
* Endplates: the body's footprint in the (u, a) plane is cut into columns one voxel wide; the top and bottom
  voxel of each column in its central part (inner 70 % of the footprint, away from rims and osteophytes) are
  fitted with a plane each (least squares, one trimming pass). On CT the column heights are first moved to
  the sub-voxel edge the grey levels show (halfway between the bright endplate and the darker disc), so that
  tilts below a voxel over the body width are measured too. The body axis is the mean of the two plane
  normals; the fit is repeated once in that refined frame.
* Heights: distance along the body axis between the superior and inferior endplate planes, in the
  mid-sagittal plane at 85 % (anterior), 50 % (middle) and 15 % (posterior) of the body's depth from its
  posterior wall. The planes are fitted to voxel faces (voxel centres lie half a voxel inside the surface), so
  heights are not quantised to the voxel size; a central ("codfish") endplate depression lowers the middle
  height only as far as it tilts the fitted planes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .grid import Grid
from .landmarks import VertebraFrame, spine_frames, vertebra_voxels

MIDLINE_HALF_WIDTH_MM = 5.0
CENTRAL_FRACTION = 0.7
MIN_EDGE_CONTRAST = 60.0  # HU between endplate and disc for a grey-level edge to be trusted
HEIGHT_POSITIONS = {"anterior": 0.85, "middle": 0.5, "posterior": 0.15}  # fraction of depth from the back wall


@dataclass
class Endplate:
    """A fitted endplate plane: centre (RAS mm), unit normal pointing cranially, fit residual (mm)."""

    center: np.ndarray
    normal: np.ndarray
    rms_mm: float
    n_columns: int


@dataclass
class VertebralBody:
    """Geometry of one vertebral body."""

    level: str
    label: int
    points: np.ndarray              # RAS of the body voxels (N, 3)
    kji: np.ndarray                 # array indices of the body voxels (N, 3)
    frame: VertebraFrame            # superior = body axis (mean endplate normal)
    center: np.ndarray              # middle of the body: mid-sagittal AP midpoint, LR midpoint, between endplates
    superior: Endplate
    inferior: Endplate
    depth_mm: float                 # anterior-posterior extent at mid-height
    width_mm: float
    heights_mm: dict[str, float] = field(default_factory=dict)
    separated: bool = True          # posterior elements removed (spinal canal found)
    truncated: bool = False         # cut by the field of view: endplates and heights are unreliable
    notes: list[str] = field(default_factory=list)

    def mask(self, shape: tuple[int, int, int]) -> np.ndarray:
        """Boolean mask (k, j, i) of the body voxels on a grid of ``shape``."""
        mask = np.zeros(shape, bool)
        mask[tuple(self.kji.T)] = True
        return mask

    @property
    def height_difference_ratio(self) -> float:
        """(max - min) / max of the three heights: wedge or crush deformity (Genant-style ratio)."""
        values = list(self.heights_mm.values())
        return float((max(values) - min(values)) / max(values)) if values and max(values) > 0 else float("nan")


def _local(points: np.ndarray, origin: np.ndarray, frame: VertebraFrame) -> np.ndarray:
    """(u, a, s) = (left, anterior, superior) coordinates of RAS points around ``origin``."""
    offsets = points - origin
    return np.stack([offsets @ frame.left, offsets @ frame.anterior, offsets @ frame.superior], axis=1)


def voxel_extent_along(grid: Grid, direction: np.ndarray) -> float:
    """Length (mm) of a voxel projected on a unit direction (its size along that direction for aligned grids)."""
    axes = grid.ijk_to_ras[:3, :3]
    return float(np.linalg.norm(axes.T @ direction))


def body_selection(points: np.ndarray, centroid: np.ndarray, frame: VertebraFrame, bin_mm: float):
    """Boolean selection of the vertebral-body points (anterior to the spinal canal), and whether a canal
    was found (without one every point is selected)."""
    everything = np.ones(len(points), bool)
    uas = _local(points, centroid, frame)
    midline = np.abs(uas[:, 0]) <= max(MIDLINE_HALF_WIDTH_MM, bin_mm)
    if midline.sum() < 10:
        return everything, False
    a = uas[midline, 1]
    edges = np.arange(a.max(), a.min() - bin_mm, -bin_mm)[::-1]
    counts, edges = np.histogram(a, bins=edges)
    counts, edges = counts[::-1], edges[::-1]  # from anterior to posterior
    reference = np.median(counts[: max(3, int(15.0 / bin_mm))])
    empty = np.flatnonzero(counts < 0.15 * reference)
    # A canal needs an arch behind it: at least 5 % of the midline voxels posterior to the gap.
    if empty.size == 0 or empty[0] < 2 or counts[empty[0]:].sum() < 0.05 * counts.sum():
        return everything, False
    cut = edges[empty[0]]  # anterior edge of the first empty bin (the posterior wall of the body)
    front = uas[:, 1] > cut
    # Laterally the body ends where its anterior part ends: pedicle roots and transverse processes that
    # reach forward past the canal's front wall lie outside that width.
    anterior_part = uas[:, 1] > cut + 0.4 * (uas[:, 1].max() - cut)
    half_width = np.abs(uas[anterior_part, 0]).max() + bin_mm if anterior_part.any() else np.inf
    return front & (np.abs(uas[:, 0]) <= half_width), True


def _columns(uas: np.ndarray, cell_mm: float):
    """Group (u, a, s) points by column (u, a) cell: returns cell keys, top s and bottom s per column."""
    cells = np.floor(uas[:, :2] / cell_mm).astype(np.int64)
    keys, inverse = np.unique(cells, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    top = np.full(len(keys), -np.inf)
    bottom = np.full(len(keys), np.inf)
    np.maximum.at(top, inverse, uas[:, 2])
    np.minimum.at(bottom, inverse, uas[:, 2])
    centers = (keys + 0.5) * cell_mm
    return centers, top, bottom


def _central(centers: np.ndarray) -> np.ndarray:
    """Columns inside the inner CENTRAL_FRACTION of the footprint (elliptic, around its middle)."""
    low, high = centers.min(axis=0), centers.max(axis=0)
    middle, half = (low + high) / 2, np.maximum((high - low) / 2, 1e-6)
    radius = np.sqrt((((centers - middle) / half) ** 2).sum(axis=1))
    return radius <= CENTRAL_FRACTION


def _fit_plane(uv: np.ndarray, height: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares plane s = c0 + c1 u + c2 a with one pass dropping residuals over 2.5 robust sigmas."""
    design = np.column_stack([np.ones(len(uv)), uv])
    keep = np.ones(len(uv), bool)
    for _ in range(2):
        coefficients, *_ = np.linalg.lstsq(design[keep], height[keep], rcond=None)
        residuals = height - design @ coefficients
        sigma = 1.4826 * np.median(np.abs(residuals[keep] - np.median(residuals[keep]))) + 1e-9
        keep = np.abs(residuals) <= max(2.5 * sigma, 1e-6)
        keep |= ~keep.any()
    rms = float(np.sqrt(np.mean(residuals[keep] ** 2)))
    return coefficients, rms


def _endplate(coefficients, center_ua, origin, frame, rms, n) -> Endplate:
    c0, cu, ca = coefficients
    local_normal = np.array([-cu, -ca, 1.0]) / np.sqrt(cu**2 + ca**2 + 1.0)
    normal = local_normal[0] * frame.left + local_normal[1] * frame.anterior + local_normal[2] * frame.superior
    s = c0 + cu * center_ua[0] + ca * center_ua[1]
    center = origin + center_ua[0] * frame.left + center_ua[1] * frame.anterior + s * frame.superior
    return Endplate(center, normal / np.linalg.norm(normal), rms, n)


def _frame_from_axis(axis: np.ndarray) -> VertebraFrame:
    anterior = np.array([0.0, 1.0, 0.0]) - axis[1] * axis
    anterior /= np.linalg.norm(anterior)
    return VertebraFrame(axis, anterior, np.cross(axis, anterior))


def refine_with_image(image: np.ndarray, grid: Grid, center: np.ndarray, frame: VertebraFrame,
                      columns: np.ndarray, heights: np.ndarray, outward: float,
                      min_contrast: float = MIN_EDGE_CONTRAST) -> np.ndarray:
    """Sub-voxel endplate heights (mm along the axis) from the grey levels around the label's surface.

    Along each column the image is sampled (trilinear) from 1.5 voxels inside to 1.5 voxels outside the
    label surface; the edge is where the profile, after its inner maximum (the bright endplate), falls below
    halfway between that maximum and the darkest value outside (the disc). Partial volume puts this halfway
    crossing where the boundary really is, so tilts smaller than a voxel over the body width are seen.
    Columns without a clear edge (contrast < ``min_contrast``) keep the label height.
    """
    from scipy import ndimage

    voxel = voxel_extent_along(grid, frame.superior)
    step = voxel / 12.0
    offsets = np.arange(-1.5 * voxel, 1.5 * voxel + step / 2, step)
    bases = center + columns[:, :1] * frame.left + columns[:, 1:2] * frame.anterior
    along = heights[:, None] + outward * offsets[None, :]
    samples = bases[:, None, :] + along[..., None] * frame.superior
    kji = grid.kji_from_ras(samples.reshape(-1, 3)).T
    profile = ndimage.map_coordinates(image, kji, order=1, mode="nearest").reshape(len(columns), len(offsets))
    inner = offsets <= 0
    peak = np.argmax(np.where(inner[None, :], profile, -np.inf), axis=1)
    inside = profile[np.arange(len(columns)), peak]
    outside = profile[:, offsets >= voxel].min(axis=1)
    threshold = (inside + outside) / 2
    below = (profile < threshold[:, None]) & (np.arange(len(offsets))[None, :] > peak[:, None])
    first = np.argmax(below, axis=1)
    usable = below.any(axis=1) & (inside - outside >= min_contrast)
    rows = np.arange(len(columns))
    before = np.clip(first - 1, 0, None)
    fraction = (profile[rows, before] - threshold) / np.maximum(profile[rows, before] - profile[rows, first], 1e-9)
    edge = offsets[before] + np.clip(fraction, 0.0, 1.0) * step
    return np.where(usable, heights + outward * edge, heights)


def _fit_surface(columns, heights, outward, image, grid, center, frame):
    """Plane through column heights; with an image its tilt comes from the sub-voxel grey-level edges while
    its level stays the label's (the edge's halfway level is shifted by a thin bright cortex, the label's
    majority boundary is not)."""
    if image is None:
        return _fit_plane(columns, heights)
    refined = refine_with_image(image, grid, center, frame, columns, heights, outward)
    coefficients, rms = _fit_plane(columns, refined)
    coefficients[0] += float(np.mean(heights - refined))
    return coefficients, rms


def fit_endplates(points: np.ndarray, frame: VertebraFrame, grid: Grid, image: np.ndarray | None = None):
    """Superior and inferior endplate planes of body points, and the frame refined to the mean normal.

    With ``image`` (CT), column heights are refined to sub-voxel edges (:func:`refine_with_image`)."""
    cell = float(grid.spacing.min())
    center = points.mean(axis=0)
    for _ in range(2):
        uas = _local(points, center, frame)
        columns, top, bottom = _columns(uas, cell)
        central = _central(columns)
        if central.sum() < 6:
            central = np.ones(len(columns), bool)
        half = voxel_extent_along(grid, frame.superior) / 2
        upper, upper_rms = _fit_surface(columns[central], top[central] + half, +1.0, image, grid, center, frame)
        lower, lower_rms = _fit_surface(columns[central], bottom[central] - half, -1.0, image, grid, center, frame)
        middle = columns[central].mean(axis=0)
        superior = _endplate(upper, middle, center, frame, upper_rms, int(central.sum()))
        inferior = _endplate(lower, middle, center, frame, lower_rms, int(central.sum()))
        axis = superior.normal + inferior.normal
        frame = _frame_from_axis(axis / np.linalg.norm(axis))
    return superior, inferior, frame


def plane_offset(endplate: Endplate, point: np.ndarray, direction: np.ndarray) -> float:
    """Signed distance (mm) from ``point`` along unit ``direction`` to the endplate plane."""
    return float(np.dot(endplate.center - point, endplate.normal) / np.dot(direction, endplate.normal))


def sagittal_extent(points: np.ndarray, frame: VertebraFrame, grid: Grid) -> tuple[float, float, float]:
    """(back, front) anterior coordinates (mm, around the points' centroid) of the mid-sagittal slab, and
    the lateral width (mm) of the points."""
    uas = _local(points, points.mean(axis=0), frame)
    midline = np.abs(uas[:, 0]) <= max(2.0, float(grid.spacing.min()))
    mid = uas[midline] if midline.sum() >= 3 else uas
    width = float(np.ptp(uas[:, 0]) + voxel_extent_along(grid, frame.left))
    return float(mid[:, 1].min()), float(mid[:, 1].max()), width


def heights_between(upper: Endplate, lower: Endplate, center: np.ndarray, frame: VertebraFrame,
                    back: float, front: float) -> dict[str, float]:
    """Distances (mm) along the frame's axis from ``lower`` to ``upper`` plane at HEIGHT_POSITIONS."""
    heights = {}
    for name, fraction in HEIGHT_POSITIONS.items():
        point = center + (back + fraction * (front - back)) * frame.anterior
        heights[name] = plane_offset(upper, point, frame.superior) - plane_offset(lower, point, frame.superior)
    return heights


def body_heights(points: np.ndarray, frame: VertebraFrame, grid: Grid, superior: Endplate,
                 inferior: Endplate) -> tuple[dict[str, float], float, float]:
    """Anterior, middle and posterior body heights (mm), body depth and width (mm)."""
    back, front, width = sagittal_extent(points, frame, grid)
    depth = front - back + voxel_extent_along(grid, frame.anterior)
    return heights_between(superior, inferior, points.mean(axis=0), frame, back, front), depth, width


def body_center(points: np.ndarray, frame: VertebraFrame, grid: Grid, superior: Endplate,
                inferior: Endplate) -> np.ndarray:
    """Middle of the body (RAS mm): halfway between its front and back in the mid-sagittal plane (pedicle
    roots, lateral and posterior, do not shift it as they shift the voxel centroid), halfway between its
    left and right sides, and halfway between the two endplate planes."""
    centroid = points.mean(axis=0)
    back, front, _ = sagittal_extent(points, frame, grid)
    lateral = _local(points, centroid, frame)[:, 0]
    middle = centroid + (back + front) / 2 * frame.anterior + (lateral.min() + lateral.max()) / 2 * frame.left
    between = (plane_offset(superior, middle, frame.superior) + plane_offset(inferior, middle, frame.superior)) / 2
    return middle + between * frame.superior


def vertebral_bodies(labels: np.ndarray, grid: Grid, label_levels: dict[int, str],
                     image: np.ndarray | None = None) -> dict[str, VertebralBody]:
    """Bodies of every vertebra in ``labels`` (cranial to caudal) with frames, endplates and heights;
    with a CT ``image`` the endplates are located to sub-voxel precision from its grey levels."""
    voxels = vertebra_voxels(labels, label_levels)
    positions = {level: grid.ras_from_kji(kji) for level, (_, kji) in voxels.items()}
    frames = spine_frames({level: points.mean(axis=0) for level, points in positions.items()})
    bodies = {}
    for level, (value, kji) in voxels.items():
        points = positions[level]
        selection, separated = body_selection(points, points.mean(axis=0), frames[level], float(grid.spacing.min()))
        body = points[selection]
        superior, inferior, frame = fit_endplates(body, frames[level], grid, image)
        heights, depth, width = body_heights(body, frame, grid, superior, inferior)
        notes = [] if separated else ["no spinal canal found: the whole label is used as the body"]
        truncated = grid.touches_ends(kji)
        if truncated:
            notes.append("cut by the field of view: endplates and heights are not measured")
        center = body_center(body, frame, grid, superior, inferior)
        bodies[level] = VertebralBody(level, value, body, kji[selection], frame, center, superior, inferior, depth,
                                      width, heights, separated, truncated, notes)
    return bodies
