"""Simulated depth-camera clouds of the sample CT's skin, and the camera-to-skin registration benchmark.

Two sets, both from the bundled TotalSegmentator CT (3 mm voxels), TRE at the vertebral centroids:

* ``clean``: the posterior skin of the CT skin model itself (what a camera behind the patient sees), 2 mm
  Gaussian noise, 10 % outliers in the bounding box, ~8000 points, a uniformly random rotation and up to
  200 mm translation.
* ``harder``: the same view of a *different* surface extraction (body mask at -300 HU instead of -500 HU,
  Gaussian-smoothed, marching cubes; it lies 1.2 mm inside the -500 HU skin on average), a 2 mm
  breathing-like displacement along A that varies along S (one sine period over the trunk), and depth
  noise along the camera rays (1.5 mm at the nearest point, growing with the squared distance).
* ``harder_half_wave`` (optional): as ``harder`` with half a sine period, i.e. the back moves 1.3 mm
  inwards on average; this offset adds to the extraction's and biases any rigid surface registration.

:func:`run_registration_bench` registers each cloud with :func:`register_cloud_to_surface` and with VTK's
ICP (:func:`vtk_icp_baseline`) and reports success rates, TRE and seconds for both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from MSDTLib.errors import MSDTError

from .registration import (
    RegistrationOptions,
    fov_cap_mask,
    polydata_points_normals,
    polydata_without_caps,
    prepare_fixed_surface,
    register_cloud_to_surface,
    rigid_matrix,
    transform_points,
    vtk_icp_baseline,
)
from .tre import target_registration_error

SAMPLE = Path(__file__).resolve().parents[2] / "Testing" / "Data" / "totalsegmentator_ct_mr_spine"
SUCCESS_TRE_MM = 5.0
HARDER = {"depth_noise": True, "breathing_mm": 2.0, "noise_mm": 1.5}
SET_SEEDS = {"clean": 0, "harder": 1, "harder_half_wave": 2, "clean_small_motion": 3}
SMALL_MOTION = {"max_rotation_deg": 10.0, "max_translation_mm": 30.0}  # where a local ICP can succeed


@dataclass
class CameraTrial:
    """One simulated camera cloud: ``moving`` (camera frame) and the true moving -> fixed ``truth`` matrix."""

    moving: np.ndarray
    truth: np.ndarray
    seed: int


def random_rigid(rng: np.random.Generator, max_translation_mm: float = 200.0,
                 max_rotation_deg: float | None = None) -> np.ndarray:
    """A rotation uniform over SO(3) (or about a random axis by at most ``max_rotation_deg``) and a
    translation of uniformly random direction, length <= ``max_translation_mm``."""
    if max_rotation_deg is None:
        rotation = Rotation.random(random_state=int(rng.integers(2 ** 31))).as_matrix()
    else:
        axis = rng.normal(size=3)
        axis *= np.radians(rng.uniform(0.0, max_rotation_deg)) / np.linalg.norm(axis)
        rotation = Rotation.from_rotvec(axis).as_matrix()
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    return rigid_matrix(rotation, direction * rng.uniform(0.0, max_translation_mm))


def posterior_view(points: np.ndarray, normals: np.ndarray, min_facing: float = 0.3) -> np.ndarray:
    """Mask of the skin a camera behind a supine patient sees: normals facing posterior (-A) by more than
    ``min_facing``, in the posterior half of the body, and not on the flat FOV caps."""
    mid_a = 0.5 * (points[:, 1].min() + points[:, 1].max())
    return (normals @ np.array([0.0, -1.0, 0.0]) > min_facing) & (points[:, 1] < mid_a) & \
        ~fov_cap_mask(points, normals)


def simulate_camera_cloud(points: np.ndarray, normals: np.ndarray, rng: np.random.Generator,
                          n_points: int = 8000, noise_mm: float = 2.0, outlier_fraction: float = 0.1,
                          depth_noise: bool = False, breathing_mm: float = 0.0, breathing_periods: float = 1.0,
                          camera_distance_mm: float = 700.0) -> np.ndarray:
    """A camera cloud (RAS mm) of the posterior skin: ``n_points`` points of which ``outlier_fraction`` are
    uniform in the bounding box (+10 mm). Noise is isotropic Gaussian ``noise_mm`` per axis, or with
    ``depth_noise`` along the camera rays with sigma = ``noise_mm`` x (distance / nearest distance)^2. A
    ``breathing_mm`` displacement along A varies as sin(2 pi ``breathing_periods`` s) along the body (s = 0
    at the lowest S, 1 at the highest): one full period (the default) has zero mean; half a period moves the
    whole back one way (mean 0.64 x amplitude), which no rigid registration can tell from a shift."""
    view = points[posterior_view(points, normals)]
    if breathing_mm:
        s = (view[:, 2] - view[:, 2].min()) / max(np.ptp(view[:, 2]), 1e-9)
        view = view + np.outer(breathing_mm * np.sin(2.0 * np.pi * breathing_periods * s), [0.0, 1.0, 0.0])
    n_outliers = int(round(outlier_fraction * n_points))
    n_inliers = n_points - n_outliers
    chosen = view[rng.choice(len(view), n_inliers, replace=len(view) < n_inliers)]
    if depth_noise:
        camera = np.array([chosen[:, 0].mean(), view[:, 1].min() - camera_distance_mm, chosen[:, 2].mean()])
        rays = chosen - camera
        distance = np.linalg.norm(rays, axis=1)
        sigma = noise_mm * (distance / distance.min()) ** 2
        chosen = chosen + rays / distance[:, None] * (sigma * rng.normal(size=len(chosen)))[:, None]
    else:
        chosen = chosen + rng.normal(scale=noise_mm, size=chosen.shape)
    low, high = view.min(axis=0) - 10.0, view.max(axis=0) + 10.0
    outliers = rng.uniform(low, high, size=(n_outliers, 3))
    cloud = np.concatenate([chosen, outliers])
    return cloud[rng.permutation(len(cloud))]


def make_trials(points, normals, count: int, seed: int, max_rotation_deg: float | None = None,
                max_translation_mm: float = 200.0, **simulation) -> list[CameraTrial]:
    """``count`` clouds, each moved into a random camera frame (moving = T x RAS; truth = T^-1); rotations
    uniform over SO(3) unless ``max_rotation_deg`` is given."""
    trials = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        cloud = simulate_camera_cloud(points, normals, rng, **simulation)
        to_camera = random_rigid(rng, max_translation_mm, max_rotation_deg)
        trials.append(CameraTrial(transform_points(to_camera, cloud), np.linalg.inv(to_camera), seed * 1000 + i))
    return trials


def rethresholded_skin(volume_node, threshold_hu: float = -300.0, smoothing_voxels: float = 1.0):
    """Points and outward normals (RAS mm) of another skin extraction of a CT volume node: body mask at
    ``threshold_hu``, Gaussian-smoothed, marching cubes at 0.5 (skimage), closed at the FOV ends."""
    import slicer
    from scipy import ndimage
    from skimage.measure import marching_cubes

    from MSDTLib import tissue
    from MSDTLib.grid import Grid

    array = slicer.util.arrayFromVolume(volume_node)
    grid = Grid.of_node(volume_node)
    mask = tissue.body_mask(array, grid, "ct", threshold_hu).mask
    padded = np.pad(mask.astype(np.float32), 2)
    if smoothing_voxels:
        padded = ndimage.gaussian_filter(padded, smoothing_voxels)
    verts, _, normals_kji, _ = marching_cubes(padded, 0.5)
    points = grid.ras_from_kji(verts - 2.0)
    linear = grid.ijk_to_ras[:3, :3]
    normals = normals_kji[:, ::-1] @ np.linalg.inv(linear)  # covector: n_ras = A^-T n_ijk
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    outward = np.einsum("ij,ij->i", normals, points - points.mean(axis=0))
    if np.median(outward) < 0:
        normals = -normals
    return points, normals


def ct_twin_inputs(volume_node=None, result=None):
    """(skin polydata, skin points, skin normals, vertebra centroids (N, 3), level names, volume node) of the
    sample CT twin; built on a new scene when not given."""
    if result is None:
        from MSDTLib import io, pipeline
        from MSDTLib.app import new_scene

        scene = new_scene()
        volume_node = io.load_volume(scene, SAMPLE / "example_ct.nii.gz")
        result = pipeline.build_anatomy_twin(scene, volume_node, SAMPLE / "spine_report" / "totalseg.nii.gz",
                                             progress=lambda *_: None)
    volume_node = volume_node or result.volume_node
    polydata = result.skin_model_node.GetPolyData()
    points, normals = polydata_points_normals(polydata)
    centroids = np.array([v.points["centroid"] for v in result.vertebrae], dtype=float)
    names = [v.level for v in result.vertebrae]
    return polydata, points, normals, centroids, names, volume_node


def trial_tre(matrix, trial: CameraTrial, targets: np.ndarray) -> dict:
    """TRE at the fixed ``targets``: their camera-frame positions mapped back by ``matrix``."""
    moving_targets = transform_points(np.linalg.inv(trial.truth), targets)
    return target_registration_error(matrix, moving_targets, targets)


def _summarise(rows: list[dict]) -> dict:
    mean_tre = np.array([r["mean_tre_mm"] for r in rows])
    max_tre = np.array([r["max_tre_mm"] for r in rows])
    seconds = np.array([r["seconds"] for r in rows])
    success = max_tre < SUCCESS_TRE_MM
    flagged = np.array([not r["converged"] for r in rows])
    return {
        "trials": len(rows),
        "success_rate": float(success.mean()),
        "median_tre_mm": float(np.median(mean_tre)),
        "p90_tre_mm": float(np.percentile(mean_tre, 90)),
        "max_tre_mm": float(max_tre.max()),
        "median_tre_successful_mm": float(np.median(mean_tre[success])) if success.any() else float("nan"),
        "mean_seconds": float(seconds.mean()),
        "max_seconds": float(seconds.max()),
        "failures_flagged": int((~success & flagged).sum()),
        "failures_unflagged": int((~success & ~flagged).sum()),
        "false_alarms": int((success & flagged).sum()),
    }


def run_registration_bench(trials: int = 50, seed: int = 0, baseline: bool = True,
                           sets=("clean", "harder", "clean_small_motion"), baseline_trials: int | None = 10,
                           inputs=None) -> dict:
    """Success rate (every vertebral-centroid TRE < 5 mm), median (of the per-trial mean) and max TRE and
    seconds for our registration and VTK's ICP on the same simulated clouds. Sets: ``clean``, ``harder``,
    ``harder_half_wave`` (see the module doc) and ``clean_small_motion`` (the clean clouds moved by at most
    10 deg and 30 mm, where a local ICP has a chance). VTK's ICP takes seconds per cloud: it runs on the
    first ``baseline_trials`` clouds of each set (None: all). ``inputs``: :func:`ct_twin_inputs` output."""
    polydata, points, normals, centroids, _, volume_node = inputs or ct_twin_inputs()
    started = time.perf_counter()
    options = RegistrationOptions()
    surface = prepare_fixed_surface(polydata, options=options)
    prepare_seconds = time.perf_counter() - started
    target = polydata_without_caps(polydata)
    report = {"fixed_points": len(points), "fixed_prepare_seconds": prepare_seconds,
              "dense_fixed_points": len(surface.points), "coarse_fixed_points": len(surface.coarse_points)}
    harder = rethresholded_skin(volume_node, -300.0) if {"harder", "harder_half_wave"} & set(sets) else None
    simulations = {
        "clean": (points, normals, {}),
        "clean_small_motion": (points, normals, SMALL_MOTION),
        "harder": (*(harder or (None, None)), HARDER),
        "harder_half_wave": (*(harder or (None, None)), {**HARDER, "breathing_periods": 0.5}),
    }
    for name in sets:
        if name not in simulations:
            raise MSDTError(f"Unknown benchmark set '{name}'; choose from {', '.join(simulations)}.")
        source_points, source_normals, extra = simulations[name]
        cases = make_trials(source_points, source_normals, trials, seed + SET_SEEDS[name], **extra)
        methods = {"ours": lambda m: register_cloud_to_surface(m, surface, options=options)}
        if baseline:
            methods["vtk_icp"] = lambda m: vtk_icp_baseline(m, polydata, target=target, fixed_surface=surface)
        report[name] = {}
        for method, register in methods.items():
            rows = []
            for case in (cases if method == "ours" or baseline_trials is None else cases[:baseline_trials]):
                result = register(case.moving)
                tre = trial_tre(result.matrix, case, centroids)
                rows.append({"mean_tre_mm": tre["mean_mm"], "max_tre_mm": tre["max_mm"], "seconds": result.seconds,
                             "converged": result.converged, "overlap": result.overlap, "rms_mm": result.rms_mm})
            report[name][method] = _summarise(rows)
    return report


__all__ = ["CameraTrial", "ct_twin_inputs", "make_trials", "posterior_view", "random_rigid",
           "rethresholded_skin", "run_registration_bench", "simulate_camera_cloud", "trial_tre"]
