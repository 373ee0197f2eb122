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
import vtk

from MSDTLib import io, landmarks, pipeline, surfaces, tissue
from MSDTLib.grid import Grid

AIR_HU, TISSUE_HU, LUNG_HU, TABLE_HU = -1000.0, 0.0, -900.0, 300.0
CORTEX_HU = 1000.0

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
    that: the tip lies [0, w + TIP_DEPTH_MM / 2] inside the face. Across the process the mean of a bar's
    voxel centres lies within half a voxel extent of the bar's axis.
    """
    def extent(direction):
        return float(np.abs(grid.ijk_to_ras[:3, :3].T @ direction).sum())

    across = [e for e in np.eye(3) if abs(e @ axis) < 0.5]
    return extent(axis) + landmarks.TIP_DEPTH_MM / 2, 0.5 * max(extent(e) for e in across)


GRIDS = {
    # 1 mm isotropic, axes along RAS: the tips are known exactly.
    "ras_1mm": dict(shape=(48, 96, 80), spacing=(1.0, 1.0, 1.0), rotation=0.0, lps=False),
    # LPS-ordered, anisotropic: ijk_to_ras = diag(-0.8, -0.8, 2.0) plus an offset.
    "lps_aniso": dict(shape=(24, 120, 100), spacing=(0.8, 0.8, 2.0), rotation=0.0, lps=True),
    # Oblique: the in-plane axes are rotated 15 degrees about S.
    "oblique_15deg": dict(shape=(48, 104, 96), spacing=(1.0, 1.0, 1.0), rotation=15.0, lps=False),
}
CENTRE = np.array([3.0, -20.0, 11.0])  # vertebra centre, RAS mm (a voxel centre of the two 1 mm grids)


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
    voxel_ml = abs(np.linalg.det(grid.ijk_to_ras[:3, :3])) / 1000.0
    assert vertebra.volume_ml == pytest.approx(len(positions) * voxel_ml, rel=1e-12)
    # Against the analytic union of the boxes: exact on the 1 mm grid (half-integer faces); the oblique grid
    # samples the faces at varying depths (within 1 %); the 2 mm slices of the LPS grid sample the 5-17 mm
    # tall boxes coarsely, so only its centroid (symmetric in x and z) is compared, to 0.1 mm.
    volume, centroid_offset = analytic_vertebra()
    exact = grid_name == "ras_1mm"
    if grid_name != "lps_aniso":
        assert vertebra.volume_ml == pytest.approx(volume / 1000.0, rel=1e-9 if exact else 0.01)
    np.testing.assert_allclose(vertebra.points["centroid"], CENTRE + centroid_offset, atol=1e-9 if exact else 0.1)

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


@pytest.mark.parametrize("step", [(0.0, 0.0, 20.0), (0.0, 5.0, 20.0)], ids=["straight", "tilted"])
def test_stacked_vertebrae_frames(step):
    """L1 above L2 above L3, stacked straight up, or with each level 5 mm more anterior (a 14 degree tilt).

    The vertebrae are integer translates of each other on the 1 mm grid, so every centroid moves by exactly
    ``step`` and the superior axis is ``step`` normalised; anterior is +y made orthogonal to it, and left
    (superior x anterior) stays -x in RAS.
    """
    step = np.asarray(step)
    centres = {31: CENTRE + step, 30: CENTRE, 29: CENTRE - step}
    grid = centred_grid((72, 104, 80), (1.0, 1.0, 1.0), CENTRE + [0.0, -6.0, 0.0])
    labels = spine_labels(grid, centres)
    vertebrae = landmarks.vertebra_landmarks(labels, grid, {29: "L3", 30: "L2", 31: "L1"})

    assert [v.level for v in vertebrae] == ["L1", "L2", "L3"]  # cranial to caudal
    _, centroid_offset = analytic_vertebra()
    superior = step / np.linalg.norm(step)
    anterior = np.array([0.0, 1.0, 0.0]) - superior[1] * superior
    anterior /= np.linalg.norm(anterior)
    for vertebra, value in zip(vertebrae, (31, 30, 29), strict=True):
        np.testing.assert_allclose(vertebra.points["centroid"], centres[value] + centroid_offset, atol=1e-9)
        np.testing.assert_allclose(vertebra.frame.superior, superior, atol=1e-9)
        np.testing.assert_allclose(vertebra.frame.anterior, anterior, atol=1e-9)
        np.testing.assert_allclose(vertebra.frame.left, [-1.0, 0.0, 0.0], atol=1e-9)
        assert vertebra.frame.superior[2] > 0.95 and vertebra.frame.anterior[1] > 0.95
        centroid = vertebra.points["centroid"]
        assert vertebra.points["transverse_left"][0] < centroid[0] - 25
        assert vertebra.points["transverse_right"][0] > centroid[0] + 25
        # The spinous tip is the most posterior midline voxel in the vertebra's own (tilted) frame.
        assert (vertebra.points["spinous"] - centroid) @ anterior < -30


# ------------------------------------------------------------------------------------------- skin depth

BODY_BOX = ((-36.5, -40.5, -20.5), (36.5, 34.5, 20.5))  # soft tissue around the vertebra, offsets (mm)


def ct_of_trunk_box(grid: Grid, body_box=BODY_BOX) -> np.ndarray:
    """Voxel-centre sampled CT: a soft-tissue box in air, with the vertebra at 1000 HU inside."""
    points = voxel_centres(grid.shape, grid.ijk_to_ras)
    image = np.full(grid.shape, AIR_HU)
    image[in_box(points - CENTRE, *body_box)] = TISSUE_HU
    parts = vertebra_part_masks(points, CENTRE)
    image[parts["body"] | parts["spinous"] | parts["transverse"]] = CORTEX_HU
    return image


@pytest.mark.parametrize("grid_name", list(GRIDS))
def test_skin_depth_to_posterior_face(grid_name):
    """Depth along -anterior to where the interpolated body mask falls to 0.5.

    On an axis-aligned grid the mask is 1 at the last inside voxel centre y_in and 0 one spacing s further
    back; linear interpolation crosses 0.5 exactly half-way, at y_in - s/2, the voxel boundary (= the box
    face where the face lies on a voxel boundary). The expected depth of a landmark at y is y - (y_in - s/2),
    exact up to rounding. On the oblique grid the mask's face is a staircase, which may move the crossing by
    up to half a voxel: there the depth is compared with the geometric face to 0.5 mm.
    """
    grid = make_grid(grid_name)
    points = voxel_centres(grid.shape, grid.ijk_to_ras)
    inside = in_box(points - CENTRE, *BODY_BOX)
    body = tissue.body_mask(ct_of_trunk_box(grid), grid, "ct").mask
    np.testing.assert_array_equal(body, inside)  # the box is its own envelope, corners included

    labels = spine_labels(grid, {30: CENTRE})
    (vertebra,) = landmarks.vertebra_landmarks(labels, grid, {30: "L2"}, body)
    if grid_name == "oblique_15deg":
        face_y, tolerance = CENTRE[1] + BODY_BOX[0][1], 0.5
    else:
        spacing_y = float(np.abs(grid.ijk_to_ras[1, :3]).max())
        face_y, tolerance = points[inside][:, 1].min() - spacing_y / 2, 1e-5
    assert abs(face_y - (CENTRE[1] + BODY_BOX[0][1])) <= 0.4 + 1e-9  # the sampled face is near the designed one
    for name in landmarks.LANDMARK_NAMES:
        point = vertebra.points[name]
        depth = vertebra.skin_depth_mm[name]
        assert depth == pytest.approx(point[1] - face_y, abs=tolerance), name
        np.testing.assert_allclose(vertebra.skin_points[name], [point[0], face_y, point[2]], atol=tolerance)
        # depth_along_ray on its own agrees with what vertebra_landmarks recorded.
        alone, _ = landmarks.depth_along_ray(body, grid, point, np.array([0.0, -1.0, 0.0]))
        assert alone == pytest.approx(depth, abs=1e-9)
    if grid_name == "ras_1mm":  # the numbers themselves: the spinous tip lies 29.5 mm, the face 40.5 mm back
        assert vertebra.skin_depth_mm["spinous"] == pytest.approx(11.0, abs=1e-5)


def test_depth_along_oblique_ray_and_exits():
    """A ray at 45 degrees in the y-z plane meets the posterior face after sqrt(2) times its y distance
    (the direction need not be a unit vector); a ray that starts outside the body gives NaN."""
    grid = make_grid("ras_1mm")
    body = in_box(voxel_centres(grid.shape, grid.ijk_to_ras) - CENTRE, *BODY_BOX)
    face_y = CENTRE[1] + BODY_BOX[0][1]  # -60.5: a voxel boundary of the 1 mm grid
    start = CENTRE + [0.0, -30.0, 5.0]  # 10.5 mm in front of the posterior face, 25.5 mm above the bottom
    depth, exit_point = landmarks.depth_along_ray(body, grid, start, np.array([0.0, -3.0, -3.0]))
    assert depth == pytest.approx((start[1] - face_y) * math.sqrt(2), abs=1e-5)
    np.testing.assert_allclose(exit_point, [start[0], face_y, start[2] - (start[1] - face_y)], atol=1e-5)
    # Anteriorly: the anterior face at CENTRE + 34.5.
    depth, _ = landmarks.depth_along_ray(body, grid, start, np.array([0.0, 1.0, 0.0]))
    assert depth == pytest.approx(CENTRE[1] + BODY_BOX[1][1] - start[1], abs=1e-5)
    outside = CENTRE + [0.0, -45.0, 0.0]
    assert math.isnan(landmarks.depth_along_ray(body, grid, outside, np.array([0.0, -1.0, 0.0]))[0])


def test_skin_depth_nan_when_body_leaves_the_image_posteriorly():
    """The body runs off the posterior edge of the image: the skin behind the spine is not in the field of
    view, so no depth can be measured; the depths must be NaN (not the distance to the image edge)."""
    grid = make_grid("ras_1mm")
    cut_box = ((BODY_BOX[0][0], -100.5, BODY_BOX[0][2]), BODY_BOX[1])
    points = voxel_centres(grid.shape, grid.ijk_to_ras)
    body = tissue.body_mask(ct_of_trunk_box(grid, cut_box), grid, "ct").mask
    assert body[:, 0, :].any()  # j = 0 is the posterior edge of this RAS grid
    np.testing.assert_array_equal(body, in_box(points - CENTRE, *cut_box))
    (vertebra,) = landmarks.vertebra_landmarks(spine_labels(grid, {30: CENTRE}), grid, {30: "L2"}, body)
    assert all(math.isnan(vertebra.skin_depth_mm[name]) for name in landmarks.LANDMARK_NAMES)
    assert vertebra.skin_points == {}
    depth, exit_point = landmarks.depth_along_ray(body, grid, vertebra.points["spinous"], np.array([0, -1.0, 0]))
    assert math.isnan(depth) and exit_point is None


# -------------------------------------------------------------------------------- skin on a CT-like phantom
#
# A sphere of soft tissue (radius 24 mm) holding an air-filled "lung" (an ellipsoid), lying in air 6 mm above
# a 3 mm table plate (posterior of it, the patient being supine). LPS-ordered grid, 1 x 1 x 1.25 mm voxels.

SPHERE_CENTRE = np.array([5.0, 10.0, -30.0])
SPHERE_RADIUS = 24.0
LUNG_CENTRE, LUNG_AXES = SPHERE_CENTRE + [-6.0, 2.0, 3.0], np.array([7.0, 9.0, 12.0])
TABLE_GAP, TABLE_THICKNESS = 6.0, 3.0
TABLE_TOP_Y = SPHERE_CENTRE[1] - SPHERE_RADIUS - TABLE_GAP


def skin_grid() -> Grid:
    return centred_grid((48, 68, 62), (1.0, 1.0, 1.25), SPHERE_CENTRE + [0.0, -4.0, 0.0], lps=True)


def in_sphere(points, centre=SPHERE_CENTRE, radius=SPHERE_RADIUS) -> np.ndarray:
    return np.sum((points - centre) ** 2, axis=-1) <= radius**2


def in_lung(points, shrink: float = 0.0) -> np.ndarray:
    return np.sum(((points - LUNG_CENTRE) / (LUNG_AXES - shrink)) ** 2, axis=-1) <= 1.0


def in_table(points) -> np.ndarray:
    return (points[..., 1] <= TABLE_TOP_Y) & (points[..., 1] >= TABLE_TOP_Y - TABLE_THICKNESS)


def ct_phantom(grid: Grid, seed: int = 7) -> np.ndarray:
    def hounsfield(points):
        value = np.full(points.shape[:-1], AIR_HU)
        value[in_sphere(points)] = TISSUE_HU
        value[in_lung(points)] = LUNG_HU
        value[in_table(points)] = TABLE_HU
        return value

    return render(grid, hounsfield) + np.random.default_rng(seed).normal(0.0, 20.0, grid.shape)


def mr_phantom(grid: Grid, seed: int = 11) -> np.ndarray:
    """Tissue 300 to 600 (a coil shading along S), no signal from air, the lung or the table; Rician noise
    (sigma 4: the background magnitude averages 5)."""
    def signal(points):
        value = np.zeros(points.shape[:-1])
        tissue_mask = in_sphere(points) & ~in_lung(points)
        shading = np.clip((points[..., 2] - SPHERE_CENTRE[2]) / SPHERE_RADIUS, -1.0, 1.0)
        value[tissue_mask] = (450.0 + 150.0 * shading)[tissue_mask]
        return value

    rng = np.random.default_rng(seed)
    clean = render(grid, signal)
    return np.hypot(clean + rng.normal(0.0, 4.0, grid.shape), rng.normal(0.0, 4.0, grid.shape))


def check_body_envelope(mask: np.ndarray, grid: Grid, volume_tolerance: float) -> float:
    """One connected component, lung inside, table outside, volume near the sphere's; returns the error."""
    from scipy import ndimage

    points = voxel_centres(grid.shape, grid.ijk_to_ras)
    assert ndimage.label(mask)[1] == 1
    assert mask[in_lung(points, shrink=1.5)].all()  # the air-filled cavity is filled
    assert not mask[in_table(points)].any()
    assert not mask[~in_sphere(points, radius=SPHERE_RADIUS + 1.5)].any()
    volume_ml = mask.sum() * grid.voxel_volume_mm3 / 1000.0
    error = volume_ml / sphere_volume_ml(SPHERE_RADIUS) - 1.0
    assert abs(error) <= volume_tolerance, f"body volume {volume_ml:.2f} ml, error {100 * error:.2f} %"
    return error


def test_ct_body_mask_fills_lung_and_drops_table():
    grid = skin_grid()
    image = ct_phantom(grid)
    points = voxel_centres(grid.shape, grid.ijk_to_ras)
    # The phantom is what it claims: the lung is dark and the table bright in the image itself.
    assert (image[in_lung(points, shrink=1.5)] < tissue.CT_SKIN_THRESHOLD_HU).all()
    assert (image[in_table(points)] > tissue.CT_SKIN_THRESHOLD_HU).all()
    result = tissue.body_mask(image, grid, "ct")
    assert result.threshold == tissue.CT_SKIN_THRESHOLD_HU
    check_body_envelope(result.mask, grid, 0.02)


def test_mr_body_mask_with_half_way_threshold():
    """The MR envelope (opening, largest component, slice-wise filling) on Rician-noise data, with the
    threshold half-way between background and the mean tissue (about 230): volume within 3 %."""
    grid = skin_grid()
    image = mr_phantom(grid)
    result = tissue.body_mask(image, grid, "mr", threshold=(5.0 + 450.0) / 2)
    check_body_envelope(result.mask, grid, 0.03)


def test_mr_body_mask_otsu():
    grid = skin_grid()
    image = mr_phantom(grid)
    result = tissue.body_mask(image, grid, "mr")
    assert 20.0 < result.threshold < 300.0  # between the background (~5) and the darkest tissue (300)
    check_body_envelope(result.mask, grid, 0.03)


# ------------------------------------------------------------------ the Anatomy pipeline and surface export


@pytest.fixture(scope="module")
def ct_phantom_twin():
    """The CT phantom through build_anatomy_twin on its own scene (built once for the tests below)."""
    from MSDTLib.app import new_scene, shutdown_scene

    scene = new_scene()
    grid = skin_grid()
    image = sitk_image(ct_phantom(grid), grid)
    volume_node = io.volume_node_from_image(scene, image, "phantom")
    result = pipeline.build_anatomy_twin(scene, volume_node, None, pipeline.AnatomyOptions(modality="ct"),
                                         progress=lambda *_: None)
    yield grid, volume_node, result
    shutdown_scene(scene)


def test_pipeline_skin_of_sphere(ct_phantom_twin):
    grid, volume_node, result = ct_phantom_twin
    np.testing.assert_allclose(io.node_ijk_to_ras(volume_node), grid.ijk_to_ras, atol=1e-9)  # geometry kept
    skin = result.skin
    assert skin["modality"] == "ct" and skin["threshold"] == tissue.CT_SKIN_THRESHOLD_HU
    assert skin["volume_ml"] == pytest.approx(sphere_volume_ml(SPHERE_RADIUS), rel=0.02)
    assert skin["fov_cap_area_cm2"] == 0.0  # the sphere lies inside the field of view
    assert skin["area_cm2"] == pytest.approx(sphere_area_cm2(SPHERE_RADIUS), rel=0.03)
    assert skin["surface_volume_ml"] == pytest.approx(sphere_volume_ml(SPHERE_RADIUS), rel=0.03)
    polydata = result.skin_model_node.GetPolyData()
    assert surfaces.open_edge_count(polydata) == 0
    assert surfaces.euler_characteristic(polydata) == 2  # one closed surface: the lung left no inner shell
    # The surface sits where the sphere is: every vertex within 0.6 mm (half a voxel) of the analytic sphere.
    radii = np.linalg.norm(surfaces.points_array(polydata) - SPHERE_CENTRE, axis=1)
    assert np.abs(radii - SPHERE_RADIUS).max() < 0.6


def read_surface(path, clean: bool = True) -> vtk.vtkPolyData:
    reader = vtk.vtkSTLReader() if str(path).endswith(".stl") else vtk.vtkOBJReader()
    reader.SetFileName(str(path))
    reader.Update()
    if not clean:
        return reader.GetOutput()
    merge = vtk.vtkCleanPolyData()
    merge.SetInputConnection(reader.GetOutputPort())
    merge.Update()
    return merge.GetOutput()


def signed_volume_mm3(polydata: vtk.vtkPolyData) -> float:
    """Sum of the tetrahedra spanned by the origin and each triangle: positive when normals point outwards."""
    from vtk.util.numpy_support import vtk_to_numpy

    cells = vtk_to_numpy(polydata.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    p = surfaces.points_array(polydata)[cells]
    return float(np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum() / 6.0)


def test_export_stl_obj_ras_and_lps(ct_phantom_twin, tmp_path):
    _, _, result = ct_phantom_twin
    ras = surfaces.export_segments(result.skin_segmentation, tmp_path / "ras", ("stl", "obj"), "RAS")
    lps = surfaces.export_segments(result.skin_segmentation, tmp_path / "lps", ("stl", "obj"), "LPS")
    assert [p.name for p in ras] == [p.name for p in lps] == ["skin.stl", "skin.obj"]

    expected_ml = sphere_volume_ml(SPHERE_RADIUS)
    for path in (ras[0], lps[0]):
        mesh = read_surface(path)
        assert mesh.GetNumberOfPolys() > 1000
        assert surfaces.open_edge_count(mesh) == 0
        assert surfaces.enclosed_volume_ml(mesh) == pytest.approx(expected_ml, rel=0.03)
        assert signed_volume_mm3(mesh) / 1000.0 == pytest.approx(expected_ml, rel=0.03)  # outward normals

    # LPS = RAS with x and y negated, point for point (the writer keeps the triangle order).
    ras_points = surfaces.points_array(read_surface(ras[0], clean=False))
    lps_points = surfaces.points_array(read_surface(lps[0], clean=False))
    assert ras_points.shape == lps_points.shape
    np.testing.assert_array_equal(lps_points, ras_points * [-1.0, -1.0, 1.0])
    # and the RAS file is really in RAS: its centre is the sphere's.
    np.testing.assert_allclose(ras_points.mean(axis=0), SPHERE_CENTRE, atol=0.5)

    for stl, obj in ((ras[0], ras[1]), (lps[0], lps[1])):
        stl_mesh, obj_mesh = read_surface(stl), read_surface(obj)
        assert obj_mesh.GetNumberOfPolys() == stl_mesh.GetNumberOfPolys()
        assert surfaces.open_edge_count(obj_mesh) == 0
        np.testing.assert_allclose(obj_mesh.GetBounds(), stl_mesh.GetBounds(), atol=1e-3)
    assert read_surface(lps[1]).GetBounds()[0] == pytest.approx(-read_surface(ras[1]).GetBounds()[1], abs=1e-3)


# ----------------------------------------------------------------------------------------------- bone

CORTEX_MM = 2.0


def bone_phantom(grid: Grid, centre, outer_radius: float, shape: str, marrow_hu: float, seed: int = 5):
    """A bone in soft tissue: cortex (1000 HU, 2 mm) around marrow. ``shape`` "sphere" is a closed shell;
    "tube" is a cylinder along S cut open by both ends of the field of view, so its marrow reaches the image
    border and only a slice-wise fill can close it. Returns the image and each voxel centre's radius."""
    def radius(points):
        offsets = points - centre
        if shape == "tube":
            offsets = offsets[..., :2]
        return np.linalg.norm(offsets, axis=-1)

    def hounsfield(points):
        r = radius(points)
        value = np.full(points.shape[:-1], TISSUE_HU)
        value[r <= outer_radius] = CORTEX_HU
        value[r <= outer_radius - CORTEX_MM] = marrow_hu
        return value

    image = render(grid, hounsfield) + np.random.default_rng(seed).normal(0.0, 20.0, grid.shape)
    return image, radius(voxel_centres(grid.shape, grid.ijk_to_ras))


@pytest.mark.parametrize("shape", ["sphere", "tube"])
@pytest.mark.parametrize("marrow_hu", [220.0, 20.0], ids=["trabecular", "fatty"])
def test_bone_mask_fills_marrow_and_drops_specks(shape, marrow_hu):
    """Trabecular marrow (220 HU) lies between the bone threshold and the cortical seed level, so it must be
    reached through the cortex; fatty marrow (20 HU) lies below the threshold and must come in by filling
    (slice by slice for the tube, whose marrow reaches the image border). Either way the mask is the whole
    bone, volume within 5 % of the outer surface's analytic volume; a lone 1000 HU voxel is dropped.

    With noise sigma 20 HU, both marrow levels are at least 4.5 sigma from the threshold (120 HU).
    """
    centre = np.array([-4.0, 12.0, 7.0])
    if shape == "sphere":
        grid = centred_grid((60, 60, 60), (0.8, 0.8, 0.8), centre, lps=True)
        outer = 20.0
        expected_ml = sphere_volume_ml(outer)
    else:
        grid = centred_grid((40, 48, 48), (0.8, 0.8, 0.8), centre)
        outer = 15.0
        expected_ml = math.pi * outer**2 * grid.shape[0] * 0.8 / 1000.0  # the tube runs through all slices
    image, radius = bone_phantom(grid, centre, outer, shape, marrow_hu)
    speck = (3, 3, 3)
    assert radius[speck] > outer + 5.0  # far from the bone, so closing cannot join it
    image[speck] = CORTEX_HU
    marrow = radius <= outer - CORTEX_MM - 0.5
    below = image[marrow] < tissue.CT_BONE_THRESHOLD_HU
    assert below.all() if marrow_hu < tissue.CT_BONE_THRESHOLD_HU else not below.any()
    assert np.median(image[marrow]) < tissue.CT_BONE_SEED_HU

    result = tissue.bone_mask(image, grid)
    assert result.threshold == tissue.CT_BONE_THRESHOLD_HU
    assert result.mask[marrow].all()
    assert not result.mask[speck]
    assert not result.mask[radius > outer + 1.0].any()  # soft tissue stays out
    volume_ml = result.mask.sum() * grid.voxel_volume_mm3 / 1000.0
    assert volume_ml == pytest.approx(expected_ml, rel=0.05)
