"""Target registration error (TRE): how far registered landmarks land from where they should be (mm).

A registration is judged at targets that were not used to compute it (e.g. vertebral centroids inside the
body when the skin surface was registered), not by its surface residual.
"""

from __future__ import annotations

import numpy as np

from MSDTLib.errors import MSDTError


def _landmarks(points, name: str) -> np.ndarray:
    array = np.asarray(points, dtype=float)
    if array.ndim == 1 and array.size == 3:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 3:
        raise MSDTError(f"{name} must be an (N, 3) array of points; got shape {array.shape}.")
    if len(array) == 0:
        raise MSDTError(f"{name} are empty: no landmark to measure the registration error at.")
    if not np.isfinite(array).all():
        raise MSDTError(f"{name} contain NaN or infinite coordinates.")
    return array


def target_registration_error(matrix, moving_landmarks, fixed_landmarks, names=None) -> dict:
    """Distances (mm) between ``matrix`` applied to ``moving_landmarks`` and their ``fixed_landmarks``.

    ``matrix`` is the 4x4 moving -> fixed transform; landmarks are paired by row. Returns per-point errors
    (``per_point``: name -> mm, ``errors_mm`` in order, ``vectors_mm`` fixed-frame error vectors) and the
    summary ``mean_mm``, ``median_mm``, ``max_mm``, ``rms_mm``, ``count`` and ``worst`` (name of the largest).
    """
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        raise MSDTError(f"The registration matrix must be a finite 4x4 array; got shape {matrix.shape}.")
    moving = _landmarks(moving_landmarks, "Moving landmarks")
    fixed = _landmarks(fixed_landmarks, "Fixed landmarks")
    if len(moving) != len(fixed):
        raise MSDTError(f"{len(moving)} moving landmarks cannot be paired with {len(fixed)} fixed landmarks.")
    names = [f"P{i + 1}" for i in range(len(moving))] if names is None else [str(n) for n in names]
    if len(names) != len(moving):
        raise MSDTError(f"{len(names)} names given for {len(moving)} landmarks.")
    mapped = moving @ matrix[:3, :3].T + matrix[:3, 3]
    vectors = mapped - fixed
    errors = np.linalg.norm(vectors, axis=1)
    worst = int(np.argmax(errors))
    return {
        "per_point": {name: float(e) for name, e in zip(names, errors, strict=True)},
        "errors_mm": [float(e) for e in errors],
        "vectors_mm": vectors.tolist(),
        "names": names,
        "mean_mm": float(errors.mean()),
        "median_mm": float(np.median(errors)),
        "max_mm": float(errors.max()),
        "rms_mm": float(np.sqrt(np.mean(errors ** 2))),
        "count": len(errors),
        "worst": names[worst],
    }


def markups_points(markups_node) -> dict[str, np.ndarray]:
    """Control points of a markups node as label -> RAS (mm), world coordinates (parent transforms applied)."""
    points = {}
    for i in range(markups_node.GetNumberOfControlPoints()):
        position = [0.0, 0.0, 0.0]
        markups_node.GetNthControlPointPositionWorld(i, position)
        label = markups_node.GetNthControlPointLabel(i) or f"P{i + 1}"
        points[label] = np.array(position, dtype=float)
    return points


def paired_landmarks_from_markups(moving_node, fixed_node, by: str = "label"):
    """Paired (moving (N, 3), fixed (N, 3), names) from two markups nodes, matched by control-point label
    (``by="label"``, only labels present in both, in the fixed node's order) or by index (``by="index"``)."""
    moving = markups_points(moving_node)
    fixed = markups_points(fixed_node)
    if by == "index":
        count = min(len(moving), len(fixed))
        names = list(fixed)[:count]
        moving_rows, fixed_rows = list(moving.values())[:count], list(fixed.values())[:count]
    elif by == "label":
        names = [name for name in fixed if name in moving]
        moving_rows, fixed_rows = [moving[n] for n in names], [fixed[n] for n in names]
    else:
        raise MSDTError(f"Unknown pairing '{by}'; use 'label' or 'index'.")
    if not names:
        raise MSDTError(f"Markups '{moving_node.GetName()}' and '{fixed_node.GetName()}' share no landmark "
                        f"to pair (by {by}).")
    return np.array(moving_rows), np.array(fixed_rows), names


__all__ = ["markups_points", "paired_landmarks_from_markups", "target_registration_error"]
