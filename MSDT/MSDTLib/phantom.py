"""Synthetic CT of a lumbar spine whose geometry and densities are known exactly (ground truth for tests).

:func:`build_spine_phantom` places vertebrae and discs in patient space (RAS, mm: +x patient Right,
+y Anterior, +z Superior), renders them onto a voxel grid (arrays indexed (k, j, i), a 4x4 IJK-to-RAS matrix)
and returns the image (HU), a label map (TotalSegmentator "total" ids) and the analytic truth
(:class:`VertebraTruth`, :class:`DiscTruth`, Cobb angle, lordosis).

Shapes (every vertebra has its own frame: right ``r``, anterior ``a``, cranial body axis ``u``, origin at the
body centre; coordinates (s_r, s_a, s_u) in mm):

* Vertebral body: the elliptic cylinder (s_r / 22)^2 + (s_a / 17)^2 <= 1 (width 44, depth 34) cut by two
  endplate planes. Superior plane: through (0, 0, H/2) with normal (0, sin(w/2), cos(w/2)); inferior plane:
  through (0, 0, -H/2) with normal (0, -sin(w/2), cos(w/2)), H = ``body_height_mm``, w = the wedge angle
  (``wedge_deg[level]``, the dihedral angle between the endplates; positive = anterior wedge, the usual
  compression fracture). The body axis ``u`` is the bisector of the two endplate normals; the body centre is
  the midpoint of the endplate centres ``body_center +- H/2 u``. Its volume is exactly pi * 22 * 17 * H.
* Heights are distances along the body axis between the endplate planes on the mid-sagittal line (s_r = 0),
  measured HEIGHT_INSET (10 %) of the depth inside the rims: anterior at s_a = +0.4 D, middle at s_a = 0,
  posterior at s_a = -0.4 D. So ``H -+ 0.8 D tan(w/2)`` anterior/posterior and exactly H in the middle:
  posterior - anterior = 1.6 D tan(w/2) (rim to rim it would be 2 D tan(w/2) ~ D tan(w)).
* Cortical shell: body minus the inner body (ellipse semi-axes and both endplates moved 1.5 mm inwards),
  700 HU. Trabecular HU = hu_center + hu_gradient_per_mm * s_a, linear along the body's AP axis, so the
  mean over any sphere centred on the body centre (inside the trabecular bone) is exactly hu_center.
* Posterior elements (same label as the body, 400 HU; none for S1): an elliptic lamina ring (5 mm thick)
  around the spinal canal (elliptic, 16 mm wide, 14 mm deep, touching the posterior wall, 15 HU CSF, not
  labelled), two pedicles (boxes 7 mm wide from the posterior third of the body to the ring), two
  transverse processes reaching 25 mm lateral of the pedicles and a spinous process reaching 30 mm behind
  the lamina, sloping caudally by 15 degrees.
* Disc between two vertebrae: the space between the inferior endplate plane of the upper body and the
  superior endplate plane of the lower body, inside an elliptic cylinder (44 x 34) around the disc axis
  ``normalize(n_inf(upper) + n_sup(lower))``. The disc axis passes through both endplate centres, which are
  ``disc_height_mm`` apart, so the middle height is exactly ``disc_height_mm``; the anterior/posterior heights
  follow the heights' definition above in the disc's frame, and the volume is exactly pi * 22 * 17 * middle
  height (the gap is linear across the ellipse).

Curves (angles of a direction v: coronal = atan2(v_x, v_z), sagittal = atan2(v_y, v_z), i.e. of its
projections on the coronal and sagittal planes; an endplate normal's angle equals that of the endplate's trace
in the plane):

* Scoliosis: the superior-endplate normals get coronal angles falling linearly from +cobb/2 at the first
  level to -cobb/2 at the last non-sacral level (S1 stays level). All normals of one vertebra share that
  coronal angle (the wedge tilts in the body's own sagittal plane), so the Cobb angle between the superior
  endplate of the first level and the inferior endplate of the last non-sacral level is cobb_deg exactly. The
  curve is convex to the patient's left; its apex is the middle level, or the middle disc for an even count.
* Lordosis: the superior-endplate normals get sagittal angles rising by lordosis/5 per level from L1 to S1
  (constant above L1), centred on zero, so S1's endplate faces anteriorly and the angle between the L1 and S1
  superior endplates is lordosis_deg exactly (concave posteriorly). Wedges turn the inferior endplate only,
  so the disc below opens anteriorly by the same angle and Cobb and lordosis stay exact.

Trunk: an elliptic cylinder (320 x 240 mm, vertical) around the spine, 40 HU, with a 15 mm fat layer
(-100 HU; inner ellipse semi-axes 15 mm smaller) and air (-1000 HU) outside. Discs 80 HU.

Rendering: every voxel takes the HU and label at its centre; wherever the tissue at a voxel centre differs
from one of its 26 neighbours the voxel is supersampled instead (supersample^3 points on a regular sub-grid):
image = mean sub-sample HU, label = majority sub-sample label (ties split by a checkerboard, so no side is
favoured). The linear trabecular gradient needs no supersampling: its voxel mean is its centre value.
Overlaps are resolved by priority: discs, then vertebrae cranial to caudal, then the canal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .labels import CLASS_TABLES, VERTEBRA_ORDER

DISC_LABEL = 201

# Anatomy (mm); vertical dimensions of the posterior elements are fractions of the body height H.
BODY_WIDTH_MM = 44.0
BODY_DEPTH_MM = 34.0
CORTEX_MM = 1.5
HEIGHT_INSET = 0.1
CANAL_WIDTH_MM = 16.0
CANAL_DEPTH_MM = 14.0
LAMINA_MM = 5.0
ARCH_U = (-0.25, 0.40)            # lamina ring, s_u range / H
PEDICLE_R = (8.0, 15.0)           # |s_r|
PEDICLE_A = (-26.0, -9.0)         # s_a
PEDICLE_U = (-0.15, 0.40)
TRANSVERSE_R = (13.0, 40.0)
TRANSVERSE_A = (-25.0, -19.0)
TRANSVERSE_U = (0.0, 0.35)
SPINOUS_HALF_WIDTH_MM = 3.0
SPINOUS_A = (-66.0, -31.0)        # root inside the lamina, tip 30 mm behind it
SPINOUS_ROOT_U = 0.075            # centre line height at the root / H
SPINOUS_HALF_HEIGHT = 0.2         # / H
SPINOUS_SLOPE_DEG = 15.0          # caudal slope of the centre line going posteriorly
TRUNK_SEMI_AXES_MM = (160.0, 120.0)
FAT_MM = 15.0
TRUNK_ANTERIOR_SHIFT_MM = 20.0    # the trunk axis lies this far anterior of the mean body centre
MARGIN_MM = 5.0

AIR_HU, FAT_HU, SOFT_TISSUE_HU = -1000.0, -100.0, 40.0
CORTEX_HU, ARCH_HU, DISC_HU, CSF_HU = 700.0, 400.0, 80.0, 15.0

# Tissue codes (voxels whose 26 neighbours carry one code need no supersampling).
_AIR, _FAT, _SOFT, _CANAL = 1, 2, 3, 4
_CORTEX, _TRABECULAR, _ARCH = 1, 2, 3     # vertebra regions
_INTEGRATION_STEP_MM = 0.5


# --------------------------------------------------------------------------------------------- truth


@dataclass
class VertebraTruth:
    """Exact geometry of one vertebra (RAS mm, degrees); see the module docstring for the definitions."""

    level: str
    label: int
    body_center: np.ndarray
    superior_normal: np.ndarray
    inferior_normal: np.ndarray
    superior_center: np.ndarray
    inferior_center: np.ndarray
    height_anterior_mm: float
    height_middle_mm: float
    height_posterior_mm: float
    coronal_tilt_deg: float
    sagittal_tilt_deg: float
    hu_center: float
    axes: np.ndarray              # 3x3, columns: the body's right, anterior and cranial (axis) unit vectors
    wedge_deg: float
    body_volume_ml: float         # analytic
    volume_ml: float              # as labelled: exact body + posterior elements (counted on 0.5 mm cells)


@dataclass
class DiscTruth:
    """Exact geometry of one intervertebral disc (mm, ml)."""

    upper: str
    lower: str
    height_anterior_mm: float
    height_middle_mm: float
    height_posterior_mm: float
    volume_ml: float
    center: np.ndarray            # midpoint of the two endplate centres
    axes: np.ndarray              # 3x3, columns: right, anterior, disc axis


@dataclass
class SpinePhantom:
    """A rendered phantom and its ground truth."""

    image: np.ndarray             # float32 HU, (k, j, i)
    labels: np.ndarray            # int16, (k, j, i): TotalSegmentator "total" vertebra ids, discs DISC_LABEL
    ijk_to_ras: np.ndarray        # 4x4
    class_table: dict[int, str]   # value -> name
    vertebrae: dict[str, VertebraTruth]   # cranial to caudal
    discs: dict[str, DiscTruth]           # "L1-L2", ...
    cobb_deg: float               # coronal angle: superior endplate of cobb_upper to inferior of cobb_lower
    cobb_upper: str
    cobb_lower: str
    cobb_apex: str                # a level, or a disc "L2-L3" when the curve has an even number of levels
    lordosis_deg: float           # sagittal angle: L1 to S1 superior endplates (NaN without both levels)

    def sitk_image(self) -> sitk.Image:
        """The HU image as a SimpleITK image (LPS geometry)."""
        return _to_sitk(self.image, self.ijk_to_ras)

    def sitk_labels(self) -> sitk.Image:
        """The label map as a SimpleITK image (LPS geometry)."""
        return _to_sitk(self.labels, self.ijk_to_ras)

    def write(self, folder: str | Path) -> tuple[Path, Path]:
        """Write ``image.nii.gz`` and ``labels.nii.gz`` into ``folder`` (created if needed)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = folder / "image.nii.gz", folder / "labels.nii.gz"
        sitk.WriteImage(self.sitk_image(), str(paths[0]), True)
        sitk.WriteImage(self.sitk_labels(), str(paths[1]), True)
        return paths


def _to_sitk(array: np.ndarray, ijk_to_ras: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    lps = np.diag([-1.0, -1.0, 1.0]) @ ijk_to_ras[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps / spacing).flatten().tolist())
    image.SetOrigin((np.diag([-1.0, -1.0, 1.0]) @ ijk_to_ras[:3, 3]).tolist())
    return image


def coronal_angle_deg(vector: np.ndarray) -> float:
    """Angle (degrees) of a direction's projection on the coronal (x-z) plane from +z, + to the right."""
    return math.degrees(math.atan2(vector[0], vector[2]))


def sagittal_angle_deg(vector: np.ndarray) -> float:
    """Angle (degrees) of a direction's projection on the sagittal (y-z) plane from +z, + anteriorly."""
    return math.degrees(math.atan2(vector[1], vector[2]))


# -------------------------------------------------------------------------------------------- frames


def _unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=float)
    return vector / np.linalg.norm(vector)


def _frame(axis: np.ndarray) -> np.ndarray:
    """Columns right, anterior, cranial of the frame whose cranial axis is ``axis`` (right = A x axis)."""
    u = _unit(axis)
    r = _unit(np.cross([0.0, 1.0, 0.0], u))
    return np.column_stack([r, np.cross(u, r), u])


def _normal(coronal_deg: float, sagittal_deg: float) -> np.ndarray:
    """Unit vector with the given coronal and sagittal projection angles (degrees), pointing cranially."""
    return _unit([math.tan(math.radians(coronal_deg)), math.tan(math.radians(sagittal_deg)), 1.0])


def _rotation(rotation_deg) -> np.ndarray:
    """Rotation about R, then A, then S (degrees, fixed axes)."""
    x, y, z = (math.radians(angle) for angle in rotation_deg)
    about_r = np.array([[1, 0, 0], [0, math.cos(x), -math.sin(x)], [0, math.sin(x), math.cos(x)]])
    about_a = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    about_s = np.array([[math.cos(z), -math.sin(z), 0], [math.sin(z), math.cos(z), 0], [0, 0, 1]])
    return about_s @ about_a @ about_r


# -------------------------------------------------------------------------------------------- solids


class _Solid:
    """An object in its own frame (origin, axes = columns r, a, u): local box and region/HU evaluation."""

    label = 0
    code_base = 0

    def __init__(self, origin: np.ndarray, axes: np.ndarray, lower, upper):
        self.origin, self.axes = np.asarray(origin, float), np.asarray(axes, float)
        self.lower, self.upper = np.asarray(lower, float), np.asarray(upper, float)

    def to_local(self, ras: np.ndarray) -> np.ndarray:
        return np.dot(ras, self.axes) - self.origin @ self.axes

    def to_ras(self, local: np.ndarray) -> np.ndarray:
        return np.dot(local, self.axes.T) + self.origin

    def corners(self) -> np.ndarray:
        """RAS of the 8 corners of the local bounding box."""
        pick = np.array([[b >> n & 1 for n in range(3)] for b in range(8)], dtype=bool)
        return self.to_ras(np.where(pick, self.upper, self.lower))

    def evaluate(self, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Region codes (0 = outside) and HU (float32) at local points (N, 3)."""
        raise NotImplementedError

    def codes(self, region: np.ndarray) -> np.ndarray:
        return self.code_base + region


def _in_ellipse(x, y, half_x, half_y) -> np.ndarray:
    return (x / half_x) ** 2 + (y / half_y) ** 2 <= 1.0


def _between(values, low, high) -> np.ndarray:
    return (values >= low) & (values <= high)


class _Vertebra(_Solid):
    """Body (+ posterior elements unless ``arch`` is False) of one vertebra, see the module docstring."""

    def __init__(self, label, code_base, center, axes, height, wedge_rad, hu_center, hu_gradient, arch):
        self.label, self.code_base, self.arch = label, code_base, arch
        self.height, self.hu_center, self.hu_gradient = height, hu_center, hu_gradient
        half = wedge_rad / 2
        self.sin, self.cos, self.tan = math.sin(half), math.cos(half), math.tan(half)
        top = height / 2 + abs(self.tan) * BODY_DEPTH_MM / 2 + 0.5
        lower = [-BODY_WIDTH_MM / 2, -BODY_DEPTH_MM / 2, -top]
        upper = [BODY_WIDTH_MM / 2, BODY_DEPTH_MM / 2, top]
        if arch:
            lower[:2] = -TRANSVERSE_R[1], SPINOUS_A[0]
            spinous_low = self._spinous_centre(SPINOUS_A[0]) - SPINOUS_HALF_HEIGHT * height
            lower[2] = min(lower[2], spinous_low - 0.5)
            upper[0] = TRANSVERSE_R[1]
        super().__init__(center, axes, lower, upper)

    def _spinous_centre(self, a):
        return SPINOUS_ROOT_U * self.height + math.tan(math.radians(SPINOUS_SLOPE_DEG)) * (a - SPINOUS_A[1])

    def _body(self, r, a, u, inset: float) -> np.ndarray:
        """Inside the body shrunk by ``inset`` mm (ellipse semi-axes and endplates moved inwards)."""
        half_h = self.height / 2
        return (_in_ellipse(r, a, BODY_WIDTH_MM / 2 - inset, BODY_DEPTH_MM / 2 - inset)
                & (self.sin * a + self.cos * (u - half_h) <= -inset)
                & (-self.sin * a + self.cos * (u + half_h) >= inset))

    def _posterior_elements(self, r, a, u) -> np.ndarray:
        h, side = self.height, np.abs(r)
        canal_a = -BODY_DEPTH_MM / 2 - CANAL_DEPTH_MM / 2
        half_w, half_d = CANAL_WIDTH_MM / 2, CANAL_DEPTH_MM / 2
        ring = (_between(u, ARCH_U[0] * h, ARCH_U[1] * h)
                & _in_ellipse(r, a - canal_a, half_w + LAMINA_MM, half_d + LAMINA_MM)
                & ~_in_ellipse(r, a - canal_a, half_w, half_d))
        pedicles = _between(side, *PEDICLE_R) & _between(a, *PEDICLE_A) & _between(u / h, *PEDICLE_U)
        transverse = (_between(side, *TRANSVERSE_R) & _between(a, *TRANSVERSE_A)
                      & _between(u / h, *TRANSVERSE_U))
        spinous = ((side <= SPINOUS_HALF_WIDTH_MM) & _between(a, *SPINOUS_A)
                   & (np.abs(u - self._spinous_centre(a)) <= SPINOUS_HALF_HEIGHT * h))
        return ring | pedicles | transverse | spinous

    def evaluate(self, local):
        r, a, u = local[:, 0], local[:, 1], local[:, 2]
        region = np.zeros(len(local), np.int16)
        body = np.flatnonzero(self._body(r, a, u, 0.0))
        region[body] = _CORTEX
        inner = body[self._body(r[body], a[body], u[body], CORTEX_MM)]
        region[inner] = _TRABECULAR
        if self.arch:
            rest = np.flatnonzero((region == 0) & (a < PEDICLE_A[1]))
            region[rest[self._posterior_elements(r[rest], a[rest], u[rest])]] = _ARCH
        hu = np.array([0.0, CORTEX_HU, 0.0, ARCH_HU], np.float32)[region]
        hu[inner] = self.hu_center + self.hu_gradient * a[inner]
        return region, hu


class _Disc(_Solid):
    """Space between two endplate planes (unit normals n pointing cranially through points p), inside an
    elliptic cylinder around the disc axis."""

    label = DISC_LABEL

    def __init__(self, code_base, center, axes, upper_plane, lower_plane):
        self.code_base = code_base
        (n1, p1), (n2, p2) = upper_plane, lower_plane
        self.n1, self.n2 = axes.T @ n1, axes.T @ n2
        self.d1, self.d2 = self.n1 @ (axes.T @ (p1 - center)), self.n2 @ (axes.T @ (p2 - center))
        reach1 = math.hypot(self.n1[0] * BODY_WIDTH_MM / 2, self.n1[1] * BODY_DEPTH_MM / 2)
        reach2 = math.hypot(self.n2[0] * BODY_WIDTH_MM / 2, self.n2[1] * BODY_DEPTH_MM / 2)
        top, bottom = (self.d1 + reach1) / self.n1[2], (self.d2 - reach2) / self.n2[2]
        super().__init__(center, axes, [-BODY_WIDTH_MM / 2, -BODY_DEPTH_MM / 2, bottom - 0.5],
                         [BODY_WIDTH_MM / 2, BODY_DEPTH_MM / 2, top + 0.5])

    def height_at(self, s_r: float, s_a: float) -> float:
        """Gap (mm) between the planes along the disc axis at local (s_r, s_a)."""
        top = (self.d1 - self.n1[0] * s_r - self.n1[1] * s_a) / self.n1[2]
        bottom = (self.d2 - self.n2[0] * s_r - self.n2[1] * s_a) / self.n2[2]
        return top - bottom

    def min_height(self) -> float:
        """Smallest gap over the ellipse (the gap is linear in s_r, s_a)."""
        slope = self.n2[:2] / self.n2[2] - self.n1[:2] / self.n1[2]
        spread = math.hypot(slope[0] * BODY_WIDTH_MM / 2, slope[1] * BODY_DEPTH_MM / 2)
        return self.height_at(0.0, 0.0) - spread

    def evaluate(self, local):
        inside = (_in_ellipse(local[:, 0], local[:, 1], BODY_WIDTH_MM / 2, BODY_DEPTH_MM / 2)
                  & (np.dot(local, self.n1) <= self.d1) & (np.dot(local, self.n2) >= self.d2))
        return inside.astype(np.int16), np.where(inside, np.float32(DISC_HU), np.float32(0.0))


class _Canal(_Solid):
    """CSF-filled elliptic canal behind one vertebral body, reaching half a disc beyond the endplates."""

    code_base = _CANAL - 1

    def __init__(self, center, axes, half_length):
        self.centre_a = -BODY_DEPTH_MM / 2 - CANAL_DEPTH_MM / 2
        half_w, half_d = CANAL_WIDTH_MM / 2, CANAL_DEPTH_MM / 2
        super().__init__(center, axes, [-half_w, self.centre_a - half_d, -half_length],
                         [half_w, self.centre_a + half_d, half_length])

    def evaluate(self, local):
        inside = (_in_ellipse(local[:, 0], local[:, 1] - self.centre_a, self.upper[0], CANAL_DEPTH_MM / 2)
                  & (np.abs(local[:, 2]) <= self.upper[2]))
        return inside.astype(np.int16), np.where(inside, np.float32(CSF_HU), np.float32(0.0))


def _trunk(x: np.ndarray, y: np.ndarray, centre) -> tuple[np.ndarray, np.ndarray]:
    """Tissue codes and HU of the trunk envelope (air, fat layer, soft tissue) at RAS (x, y)."""
    dx, dy = x - centre[0], y - centre[1]
    half_x, half_y = TRUNK_SEMI_AXES_MM
    outer = (dx / half_x) ** 2 + (dy / half_y) ** 2 <= 1.0
    inner = (dx / (half_x - FAT_MM)) ** 2 + (dy / (half_y - FAT_MM)) ** 2 <= 1.0
    code = np.where(inner, np.int16(_SOFT), np.where(outer, np.int16(_FAT), np.int16(_AIR)))
    hu = np.array([0.0, AIR_HU, FAT_HU, SOFT_TISSUE_HU], np.float32)[code]
    return code, hu


# -------------------------------------------------------------------------------------- spine layout


@dataclass
class _Level:
    """Design of one vertebra before placement."""

    name: str
    coronal_deg: float
    sagittal_deg: float          # of the superior endplate normal
    wedge_deg: float


def _check_levels(levels) -> list[str]:
    levels = [str(level).upper() for level in levels]
    unknown = [level for level in levels if level not in VERTEBRA_ORDER]
    if unknown or len(levels) < 2:
        raise ValueError(f"Levels {levels} must be at least two of {list(VERTEBRA_ORDER)}.")
    order = [VERTEBRA_ORDER[level] for level in levels]
    if order != list(range(order[0], order[0] + len(order))):
        raise ValueError(f"Levels {levels} must be contiguous and ordered cranial to caudal.")
    return levels


def _design(levels, cobb_deg, lordosis_deg, wedge_deg) -> list[_Level]:
    """Endplate angles of every level (module docstring: scoliosis and lordosis)."""
    curve = [level for level in levels if level != "S1"]
    if cobb_deg and len(curve) < 2:
        raise ValueError("A Cobb angle needs at least two non-sacral levels.")
    steps = max(len(curve) - 1, 1)
    coronal = {level: cobb_deg / 2 - cobb_deg * index / steps for index, level in enumerate(curve)}
    first, last = VERTEBRA_ORDER["L1"], VERTEBRA_ORDER["S1"]
    raw = {level: lordosis_deg * (min(max(VERTEBRA_ORDER[level], first), last) - first) / (last - first)
           for level in levels}
    shift = (max(raw.values()) + min(raw.values())) / 2
    wedge_deg = {str(k).upper(): float(v) for k, v in (wedge_deg or {}).items()}
    if set(wedge_deg) - set(levels):
        raise ValueError(f"Wedges given for levels {sorted(set(wedge_deg) - set(levels))} not in {levels}.")
    return [_Level(level, coronal.get(level, 0.0), raw[level] - shift, wedge_deg.get(level, 0.0))
            for level in levels]


def _body_axes(level: _Level) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Superior normal, inferior normal and body frame (columns r, a, u) of one designed level."""
    superior = _normal(level.coronal_deg, level.sagittal_deg)
    right = _unit(np.cross([0.0, 1.0, 0.0], superior))
    forward = np.cross(superior, right)
    wedge = math.radians(level.wedge_deg)
    inferior = math.cos(wedge) * superior - math.sin(wedge) * forward
    axes = _frame(superior + inferior)
    return superior, inferior, axes


@dataclass
class _Placed:
    level: _Level
    label: int
    center: np.ndarray
    superior: np.ndarray
    inferior: np.ndarray
    axes: np.ndarray


def _place(design: list[_Level], body_height: float, disc_height: float) -> list[_Placed]:
    """Chain the bodies cranial to caudal: each disc axis runs disc_height from the upper inferior endplate
    centre to the lower superior endplate centre."""
    values = {name: value for value, name in CLASS_TABLES["total"].items()}
    placed, center = [], np.zeros(3)
    for index, level in enumerate(design):
        superior, inferior, axes = _body_axes(level)
        if index:
            above = placed[-1]
            disc_axis = _unit(above.inferior + superior)
            upper_centre = above.center - body_height / 2 * above.axes[:, 2]
            center = upper_centre - disc_height * disc_axis - body_height / 2 * axes[:, 2]
        placed.append(_Placed(level, values[f"vertebrae_{level.name}"], center, superior, inferior, axes))
    shift = np.mean([p.center for p in placed], axis=0)
    for p in placed:
        p.center = p.center - shift
    return placed


# ------------------------------------------------------------------------------------------- scene


@dataclass
class _Scene:
    solids: list[_Solid]          # priority order: discs, vertebrae cranial to caudal, canals
    trunk_centre: np.ndarray
    vertebrae: list[_Vertebra]
    discs: list[_Disc]


def _scene(placed, body_height, disc_height, hu_center, hu_gradient) -> _Scene:
    vertebrae, discs, canals = [], [], []
    for index, p in enumerate(placed):
        vertebrae.append(_Vertebra(p.label, 8 * (index + 1), p.center, p.axes, body_height,
                                   math.radians(p.level.wedge_deg), hu_center, hu_gradient,
                                   arch=p.level.name != "S1"))
        if p.level.name != "S1":
            canals.append(_Canal(p.center, p.axes, body_height / 2 + disc_height / 2 + 2.0))
    for index, (up, down) in enumerate(zip(placed[:-1], placed[1:], strict=True)):
        axes = _frame(up.inferior + down.superior)
        top = up.center - body_height / 2 * up.axes[:, 2]
        bottom = down.center + body_height / 2 * down.axes[:, 2]
        disc = _Disc(8 * (len(placed) + index + 1), (top + bottom) / 2, axes, (up.inferior, top),
                     (down.superior, bottom))
        if disc.min_height() <= 0:
            raise ValueError(f"Disc {up.level.name}-{down.level.name} closes (endplates cross): "
                             "increase disc_height_mm or reduce the angles.")
        discs.append(disc)
    centre = np.mean([p.center for p in placed], axis=0)[:2] + [0.0, TRUNK_ANTERIOR_SHIFT_MM]
    return _Scene(discs + vertebrae + canals, centre, vertebrae, discs)


def _covered(others: list[_Solid], ras: np.ndarray) -> np.ndarray:
    """Which RAS points (N, 3) lie inside any of ``others``."""
    covered = np.zeros(len(ras), bool)
    for other in others:
        local = other.to_local(ras)
        near = np.flatnonzero(np.all((local >= other.lower) & (local <= other.upper), axis=1))
        covered[near[other.evaluate(local[near])[0] > 0]] = True
    return covered


def _body_volume_ml(height: float) -> float:
    """Exact volume of a body: ellipse area times the middle height (the height is linear across it)."""
    return math.pi * BODY_WIDTH_MM / 2 * BODY_DEPTH_MM / 2 * height / 1000.0


def _labelled_volume_ml(scene: _Scene, vertebra: _Vertebra, step: float = _INTEGRATION_STEP_MM) -> float:
    """Volume (ml) that keeps the vertebra's label: the exact body volume plus the posterior elements outside
    the body, minus what higher-priority solids take (both counted on cells of ``step`` mm in its frame)."""
    rank = scene.solids.index(vertebra)
    low, high = vertebra.corners().min(0), vertebra.corners().max(0)
    others = [o for o in scene.solids[:rank] if o.label and np.all(o.corners().min(0) <= high)
              and np.all(o.corners().max(0) >= low)]
    r, a, u = (np.arange(math.floor(lo / step), math.ceil(hi / step)) * step + step / 2
               for lo, hi in zip(vertebra.lower, vertebra.upper, strict=True))
    r, a = (values.ravel() for values in np.meshgrid(r, a, indexing="ij"))
    cells = 0
    for height in u:
        local = np.column_stack([r, a, np.full(r.size, height)])
        region = vertebra.evaluate(local)[0]
        stolen = _covered(others, vertebra.to_ras(local[region > 0]))
        cells += int((region == _ARCH).sum()) - int(stolen.sum())
    return _body_volume_ml(vertebra.height) + cells * step**3 / 1000.0


# ------------------------------------------------------------------------------------------- truth


def _vertebra_truth(solid: _Vertebra, p: _Placed, scene: _Scene, hu_center: float) -> VertebraTruth:
    h, axis = solid.height, p.axes[:, 2]
    inset = (0.5 - HEIGHT_INSET) * BODY_DEPTH_MM
    return VertebraTruth(
        level=p.level.name, label=p.label, body_center=p.center.copy(), superior_normal=p.superior,
        inferior_normal=p.inferior, superior_center=p.center + h / 2 * axis,
        inferior_center=p.center - h / 2 * axis,
        height_anterior_mm=h - 2 * solid.tan * inset, height_middle_mm=h,
        height_posterior_mm=h + 2 * solid.tan * inset,
        coronal_tilt_deg=coronal_angle_deg(axis), sagittal_tilt_deg=sagittal_angle_deg(axis),
        hu_center=hu_center, axes=p.axes, wedge_deg=p.level.wedge_deg,
        body_volume_ml=_body_volume_ml(h),
        volume_ml=_labelled_volume_ml(scene, solid))


def _disc_truth(disc: _Disc, upper: str, lower: str) -> DiscTruth:
    inset = (0.5 - HEIGHT_INSET) * BODY_DEPTH_MM
    middle = disc.height_at(0.0, 0.0)
    return DiscTruth(upper=upper, lower=lower, height_anterior_mm=disc.height_at(0.0, inset),
                     height_middle_mm=middle, height_posterior_mm=disc.height_at(0.0, -inset),
                     volume_ml=_body_volume_ml(middle),
                     center=disc.origin.copy(), axes=disc.axes)


def _apex(curve: list[str]) -> str:
    """Middle level of the curve, or the middle disc for an even count."""
    middle = len(curve) // 2
    return curve[middle] if len(curve) % 2 else f"{curve[middle - 1]}-{curve[middle]}"


# ------------------------------------------------------------------------------------------- grid


def _grid(scene: _Scene, voxel_mm, rotation_deg, shape) -> tuple[np.ndarray, tuple[int, int, int]]:
    """IJK-to-RAS matrix and array shape (k, j, i): centred on the trunk over the spine's height."""
    spacing = np.broadcast_to(np.asarray(voxel_mm, float), (3,)).copy()
    rotation = _rotation(rotation_deg)
    heights = np.concatenate([s.corners()[:, 2] for s in scene.vertebrae])
    half = np.array([*TRUNK_SEMI_AXES_MM, (heights.max() - heights.min()) / 2]) + MARGIN_MM
    centre = np.array([*scene.trunk_centre, (heights.max() + heights.min()) / 2])
    if shape is None:
        reach = np.abs(rotation).T @ half      # half extent of the box along each grid axis
        size_ijk = np.ceil(2 * reach / spacing).astype(int) + 1
    else:
        size_ijk = np.asarray(shape, int)
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag(spacing)
    matrix[:3, 3] = centre - matrix[:3, :3] @ ((size_ijk - 1) / 2)
    return matrix, (int(size_ijk[2]), int(size_ijk[1]), int(size_ijk[0]))


def _index_box(solid: _Solid, matrix: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive (k, j, i) index range holding every voxel that may overlap the solid's box."""
    ijk = np.linalg.solve(matrix[:3, :3], (solid.corners() - matrix[:3, 3]).T).T
    low = np.maximum(np.floor(ijk.min(0)).astype(int) - 1, 0)[::-1]
    high = np.minimum(np.ceil(ijk.max(0)).astype(int) + 1, np.array(shape[::-1]) - 1)[::-1]
    return low, high


# -------------------------------------------------------------------------------------- rendering


class _Samples:
    """Codes, HU and labels of a set of points, filled by the background then by solids in priority order."""

    def __init__(self, code: np.ndarray, hu: np.ndarray):
        self.code, self.hu = code, hu
        self.label = np.zeros(code.shape, np.int16)
        self.owned = np.zeros(code.shape, bool)

    def claim(self, solid: _Solid, where: np.ndarray, ras: np.ndarray) -> None:
        """Let ``solid`` take the not yet owned points among flat indices ``where`` (RAS ``ras``)."""
        free = ~self.owned.flat[where]
        where, ras = where[free], ras[free]
        region, hu = solid.evaluate(solid.to_local(ras))
        inside = region > 0
        where = where[inside]
        self.code.flat[where] = solid.codes(region[inside])
        self.hu.flat[where] = hu[inside]
        self.label.flat[where] = solid.label
        self.owned.flat[where] = True


def _ras_of(ijk: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """RAS of (N, 3) ijk rows (np.dot: much faster than matmul for 3 columns)."""
    return np.dot(ijk, matrix[:3, :3].T) + matrix[:3, 3]


def _render_centres(scene, boxes, matrix, k_range, nj, ni) -> _Samples:
    """Tissue at the voxel centres of slices k_range[0] <= k < k_range[1]."""
    k, j, i = np.arange(*k_range, dtype=float), np.arange(nj, dtype=float), np.arange(ni, dtype=float)
    m = matrix
    xy = [m[row, 0] * i + m[row, 1] * j[:, None] + m[row, 2] * k[:, None, None] + m[row, 3] for row in (0, 1)]
    samples = _Samples(*_trunk(xy[0], xy[1], scene.trunk_centre))
    for solid, (low, high) in zip(scene.solids, boxes, strict=True):
        k0, k1 = max(low[0], k_range[0]), min(high[0], k_range[1] - 1)
        if k0 > k1:
            continue
        kk, jj, ii = np.meshgrid(np.arange(k0, k1 + 1), np.arange(low[1], high[1] + 1),
                                 np.arange(low[2], high[2] + 1), indexing="ij")
        ijk = np.column_stack([ii.ravel(), jj.ravel(), kk.ravel()]).astype(float)
        flat = np.ravel_multi_index((kk.ravel() - k_range[0], jj.ravel(), ii.ravel()), samples.code.shape)
        samples.claim(solid, flat, _ras_of(ijk, matrix))
    return samples


def _sub_offsets(supersample: int) -> np.ndarray:
    """(S, 3) ijk offsets of the sub-samples of a voxel."""
    steps = (np.arange(supersample) + 0.5) / supersample - 0.5
    grid = np.meshgrid(steps, steps, steps, indexing="ij")
    return np.column_stack([g.ravel() for g in grid])


def _majority(labels: np.ndarray, parity: np.ndarray) -> np.ndarray:
    """Most frequent value of each row; ties go to the tied values in turn by ``parity`` (checkerboard)."""
    values = np.unique(labels)
    counts = np.stack([(labels == value).sum(axis=1) for value in values], axis=1)
    tied = counts == counts.max(axis=1, keepdims=True)
    rank = parity % tied.sum(axis=1)
    return values[np.argmax(np.cumsum(tied, axis=1) > rank[:, None], axis=1)]


def _supersample(scene, boxes, matrix, voxels_kji: np.ndarray, supersample: int, batch: int = 20000):
    """Mean HU and majority label over supersample^3 points of each voxel (rows of (k, j, i))."""
    offsets = _sub_offsets(supersample)
    count = len(offsets)
    hu_out = np.empty(len(voxels_kji), np.float32)
    label_out = np.empty(len(voxels_kji), np.int16)
    for start in range(0, len(voxels_kji), batch):
        kji = voxels_kji[start:start + batch]
        ras = (_ras_of(kji[:, ::-1].astype(float), matrix)[:, None, :]
               + np.dot(offsets, matrix[:3, :3].T)).reshape(-1, 3)
        samples = _Samples(*_trunk(ras[:, 0], ras[:, 1], scene.trunk_centre))
        for solid, (low, high) in zip(scene.solids, boxes, strict=True):
            near = np.flatnonzero(np.all((kji >= low) & (kji <= high), axis=1))
            if near.size:
                where = (near[:, None] * count + np.arange(count)).ravel()
                samples.claim(solid, where, ras[where])
        hu_out[start:start + batch] = samples.hu.reshape(-1, count).mean(axis=1)
        label_out[start:start + batch] = _majority(samples.label.reshape(-1, count), kji.sum(axis=1))
    return hu_out, label_out


def _render(scene: _Scene, matrix: np.ndarray, shape, supersample: int, chunk_voxels: int = 1 << 22):
    """Image (float32 HU) and labels (int16) of the scene on the grid, in slabs of about chunk_voxels."""
    nk, nj, ni = shape
    image, labels = np.empty(shape, np.float32), np.empty(shape, np.int16)
    boxes = [_index_box(solid, matrix, shape) for solid in scene.solids]
    step = max(1, chunk_voxels // (nj * ni))
    for k0 in range(0, nk, step):
        k1 = min(nk, k0 + step)
        halo = (max(0, k0 - 1), min(nk, k1 + 1))
        samples = _render_centres(scene, boxes, matrix, halo, nj, ni)
        inner = slice(k0 - halo[0], k1 - halo[0])
        image[k0:k1], labels[k0:k1] = samples.hu[inner], samples.label[inner]
        if supersample > 1:
            code = samples.code
            boundary = ndimage.maximum_filter(code, size=3) != ndimage.minimum_filter(code, size=3)
            voxels = np.argwhere(boundary[inner]) + [k0, 0, 0]
            hu, label = _supersample(scene, boxes, matrix, voxels, supersample)
            image[tuple(voxels.T)], labels[tuple(voxels.T)] = hu, label
    return image, labels


def _add_noise(image: np.ndarray, noise_hu: float, seed: int, chunk_voxels: int = 1 << 22) -> None:
    """Add Gaussian noise (sd noise_hu) in place, slab by slab from one seeded generator."""
    rng = np.random.default_rng(seed)
    step = max(1, chunk_voxels // (image.shape[1] * image.shape[2]))
    for k0 in range(0, image.shape[0], step):
        slab = image[k0:k0 + step]
        slab += np.float32(noise_hu) * rng.standard_normal(slab.shape, dtype=np.float32)


# ---------------------------------------------------------------------------------------------- API


def build_spine_phantom(levels=("T12", "L1", "L2", "L3", "L4", "L5", "S1"), voxel_mm=1.0, cobb_deg=20.0,
                        lordosis_deg=40.0, disc_height_mm=9.0, body_height_mm=26.0,
                        wedge_deg: dict[str, float] | None = None, rotation_deg=(0.0, 0.0, 0.0),
                        hu_center=150.0, hu_gradient_per_mm=4.0, supersample=4, noise_hu=0.0, seed=0,
                        shape=None) -> SpinePhantom:
    """Render a spine phantom and return it with its exact ground truth (see the module docstring).

    ``levels``: contiguous, cranial to caudal ("T12" ... "S1"). ``voxel_mm``: one spacing or (sx, sy, sz) for
    the i, j, k axes. ``rotation_deg``: rotations (degrees) of the grid axes about R, then A, then S, for an
    oblique grid. ``wedge_deg``: level -> dihedral angle (degrees) between its endplates, positive = anterior
    height smaller. ``hu_gradient_per_mm``: HU per mm along the body's anterior axis. ``supersample``:
    sub-samples per axis at boundary voxels (1 = centre sampling only). ``noise_hu``: sd of added Gaussian
    noise (seeded). ``shape``: (ni, nj, nk) voxels, or None for the smallest grid that holds the trunk over
    the levels' height plus 5 mm.
    """
    levels = _check_levels(levels)
    if int(supersample) < 1:
        raise ValueError(f"supersample must be 1 or more, not {supersample}.")
    design = _design(levels, float(cobb_deg), float(lordosis_deg), wedge_deg)
    for level in design:
        if body_height_mm - BODY_DEPTH_MM * abs(math.tan(math.radians(level.wedge_deg) / 2)) <= 2 * CORTEX_MM:
            raise ValueError(f"Wedge {level.wedge_deg} degrees of {level.name} leaves no body at its rim.")
    placed = _place(design, body_height_mm, disc_height_mm)
    scene = _scene(placed, body_height_mm, disc_height_mm, hu_center, hu_gradient_per_mm)
    matrix, array_shape = _grid(scene, voxel_mm, rotation_deg, shape)
    image, labels = _render(scene, matrix, array_shape, int(supersample))
    if noise_hu:
        _add_noise(image, noise_hu, seed)
    vertebrae = {p.level.name: _vertebra_truth(solid, p, scene, hu_center)
                 for p, solid in zip(placed, scene.vertebrae, strict=True)}
    discs = {f"{up}-{down}": _disc_truth(disc, up, down)
             for disc, up, down in zip(scene.discs, levels[:-1], levels[1:], strict=True)}
    curve = [level for level in levels if level != "S1"]
    upper, lower = vertebrae[curve[0]], vertebrae[curve[-1]]
    cobb = coronal_angle_deg(upper.superior_normal) - coronal_angle_deg(lower.inferior_normal)
    lordosis = math.nan
    if "L1" in vertebrae and "S1" in vertebrae:
        lordosis = (sagittal_angle_deg(vertebrae["S1"].superior_normal)
                    - sagittal_angle_deg(vertebrae["L1"].superior_normal))
    class_table = {vertebrae[level].label: f"vertebrae_{level}" for level in levels}
    class_table[DISC_LABEL] = "intervertebral_discs"
    return SpinePhantom(image=image, labels=labels, ijk_to_ras=matrix, class_table=class_table,
                        vertebrae=vertebrae, discs=discs, cobb_deg=cobb, cobb_upper=curve[0],
                        cobb_lower=curve[-1], cobb_apex=_apex(curve), lordosis_deg=lordosis)
