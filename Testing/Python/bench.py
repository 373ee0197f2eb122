"""`make bench`: wall time of MSDT's workflows as ratios against baselines measured in the same run.

* Anatomy: the full twin against "threshold+label" (read the CT with SimpleITK, threshold at -500 HU, label
  connected components with scipy), the least any skin segmentation has to do.
* Spine: the characterisation (bodies, endplates, angles, discs, density) against the anatomy step alone on the
  same data, on the sample CT and on a 512x512x300 synthetic spine phantom. Target: the characterisation adds
  less than the segmentation itself (ratio < 1).

* Fusion: markerless registration (success rate, median TRE, seconds) next to plain VTK ICP from a centroid
  start on the same simulated camera clouds; OpenIGTLink image+transform streaming rate and latency on loopback
  (``MSDT_IGT_SOAK`` seconds, default 20; the issue's soak is 300).

* Motion: sEMG features on one hour of 4-channel 2 kHz data and VQF on one hour of 285.7 Hz 9-axis IMU data,
  each as a multiple of real time on one core (targets >= 500x and >= 100x).

Results go to build/bench/results.json and stdout.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "Testing" / "Data" / "totalsegmentator_ct_mr_spine"
CT, LABELS = SAMPLE / "example_ct.nii.gz", SAMPLE / "spine_report" / "totalseg.nii.gz"


def _median_seconds(function, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def threshold_label(path: Path = CT) -> None:
    import SimpleITK as sitk
    from scipy import ndimage

    ndimage.label(sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > -500)


def _loaded(image: Path):
    from MSDTLib import io
    from MSDTLib.app import new_scene

    scene = new_scene()
    return scene, io.load_volume(scene, image)


def anatomy(image: Path = CT, labels: Path = LABELS) -> None:
    from MSDTLib import pipeline

    scene, volume = _loaded(image)
    pipeline.build_anatomy_twin(scene, volume, labels, progress=lambda *_: None)


def spine(image: Path = CT, labels: Path = LABELS, names=None) -> None:
    from MSDTLib import spineworkflow

    scene, volume = _loaded(image)
    spineworkflow.characterise_spine(scene, volume, labels, spineworkflow.SpineOptions(label_names=names),
                                     progress=lambda *_: None)


def segment_cli() -> None:
    from MSDTLib import cli

    with tempfile.TemporaryDirectory() as out:
        cli.run_segment(CT, LABELS, Path(out) / "t")


def _phantom_files(folder: Path):
    from MSDTLib import phantom

    start = time.perf_counter()
    ph = phantom.build_spine_phantom(voxel_mm=(0.8, 0.8, 1.0), cobb_deg=25.0, shape=(512, 512, 300), noise_hu=10.0)
    built = time.perf_counter() - start
    image, labels = ph.write(folder)
    names = folder / "names.json"
    names.write_text(json.dumps({str(k): v for k, v in ph.class_table.items()}))
    return image, labels, names, built


def fusion_bench() -> dict:
    """Registration against the VTK ICP baseline, and OpenIGTLink streaming (optional Lib: skipped if absent)."""
    try:
        from MSDTFusionLib.igt_bench import run_igt_bench
        from MSDTFusionLib.registration_bench import run_registration_bench
    except ModuleNotFoundError as error:
        return {"skipped": str(error)}
    return {"registration": run_registration_bench(trials=int(os.environ.get("MSDT_REG_TRIALS", "30"))),
            "openigtlink": run_igt_bench(seconds=float(os.environ.get("MSDT_IGT_SOAK", "20")))}


def motion_bench() -> dict:
    """Real-time multiples of the sEMG features and of VQF (synthetic signals of realistic size)."""
    import numpy as np

    try:
        from MSDTMotionLib import emg, imu
    except ModuleNotFoundError as error:
        return {"skipped": str(error)}
    rng = np.random.default_rng(0)
    hour = 3600.0
    signals = {f"EMG{i}": (rng.normal(size=int(2000 * hour)), 2000.0, "V") for i in range(4)}
    emg_s = _median_seconds(lambda: emg.analyse_recording(signals, window_s=1.0), repeats=1)
    n = int(285.7 * hour)
    gyr, acc = rng.normal(scale=0.1, size=(n, 3)), rng.normal(size=(n, 3)) + [0.0, 0.0, 9.81]
    mag = rng.normal(size=(n, 3)) + [20.0, 0.0, -40.0]
    vqf_s = _median_seconds(lambda: imu.orientation_vqf(gyr, acc, mag, 285.7), repeats=1)
    return {"emg_4ch_2kHz_1h_x_realtime": round(hour / emg_s, 1), "vqf_9d_285Hz_1h_x_realtime": round(hour / vqf_s, 1)}


def main() -> int:
    results = {"machine": f"{os.cpu_count()} cores", "cases": {}}
    base = _median_seconds(threshold_label)
    results["baselines"] = {"threshold+label (sample CT)": round(base, 4)}
    anatomy_s = _median_seconds(anatomy)
    results["baselines"]["anatomy twin (sample CT)"] = round(anatomy_s, 3)
    results["cases"]["anatomy twin / threshold+label (sample CT 122x101x112)"] = round(anatomy_s / base, 1)
    results["cases"]["msdt segment incl. STL, .mrb, renders / threshold+label"] = round(
        _median_seconds(segment_cli) / base, 1)
    results["cases"]["spine characterisation / anatomy twin (sample CT)"] = round(_median_seconds(spine) / anatomy_s, 2)
    with tempfile.TemporaryDirectory() as folder:
        image, labels, names, built = _phantom_files(Path(folder))
        results["phantom_build_s (512x512x300)"] = round(built, 1)
        from MSDTLib import pipeline  # noqa: F401  (import cost outside the timing)

        anatomy_big = _median_seconds(lambda: anatomy(image, None), repeats=1)
        spine_big = _median_seconds(lambda: spine(image, labels, names), repeats=1)
        results["baselines"]["anatomy twin (phantom 512x512x300)"] = round(anatomy_big, 2)
        results["cases"]["spine characterisation / anatomy twin (phantom 512x512x300)"] = round(spine_big / anatomy_big, 2)
    results["fusion"] = fusion_bench()
    results["motion"] = motion_bench()
    out = ROOT / "build" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
