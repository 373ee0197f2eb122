"""Anatomy algorithms against synthetic phantoms whose answer is known exactly.

Every phantom is defined in patient space (RAS, mm: +x Right, +y Anterior, +z Superior) and sampled onto a
voxel grid, so the same anatomy can be placed on an isotropic RAS grid, an anisotropic LPS-ordered grid and
an oblique grid. CT/MR phantoms are rendered with partial volume (each voxel is the mean of 4x4x4 sub-samples)
and noise from a fixed seed, so thresholds meet the blurred edges a scanner produces.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from MSDTLib import landmarks
from MSDTLib.grid import Grid

AIR_HU, TISSUE_HU, LUNG_HU, TABLE_HU = -1000.0, 0.0, -900.0, 300.0
CORTEX_HU, MARROW_HU = 1000.0, 150.0

# ------------------------------------------------------------------------------------------- phantom helpers


def ijk_to_ras(spacing_ijk, origin_ras, rotation_deg_about_s: float = 0.0, lps: bool = False) -> np.ndarray:
    """4x4 IJK-to-RAS: columns are the i, j, k axes (optionally LPS-ordered and rotated about S)."""
    angle = math.radians(rotation_deg_about_s)
    rotation = np.array([[math.cos(angle), -math.sin(angle), 0.0],
                         [math.sin(angle), math.cos(angle), 0.0],
                         [0.0, 0.0, 1.0]])
    axes = np.diag([-1.0, -1.0, 1.0]) if lps else np.eye(3)
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ axes @ np.diag(spacing_ijk)
    matrix[:3, 3] = origin_ras
    return matrix


def voxel_centres(shape, matrix: np.ndarray) -> np.ndarray:
    """RAS of every voxel centre, array (k, j, i, 3); computed here, independently of Grid."""
    k, j, i = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    ijk = np.stack([i, j, k], axis=-1)
    return ijk @ matrix[:3, :3].T + matrix[:3, 3]


def centred_grid(shape, spacing_ijk, centre_ras, rotation_deg_about_s: float = 0.0, lps: bool = False) -> Grid:
    """Grid whose central voxel (shape // 2) lies exactly at ``centre_ras``."""
    matrix = ijk_to_ras(spacing_ijk, (0.0, 0.0, 0.0), rotation_deg_about_s, lps)
    middle = np.array([shape[2] // 2, shape[1] // 2, shape[0] // 2], dtype=float)
    matrix[:3, 3] = np.asarray(centre_ras, float) - matrix[:3, :3] @ middle
    return Grid(tuple(shape), matrix)


def in_box(points: np.ndarray, low, high) -> np.ndarray:
    return np.all((points >= np.asarray(low, float)) & (points <= np.asarray(high, float)), axis=-1)


def render(grid: Grid, value_at, supersample: int = 4) -> np.ndarray:
    """Partial-volume image: every voxel is the mean of ``value_at`` over supersample^3 sub-voxel points."""
    centres = voxel_centres(grid.shape, grid.ijk_to_ras)
    steps = (np.arange(supersample) + 0.5) / supersample - 0.5
    total = np.zeros(grid.shape)
    for di in steps:
        for dj in steps:
            for dk in steps:
                total += value_at(centres + grid.ijk_to_ras[:3, :3] @ np.array([di, dj, dk]))
    return total / supersample**3


def sitk_image(array: np.ndarray, grid: Grid) -> sitk.Image:
    """SimpleITK image (LPS geometry) whose voxels land where ``grid`` says in RAS."""
    image = sitk.GetImageFromArray(array.astype(np.float32))
    lps = np.diag([-1.0, -1.0, 1.0]) @ grid.ijk_to_ras[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps / spacing).flatten().tolist())
    image.SetOrigin((np.diag([-1.0, -1.0, 1.0]) @ grid.ijk_to_ras[:3, 3]).tolist())
    return image


def sphere_volume_ml(radius: float) -> float:
    return 4.0 / 3.0 * math.pi * radius**3 / 1000.0


def sphere_area_cm2(radius: float) -> float:
    return 4.0 * math.pi * radius**2 / 100.0


# ------------------------------------------------------------------------------------- synthetic vertebrae
#
# Boxes in the vertebra's own offsets from its centre (mm, RAS): a body anterior, a spinous-process bar on
# the midline ending posteriorly at y = -SPINOUS_END, and a transverse bar across both sides ending at
# x = -/+TRANSVERSE_END (patient left / right). Half-integer bounds keep voxel centres of the 1 mm grids off
# the faces, so which voxels are inside is never a rounding question.

BODY = ((-12.5, -0.5, -8.5), (12.5, 20.5, 8.5))
SPINOUS_END = 30.5
SPINOUS = ((-2.5, -SPINOUS_END, -3.5), (2.5, 0.5, 3.5))
TRANSVERSE_END = 30.5
TRANSVERSE_Y = (-12.5, -8.5)
TRANSVERSE = ((-TRANSVERSE_END, TRANSVERSE_Y[0], -2.5), (TRANSVERSE_END, TRANSVERSE_Y[1], 2.5))


def vertebra_part_masks(points: np.ndarray, centre) -> dict[str, np.ndarray]:
    offsets = points - np.asarray(centre, float)
    return {"body": in_box(offsets, *BODY), "spinous": in_box(offsets, *SPINOUS),
            "transverse": in_box(offsets, *TRANSVERSE)}


def known_tips(centre) -> dict[str, np.ndarray]:
    """Geometric tips: the centres of the end faces of the process bars."""
    c = np.asarray(centre, float)
    middle_y = sum(TRANSVERSE_Y) / 2
    return {"spinous": c + [0.0, -SPINOUS_END, 0.0],
            "transverse_left": c + [-TRANSVERSE_END, middle_y, 0.0],
            "transverse_right": c + [TRANSVERSE_END, middle_y, 0.0]}


def spine_labels(grid: Grid, centres: dict[int, tuple]) -> np.ndarray:
    points = voxel_centres(grid.shape, grid.ijk_to_ras)
    labels = np.zeros(grid.shape, np.int16)
    for value, centre in centres.items():
        parts = vertebra_part_masks(points, centre)
        labels[parts["body"] | parts["spinous"] | parts["transverse"]] = value
    return labels


def tip_tolerances(grid: Grid, axis: np.ndarray) -> tuple[float, float]:
    """How far (mm) the library's tip may lie from the geometric tip, along ``axis`` and across it.

    Along the process the outermost voxel centres lie within one voxel extent w of the end face (w = the
    voxel's projection on the axis: the spacing on an aligned grid, more on an oblique one), and the library
    averages every voxel within TIP_DEPTH_MM of the extreme, which moves the tip inwards by at most half of
    that: the tip lies [0, w + TIP_DEPTH_MM / 2] inside the face. Across the process the voxel centres of a
    symmetric bar are sampled symmetrically up to one voxel.
    """
    projected = np.abs(grid.ijk_to_ras[:3, :3].T @ axis).sum()
    return float(projected + landmarks.TIP_DEPTH_MM / 2), float(grid.spacing.max())


GRIDS = {
    # 1 mm isotropic, axes along RAS: the tips are known exactly.
    "ras_1mm": dict(shape=(48, 96, 80), spacing=(1.0, 1.0, 1.0), rotation=0.0, lps=False),
    # LPS-ordered, anisotropic: ijk_to_ras = diag(-0.8, -0.8, 2.0) plus an offset.
    "lps_aniso": dict(shape=(24, 120, 100), spacing=(0.8, 0.8, 2.0), rotation=0.0, lps=True),
    # Oblique: the in-plane axes are rotated 15 degrees about S.
    "oblique_15deg": dict(shape=(48, 104, 96), spacing=(1.0, 1.0, 1.0), rotation=15.0, lps=False),
}
CENTRE = np.array([3.0, -20.0, 11.0])  # vertebra centre, RAS mm (a voxel centre of the grids above)


def make_grid(name: str, centre=CENTRE) -> Grid:
    spec = GRIDS[name]
    # Centre the field of view a little anterior of the vertebra centre, so both processes fit in.
    return centred_grid(spec["shape"], spec["spacing"], np.asarray(centre) + [0.0, -6.0, 0.0],
                        spec["rotation"], spec["lps"])


def analytic_vertebra() -> tuple[float, np.ndarray]:
    """Volume (mm^3) and centroid offset (mm) of the union of the three boxes, by inclusion-exclusion.

    With half-integer box bounds the voxel centres of a 1 mm grid inside a box number exactly its volume and
    average exactly its centre, so on that grid these are also the exact voxel count and voxel mean.
    """
    def box_and(a, b):
        return (np.maximum(a[0], b[0]), np.minimum(a[1], b[1]))

    def moments(box):
        low, high = np.asarray(box[0], float), np.asarray(box[1], float)
        volume = float(np.prod(np.clip(high - low, 0.0, None)))
        return volume, volume * (low + high) / 2

    terms = [(+1, BODY), (+1, SPINOUS), (+1, TRANSVERSE), (-1, box_and(BODY, SPINOUS)),
             (-1, box_and(BODY, TRANSVERSE)), (-1, box_and(SPINOUS, TRANSVERSE)),
             (+1, box_and(box_and(BODY, SPINOUS), TRANSVERSE))]
    volume = sum(sign * moments(box)[0] for sign, box in terms)
    first_moment = sum(sign * moments(box)[1] for sign, box in terms)
    return volume, first_moment / volume


INWARD = {"spinous": np.array([0.0, 1.0, 0.0]), "transverse_left": np.array([1.0, 0.0, 0.0]),
          "transverse_right": np.array([-1.0, 0.0, 0.0])}


@pytest.mark.parametrize("grid_name", list(GRIDS))
def test_single_vertebra_landmarks(grid_name):
    grid = make_grid(grid_name)
    labels = spine_labels(grid, {30: CENTRE})
    (vertebra,) = landmarks.vertebra_landmarks(labels, grid, {30: "L2"})
    positions = voxel_centres(grid.shape, grid.ijk_to_ras)[labels == 30]

    assert vertebra.level == "L2" and vertebra.label == 30
    assert vertebra.voxel_count == len(positions)
    np.testing.assert_allclose(vertebra.points["centroid"], positions.mean(axis=0), atol=1e-6)
    # A lone vertebra keeps the patient axes.
    np.testing.assert_allclose(vertebra.frame.superior, [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(vertebra.frame.anterior, [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(vertebra.frame.left, [-1, 0, 0], atol=1e-12)
    # Sampling the boxes on any of these grids keeps the volume within 3 %; on the 1 mm grid it is exact.
    volume, centroid_offset = analytic_vertebra()
    exact = grid_name == "ras_1mm"
    assert vertebra.volume_ml == pytest.approx(volume / 1000.0, rel=1e-9 if exact else 0.03)
    # and the centroid within 0.5 mm of the union's analytic centroid (exact on the 1 mm grid).
    np.testing.assert_allclose(vertebra.points["centroid"], CENTRE + centroid_offset, atol=1e-9 if exact else 0.5)

    tips = known_tips(CENTRE)
    for name, tip in tips.items():
        found = vertebra.points[name]
        inward = INWARD[name]
        along_tolerance, across_tolerance = tip_tolerances(grid, inward)
        along = float((found - tip) @ inward)
        across = np.linalg.norm((found - tip) - along * inward)
        assert -1e-6 <= along <= along_tolerance, (name, found, tip)
        assert across <= across_tolerance, (name, found, tip)

    left, right, centroid = (vertebra.points[n] for n in ("transverse_left", "transverse_right", "centroid"))
    assert left[0] < centroid[0] - 25 < centroid[0] + 25 < right[0]  # patient left is -x in RAS
    assert vertebra.points["spinous"][1] < centroid[1] - 25


def test_tips_exact_on_1mm_grid():
    """On the aligned 1 mm grid the outermost voxel layer sits 0.5 mm inside each end face, and with
    TIP_DEPTH_MM = 1.5 the layer 1 mm further in is averaged too (2 mm would not be): the tip is the mean of
    the layers 0.5 and 1.5 mm inside the face, i.e. exactly 1.0 mm inside it, centred on the bar's axis."""
    assert landmarks.TIP_DEPTH_MM == pytest.approx(1.5)
    grid = make_grid("ras_1mm")
    (vertebra,) = landmarks.vertebra_landmarks(spine_labels(grid, {30: CENTRE}), grid, {30: "L2"})
    for name, tip in known_tips(CENTRE).items():
        np.testing.assert_allclose(vertebra.points[name], tip + 1.0 * INWARD[name], atol=1e-9)
    volume, centroid_offset = analytic_vertebra()
    assert vertebra.voxel_count == round(volume) == 11095
    np.testing.assert_allclose(vertebra.points["centroid"], CENTRE + centroid_offset, atol=1e-9)
