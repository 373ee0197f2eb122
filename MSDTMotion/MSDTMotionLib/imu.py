"""IMU orientation estimation, error metrics against an optical reference, and trunk angles.

Units: angular rate rad/s, acceleration m/s², magnetic field µT, sampling rate Hz, time s; every angle that
is *reported* is in degrees.  Quaternions are scalar-first (w, x, y, z) and describe the sensor frame in the
earth frame (``q ⊗ v_sensor ⊗ q* = v_earth``), as in VQF and BROAD.  The earth frame has z pointing up.

Main entry points:

- :func:`read_broad` -> :class:`ImuRecording` (BROAD hdf5 trial: gyr, acc, mag, optical quaternion/position)
- :func:`orientation_vqf` (VQF, 9D with magnetometer, 6D without, gyro bias estimation on)
- :func:`orientation_madgwick` (compact Madgwick filter; baseline for comparison only)
- :func:`align_to_reference`, :func:`orientation_errors`, :func:`rmse_deg` (BROAD-style error metrics)
- :func:`trunk_angles` (flexion-extension, lateral bending, axial rotation relative to a static pose)
- :func:`analyse_imu` (JSON-ready summary for ``msdt imu``)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from MSDTLib.errors import MSDTError

#: plausible range of IMU sampling rates; anything outside is treated as a wrong value (e.g. ms vs s)
FS_RANGE_HZ = (1.0, 10000.0)
GRAVITY = 9.81


@dataclass
class ImuRecording:
    """One IMU recording; arrays have one row per sample.

    ``gyr`` (N,3) rad/s, ``acc`` (N,3) m/s², ``mag`` (N,3) µT or None, ``fs`` Hz.  Optional optical reference
    ``ref_quat`` (N,4, w,x,y,z, NaN where lost), ``ref_pos`` (N,3) m, and ``movement`` (N,) bool marking the
    samples used for error statistics.
    """

    gyr: np.ndarray
    acc: np.ndarray
    fs: float
    mag: np.ndarray | None = None
    ref_quat: np.ndarray | None = None
    ref_pos: np.ndarray | None = None
    movement: np.ndarray | None = None
    name: str = ""
    info: str = ""
    units: dict = field(
        default_factory=lambda: {"gyr": "rad/s", "acc": "m/s^2", "mag": "uT", "fs": "Hz", "ref_pos": "m"}
    )

    @property
    def n_samples(self) -> int:
        return int(self.gyr.shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs


# ---------------------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------------------


def check_fs(fs) -> float:
    """Return ``fs`` as float, or raise MSDTError if it is not a plausible sampling rate in Hz."""
    try:
        fs = float(fs)
    except (TypeError, ValueError):
        raise MSDTError(f"IMU sampling rate must be a number in Hz, got {fs!r}") from None
    if not math.isfinite(fs) or not FS_RANGE_HZ[0] <= fs <= FS_RANGE_HZ[1]:
        raise MSDTError(
            f"IMU sampling rate {fs} Hz is implausible (expected {FS_RANGE_HZ[0]:g}-{FS_RANGE_HZ[1]:g} Hz); "
            "give fs in Hz, not the sample period"
        )
    return fs


def _as_n3(name: str, a, n: int | None = None) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    if a.ndim != 2 or a.shape[1] != 3:
        raise MSDTError(f"IMU {name} must have shape (N, 3), got {a.shape}")
    if n is not None and a.shape[0] != n:
        raise MSDTError(f"IMU {name} has {a.shape[0]} samples but gyr has {n}")
    return a


def _fill_gaps(a: np.ndarray) -> np.ndarray:
    """Linearly interpolate rows that contain NaN/inf (edges held constant); raise if nothing is finite."""
    bad = ~np.all(np.isfinite(a), axis=1)
    if not bad.any():
        return a
    if bad.all():
        raise MSDTError("IMU signal contains no finite samples")
    good = np.flatnonzero(~bad)
    out = a.copy()
    idx = np.flatnonzero(bad)
    for k in range(a.shape[1]):
        out[idx, k] = np.interp(idx, good, a[good, k])
    return out


def _prepare(gyr, acc, mag, fs, min_samples: int = 2):
    fs = check_fs(fs)
    gyr = _as_n3("gyr", gyr)
    n = gyr.shape[0]
    if n < min_samples:
        raise MSDTError(f"IMU recording has {n} samples; at least {min_samples} are needed")
    acc = _as_n3("acc", acc, n)
    gaps = ~np.all(np.isfinite(gyr), axis=1) | ~np.all(np.isfinite(acc), axis=1)
    gyr, acc = _fill_gaps(gyr), _fill_gaps(acc)
    if mag is not None:
        mag = _as_n3("mag", mag, n)
        gaps |= ~np.all(np.isfinite(mag), axis=1)
        mag = _fill_gaps(mag)
    return gyr, acc, mag, fs, gaps


# ---------------------------------------------------------------------------------------------------------
# quaternion helpers (w, x, y, z)
# ---------------------------------------------------------------------------------------------------------


def quat_mul(q1, q2) -> np.ndarray:
    """Hamilton product, row-wise; either argument may be a single quaternion."""
    q1, q2 = np.asarray(q1, float), np.asarray(q2, float)
    w1, x1, y1, z1 = np.moveaxis(q1, -1, 0)
    w2, x2, y2, z2 = np.moveaxis(q2, -1, 0)
    return np.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        axis=-1,
    )


def quat_inv(q) -> np.ndarray:
    """Conjugate (= inverse of a unit quaternion)."""
    q = np.array(q, float)
    q[..., 1:] *= -1
    return q


def quat_normalize(q) -> np.ndarray:
    q = np.asarray(q, float)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_from_axis_angle(axis, angle_rad) -> np.ndarray:
    axis = np.asarray(axis, float)
    axis = axis / np.linalg.norm(axis)
    angle = np.asarray(angle_rad, float)[..., None]
    return np.concatenate([np.cos(angle / 2), np.sin(angle / 2) * axis], axis=-1)


def quat_to_matrix(q) -> np.ndarray:
    """Rotation matrices (..., 3, 3) mapping sensor to earth coordinates."""
    w, x, y, z = np.moveaxis(quat_normalize(q), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def quat_from_matrix(m) -> np.ndarray:
    """Unit quaternion (w >= 0) of a single 3x3 rotation matrix."""
    m = np.asarray(m, float)
    k = np.array(
        [
            [m[0, 0] + m[1, 1] + m[2, 2], m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]],
            [m[2, 1] - m[1, 2], m[0, 0] - m[1, 1] - m[2, 2], m[0, 1] + m[1, 0], m[0, 2] + m[2, 0]],
            [m[0, 2] - m[2, 0], m[0, 1] + m[1, 0], m[1, 1] - m[0, 0] - m[2, 2], m[1, 2] + m[2, 1]],
            [m[1, 0] - m[0, 1], m[0, 2] + m[2, 0], m[1, 2] + m[2, 1], m[2, 2] - m[0, 0] - m[1, 1]],
        ]
    )
    vals, vecs = np.linalg.eigh(k)
    q = vecs[:, np.argmax(vals)]
    return q if q[0] >= 0 else -q


def quat_mean(q) -> np.ndarray:
    """Average of unit quaternions (Markley eigenvector method; sign-invariant); NaN rows are ignored."""
    q = np.asarray(q, float).reshape(-1, 4)
    q = q[np.all(np.isfinite(q), axis=1)]
    if len(q) == 0:
        raise MSDTError("cannot average orientations: no finite quaternion")
    vals, vecs = np.linalg.eigh(q.T @ q)
    m = vecs[:, np.argmax(vals)]
    return m if m[0] >= 0 else -m


def _quat_from_acc_mag(acc, mag=None) -> np.ndarray:
    """Orientation from one accelerometer (and magnetometer) sample; heading 0 if no magnetometer."""
    z = np.asarray(acc, float) / np.linalg.norm(acc)
    ref = np.asarray(mag, float) if mag is not None else np.array([1.0, 0.0, 0.0])
    x = ref - z * (ref @ z)
    if np.linalg.norm(x) < 1e-6:
        x = np.array([0.0, 1.0, 0.0]) - z * z[1]
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    # rows of the earth->sensor matrix are the earth axes in sensor coordinates
    return quat_from_matrix(np.vstack([x, y, z]))


# ---------------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------------


def read_broad(path) -> ImuRecording:
    """Read one BROAD trial (hdf5: imu_gyr/acc/mag, opt_quat, opt_pos, movement, attr sampling_rate)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise MSDTError(f"BROAD file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("imu_gyr", "imu_acc") if k not in f]
            if missing:
                raise MSDTError(f"{path.name} is not a BROAD trial: missing {', '.join(missing)}")
            if "sampling_rate" not in f.attrs:
                raise MSDTError(f"{path.name} has no 'sampling_rate' attribute")

            def get(key):
                return np.asarray(f[key][:], dtype=float) if key in f else None

            info = f.attrs.get("info", "")
            rec = ImuRecording(
                gyr=get("imu_gyr"),
                acc=get("imu_acc"),
                mag=get("imu_mag"),
                fs=check_fs(f.attrs["sampling_rate"]),
                ref_quat=get("opt_quat"),
                ref_pos=get("opt_pos"),
                movement=np.asarray(f["movement"][:], dtype=bool) if "movement" in f else None,
                name=path.stem,
                info=info.decode() if isinstance(info, bytes) else str(info),
            )
    except OSError as exc:
        raise MSDTError(f"cannot read BROAD file {path}: {exc}") from None
    _as_n3("gyr", rec.gyr)
    _as_n3("acc", rec.acc, rec.n_samples)
    return rec


# ---------------------------------------------------------------------------------------------------------
# orientation estimation
# ---------------------------------------------------------------------------------------------------------


def _vqf_run(gyr, acc, mag, fs, params=None) -> dict:
    from vqf import offlineVQF

    c = np.ascontiguousarray
    return offlineVQF(c(gyr), c(acc), None if mag is None else c(mag), 1.0 / fs, params or {})


def orientation_vqf(gyr, acc, mag=None, fs=None, params=None, return_bias: bool = False):
    """VQF orientation (N,4) w,x,y,z: 9D if ``mag`` is given, else 6D; gyro bias estimation is on.

    Rows where any input was NaN are interpolated for the filter and returned as NaN.  ``params`` is passed to
    ``vqf.offlineVQF`` (e.g. ``{"tauAcc": 3.0}``).  With ``return_bias`` also return the (N,3) bias estimate
    in rad/s.
    """
    if fs is None:
        raise MSDTError("orientation_vqf needs the sampling rate fs in Hz")
    gyr, acc, mag, fs, gaps = _prepare(gyr, acc, mag, fs)
    out = _vqf_run(gyr, acc, mag, fs, params)
    quat = np.array(out["quat9D"] if mag is not None else out["quat6D"], dtype=float)
    quat[gaps] = np.nan
    if return_bias:
        return quat, np.asarray(out["bias"], dtype=float)
    return quat


def _madgwick_loop(gyr, acc, mag, dt, beta, q):
    """Madgwick gradient-descent filter (IMU/MARG), plain Python floats for speed without compiled code."""
    q0, q1, q2, q3 = (float(v) for v in q)
    out = np.empty((len(gyr), 4))
    use_mag = mag is not None
    for i in range(len(gyr)):
        gx, gy, gz = gyr[i]
        ax, ay, az = acc[i]
        # rate of change from the gyro: 0.5 q ⊗ (0, w)
        d0 = 0.5 * (-q1 * gx - q2 * gy - q3 * gz)
        d1 = 0.5 * (q0 * gx + q2 * gz - q3 * gy)
        d2 = 0.5 * (q0 * gy - q1 * gz + q3 * gx)
        d3 = 0.5 * (q0 * gz + q1 * gy - q2 * gx)
        na = math.sqrt(ax * ax + ay * ay + az * az)
        if na > 0.0:
            ax, ay, az = ax / na, ay / na, az / na
            # gravity objective f_g = R(q)^T e_z - a and its Jacobian
            f1 = 2 * (q1 * q3 - q0 * q2) - ax
            f2 = 2 * (q0 * q1 + q2 * q3) - ay
            f3 = 1 - 2 * (q1 * q1 + q2 * q2) - az
            s0 = -2 * q2 * f1 + 2 * q1 * f2
            s1 = 2 * q3 * f1 + 2 * q0 * f2 - 4 * q1 * f3
            s2 = -2 * q0 * f1 + 2 * q3 * f2 - 4 * q2 * f3
            s3 = 2 * q1 * f1 + 2 * q2 * f2
            if use_mag:
                mx, my, mz = mag[i]
                nm = math.sqrt(mx * mx + my * my + mz * mz)
                if nm > 0.0:
                    mx, my, mz = mx / nm, my / nm, mz / nm
                    # field in earth frame h = R(q) m; reference b = (|h_xy|, 0, h_z)
                    hx = (
                        (1 - 2 * (q2 * q2 + q3 * q3)) * mx
                        + 2 * (q1 * q2 - q0 * q3) * my
                        + 2 * (q1 * q3 + q0 * q2) * mz
                    )
                    hy = (
                        2 * (q1 * q2 + q0 * q3) * mx
                        + (1 - 2 * (q1 * q1 + q3 * q3)) * my
                        + 2 * (q2 * q3 - q0 * q1) * mz
                    )
                    bz = (
                        2 * (q1 * q3 - q0 * q2) * mx
                        + 2 * (q2 * q3 + q0 * q1) * my
                        + (1 - 2 * (q1 * q1 + q2 * q2)) * mz
                    )
                    bx = math.sqrt(hx * hx + hy * hy)
                    g1 = 2 * bx * (0.5 - q2 * q2 - q3 * q3) + 2 * bz * (q1 * q3 - q0 * q2) - mx
                    g2 = 2 * bx * (q1 * q2 - q0 * q3) + 2 * bz * (q0 * q1 + q2 * q3) - my
                    g3 = 2 * bx * (q0 * q2 + q1 * q3) + 2 * bz * (0.5 - q1 * q1 - q2 * q2) - mz
                    s0 += -2 * bz * q2 * g1 + (-2 * bx * q3 + 2 * bz * q1) * g2 + 2 * bx * q2 * g3
                    s1 += (
                        2 * bz * q3 * g1 + (2 * bx * q2 + 2 * bz * q0) * g2 + (2 * bx * q3 - 4 * bz * q1) * g3
                    )
                    s2 += (
                        (-4 * bx * q2 - 2 * bz * q0) * g1
                        + (2 * bx * q1 + 2 * bz * q3) * g2
                        + (2 * bx * q0 - 4 * bz * q2) * g3
                    )
                    s3 += (
                        (-4 * bx * q3 + 2 * bz * q1) * g1
                        + (-2 * bx * q0 + 2 * bz * q2) * g2
                        + 2 * bx * q1 * g3
                    )
            ns = math.sqrt(s0 * s0 + s1 * s1 + s2 * s2 + s3 * s3)
            if ns > 0.0:
                d0 -= beta * s0 / ns
                d1 -= beta * s1 / ns
                d2 -= beta * s2 / ns
                d3 -= beta * s3 / ns
        q0 += d0 * dt
        q1 += d1 * dt
        q2 += d2 * dt
        q3 += d3 * dt
        n = math.sqrt(q0 * q0 + q1 * q1 + q2 * q2 + q3 * q3)
        q0, q1, q2, q3 = q0 / n, q1 / n, q2 / n, q3 / n
        out[i] = (q0, q1, q2, q3)
    return out


def orientation_madgwick(gyr, acc, mag=None, fs=None, beta: float = 0.1, init_samples: int = 10):
    """Madgwick filter orientation (N,4) w,x,y,z (9D with ``mag``, else 6D); a baseline for comparison.

    Initialised from the mean of the first ``init_samples`` acc/mag samples; no gyro bias estimation.
    Runs as a Python loop (~1-2 s per 50 000 samples).
    """
    if fs is None:
        raise MSDTError("orientation_madgwick needs the sampling rate fs in Hz")
    gyr, acc, mag, fs, gaps = _prepare(gyr, acc, mag, fs)
    k = max(1, min(init_samples, len(acc)))
    q_init = _quat_from_acc_mag(acc[:k].mean(0), None if mag is None else mag[:k].mean(0))
    quat = _madgwick_loop(
        gyr.tolist(), acc.tolist(), None if mag is None else mag.tolist(), 1.0 / fs, beta, q_init
    )
    quat[gaps] = np.nan
    return quat


# ---------------------------------------------------------------------------------------------------------
# error metrics (BROAD paper)
# ---------------------------------------------------------------------------------------------------------


def _valid(estimate, reference, mask=None):
    valid = np.all(np.isfinite(estimate), axis=1) & np.all(np.isfinite(reference), axis=1)
    if mask is not None:
        valid &= np.asarray(mask, bool)
    return valid


def align_to_reference(estimate, reference, mask=None, sensor: bool = False, iterations: int = 5):
    """Rotate ``estimate`` into the reference frames; returns (aligned, q_heading, q_sensor).

    The IMU earth frame and the optical earth frame differ by a constant heading rotation about the vertical
    (``q_heading``, earth side: ``aligned = q_heading ⊗ est ⊗ q_sensor``).  With ``sensor=True`` a constant
    sensor-to-marker rotation ``q_sensor`` is estimated too (BROAD is already sensor-aligned, so off by
    default).  Both are averages of quaternion differences over the valid (finite, ``mask``) samples,
    alternated for a few iterations.
    """
    est, ref = np.asarray(estimate, float), np.asarray(reference, float)
    valid = _valid(est, ref, mask)
    if valid.sum() < 1:
        raise MSDTError("no sample where both the IMU estimate and the reference orientation are valid")
    e, r = quat_normalize(est[valid]), quat_normalize(ref[valid])
    q_head = np.array([1.0, 0, 0, 0])
    q_sens = np.array([1.0, 0, 0, 0])
    for _ in range(iterations if sensor else 1):
        # earth-side difference ref ⊗ (est ⊗ q_sens)^-1, heading part only (w, z components)
        d = quat_mul(r, quat_inv(quat_mul(e, q_sens)))
        ang = 2 * np.arctan2(d[:, 3], d[:, 0])
        mean_ang = math.atan2(np.mean(np.sin(ang)), np.mean(np.cos(ang)))
        q_head = quat_from_axis_angle([0, 0, 1], mean_ang)
        if sensor:
            q_sens = quat_mean(quat_mul(quat_inv(quat_mul(q_head, e)), r))
    aligned = quat_mul(quat_mul(q_head, est), q_sens)
    return aligned, q_head, q_sens


def orientation_errors(estimate, reference) -> dict:
    """Per-sample errors in degrees: total angle, inclination (between vertical axes) and heading.

    Uses the earth-frame error quaternion ``est ⊗ ref^-1`` as in BROAD; NaN where either input is NaN.
    """
    d = quat_mul(quat_normalize(estimate), quat_inv(quat_normalize(reference)))
    with np.errstate(invalid="ignore", divide="ignore"):
        total = 2 * np.arccos(np.clip(np.abs(d[:, 0]), 0, 1))
        heading = 2 * np.arctan(np.abs(d[:, 3] / d[:, 0]))
        incl = 2 * np.arccos(np.clip(np.sqrt(d[:, 0] ** 2 + d[:, 3] ** 2), 0, 1))
    return {"total": np.degrees(total), "inclination": np.degrees(incl), "heading": np.degrees(heading)}


def rmse_deg(estimate, reference, mask=None, align: bool = True, sensor: bool = False) -> dict:
    """RMSE in degrees {"total", "inclination", "heading"} over samples valid in both (and in ``mask``).

    With ``align`` the constant heading offset between the earth frames (and with ``sensor`` the
    sensor-to-marker rotation) is removed first, see :func:`align_to_reference`.
    """
    est, ref = np.asarray(estimate, float), np.asarray(reference, float)
    if est.shape != ref.shape or est.ndim != 2 or est.shape[1] != 4:
        raise MSDTError(f"estimate {est.shape} and reference {ref.shape} must both be (N, 4) quaternions")
    valid = _valid(est, ref, mask)
    if not valid.any():
        raise MSDTError("no sample where both the IMU estimate and the reference orientation are valid")
    if align:
        est = align_to_reference(est, ref, valid, sensor=sensor)[0]
    errs = orientation_errors(est[valid], ref[valid])
    return {k: float(np.sqrt(np.mean(v**2))) for k, v in errs.items()}


# ---------------------------------------------------------------------------------------------------------
# trunk angles
# ---------------------------------------------------------------------------------------------------------

TRUNK_ANGLES = ("flexion", "lateral_bending", "axial_rotation")


def _calibration_slice(n, fs, calibration_s, interval):
    if interval is not None:
        start, stop = (int(round(t * fs)) for t in interval)
    else:
        start, stop = 0, int(round(calibration_s * fs))
    if stop <= start or start < 0:
        raise MSDTError(f"invalid calibration interval {interval or (0, calibration_s)} s")
    if stop > n:
        raise MSDTError(
            f"recording is {n / fs:.2f} s long but the static calibration pose needs samples up to "
            f"{stop / fs:.2f} s"
        )
    return slice(start, stop)


def segment_frame(quat_static, acc_static=None, forward_axis=(1.0, 0.0, 0.0)) -> np.ndarray:
    """Anatomical axes (columns x=anterior, y=left, z=up) in sensor coordinates from a static pose.

    The vertical axis is the mean specific force (gravity direction) of ``acc_static`` or, without it, the
    earth z axis seen from the mean static orientation; anterior is ``forward_axis`` (sensor coordinates)
    made horizontal.
    """
    q0 = quat_mean(quat_static)
    if acc_static is not None:
        up = np.nanmean(np.asarray(acc_static, float), axis=0)
    else:
        up = quat_to_matrix(q0).T @ np.array([0.0, 0.0, 1.0])
    up = up / np.linalg.norm(up)
    fwd = np.asarray(forward_axis, float)
    fwd = fwd - up * (fwd @ up)
    if np.linalg.norm(fwd) < 1e-3:
        raise MSDTError("forward_axis is (nearly) vertical in the calibration pose; choose another axis")
    fwd /= np.linalg.norm(fwd)
    return np.column_stack([fwd, np.cross(up, fwd), up])


def _decompose(r) -> np.ndarray:
    """Intrinsic y-x'-z'' Cardan angles (rad) of rotation matrices (N,3,3): R = Ry(a) Rx(b) Rz(c).

    In the anatomical frame (x anterior, y left, z up): a = flexion (+ forward), b = lateral bending
    (+ to the right), c = axial rotation (+ to the left), the ISB order for the spine.
    """
    b = np.arcsin(np.clip(-r[:, 1, 2], -1, 1))
    a = np.arctan2(r[:, 0, 2], r[:, 2, 2])
    c = np.arctan2(r[:, 1, 0], r[:, 1, 1])
    return np.column_stack([a, b, c])


def trunk_angles(
    trunk_quat,
    fs,
    trunk_acc=None,
    pelvis_quat=None,
    calibration_s: float = 2.0,
    calibration_interval=None,
    forward_axis=(1.0, 0.0, 0.0),
) -> dict:
    """Trunk angles in degrees relative to a static calibration pose.

    ``trunk_quat`` (N,4) sensor orientation; the first ``calibration_s`` seconds (or ``calibration_interval``
    (start, stop) in s) are the static neutral pose, where gravity gives the vertical axis and
    ``forward_axis`` (sensor coordinates) the anterior direction.  With ``pelvis_quat`` the angles are of the
    trunk relative to the pelvis (both zero in the calibration pose), expressed in the pelvis frame.
    Returns {"time_s", "flexion", "lateral_bending", "axial_rotation", "range_of_motion",
    "peak_angular_velocity_deg_s"}; NaN input rows give NaN angles.
    """
    fs = check_fs(fs)
    qt = np.asarray(trunk_quat, float)
    if qt.ndim != 2 or qt.shape[1] != 4:
        raise MSDTError(f"trunk_quat must have shape (N, 4), got {qt.shape}")
    n = len(qt)
    cal = _calibration_slice(n, fs, calibration_s, calibration_interval)
    acc_cal = None if trunk_acc is None else np.asarray(trunk_acc, float)[cal]
    qt = quat_normalize(qt)
    rt = quat_to_matrix(qt)
    rt0 = quat_to_matrix(quat_mean(qt[cal]))
    if pelvis_quat is None:
        s = segment_frame(qt[cal], acc_cal, forward_axis)
        rel = s.T @ rt0.T @ rt @ s  # anatomical frame now, seen from the calibration anatomical frame
    else:
        qp = quat_normalize(np.asarray(pelvis_quat, float))
        if qp.shape != qt.shape:
            raise MSDTError(f"pelvis_quat {qp.shape} must match trunk_quat {qt.shape}")
        s = segment_frame(qp[cal], None, forward_axis)
        rp, rp0 = quat_to_matrix(qp), quat_to_matrix(quat_mean(qp[cal]))
        p0 = rp0 @ s  # pelvis anatomical frame (earth coordinates) in the calibration pose
        # trunk anatomical frame: coincides with the pelvis frame in the calibration pose
        rel = np.swapaxes(rp @ s, -1, -2) @ rt @ rt0.T @ p0
    ok = np.all(np.isfinite(rel.reshape(n, -1)), axis=1)
    ang = np.full((n, 3), np.nan)
    if ok.any():
        ang[ok] = np.degrees(np.unwrap(_decompose(rel[ok]), axis=0))
    out = {"time_s": np.arange(n) / fs}
    rom, peak = {}, {}
    for k, name in enumerate(TRUNK_ANGLES):
        out[name] = ang[:, k]
        finite = ang[np.isfinite(ang[:, k]), k]
        rom[name] = {
            "min": float(finite.min()) if finite.size else float("nan"),
            "max": float(finite.max()) if finite.size else float("nan"),
            "range": float(np.ptp(finite)) if finite.size else float("nan"),
        }
        vel = np.gradient(ang[:, k]) * fs if n > 1 else np.zeros(n)
        peak[name] = float(np.nanmax(np.abs(vel))) if np.isfinite(vel).any() else float("nan")
    out["range_of_motion"] = rom
    out["peak_angular_velocity_deg_s"] = peak
    return out


# ---------------------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------------------


def _euler_zyx_deg(quat) -> np.ndarray:
    """Heading (z), pitch (y), roll (x) in degrees, for angle-range statistics."""
    w, x, y, z = np.moveaxis(quat, -1, 0)
    roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1, 1))
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.degrees(np.column_stack([yaw, pitch, roll]))


def analyse_imu(recording: ImuRecording, reference=None, mask=None, madgwick_beta: float = 0.1) -> dict:
    """JSON-ready summary for ``msdt imu``.

    Orientation statistics from VQF (duration, fs, mode 6D/9D, final gyro bias estimate in deg/s, heading /
    pitch / roll ranges).  With ``reference`` ((N,4) quaternions, or True to use ``recording.ref_quat``) adds
    ``rmse_deg`` {"vqf": {...}, "madgwick": {...}} each {"total", "inclination", "heading"}; the error
    statistics use ``mask`` or ``recording.movement``.
    """
    rec = recording
    if rec.n_samples < 2:
        raise MSDTError(f"IMU recording has {rec.n_samples} samples; at least 2 are needed")
    quat, bias = orientation_vqf(rec.gyr, rec.acc, rec.mag, rec.fs, return_bias=True)
    eul = _euler_zyx_deg(quat)
    ranges = {}
    for k, name in enumerate(("heading", "pitch", "roll")):
        v = eul[np.isfinite(eul[:, k]), k]
        if name != "pitch":  # heading and roll wrap at +-180 deg
            v = np.degrees(np.unwrap(np.radians(v)))
        ranges[name] = {"min": float(v.min()), "max": float(v.max()), "range": float(np.ptp(v))}
    result = {
        "name": rec.name,
        "n_samples": rec.n_samples,
        "fs_hz": float(rec.fs),
        "duration_s": float(rec.duration_s),
        "mode": "9D" if rec.mag is not None else "6D",
        "gyro_bias_deg_s": [float(b) for b in np.degrees(bias[-1])],
        "angle_ranges_deg": ranges,
    }
    if reference is True:
        reference = rec.ref_quat
        if reference is None:
            raise MSDTError("the recording has no reference orientation")
    if reference is not None:
        ref = np.asarray(reference, float)
        if ref.shape != quat.shape:
            raise MSDTError(f"reference {ref.shape} must be (N, 4) with N = {rec.n_samples}")
        m = mask if mask is not None else rec.movement
        mad = orientation_madgwick(rec.gyr, rec.acc, rec.mag, rec.fs, beta=madgwick_beta)
        result["rmse_deg"] = {"vqf": rmse_deg(quat, ref, m), "madgwick": rmse_deg(mad, ref, m)}
        result["reference_valid_fraction"] = float(np.mean(np.all(np.isfinite(ref), axis=1)))
    return result
