"""Optional TotalSegmentator backend: runs it on a volume when the package and its weights are present.

Install with ``pip install msdt[ml]`` (torch 2.13.0 CPU + TotalSegmentator). Weights are downloaded by
TotalSegmentator itself on a machine with internet (``totalseg_download_weights -t total``); MSDT never
downloads anything and says clearly what is missing.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

from .errors import MSDTError

# nnU-Net dataset ids of the fast (3 mm) models MSDT runs on a CPU.
FAST_DATASETS = {"ct": ("total", 297), "mr": ("total_mr", 852)}


def weights_folder() -> Path:
    """Where TotalSegmentator keeps its weights (``TOTALSEG_HOME_DIR`` or ``~/.totalsegmentator``)."""
    home = os.environ.get("TOTALSEG_HOME_DIR")
    return (Path(home) if home else Path.home() / ".totalsegmentator") / "nnunet" / "results"


def check_available(modality: str = "ct") -> tuple[str, int]:
    """Return (task, dataset id) or raise MSDTError naming what is missing (package or weights)."""
    if modality not in FAST_DATASETS:
        raise MSDTError(f"TotalSegmentator has no task for modality '{modality}'.")
    if importlib.util.find_spec("totalsegmentator") is None:
        raise MSDTError("TotalSegmentator is not installed: install the optional extra with "
                        "`pip install 'msdt[ml]'` (torch 2.13.0 CPU + TotalSegmentator), or give a label map.")
    task, dataset = FAST_DATASETS[modality]
    folder = weights_folder()
    if not any(folder.glob(f"Dataset{dataset}_*")):
        raise MSDTError(f"TotalSegmentator weights for task '{task}' (Dataset{dataset}) are missing in '{folder}'. "
                        f"Download them on a machine with internet (`totalseg_download_weights -t {task}`) "
                        "and copy the folder here, or give a label map instead.")
    return task, dataset


def segment_with_totalsegmentator(volume_node, modality: str = "ct"):
    """Run TotalSegmentator (fast model) on ``volume_node``; returns a label-map volume node on the scene."""
    task, _ = check_available(modality)
    import SimpleITK as sitk
    from totalsegmentator.python_api import totalsegmentator

    from . import io

    with tempfile.TemporaryDirectory(prefix="msdt_totalseg_") as work:
        source = Path(work) / "input.nii.gz"
        target = Path(work) / "labels.nii.gz"
        sitk.WriteImage(io.image_from_volume_node(volume_node), str(source))
        try:
            totalsegmentator(str(source), str(target), ml=True, task=task, fast=True, quiet=True)
        except Exception as error:  # TotalSegmentator raises plain exceptions for every failure
            raise MSDTError(f"TotalSegmentator failed on '{volume_node.GetName()}': {error}") from error
        labels = io.read_image(target)
    return io.volume_node_from_image(volume_node.GetScene(), labels, f"{volume_node.GetName()}_totalseg",
                                     labelmap=True)
