"""Binary-mask clean-up used by the skin and bone segmentations (scipy.ndimage)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 6-connected component of a boolean mask (empty stays empty)."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def remove_small_components(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """Drop 26-connected components smaller than ``min_voxels``."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]


def fill_holes_slicewise(mask: np.ndarray, axis: int) -> np.ndarray:
    """Fill enclosed holes in every 2D slice across ``axis``, then in 3D (lungs and bowel gas become inside)."""
    filled = np.moveaxis(mask.copy(), axis, 0)
    for index in range(filled.shape[0]):
        if filled[index].any():
            filled[index] = ndimage.binary_fill_holes(filled[index])
    return ndimage.binary_fill_holes(np.moveaxis(filled, 0, axis))


def ball(radius_mm: float, spacing_kji: np.ndarray) -> np.ndarray:
    """Ellipsoidal structuring element of a physical radius (mm) on an anisotropic grid."""
    half = np.maximum(np.floor(radius_mm / np.asarray(spacing_kji)), 0).astype(int)
    axes = [np.arange(-h, h + 1) * s for h, s in zip(half, spacing_kji, strict=True)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    return (zz**2 + yy**2 + xx**2) <= radius_mm**2 + 1e-6
