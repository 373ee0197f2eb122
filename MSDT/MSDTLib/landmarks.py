"""Per-vertebra landmarks from a label map and their depth under the skin (pure numpy/scipy).

Each vertebra gets a local frame: superior along the spine (through the neighbouring centroids), anterior
the patient's anterior direction made orthogonal to it, left completing a right-handed frame. In that frame

* centroid: mean position of the vertebra's voxels (mm, RAS);
* spinous-process tip: the most posterior voxels within a midline slab (|left| <= 6 mm);
* transverse-process tips: the most lateral voxels on each side, among voxels posterior to the centroid.

Depth to skin is measured from each landmark posteriorly along the frame until the ray leaves the body
mask (linear interpolation of the mask, 0.5 crossing), as the skin distance a navigation workflow needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .grid import Grid
from .labels import VERTEBRA_ORDER

LANDMARK_NAMES = ("centroid", "spinous", "transverse_left", "transverse_right")
MIDLINE_HALF_WIDTH_MM = 6.0
TIP_DEPTH_MM = 1.5  # voxels this close to the extreme are averaged into the tip


@dataclass
class VertebraFrame:
    """Unit axes of a vertebra in RAS: superior, anterior, left."""

    superior: np.ndarray
    anterior: np.ndarray
    left: np.ndarray


@dataclass
class VertebraLandmarks:
    """Landmarks (RAS, mm) of one vertebra, its volume and the posterior depth of each landmark to the skin."""

    level: str
    label: int
    volume_ml: float
    voxel_count: int
    frame: VertebraFrame
    points: dict[str, np.ndarray]
    skin_depth_mm: dict[str, float] = field(default_factory=dict)
    skin_points: dict[str, np.ndarray] = field(default_factory=dict)
    truncated: bool = False  # the vertebra reaches the end of the field of view: landmarks may be cut


def vertebra_voxels(labels: np.ndarray, label_levels: dict[int, str]) -> dict[str, tuple[int, np.ndarray]]:
    """Array indices (N, 3) of every vertebra present, keyed by level and ordered cranial to caudal."""
    present = {}
    objects = ndimage.find_objects(labels.astype(np.int32))
    for value, level in label_levels.items():
        if value - 1 < len(objects) and objects[value - 1] is not None:
            box = objects[value - 1]
            local = np.argwhere(labels[box] == value)
            present[level] = (value, local + np.array([s.start for s in box]))
    return dict(sorted(present.items(), key=lambda item: VERTEBRA_ORDER[item[0]]))


def spine_frames(centroids: dict[str, np.ndarray]) -> dict[str, VertebraFrame]:
    """Local frames from the ordered centroids (cranial first); a lone vertebra uses the patient axes."""
    levels = list(centroids)
    points = np.array([centroids[level] for level in levels])
    frames = {}
    for index, level in enumerate(levels):
        if len(levels) == 1:
            superior = np.array([0.0, 0.0, 1.0])
        else:
            upper = points[max(index - 1, 0)]
            lower = points[min(index + 1, len(levels) - 1)]
            superior = upper - lower
            if superior[2] < 0:
                superior = -superior
            superior = superior / np.linalg.norm(superior)
        anterior = np.array([0.0, 1.0, 0.0]) - superior[1] * superior
        anterior /= np.linalg.norm(anterior)
        frames[level] = VertebraFrame(superior, anterior, np.cross(superior, anterior))
    return frames


def _tip(points_ras: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Mean of the points whose score lies within TIP_DEPTH_MM of the maximum score."""
    return points_ras[score >= score.max() - TIP_DEPTH_MM].mean(axis=0)


def landmarks_of_vertebra(points_ras: np.ndarray, centroid: np.ndarray, frame: VertebraFrame) -> dict:
    """Centroid, spinous tip and transverse tips from a vertebra's voxel positions (RAS, mm)."""
    offsets = points_ras - centroid
    lateral = offsets @ frame.left
    anterior = offsets @ frame.anterior
    midline = np.abs(lateral) <= MIDLINE_HALF_WIDTH_MM
    posterior_part = anterior <= 0
    landmarks = {"centroid": centroid}
    landmarks["spinous"] = _tip(points_ras[midline], -anterior[midline]) if midline.any() else centroid
    arch = points_ras[posterior_part] if posterior_part.any() else points_ras
    arch_lateral = lateral[posterior_part] if posterior_part.any() else lateral
    landmarks["transverse_left"] = _tip(arch, arch_lateral)
    landmarks["transverse_right"] = _tip(arch, -arch_lateral)
    return landmarks


def depth_along_ray(body: np.ndarray, grid: Grid, start_ras: np.ndarray, direction: np.ndarray,
                    step_mm: float = 0.25, max_mm: float = 400.0) -> tuple[float, np.ndarray | None]:
    """Distance (mm) from ``start_ras`` along ``direction`` to where the ray leaves the body mask.

    Returns (nan, None) when the ray leaves the image before it leaves the body (skin outside the field of
    view) or starts outside the body.
    """
    distances = np.arange(0.0, max_mm, step_mm)
    samples = start_ras + distances[:, None] * (direction / np.linalg.norm(direction))
    kji = grid.kji_from_ras(samples).T
    inside_image = np.all((kji >= -0.5) & (kji <= np.array(grid.shape)[:, None] - 0.5), axis=0)
    values = ndimage.map_coordinates(body.astype(np.float32), kji, order=1, mode="nearest")
    outside = np.flatnonzero((values < 0.5) | ~inside_image)
    if outside.size == 0 or outside[0] == 0 or not inside_image[outside[0]]:
        return float("nan"), None
    after = outside[0]
    before = after - 1
    fraction = (values[before] - 0.5) / max(values[before] - values[after], 1e-6)
    distance = distances[before] + fraction * step_mm
    return float(distance), start_ras + distance * direction / np.linalg.norm(direction)


def vertebra_landmarks(labels: np.ndarray, grid: Grid, label_levels: dict[int, str],
                       body: np.ndarray | None = None) -> list[VertebraLandmarks]:
    """Landmarks, volumes and (with a body mask) posterior skin depths of every vertebra in ``labels``."""
    voxels = vertebra_voxels(labels, label_levels)
    positions = {level: grid.ras_from_kji(kji) for level, (_, kji) in voxels.items()}
    centroids = {level: points.mean(axis=0) for level, points in positions.items()}
    frames = spine_frames(centroids)
    results = []
    for level, (value, kji) in voxels.items():
        points = landmarks_of_vertebra(positions[level], centroids[level], frames[level])
        result = VertebraLandmarks(level, value, len(kji) * grid.voxel_volume_mm3 / 1000.0, len(kji),
                                   frames[level], points)
        if body is not None:
            for name, point in points.items():
                depth, exit_point = depth_along_ray(body, grid, point, -frames[level].anterior)
                result.skin_depth_mm[name] = depth
                if exit_point is not None:
                    result.skin_points[name] = exit_point
        results.append(result)
    return results
