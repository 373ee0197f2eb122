"""`make bench`: wall time of the anatomy workflow on the sample CT, as ratios against a baseline measured in
the same run on the same machine.

Baseline ("threshold+label"): read the CT with SimpleITK, threshold it at -500 HU and label its connected
components with scipy: the least work any skin segmentation has to do. The ratio says how many of those the
full twin costs, so it can be compared across machines. Results go to build/bench/results.json.
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
REPEATS = 3


def _median_seconds(function) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def baseline() -> None:
    import SimpleITK as sitk
    from scipy import ndimage

    image = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE / "example_ct.nii.gz")))
    ndimage.label(image > -500)


def anatomy_twin() -> None:
    from MSDTLib import io, pipeline
    from MSDTLib.app import new_scene, shutdown_scene

    scene = new_scene()
    volume = io.load_volume(scene, SAMPLE / "example_ct.nii.gz")
    pipeline.build_anatomy_twin(scene, volume, SAMPLE / "spine_report" / "totalseg.nii.gz", progress=lambda *_: None)
    shutdown_scene(scene)


def segment_cli() -> None:
    from MSDTLib import cli

    with tempfile.TemporaryDirectory() as out:
        cli.run_segment(SAMPLE / "example_ct.nii.gz", SAMPLE / "spine_report" / "totalseg.nii.gz", Path(out) / "t")


def main() -> int:
    base = _median_seconds(baseline)
    results = {"baseline": "threshold+label (SimpleITK read, -500 HU, scipy.ndimage.label)",
               "baseline_s": round(base, 4), "repeats": REPEATS, "cases": {}}
    for name, function in (("anatomy_twin (sample CT 122x101x112)", anatomy_twin),
                           ("msdt segment incl. STL, .mrb, renders", segment_cli)):
        seconds = _median_seconds(function)
        results["cases"][name] = {"seconds": round(seconds, 3), "ratio_to_baseline": round(seconds / base, 1)}
    out = ROOT / "build" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
