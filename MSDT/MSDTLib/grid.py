"""Voxel-grid geometry shared by the algorithms: arrays are indexed (k, j, i) like slicer.util.arrayFromVolume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """Geometry of a voxel array: ``shape`` (k, j, i) and the 4x4 IJK-to-RAS matrix (mm)."""

    shape: tuple[int, int, int]
    ijk_to_ras: np.ndarray

    @classmethod
    def of_node(cls, volume_node) -> Grid:
        from .io import node_ijk_to_ras

        dims = volume_node.GetImageData().GetDimensions()
        return cls((dims[2], dims[1], dims[0]), node_ijk_to_ras(volume_node))

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along i, j, k (mm)."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def spacing_kji(self) -> np.ndarray:
        """Voxel size along the array axes (k, j, i) (mm), the order scipy.ndimage expects."""
        return self.spacing[::-1]

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.ijk_to_ras[:3, :3])))

    def ras_from_kji(self, kji: np.ndarray) -> np.ndarray:
        """RAS (mm) of array indices given as (N, 3) rows of (k, j, i), fractional allowed."""
        ijk = np.asarray(kji, dtype=float)[..., ::-1]
        return ijk @ self.ijk_to_ras[:3, :3].T + self.ijk_to_ras[:3, 3]

    def kji_from_ras(self, ras: np.ndarray) -> np.ndarray:
        """Fractional array indices (k, j, i) of RAS points (N, 3)."""
        ras_to_ijk = np.linalg.inv(self.ijk_to_ras)
        ijk = np.asarray(ras, dtype=float) @ ras_to_ijk[:3, :3].T + ras_to_ijk[:3, 3]
        return ijk[..., ::-1]

    def touches_ends(self, kji: np.ndarray) -> bool:
        """True when voxels (N, 3 array indices) reach the first or last slice along the body (S) axis, i.e.
        the structure is cut by the field of view."""
        axis = self.axis_along(2)
        return bool(len(kji) and (kji[:, axis].min() == 0 or kji[:, axis].max() == self.shape[axis] - 1))

    def axis_along(self, ras_axis: int) -> int:
        """Array axis (0=k, 1=j, 2=i) whose direction is closest to RAS axis 0 (R), 1 (A) or 2 (S)."""
        directions = self.ijk_to_ras[:3, :3] / self.spacing
        ijk_axis = int(np.argmax(np.abs(directions[ras_axis, :])))
        return 2 - ijk_axis
