"""Markerless registration of a depth-camera skin point cloud to the CT/MR skin surface.

:func:`register_cloud_to_surface` finds the rigid transform (moving camera points -> fixed RAS mm) with no
manual start:

1. Global search. The moving cloud's centroid, thin (viewing) axis and in-plane extent are computed once.
   For every rotation of a quasi-uniform set covering SO(3) (super-Fibonacci spirals, Alexa 2022) and each
   of the two sides the cloud could face, the centroid is placed at the centroid of the fixed skin that
   faces the same way (what a camera looking from there would see); when that skin is larger than the
   cloud (a partial view) starts shifted along it are added. All starts run a few robust ICP iterations
   together on a small subsample against a coarse copy of the surface (nearest samples from a look-up
   grid) and are scored by a trimmed surface distance; a cheap first round prunes them when there are many.
2. The best few *distinct* poses are refined on the dense surface and compared on the same points. The best
   is polished by point-to-plane ICP (trimmed, robust 3 sigma gate) until the update is negligible; the
   runner-up flags ambiguous solutions (e.g. head-to-foot flips of a nearly symmetric back).
3. Quality: RMS, inlier fraction, overlap (fraction of moving points within ``inlier_distance_mm`` of the
   surface), the RMS relative to the cloud's own noise, and the pose uncertainty from the point-to-plane
   Hessian, sigma^2 (J^T J)^-1, with its condition number and weakest direction (sliding). A cloud that does
   not fit (low overlap, RMS far above its noise) is reported with ``converged`` False and a message.

Everything is in RAS millimetres; matrices are 4x4 homogeneous, applied to column vectors (x' = M x).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from MSDTLib.errors import MSDTError

from .pointclouds import as_points, estimate_normals

AXIS_NAMES = ("R-L", "A-P", "S-I")


# ------------------------------------------------------------------------------------------- options/results

@dataclass
class RegistrationOptions:
    """Parameters of :func:`register_cloud_to_surface` (mm, degrees)."""

    rotations: int = 128                # rotations covering SO(3) in the global search (x 2 facing sides)
    global_points: int = 128            # moving points per start in the global search
    global_iterations: int = 12
    min_shift_mm: float = 20.0          # partial views: extra starts shifted by at least this much
    global_keep: int = 128              # with extra starts, the best this many after a cheap first round
    candidates: int = 4                 # distinct poses refined on the dense surface
    candidate_points: int = 600
    candidate_iterations: int = 15
    max_points: int = 8000              # moving points of the final ICP (random subsample)
    max_cloud_points: int = 30000       # larger clouds are randomly subsampled first (quality measures too)
    max_iterations: int = 60
    trim_fraction: float = 0.85         # correspondences kept by the trimmed ICP (global and candidate stages)
    final_trim_fraction: float = 0.95   # ... by the final ICP, which also drops those beyond a robust 3 sigma
    adaptive_gate: bool = True
    inlier_distance_mm: float = 10.0    # "near the surface" for overlap and the final gate
    min_overlap: float = 0.6            # below this the registration is reported as failed
    coarse_spacing_mm: float = 6.0      # fixed surface resampling (and look-up grid) for the global search
    search_margin_mm: float = 150.0     # look-up grid margin around the fixed surface
    fixed_spacing_mm: float = 2.0       # fixed surface resampling for the fine stages
    tolerance_mm: float = 2e-3          # stop when the update moves no point more than this
    ambiguity_ratio: float = 0.05       # runner-up within 5 % of the best score -> ambiguous
    distinct_rotation_deg: float = 10.0
    distinct_translation_mm: float = 20.0
    max_fit_ratio: float = 1.8          # RMS above this x the cloud's own noise ...
    fit_excess_mm: float = 1.5          # ... and above it by this much: reported as a poor (likely wrong) fit
    degenerate_condition: float = 200.0  # condition number of the scaled Hessian flagged as a weak direction
    drop_fov_caps: bool = True          # leave out flat caps where the body leaves the image (vtkPolyData input)
    viewpoint: tuple | None = None      # camera centre in the moving frame (e.g. (0, 0, 0)): fixes the facing side
    initial_matrix: np.ndarray | None = None  # skip the global search and start here
    seed: int = 0
    workers: int = -1                   # KD-tree query threads (-1: all cores)


@dataclass
class RegistrationResult:
    """A rigid moving -> fixed transform and how much to trust it.

    ``matrix``: 4x4 moving -> fixed (RAS mm). ``rms_mm``: RMS surface distance of the inliers (points within
    ``inlier_threshold_mm``, a robust 3 sigma of the residuals capped at ``inlier_distance_mm``).
    ``inlier_fraction``: their share of the cloud. ``overlap``: share of the cloud within
    ``inlier_distance_mm`` of the surface. ``converged``: the final ICP settled, the overlap reached
    ``min_overlap`` and the RMS is not far above the cloud's own noise. ``uncertainty``: per-axis
    translation (mm) and rotation (deg, about ``centre_mm``) standard deviations, ``covariance``,
    ``condition_number``, ``weakest_direction``, ``degenerate``, ``ambiguous`` and ``second_best``,
    ``cloud_noise_mm``, ``fit_ratio``, ``poor_fit``. ``iterations``: of the final ICP. ``candidates``: the
    distinct poses compared after the global search, best first.
    """

    matrix: np.ndarray
    rms_mm: float
    inlier_fraction: float
    overlap: float
    converged: bool
    uncertainty: dict
    seconds: float
    iterations: int
    message: str
    inlier_threshold_mm: float = float("nan")
    points_used: int = 0
    candidates: list = field(default_factory=list)

    @property
    def reliable(self) -> bool:
        """Converged, not ambiguous and with no weakly constrained direction."""
        return bool(self.converged and not self.uncertainty.get("ambiguous", False)
                    and not self.uncertainty.get("degenerate", False))

    def apply(self, points) -> np.ndarray:
        return transform_points(self.matrix, points)

    def summary(self) -> dict:
        """JSON-ready numbers."""
        unc = {k: v for k, v in self.uncertainty.items() if k != "second_best"}
        second = self.uncertainty.get("second_best")
        if second is not None:
            unc["second_best"] = {k: (np.asarray(v).round(4).tolist() if k == "matrix" else v)
                                  for k, v in second.items()}
        return {"matrix": np.round(self.matrix, 6).tolist(), "rms_mm": round(self.rms_mm, 3),
                "inlier_fraction": round(self.inlier_fraction, 4), "overlap": round(self.overlap, 4),
                "converged": self.converged, "reliable": self.reliable, "uncertainty": unc,
                "seconds": round(self.seconds, 3), "iterations": self.iterations, "message": self.message}


@dataclass
class FixedSurface:
    """The fixed skin ready for registration: dense points with outward unit normals and their KD-tree, and a
    coarse copy with a nearest-sample look-up grid for the global search."""

    points: np.ndarray
    normals: np.ndarray
    tree: cKDTree
    spacing_mm: float
    coarse_points: np.ndarray
    coarse_normals: np.ndarray
    coarse_grid: NearestSampleGrid
    coarse_spacing_mm: float
    caps_removed: int = 0


# ------------------------------------------------------------------------------------------- geometry helpers

def transform_points(matrix, points) -> np.ndarray:
    matrix = np.asarray(matrix, float)
    return np.asarray(points, float) @ matrix[:3, :3].T + matrix[:3, 3]


def rigid_matrix(rotation, translation) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = translation
    return matrix


def rotation_angle_deg(rotation_a, rotation_b=None) -> float:
    """Angle (degrees) of ``a`` or of ``a`` relative to ``b``."""
    relative = np.asarray(rotation_a)[:3, :3] if rotation_b is None else \
        np.asarray(rotation_a)[:3, :3] @ np.asarray(rotation_b)[:3, :3].T
    return float(np.degrees(np.arccos(np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0))))


def super_fibonacci_rotations(n: int) -> np.ndarray:
    """``n`` rotation matrices spread quasi-uniformly over SO(3) (super-Fibonacci spirals, Alexa 2022)."""
    phi, psi = np.sqrt(2.0), 1.533751168755204288118041
    s = np.arange(n) + 0.5
    r, big_r = np.sqrt(s / n), np.sqrt(1.0 - s / n)
    alpha, beta = 2 * np.pi * s / phi, 2 * np.pi * s / psi
    q = np.column_stack([r * np.sin(alpha), r * np.cos(alpha), big_r * np.sin(beta), big_r * np.cos(beta)])
    return quaternions_to_matrices(q)


def quaternions_to_matrices(q) -> np.ndarray:
    """(n, 4) quaternions (x, y, z, w) to (n, 3, 3) rotation matrices."""
    q = np.asarray(q, float)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    x, y, z, w = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)], axis=1)


def _rodrigues(omega: np.ndarray) -> np.ndarray:
    """Rotation matrices (K, 3, 3) of rotation vectors (K, 3)."""
    theta = np.linalg.norm(omega, axis=-1)
    safe = np.where(theta > 1e-12, theta, 1.0)
    kx = _skew(omega / safe[:, None])
    sin = np.where(theta > 1e-12, np.sin(theta), theta)[:, None, None]
    cos = np.where(theta > 1e-12, 1.0 - np.cos(theta), 0.0)[:, None, None]
    return np.eye(3) + sin * kx + cos * (kx @ kx)


def _skew(v: np.ndarray) -> np.ndarray:
    out = np.zeros(v.shape[:-1] + (3, 3))
    out[..., 0, 1], out[..., 0, 2] = -v[..., 2], v[..., 1]
    out[..., 1, 0], out[..., 1, 2] = v[..., 2], -v[..., 0]
    out[..., 2, 0], out[..., 2, 1] = -v[..., 1], v[..., 0]
    return out


def _voxel_average(points: np.ndarray, normals: np.ndarray, voxel: float):
    """Mean point and renormalised mean normal per occupied voxel."""
    keys = np.floor((points - points.min(axis=0)) / voxel).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    out_p = np.zeros((len(counts), 3))
    out_n = np.zeros((len(counts), 3))
    np.add.at(out_p, inverse, points)
    np.add.at(out_n, inverse, normals)
    out_p /= counts[:, None]
    norm = np.linalg.norm(out_n, axis=1)
    keep = norm > 1e-6  # opposite normals in one voxel (thin sheets) cancel: drop those voxels
    return out_p[keep], out_n[keep] / norm[keep, None]


# ------------------------------------------------------------------------------------------- fixed surface

def polydata_points_normals(polydata):
    """Points (N, 3) and outward unit point normals of a vtkPolyData (computed when it has none)."""
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    if polydata is None or polydata.GetNumberOfPoints() == 0:
        raise MSDTError("The fixed surface is empty (no points).")
    normals = polydata.GetPointData().GetNormals()
    if normals is None and polydata.GetNumberOfPolys() > 0:
        filt = vtk.vtkPolyDataNormals()
        filt.SetInputData(polydata)
        filt.ComputePointNormalsOn()
        filt.SplittingOff()
        filt.ConsistencyOn()
        filt.AutoOrientNormalsOn()
        filt.Update()
        polydata = filt.GetOutput()
        normals = polydata.GetPointData().GetNormals()
    points = vtk_to_numpy(polydata.GetPoints().GetData()).astype(float)
    if normals is None:
        return points, estimate_normals(points)
    return points, vtk_to_numpy(normals).astype(float)


def fov_cap_mask(points: np.ndarray, normals: np.ndarray, axis: int = 2, tolerance_mm: float = 2.0,
                 min_alignment: float = 0.9) -> np.ndarray:
    """Points on the flat caps where a surface leaves the image along ``axis`` (S for axial scans): at the
    lowest or highest coordinate (within ``tolerance_mm``) with normals along the axis. A camera never sees
    these faces, they are cuts of the field of view."""
    low, high = points[:, axis].min(), points[:, axis].max()
    along = normals[:, axis]
    return (((points[:, axis] <= low + tolerance_mm) & (along < -min_alignment))
            | ((points[:, axis] >= high - tolerance_mm) & (along > min_alignment)))


def prepare_fixed_surface(fixed, normals=None, options: RegistrationOptions | None = None) -> FixedSurface:
    """A :class:`FixedSurface` from a vtkPolyData (RAS mm, normals computed if absent, flat FOV caps along S
    dropped) or from points (N, 3) with ``normals`` (estimated when None). Reuse it for many clouds."""
    if isinstance(fixed, FixedSurface):
        return fixed
    options = options or RegistrationOptions()
    caps = 0
    if hasattr(fixed, "GetPoints"):
        points, point_normals = polydata_points_normals(fixed)
        good = np.isfinite(points).all(axis=1) & np.isfinite(point_normals).all(axis=1)
        points, point_normals = points[good], point_normals[good]
        if options.drop_fov_caps and len(points) > 100:
            cap = fov_cap_mask(points, point_normals)
            if cap.sum() < 0.5 * len(points):
                caps = int(cap.sum())
                points, point_normals = points[~cap], point_normals[~cap]
    else:
        points = as_points(fixed, "fixed surface", min_points=10)
        if normals is None:
            point_normals = estimate_normals(points)
        else:
            point_normals = np.asarray(normals, float)
            if point_normals.shape != np.asarray(fixed, float).shape:
                raise MSDTError(f"Fixed normals {point_normals.shape} do not match the fixed points "
                                f"{np.asarray(fixed).shape}.")
            finite = np.isfinite(np.asarray(fixed, float)).all(axis=1)
            point_normals = point_normals[finite]
    length = np.linalg.norm(point_normals, axis=1)
    good = np.isfinite(length) & (length > 1e-9)
    points, point_normals = points[good], point_normals[good] / length[good, None]
    if len(points) < 10:
        raise MSDTError(f"The fixed surface has only {len(points)} usable points.")
    dense_p, dense_n = _voxel_average(points, point_normals, options.fixed_spacing_mm)
    coarse_p, coarse_n = _voxel_average(points, point_normals, options.coarse_spacing_mm)
    grid = NearestSampleGrid(coarse_p, options.coarse_spacing_mm, options.search_margin_mm)
    return FixedSurface(dense_p, dense_n, cKDTree(dense_p), options.fixed_spacing_mm,
                        coarse_p, coarse_n, grid, options.coarse_spacing_mm, caps)


def polydata_without_caps(polydata, tolerance_mm: float = 2.0):
    """A copy of a triangle surface without the cells on its flat FOV caps along S (see :func:`fov_cap_mask`)."""
    import vtk
    from vtk.util.numpy_support import numpy_to_vtkIdTypeArray, vtk_to_numpy

    points, normals = polydata_points_normals(polydata)
    cap = fov_cap_mask(points, normals, tolerance_mm=tolerance_mm)
    triangles = vtk.vtkTriangleFilter()
    triangles.SetInputData(polydata)
    triangles.Update()
    mesh = triangles.GetOutput()
    cells = vtk_to_numpy(mesh.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    keep = cells[~cap[cells].all(axis=1)]
    polys = vtk.vtkCellArray()
    offsets = np.arange(0, 3 * len(keep) + 1, 3, dtype=np.int64)
    polys.SetData(numpy_to_vtkIdTypeArray(offsets, deep=True),
                  numpy_to_vtkIdTypeArray(keep.ravel().astype(np.int64), deep=True))
    out = vtk.vtkPolyData()
    out.SetPoints(mesh.GetPoints())
    out.SetPolys(polys)
    return out


# ------------------------------------------------------------------------------------------- ICP machinery

class NearestSampleGrid:
    """Nearest surface sample by table look-up: each cell of a voxel grid (``spacing`` mm, ``margin`` mm
    around the samples) holds the index of the sample nearest to it (Euclidean distance transform). Points
    outside the grid use the nearest border cell. Approximate (within about one cell), constant time: for the
    global search, where most queries are far from the surface and KD-trees are slow."""

    def __init__(self, points: np.ndarray, spacing: float, margin: float):
        from scipy import ndimage

        self.origin = points.min(axis=0) - margin
        self.spacing = float(spacing)
        self.shape = np.ceil((points.max(axis=0) + margin - self.origin) / spacing).astype(int) + 1
        cells = np.floor((points - self.origin) / spacing).astype(int)
        label = np.full(tuple(self.shape), -1, dtype=np.int32)
        label[cells[:, 0], cells[:, 1], cells[:, 2]] = np.arange(len(points), dtype=np.int32)
        nearest_cell = ndimage.distance_transform_edt(label < 0, return_distances=False, return_indices=True)
        self.table = label[tuple(nearest_cell)].ravel()
        self.strides = np.array([self.shape[1] * self.shape[2], self.shape[2], 1])

    def __call__(self, points: np.ndarray):
        cells = np.floor((points - self.origin) / self.spacing).astype(int)
        np.clip(cells, 0, self.shape - 1, out=cells)
        return self.table[cells @ self.strides], None


class _TreeMatcher:
    """Exact nearest sample by KD-tree, none beyond ``bound`` mm (those queries stop early)."""

    def __init__(self, tree: cKDTree, bound: float, workers: int):
        self.tree, self.bound, self.workers = tree, bound, workers

    def __call__(self, points: np.ndarray):
        _, index = self.tree.query(points, distance_upper_bound=self.bound, workers=self.workers)
        valid = index < self.tree.n
        index[~valid] = 0
        return index, valid


def _surface_distance(p, q, n, spacing):
    """Distance of points ``p`` to the surface sampled at their nearest samples ``q`` with normals ``n``:
    the point-to-plane distance, plus how far beyond the sample spacing the nearest sample lies (so a point
    off the edge of the surface is not counted as on its tangent plane)."""
    diff = p - q
    plane = np.einsum("...i,...i->...", diff, n)
    along = np.sqrt(np.maximum(np.einsum("...i,...i->...", diff, diff) - plane * plane, 0.0))
    return np.sqrt(plane * plane + np.maximum(along - spacing, 0.0) ** 2), plane


def _trim_weights(distance: np.ndarray, fraction: float, gate) -> np.ndarray:
    """1 for the best ``fraction`` of each row's distances that are also under ``gate``, else 0."""
    m = distance.shape[-1]
    keep = max(int(round(fraction * m)), 6)
    threshold = np.partition(distance, keep - 1, axis=-1)[..., keep - 1:keep]
    weights = (distance <= threshold).astype(float)
    if gate == "auto":
        # robust 3 sigma from the median absolute distance (half-normal: median = 0.6745 sigma)
        sigma = 1.4826 * np.median(distance, axis=-1, keepdims=True)
        weights *= distance <= np.maximum(3.0 * sigma, 1.0)
    elif gate is not None:
        weights *= distance <= gate
    return weights


def _match(matcher, p, fixed_p, fixed_n, spacing, cap):
    """Nearest samples of points ``p`` (K, M, 3): surface distance (``cap`` where none), plane residual,
    sample normals, the validity mask (None: all valid) and p - q."""
    shape = p.shape[:-1]
    index, valid = matcher(p.reshape(-1, 3))
    q = fixed_p[index].reshape(p.shape)
    n = fixed_n[index].reshape(p.shape)
    distance, plane = _surface_distance(p, q, n, spacing)
    diff = p - q
    if valid is not None:
        valid = valid.reshape(shape)
        distance = np.where(valid, distance, cap)
        plane = np.where(valid, plane, 0.0)
        diff = np.where(valid[..., None], diff, 0.0)
    return distance, plane, n, valid, diff


def _trimmed_score(distance: np.ndarray, trim: float) -> np.ndarray:
    """RMS of the best ``trim`` fraction of each row's distances."""
    keep = max(int(round(trim * distance.shape[-1])), 6)
    best = np.partition(distance, keep - 1, axis=-1)[..., :keep]
    return np.sqrt((best ** 2).mean(axis=-1))


def _batched_icp(rotations, centres, x0, matcher, fixed_p, fixed_n, spacing, iterations, trim,
                 point_weight=0.0, tolerance=0.0, gate=None, cap=50.0):
    """Robust ICP of K poses at once. Pose k maps moving points x0 (centred at their centroid) to
    R_k x0 + c_k. Each step solves the trimmed point-to-plane (+ ``point_weight`` x point-to-point) normal
    equations for a small rotation about the current centre and a translation. Returns the poses, the score
    (trimmed RMS surface distance, mm), the number of iterations run and the last step (largest motion of a
    point, mm)."""
    rotations = rotations.copy()
    centres = centres.copy()
    eye6 = np.eye(6)
    radius = float(np.sqrt((x0 * x0).sum(axis=1).max()))
    done, motion = 0, np.inf
    previous = None
    for _ in range(iterations):
        done += 1
        arm = np.einsum("kij,mj->kmi", rotations, x0)              # (K, M, 3) point minus centre
        p = arm + centres[:, None, :]
        distance, plane, n, valid, diff = _match(matcher, p, fixed_p, fixed_n, spacing, cap)
        w = _trim_weights(distance, trim, gate)
        if valid is not None:
            w *= valid
        jac = np.concatenate([np.cross(arm, n), n], axis=-1)        # (K, M, 6) d(plane residual)/d(omega, v)
        wj = w[..., None] * jac
        hess = np.einsum("kmi,kmj->kij", wj, jac)
        grad = np.einsum("kmi,km->ki", wj, plane)
        if point_weight > 0:
            # point-to-point rows e = p - q: de/d(omega, v) = (-[arm]x, I)
            wp = w * point_weight ** 2
            a2 = np.einsum("kmi,kmi->km", arm, arm)
            hess[:, :3, :3] += (np.einsum("km,km->k", wp, a2)[:, None, None] * np.eye(3)
                                - np.einsum("km,kmi,kmj->kij", wp, arm, arm))
            a_sum = _skew(np.einsum("km,kmi->ki", wp, arm))        # sum w [a]x
            hess[:, :3, 3:] += a_sum
            hess[:, 3:, :3] += np.transpose(a_sum, (0, 2, 1))
            hess[:, 3:, 3:] += wp.sum(axis=1)[:, None, None] * np.eye(3)
            grad[:, :3] += np.einsum("km,kmi->ki", wp, np.cross(arm, diff))
            grad[:, 3:] += np.einsum("km,kmi->ki", wp, diff)
        damping = 1e-6 * np.trace(hess, axis1=1, axis2=2)[:, None, None] + 1e-9
        step = -np.linalg.solve(hess + damping * eye6, grad[..., None])[..., 0]
        omega, v = step[:, :3], step[:, 3:]
        angle = np.linalg.norm(omega, axis=1, keepdims=True)
        omega = np.where(angle > 0.35, omega * 0.35 / np.maximum(angle, 1e-12), omega)
        shift = np.linalg.norm(v, axis=1, keepdims=True)
        v = np.where(shift > 60.0, v * 60.0 / np.maximum(shift, 1e-12), v)
        rotations = _rodrigues(omega) @ rotations
        centres = centres + v
        motion = float((np.linalg.norm(v, axis=1) + np.linalg.norm(omega, axis=1) * radius).max())
        if tolerance > 0:
            score = float((w * plane * plane).sum() / max(w.sum(), 1.0))
            stalled = previous is not None and abs(previous - score) <= 1e-6 * max(score, 1e-9)
            previous = score
            if motion < tolerance or (stalled and motion < 20 * tolerance):
                break
    arm = np.einsum("kij,mj->kmi", rotations, x0)
    distance = _match(matcher, arm + centres[:, None, :], fixed_p, fixed_n, spacing, cap)[0]
    return rotations, centres, _trimmed_score(distance, trim), done, motion


def _pose_matrix(rotation, centre, moving_centroid):
    return rigid_matrix(rotation, centre - rotation @ moving_centroid)


def _distinct(rotation_a, centre_a, rotation_b, centre_b, options) -> bool:
    return (rotation_angle_deg(rotation_a, rotation_b) > options.distinct_rotation_deg
            or float(np.linalg.norm(centre_a - centre_b)) > options.distinct_translation_mm)


def _global_starts(moving_centred, centroid, fixed: FixedSurface, options: RegistrationOptions):
    """Initial poses: SO(3) rotations x the two sides the cloud may face; the cloud's centroid goes to the
    centroid of the fixed skin facing the same way (what a camera looking from there would see). When that
    skin is larger than the cloud along the cloud's in-plane axes (a partial view), starts shifted by the
    size difference along those axes are added."""
    _, vectors = np.linalg.eigh(np.cov(moving_centred.T))
    thin_axis, in_plane = vectors[:, 0], vectors[:, [2, 1]]
    patch_sd = np.sqrt(np.maximum(np.var(moving_centred @ in_plane, axis=0), 0.0))
    if options.viewpoint is not None:
        toward = np.asarray(options.viewpoint, float) - centroid
        signs = [1.0 if toward @ thin_axis >= 0 else -1.0]
    else:
        signs = [1.0, -1.0]
    base = super_fibonacci_rotations(options.rotations)
    rotations, centres = [], []
    step = max(len(fixed.coarse_points) // 4000, 1)   # statistics of the facing skin need no more points
    fixed_p, fixed_n = fixed.coarse_points[::step], fixed.coarse_normals[::step]
    for sign in signs:
        facing = np.einsum("kij,j->ki", base, sign * thin_axis)                  # (K, 3) outward direction
        visible = ((fixed_n @ facing.T) > 0.3).astype(float)                     # (F, K)
        counts = visible.sum(axis=0)
        ok = counts >= 10
        visible, counts, rots = visible[:, ok], counts[ok], base[ok]
        means = (fixed_p.T @ visible / counts).T                                  # (K, 3)
        rotations.append(rots)
        centres.append(means)
        # partial views: half the size difference (uniform extent = 2 sqrt(3) sd) along each in-plane axis
        axes = np.einsum("kij,jl->kil", rots, in_plane)                           # (K, 3, 2)
        shifts = []
        for j in range(2):
            proj = fixed_p @ axes[:, :, j].T                                      # (F, K)
            mean = (proj * visible).sum(axis=0) / counts
            sd = np.sqrt(np.maximum((proj * proj * visible).sum(axis=0) / counts - mean ** 2, 0.0))
            shifts.append(np.sqrt(3.0) * np.maximum(sd - patch_sd[j], 0.0))
        for a, b in ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)):
            amount = np.stack([a * shifts[0], b * shifts[1]], axis=1)            # (K, 2)
            use = (np.abs(amount) >= options.min_shift_mm).any(axis=1) & \
                ((np.abs(amount) >= options.min_shift_mm) | (amount == 0)).all(axis=1)
            if use.any():
                rotations.append(rots[use])
                centres.append(means[use] + np.einsum("kil,kl->ki", axes[use], amount[use]))
    return np.concatenate(rotations), np.concatenate(centres)


# ------------------------------------------------------------------------------------------- quality

def _evaluate(matrix, moving, fixed: FixedSurface, options, workers):
    """Surface distance of every moving point; overlap, robust inlier threshold, inliers, RMS."""
    p = transform_points(matrix, moving)
    index, valid = _TreeMatcher(fixed.tree, 2.0 * options.inlier_distance_mm, workers)(p)
    distance, plane = _surface_distance(p, fixed.points[index], fixed.normals[index], fixed.spacing_mm)
    distance[~valid] = np.inf
    overlap = float(np.mean(distance <= options.inlier_distance_mm))
    near = distance[distance <= options.inlier_distance_mm]
    if near.size >= 6:
        sigma = 1.4826 * float(np.median(near))  # |residual| is half-normal: median = 0.6745 sigma
        threshold = float(np.clip(3.0 * sigma, 1.0, options.inlier_distance_mm))
    else:
        threshold = options.inlier_distance_mm
    inliers = distance <= threshold
    rms = float(np.sqrt(np.mean(distance[inliers] ** 2))) if inliers.any() else float("nan")
    return {"p": p, "index": index, "distance": distance, "plane": plane, "overlap": overlap,
            "threshold": threshold, "inliers": inliers, "inlier_fraction": float(inliers.mean()), "rms": rms}


def cloud_noise_mm(points: np.ndarray, k: int = 24, samples: int = 2000, seed: int = 0) -> float:
    """The cloud's own noise (mm): median over sampled points of the RMS distance of their ``k`` nearest
    neighbours to the neighbours' best-fit plane. A correct registration's RMS is close to it; a much larger
    RMS means a wrong pose or a surface that differs (deformation, other extraction)."""
    points = np.asarray(points, float)
    if len(points) < k + 1:
        return float("nan")
    rng = np.random.default_rng(seed)
    query = points[rng.choice(len(points), min(samples, len(points)), replace=False)]
    _, neighbours = cKDTree(points).query(query, k=k)
    local = points[neighbours]
    local = local - local.mean(axis=1, keepdims=True)
    smallest = np.linalg.eigvalsh(np.einsum("nki,nkj->nij", local, local) / (k - 1))[:, 0]
    return float(np.sqrt(np.median(np.maximum(smallest, 0.0))))


def _hessian_uncertainty(p, n, residual, options) -> dict:
    """Pose uncertainty from the point-to-plane Gauss-Newton Hessian H = J^T J (rotation about the centroid
    of the points, translation in RAS): covariance sigma^2 H^-1, per-axis standard deviations, and the
    condition number / weakest direction of H with rotations scaled to millimetres at the cloud's RMS
    radius."""
    count = len(p)
    if count < 12:
        return {"degenerate": True, "condition_number": float("inf"), "note": "too few inliers",
                "ambiguous": False, "second_best": None}
    centre = p.mean(axis=0)
    arm = p - centre
    radius = float(np.sqrt((arm * arm).sum(axis=1).mean()))
    jac = np.concatenate([np.cross(arm, n), n], axis=1)
    hess = jac.T @ jac
    sigma2 = float(residual @ residual) / max(count - 6, 1)
    scale = np.array([radius] * 3 + [1.0] * 3)
    scaled = hess / np.outer(scale, scale)
    values, vectors = np.linalg.eigh(scaled)
    floor = max(float(values[-1]), 1e-300) * 1e-12   # directions below this count as unconstrained
    values = np.maximum(values, floor)
    condition = float(values[-1] / values[0])
    # covariance sigma^2 H^-1 through the eigen-decomposition of the scaled Hessian (stable when nearly singular)
    cov_scaled = sigma2 * (vectors / values) @ vectors.T
    cov = cov_scaled / np.outer(scale, scale)
    diag = np.sqrt(np.clip(np.diag(cov), 0, None))
    weakest = vectors[:, 0]
    rotation_part, translation_part = weakest[:3], weakest[3:]
    if np.linalg.norm(translation_part) >= np.linalg.norm(rotation_part):
        direction = translation_part / np.linalg.norm(translation_part)
        kind = "translation"
    else:
        direction = rotation_part / np.linalg.norm(rotation_part)
        kind = "rotation"
    axis = int(np.argmax(np.abs(direction)))
    return {
        "translation_sd_mm": [float(v) for v in diag[3:]],
        "rotation_sd_deg": [float(np.degrees(v)) for v in diag[:3]],
        "residual_sd_mm": float(np.sqrt(sigma2)),
        "condition_number": condition,
        "weakest_direction": {"kind": kind, "vector": [float(v) for v in direction],
                              "axis": AXIS_NAMES[axis], "six_vector": [float(v) for v in weakest],
                              "sd_mm": float(np.sqrt(sigma2 / values[0]))},
        "strongest_sd_mm": float(np.sqrt(sigma2 / values[-1])),
        "lever_radius_mm": radius,
        "centre_mm": [float(v) for v in centre],
        "covariance": cov.tolist(),   # (omega rad, v mm) about centre_mm, fixed frame
        "degenerate": bool(condition > options.degenerate_condition),
        "ambiguous": False,
        "second_best": None,
    }


def target_sd_mm(uncertainty: dict, targets) -> np.ndarray:
    """Predicted registration standard deviation (mm, RMS over the 3 axes) at fixed-frame ``targets`` (N, 3)
    from the pose covariance in ``uncertainty`` (random error only: model errors such as deformation or a
    different surface extraction are not in it)."""
    if "covariance" not in uncertainty:
        return np.full(len(np.atleast_2d(targets)), np.inf)
    cov = np.asarray(uncertainty["covariance"], float)
    arm = np.atleast_2d(np.asarray(targets, float)) - np.asarray(uncertainty["centre_mm"], float)
    jac = np.concatenate([-_skew(arm), np.broadcast_to(np.eye(3), arm.shape[:1] + (3, 3))], axis=2)  # (N, 3, 6)
    return np.sqrt(np.einsum("nij,jk,nik->n", jac, cov, jac))


# ------------------------------------------------------------------------------------------- public API

def register_cloud_to_surface(moving_points, fixed, fixed_normals=None,
                              options: RegistrationOptions | None = None) -> RegistrationResult:
    """Rigid transform mapping ``moving_points`` (camera cloud, mm) onto the ``fixed`` skin surface.

    ``fixed`` is a vtkPolyData (RAS mm; the skin model's polydata), points (N, 3) with ``fixed_normals``,
    or a :class:`FixedSurface` from :func:`prepare_fixed_surface` (reuse it for many clouds). No initial
    pose is needed (``options.initial_matrix`` skips the global search). Raises MSDTError for an empty or
    all-NaN cloud; a cloud that does not fit the surface comes back with ``converged`` False.
    """
    start = time.perf_counter()
    options = options or RegistrationOptions()
    moving = as_points(moving_points, "moving point cloud")
    if len(moving) < 10:
        raise MSDTError(f"The moving point cloud has only {len(moving)} finite points; at least 10 are needed.")
    surface = prepare_fixed_surface(fixed, fixed_normals, options)
    rng = np.random.default_rng(options.seed)
    if len(moving) > options.max_cloud_points:  # raw camera frames: a random subset says the same, faster
        moving = moving[rng.choice(len(moving), options.max_cloud_points, replace=False)]
    workers = options.workers
    centroid = moving.mean(axis=0)

    def subsample(count):
        if len(moving) <= count:
            return moving - centroid
        return moving[rng.choice(len(moving), count, replace=False)] - centroid

    candidates = []
    if options.initial_matrix is None:
        x_global = subsample(options.global_points)
        rotations, centres = _global_starts(moving - centroid, centroid, surface, options)
        if len(rotations) > options.global_keep:
            # many starts (partial view): a cheap round on fewer points, then the best continue
            x_quick = x_global[:max(len(x_global) // 2, 16)]
            rotations, centres, scores, _, _ = _batched_icp(
                rotations, centres, x_quick, surface.coarse_grid, surface.coarse_points, surface.coarse_normals,
                0.75 * surface.coarse_spacing_mm, options.global_iterations // 2, options.trim_fraction,
                point_weight=0.3)
            best = np.argsort(scores)[:options.global_keep]
            rotations, centres = rotations[best], centres[best]
        rotations, centres, scores, _, _ = _batched_icp(
            rotations, centres, x_global, surface.coarse_grid, surface.coarse_points, surface.coarse_normals,
            0.75 * surface.coarse_spacing_mm, options.global_iterations, options.trim_fraction, point_weight=0.3)
        order = np.argsort(scores)
        chosen = []
        for i in order:
            if all(_distinct(rotations[i], centres[i], rotations[j], centres[j], options) for j in chosen):
                chosen.append(i)
            if len(chosen) >= options.candidates:
                break
        start_rotations, start_centres = rotations[chosen], centres[chosen]
        global_scores = scores[chosen]
    else:
        initial = np.asarray(options.initial_matrix, float)
        if initial.shape != (4, 4) or not np.isfinite(initial).all():
            raise MSDTError(f"The initial matrix must be a finite 4x4 array; got shape {initial.shape}.")
        start_rotations = initial[None, :3, :3]
        start_centres = (initial[:3, :3] @ centroid + initial[:3, 3])[None]
        global_scores = np.array([np.nan])

    # candidates compared on the same points of the dense surface
    x_candidates = subsample(options.candidate_points)
    cap = 2.0 * options.inlier_distance_mm
    rotations, centres, scores, _, _ = _batched_icp(
        start_rotations, start_centres, x_candidates, _TreeMatcher(surface.tree, cap, workers), surface.points,
        surface.normals, surface.spacing_mm, options.candidate_iterations, options.trim_fraction,
        point_weight=0.05, cap=cap)
    order = np.argsort(scores)
    for rank, i in enumerate(order):
        candidates.append({"rank": rank, "score_mm": float(scores[i]), "global_score_mm": float(global_scores[i]),
                           "matrix": _pose_matrix(rotations[i], centres[i], centroid)})
    best = order[0]

    # final trimmed point-to-plane ICP on more points, gated to the inlier distance
    x_final = subsample(options.max_points)
    final_r, final_c, final_score, iterations, last_step = _batched_icp(
        rotations[best:best + 1], centres[best:best + 1], x_final,
        _TreeMatcher(surface.tree, options.inlier_distance_mm, workers), surface.points, surface.normals,
        surface.spacing_mm, options.max_iterations, options.final_trim_fraction, tolerance=options.tolerance_mm,
        gate="auto" if options.adaptive_gate else options.inlier_distance_mm, cap=options.inlier_distance_mm)
    icp_converged = last_step < 20 * options.tolerance_mm
    matrix = _pose_matrix(final_r[0], final_c[0], centroid)

    quality = _evaluate(matrix, moving, surface, options, workers)
    inliers = quality["inliers"]
    uncertainty = _hessian_uncertainty(quality["p"][inliers], surface.normals[quality["index"][inliers]],
                                       quality["plane"][inliers], options)

    # runner-up: the best candidate that is a distinct pose from the final one
    final_rotation, final_centre = final_r[0], final_c[0]
    for i in order[1:]:
        if _distinct(rotations[i], centres[i], final_rotation, final_centre, options):
            ratio = float(scores[i] / max(scores[best], 1e-9))
            uncertainty["second_best"] = {
                "matrix": _pose_matrix(rotations[i], centres[i], centroid), "score_mm": float(scores[i]),
                "best_score_mm": float(scores[best]), "score_ratio": ratio,
                "rotation_deg": rotation_angle_deg(rotations[i], final_rotation),
                "translation_mm": float(np.linalg.norm(centres[i] - final_centre))}
            uncertainty["ambiguous"] = bool(ratio <= 1.0 + options.ambiguity_ratio)
            break

    noise = cloud_noise_mm(moving, seed=options.seed)
    fit_ratio = float(quality["rms"] / noise) if noise > 0 else float("nan")
    poor_fit = bool(fit_ratio > options.max_fit_ratio and quality["rms"] - noise > options.fit_excess_mm)
    uncertainty["cloud_noise_mm"], uncertainty["fit_ratio"], uncertainty["poor_fit"] = noise, fit_ratio, poor_fit
    converged = bool(icp_converged and quality["overlap"] >= options.min_overlap and not poor_fit)
    notes = []
    if poor_fit:
        notes.append(f"the residual RMS is {fit_ratio:.1f} x the cloud's own noise ({noise:.2f} mm): a poor fit, "
                     "probably a wrong pose or a surface that differs from the cloud")
    if quality["overlap"] < options.min_overlap:
        notes.append(f"only {100 * quality['overlap']:.0f} % of the cloud lies within "
                     f"{options.inlier_distance_mm:g} mm of the surface (minimum {100 * options.min_overlap:.0f} %):"
                     " the cloud does not match this skin surface")
    if not icp_converged:
        notes.append(f"ICP did not settle within {options.max_iterations} iterations")
    if uncertainty.get("ambiguous"):
        second = uncertainty["second_best"]
        notes.append(f"ambiguous: another pose ({second['rotation_deg']:.0f} deg, {second['translation_mm']:.0f} mm "
                     f"away) fits within {100 * (second['score_ratio'] - 1):.1f} % of the best")
    if uncertainty.get("degenerate"):
        weak = uncertainty.get("weakest_direction", {})
        notes.append(f"weakly constrained {weak.get('kind', '')} along {weak.get('axis', '?')} "
                     f"(condition number {uncertainty['condition_number']:.3g})")
    head = "Registered" if converged else "Registration failed"
    message = f"{head}: RMS {quality['rms']:.2f} mm, overlap {100 * quality['overlap']:.0f} %, " \
              f"inliers {100 * quality['inlier_fraction']:.0f} %"
    if notes:
        message += "; " + "; ".join(notes)
    return RegistrationResult(matrix=matrix, rms_mm=quality["rms"], inlier_fraction=quality["inlier_fraction"],
                              overlap=quality["overlap"], converged=converged, uncertainty=uncertainty,
                              seconds=time.perf_counter() - start, iterations=int(iterations), message=message,
                              inlier_threshold_mm=quality["threshold"], points_used=len(x_final),
                              candidates=candidates)


def vtk_icp_baseline(moving_points, fixed_polydata, max_iterations: int = 100, landmarks: int = 1000,
                     options: RegistrationOptions | None = None, target=None,
                     fixed_surface: FixedSurface | None = None) -> RegistrationResult:
    """VTK's rigid vtkIterativeClosestPointTransform (start by matching centroids, mean-distance RMS) for
    comparison, scored like :func:`register_cloud_to_surface`. FOV caps are removed from the target as for
    our method, so both see the same skin (``target``: that cap-less polydata, if already made;
    ``fixed_surface``: a prepared surface for the scoring). ``seconds`` times VTK's ICP only."""
    import vtk
    from vtk.util.numpy_support import numpy_to_vtk

    start = time.perf_counter()
    options = options or RegistrationOptions()
    moving = as_points(moving_points, "moving point cloud")
    if target is None:
        target = polydata_without_caps(fixed_polydata) if options.drop_fov_caps else fixed_polydata
    source = vtk.vtkPolyData()
    vtk_points = vtk.vtkPoints()
    vtk_points.SetData(numpy_to_vtk(np.ascontiguousarray(moving), deep=True))
    source.SetPoints(vtk_points)
    icp = vtk.vtkIterativeClosestPointTransform()
    icp.SetSource(source)
    icp.SetTarget(target)
    icp.GetLandmarkTransform().SetModeToRigidBody()
    icp.StartByMatchingCentroidsOn()
    icp.SetMaximumNumberOfIterations(max_iterations)
    icp.SetMaximumNumberOfLandmarks(landmarks)
    icp.CheckMeanDistanceOn()
    icp.SetMaximumMeanDistance(1e-3)
    icp.Modified()
    icp.Update()
    matrix = np.array([[icp.GetMatrix().GetElement(i, j) for j in range(4)] for i in range(4)])
    seconds = time.perf_counter() - start
    surface = fixed_surface if fixed_surface is not None else prepare_fixed_surface(fixed_polydata, options=options)
    quality = _evaluate(matrix, moving, surface, options, options.workers)
    iterations = icp.GetNumberOfIterations()
    converged = bool(iterations < max_iterations and quality["overlap"] >= options.min_overlap)
    message = (f"VTK ICP: {iterations} iterations, RMS {quality['rms']:.2f} mm, "
               f"overlap {100 * quality['overlap']:.0f} %")
    return RegistrationResult(matrix=matrix, rms_mm=quality["rms"], inlier_fraction=quality["inlier_fraction"],
                              overlap=quality["overlap"], converged=converged, uncertainty={},
                              seconds=seconds, iterations=int(iterations), message=message,
                              inlier_threshold_mm=quality["threshold"], points_used=min(landmarks, len(moving)))


__all__ = ["FixedSurface", "NearestSampleGrid", "RegistrationOptions", "RegistrationResult", "cloud_noise_mm",
           "fov_cap_mask", "polydata_without_caps", "prepare_fixed_surface", "register_cloud_to_surface",
           "rigid_matrix", "rotation_angle_deg", "super_fibonacci_rotations", "target_sd_mm", "transform_points",
           "vtk_icp_baseline"]
