"""Spinal alignment from endplate planes: coronal Cobb angles, lumbar lordosis, thoracic kyphosis.

Angles are measured as a radiologist does on the projection planes of the patient: the coronal plane
(R-S) for Cobb angles, the sagittal plane (A-S) for lordosis and kyphosis. The tilt of an endplate is the
angle of its normal, projected on that plane, from the superior axis (degrees; coronal: positive toward the
patient's right; sagittal: positive toward anterior). The 3D angle between the same two normals is given
beside each planar angle.

* Cobb: the pair of end vertebrae (upper superior endplate, lower inferior endplate) whose tilts differ
  most; the apex is the vertebra between them farthest (coronal plane) from the line joining their centres.
  Further curves are searched above and below the major one (>= 10 degrees).
* Lordosis: L1 superior endplate to S1 superior endplate (L5 inferior endplate when S1 is absent), positive
  when concave posteriorly.
* Kyphosis: T4 superior endplate to T12 inferior endplate, positive when concave anteriorly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .labels import VERTEBRA_ORDER

SCOLIOSIS_THRESHOLD_DEG = 10.0
_PLANES = {"coronal": 0, "sagittal": 1}  # RAS component that tilts the normal away from S


def tilt_deg(normal: np.ndarray, plane: str) -> float:
    """Tilt (degrees) of a cranial-pointing normal projected on the coronal or sagittal plane."""
    return float(np.degrees(np.arctan2(normal[_PLANES[plane]], normal[2])))


def angle_3d_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle (degrees) between two unit normals in 3D."""
    return float(np.degrees(np.arccos(np.clip(np.dot(a, b), -1.0, 1.0))))


@dataclass
class CurveAngle:
    """A planar angle between two endplates, its 3D counterpart and the vertebrae involved."""

    angle_deg: float | None
    angle_3d_deg: float | None
    upper: str | None = None
    lower: str | None = None
    apex: str | None = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        keys = ("angle_deg", "angle_3d_deg", "upper", "lower", "apex", "reason")
        result = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in zip(keys, (
            self.angle_deg, self.angle_3d_deg, self.upper, self.lower, self.apex, self.reason), strict=True)}
        keep_none = ("angle_deg",) if self.angle_deg is not None else ("angle_deg", "reason")
        return {k: v for k, v in result.items() if v is not None or k in keep_none}


def _usable(bodies: dict) -> list:
    """Bodies with reliable endplates (not cut by the field of view), cranial to caudal."""
    return [b for b in bodies.values() if not b.truncated]


def _apex(chain: list, upper: int, lower: int) -> str:
    """Vertebra between two end vertebrae farthest from their chord in the coronal (R-S) plane."""
    start, end = chain[upper].center[[0, 2]], chain[lower].center[[0, 2]]
    chord = (end - start) / max(np.linalg.norm(end - start), 1e-9)
    inner = range(upper + 1, lower) if lower - upper > 1 else range(upper, lower + 1)
    def off_chord(point):
        offset = point - start
        return abs(chord[0] * offset[1] - chord[1] * offset[0])

    deviation = {i: off_chord(chain[i].center[[0, 2]]) for i in inner}
    best = max(deviation, key=deviation.get)
    if deviation[best] < 1.0:  # straight chord: the middle vertebra
        best = (upper + lower + 1) // 2 if lower - upper > 1 else upper
    return chain[best].level


def _major_curve(chain: list) -> tuple[int, int, float] | None:
    best = None
    for i in range(len(chain)):
        for j in range(i + 1, len(chain)):
            angle = tilt_deg(chain[i].superior.normal, "coronal") - tilt_deg(chain[j].inferior.normal, "coronal")
            if best is None or abs(angle) > abs(best[2]):
                best = (i, j, angle)
    return best


def cobb_angles(bodies: dict, minimum_secondary_deg: float = SCOLIOSIS_THRESHOLD_DEG) -> list[CurveAngle]:
    """Coronal Cobb angles, the major curve first; a reason instead of an angle when fewer than 2 vertebrae."""
    chain = _usable(bodies)
    if len(chain) < 2:
        return [CurveAngle(None, None, reason=f"a Cobb angle needs two vertebrae with complete endplates; "
                                              f"{len(chain)} available")]
    curves = []
    segments = [(0, len(chain) - 1)]
    while segments:
        first, last = segments.pop(0)
        found = _major_curve(chain[first:last + 1]) if last > first else None
        if found is None:
            continue
        i, j, angle = found[0] + first, found[1] + first, found[2]
        if curves and abs(angle) < minimum_secondary_deg:
            continue
        upper, lower = chain[i], chain[j]
        curves.append(CurveAngle(abs(angle), angle_3d_deg(upper.superior.normal, lower.inferior.normal),
                                 upper.level, lower.level, _apex(chain, i, j)))
        segments += [(first, i), (j, last)]
    return sorted(curves, key=lambda c: -c.angle_deg)


def _find(bodies: dict, level: str):
    body = bodies.get(level)
    return body if body is not None and not body.truncated else None


def lordosis(bodies: dict) -> CurveAngle:
    """Lumbar lordosis, L1 superior to S1 superior endplate (sagittal plane, degrees, positive = lordotic)."""
    top = _find(bodies, "L1")
    bottom, plate, notes = _find(bodies, "S1"), "superior", []
    if bottom is None and _find(bodies, "L5") is not None:
        bottom, plate = _find(bodies, "L5"), "inferior"
        notes.append("S1 not available: measured to the L5 inferior endplate")
    if top is None or bottom is None:
        return CurveAngle(None, None, reason="lordosis needs complete L1 and S1 (or L5) vertebrae in the field "
                                             f"of view; available: {', '.join(b.level for b in _usable(bodies))}")
    lower_normal = getattr(bottom, plate).normal
    angle = tilt_deg(lower_normal, "sagittal") - tilt_deg(top.superior.normal, "sagittal")
    return CurveAngle(angle, angle_3d_deg(top.superior.normal, lower_normal), "L1", bottom.level, notes=notes)


def kyphosis(bodies: dict, upper: str = "T4", lower: str = "T12") -> CurveAngle:
    """Thoracic kyphosis, T4 superior to T12 inferior endplate (sagittal plane, degrees, positive = kyphotic)."""
    top, bottom = _find(bodies, upper), _find(bodies, lower)
    if top is None or bottom is None:
        thoracic = [b.level for b in _usable(bodies) if b.level.startswith("T")]
        return CurveAngle(None, None, reason=f"kyphosis needs complete {upper} and {lower} in the field of view; "
                                             f"thoracic vertebrae available: {', '.join(thoracic) or 'none'}")
    angle = tilt_deg(top.superior.normal, "sagittal") - tilt_deg(bottom.inferior.normal, "sagittal")
    return CurveAngle(angle, angle_3d_deg(top.superior.normal, bottom.inferior.normal), upper, lower)


def order_problems(bodies: dict) -> list[str]:
    """Levels whose centres are not ordered cranial to caudal along S (mislabelled or swapped vertebrae)."""
    chain = list(bodies.values())
    return [f"{a.level} ({a.center[2]:.1f} mm) is not above {b.level} ({b.center[2]:.1f} mm)"
            for a, b in zip(chain, chain[1:], strict=False)
            if VERTEBRA_ORDER[a.level] < VERTEBRA_ORDER[b.level] and a.center[2] <= b.center[2]]
