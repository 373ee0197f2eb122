"""Skin (body envelope) and bone masks from CT Hounsfield units or MR intensities (pure numpy/scipy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import apply_hysteresis_threshold, threshold_otsu

from .errors import MSDTError
from .grid import Grid
from .morphology import ball, fill_holes_slicewise, largest_component, remove_small_components

CT_SKIN_THRESHOLD_HU = -500.0  # halfway between air (-1000 HU) and fat (about -100 HU)
CT_BONE_THRESHOLD_HU = 120.0   # lower edge of trabecular bone (vertebral bodies are ~100-250 HU)
CT_BONE_SEED_HU = 300.0        # cortical bone: every bone component must contain some


@dataclass
class MaskResult:
    """A binary mask (k, j, i) and the threshold that produced it (HU for CT, image units for MR)."""

    mask: np.ndarray
    threshold: float


def mr_body_threshold(image: np.ndarray) -> float:
    """Automatic MR body/background threshold (image units).

    Otsu's method on log intensities separates the dark background from tissue (on raw intensities it tends
    to split fat from muscle instead); the threshold is then set halfway between the two classes' medians,
    the level a voxel half filled with tissue reaches, so partial-volume voxels at the skin count by half.
    """
    values = image[np.isfinite(image)].astype(float)
    values = values[values > 0]
    if values.size == 0 or values.min() == values.max():
        raise MSDTError("The MR image has no positive contrast; a body threshold cannot be found.")
    split = float(np.exp(threshold_otsu(np.log1p(values)))) - 1.0
    background, tissue = np.median(values[values <= split]), np.median(values[values > split])
    return float(background + tissue) / 2.0


def body_mask(image: np.ndarray, grid: Grid, modality: str = "ct", threshold: float | None = None) -> MaskResult:
    """Body envelope: threshold, open away the table and blankets, largest component, holes filled per slice.

    Lungs, airways and bowel gas are enclosed by the body in every axial slice, so they end up inside.
    """
    if modality not in ("ct", "mr"):
        raise MSDTError(f"Unknown modality '{modality}'; expected 'ct' or 'mr'.")
    if threshold is None:
        threshold = CT_SKIN_THRESHOLD_HU if modality == "ct" else mr_body_threshold(image)
    foreground = image > threshold
    if not foreground.any():
        raise MSDTError(f"No voxel is above the skin threshold {threshold:g}; is this the right modality?")
    opened = ndimage.binary_opening(foreground, structure=ball(3.0, grid.spacing_kji))
    body = largest_component(opened if opened.any() else foreground)
    body = ndimage.binary_dilation(body, structure=ball(3.0, grid.spacing_kji)) & foreground | body
    body = fill_holes_slicewise(body, axis=grid.axis_along(2))
    return MaskResult(largest_component(body), float(threshold))


def bone_mask(image: np.ndarray, grid: Grid, threshold_hu: float = CT_BONE_THRESHOLD_HU,
              seed_hu: float = CT_BONE_SEED_HU, min_volume_ml: float = 0.5,
              within: np.ndarray | None = None) -> MaskResult:
    """CT bone by hysteresis on HU, then clean-up.

    Voxels >= ``threshold_hu`` are kept where they connect to cortical voxels >= ``seed_hu`` (trabecular
    bone hangs on its cortex, fat and muscle do not); a 3 mm closing bridges thin cortex, marrow is filled
    slice by slice and specks under ``min_volume_ml`` are removed. ``within`` (the body mask) keeps the
    table and other objects outside the patient out. Contrast-filled vessels and urinary tract
    reach bone HU too and can be included: HU alone cannot tell them apart.
    """
    if not (image >= seed_hu).any():
        raise MSDTError(f"No voxel reaches {seed_hu:g} HU (cortical bone); is this a CT in Hounsfield units?")
    bone = apply_hysteresis_threshold(image.astype(np.float32), threshold_hu, seed_hu)
    if within is not None:
        bone &= within
    bone = ndimage.binary_closing(bone, structure=ball(3.0, grid.spacing_kji), border_value=0) | bone
    bone = fill_holes_slicewise(bone, axis=grid.axis_along(2))
    min_voxels = max(1, int(round(min_volume_ml * 1000.0 / grid.voxel_volume_mm3)))
    bone = remove_small_components(bone, min_voxels)
    if not bone.any():
        raise MSDTError(f"No bone of at least {min_volume_ml:g} ml reaching {seed_hu:g} HU lies inside the body.")
    return MaskResult(bone, float(threshold_hu))
