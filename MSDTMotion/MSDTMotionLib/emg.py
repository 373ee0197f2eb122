"""Surface EMG (sEMG) conditioning, amplitude/spectral features and fatigue trends.

Pure numpy / scipy.signal, no Slicer. Conventions:

- ``x`` is a 1-D signal in the channel's own unit (V, mV, ADC counts, ...), ``fs`` its sample rate in Hz.
- All filters are zero phase (``scipy.signal.sosfiltfilt``): no delay, magnitude response squared.
- Amplitude features: RMS in the signal unit, IEMG = integral of ``|x| dt`` (trapezoid) in unit·s.
- Spectral features from a Welch PSD (Hann, ``nperseg`` = 0.25 s or the window if shorter, 50 % overlap,
  mean removed per segment), restricted to the analysis band ``[low, high]`` Hz:
  MNF = sum(f P) / sum(P); MDF = frequency where the cumulative power reaches half of the band power
  (linear interpolation between bins).
- Fatigue: least-squares slope of the per-window MDF / MNF against window centre time, in Hz/s and in %/min
  of the fitted value at the first window centre, with a 95 % t-distribution confidence interval.

Bad input never silently yields NaN: :func:`analyse_recording` analyses every channel it can and reports per
channel ``"error"`` (nothing computed) or ``"notes"`` (what was adapted). Features that cannot be computed
are ``None`` with a note saying why.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields

import numpy as np
from scipy import signal, stats

from MSDTLib.errors import MSDTError

__all__ = [
    "ChannelResult",
    "analyse_channel",
    "analyse_recording",
    "bandpass",
    "fatigue_slope",
    "find_pairs",
    "highpass",
    "iemg",
    "linear_envelope",
    "mean_median_frequency",
    "moving_rms",
    "mvc_normalise",
    "notch",
    "onsets",
    "rectify",
    "rms",
    "symmetry_index",
    "welch_psd",
    "window_features",
]

MAX_GAP_S = 0.05  # NaN runs shorter than this are linearly interpolated
CLIP_MIN_RUN = 3  # consecutive equal samples at the signal min/max that count as ADC clipping


# ----------------------------------------------------------------------------------------------- helpers


def _as_signal(x, name: str = "signal") -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim != 1:
        a = np.squeeze(a)
        if a.ndim != 1:
            raise MSDTError(f"{name}: expected a 1-D signal, got shape {np.shape(x)}")
    if a.size == 0:
        raise MSDTError(f"{name}: empty signal")
    return a


def _check_fs(fs) -> float:
    try:
        f = float(fs)
    except (TypeError, ValueError):
        raise MSDTError(f"sample rate must be a number in Hz, got {fs!r}") from None
    if not math.isfinite(f) or f <= 0:
        raise MSDTError(f"sample rate must be a positive number of Hz, got {fs!r}")
    return f


def _filtfilt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Zero-phase SOS filtering that tolerates short signals (shorter edge padding)."""
    padlen = 3 * (2 * len(sos) + 1)
    if x.size <= 1:
        raise MSDTError(f"signal too short to filter ({x.size} samples)")
    return signal.sosfiltfilt(sos, x, padlen=min(padlen, x.size - 1))


def _clip_high(fs: float, high: float, notes: list | None) -> float:
    """Upper band edge limited to 0.45 fs (with a note) so the filter stays below Nyquist."""
    limit = 0.45 * fs
    if high > limit:
        if notes is not None:
            notes.append(
                f"sample rate {fs:g} Hz is below 2 x the {high:g} Hz upper cut-off: sEMG content above "
                f"{fs / 2:g} Hz is lost or aliased; upper band edge lowered to {limit:g} Hz"
            )
        return limit
    return float(high)


# ----------------------------------------------------------------------------------------------- filters


def bandpass(x, fs, low: float = 20.0, high: float = 450.0, order: int = 4, notes: list | None = None):
    """Zero-phase Butterworth band-pass ``[low, high]`` Hz (``high`` clipped to 0.45 fs, noted in ``notes``)."""
    fs = _check_fs(fs)
    x = _as_signal(x)
    high = _clip_high(fs, high, notes)
    if not 0 < low < high:
        raise MSDTError(f"band-pass {low:g}-{high:g} Hz is empty at fs = {fs:g} Hz")
    sos = signal.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")
    return _filtfilt(sos, x)


def highpass(x, fs, cutoff: float = 30.0, order: int = 4):
    """Zero-phase Butterworth high-pass at ``cutoff`` Hz (30 Hz removes most ECG from trunk-muscle sEMG)."""
    fs = _check_fs(fs)
    x = _as_signal(x)
    if not 0 < cutoff < fs / 2:
        raise MSDTError(f"high-pass cut-off {cutoff:g} Hz must lie in (0, {fs / 2:g}) Hz")
    sos = signal.butter(order, cutoff, btype="highpass", fs=fs, output="sos")
    return _filtfilt(sos, x)


def notch(x, fs, mains: float = 50.0, harmonics: int = 3, q: float = 30.0):
    """Zero-phase IIR notches at ``mains`` (50 or 60 Hz) and its harmonics below Nyquist; ``q`` = f0/bandwidth."""
    fs = _check_fs(fs)
    x = _as_signal(x)
    if mains <= 0 or harmonics < 1:
        raise MSDTError(f"notch needs mains > 0 Hz and harmonics >= 1, got {mains!r}, {harmonics!r}")
    y = x
    for k in range(1, int(harmonics) + 1):
        f0 = k * mains
        if f0 >= 0.5 * fs * 0.98:
            break
        b, a = signal.iirnotch(f0, q, fs=fs)
        y = _filtfilt(signal.tf2sos(b, a), y)
    return y


def rectify(x):
    """Full-wave rectification ``|x|``."""
    return np.abs(_as_signal(x))


def moving_rms(x, fs, window_s: float):
    """Centred moving RMS over ``window_s`` seconds (same length as ``x``; edges use the part inside)."""
    fs = _check_fs(fs)
    x = _as_signal(x)
    w = max(1, int(round(window_s * fs)))
    c = np.concatenate(([0.0], np.cumsum(x * x)))
    n = x.size
    i = np.arange(n)
    lo = np.clip(i - w // 2, 0, n)
    hi = np.clip(i - w // 2 + w, 0, n)
    return np.sqrt(np.maximum(c[hi] - c[lo], 0.0) / (hi - lo))


def linear_envelope(x, fs, cutoff: float = 6.0, order: int = 4):
    """Linear envelope: full-wave rectification then zero-phase Butterworth low-pass at ``cutoff`` Hz."""
    fs = _check_fs(fs)
    if not 0 < cutoff < fs / 2:
        raise MSDTError(f"envelope cut-off {cutoff:g} Hz must lie in (0, {fs / 2:g}) Hz")
    sos = signal.butter(order, cutoff, btype="lowpass", fs=fs, output="sos")
    return _filtfilt(sos, rectify(x))


def mvc_normalise(envelope, mvc_value: float):
    """Envelope as % of the maximal voluntary contraction value (same unit as the envelope)."""
    mvc = float(mvc_value)
    if not math.isfinite(mvc) or mvc <= 0:
        raise MSDTError(f"MVC value must be a positive finite amplitude, got {mvc_value!r}")
    return 100.0 * np.asarray(envelope, dtype=float) / mvc


# ---------------------------------------------------------------------------------------------- features


def rms(x) -> float:
    """Root mean square, in the signal unit."""
    x = _as_signal(x)
    return float(np.sqrt(np.mean(x * x)))


def iemg(x, fs) -> float:
    """Integrated EMG: trapezoid integral of ``|x|`` over time, in unit·s."""
    fs = _check_fs(fs)
    return float(np.trapezoid(np.abs(_as_signal(x)), dx=1.0 / fs))


def _nperseg(fs: float, n: int) -> int:
    return max(8, min(int(round(0.25 * fs)), n))


def welch_psd(x, fs, nperseg: int | None = None, chunk: int = 4096):
    """Welch PSD along the last axis, identical to ``scipy.signal.welch(x, fs, nperseg=nperseg,
    noverlap=nperseg // 2)`` (periodic Hann, mean removed per segment, one-sided density in unit²/Hz)
    but vectorised over segments (and leading axes). Returns ``(f_hz, psd)``.
    """
    fs = _check_fs(fs)
    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    nps = _nperseg(fs, n) if nperseg is None else min(int(nperseg), n)
    step = nps - nps // 2
    win = signal.get_window("hann", nps)
    scale = 1.0 / (fs * np.sum(win * win))
    segs = np.lib.stride_tricks.sliding_window_view(x, nps, axis=-1)[..., ::step, :]
    nseg = segs.shape[-2]
    acc = np.zeros(x.shape[:-1] + (nps // 2 + 1,))
    for b in range(0, nseg, chunk):
        s = segs[..., b : b + chunk, :]
        s = (s - s.mean(axis=-1, keepdims=True)) * win
        spec = np.fft.rfft(s, axis=-1)
        acc += (spec.real**2 + spec.imag**2).sum(axis=-2)
    p = acc * (scale / nseg)
    if nps % 2:
        p[..., 1:] *= 2
    else:
        p[..., 1:-1] *= 2
    return np.fft.rfftfreq(nps, 1.0 / fs), p


def mean_median_frequency(f, p, low: float = 0.0, high: float = math.inf):
    """MNF and MDF (Hz) of power spectrum ``p`` (last axis) at frequencies ``f``, restricted to [low, high].

    MDF: the cumulative band power is taken at each bin's upper edge (f + df/2, 0 at the first bin's lower
    edge) and linearly interpolated to half the band power. Returns arrays (floats for 1-D ``p``); NaN where
    the band holds no power (callers report that).
    """
    f = np.asarray(f, dtype=float)
    p = np.asarray(p, dtype=float)
    band = (f >= low) & (f <= high)
    fb = f[band]
    pb = p[..., band]
    total = pb.sum(axis=-1)
    if fb.size == 0:
        nan = np.full(p.shape[:-1], np.nan)
        return (float("nan"), float("nan")) if p.ndim == 1 else (nan, nan)
    df = fb[1] - fb[0] if fb.size > 1 else 1.0
    # cumulative power at the upper edge of each bin, 0 at the lower edge of the first bin
    edges = np.concatenate(([fb[0] - df / 2], fb + df / 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        mnf = (pb * fb).sum(axis=-1) / total
        cum = np.concatenate((np.zeros(pb.shape[:-1] + (1,)), np.cumsum(pb, axis=-1)), axis=-1)
        half = 0.5 * total
        k = np.clip(np.argmax(cum >= half[..., None], axis=-1), 1, fb.size)
        c1 = np.take_along_axis(cum, k[..., None], axis=-1)[..., 0]
        c0 = np.take_along_axis(cum, (k - 1)[..., None], axis=-1)[..., 0]
        frac = np.clip(np.where(c1 > c0, (half - c0) / np.where(c1 > c0, c1 - c0, 1.0), 0.0), 0.0, 1.0)
        mdf = edges[k - 1] + frac * (edges[k] - edges[k - 1])
        mdf = np.where(total > 0, mdf, np.nan)
        mnf = np.where(total > 0, mnf, np.nan)
    if p.ndim == 1:
        return float(mnf), float(mdf)
    return mnf, mdf


def window_features(
    x,
    fs,
    window_s: float = 1.0,
    overlap: float = 0.5,
    low: float = 0.0,
    high: float = math.inf,
    batch: int = 256,
):
    """Per sliding window (``window_s`` s, fractional ``overlap``): centre time, RMS, IEMG, MNF, MDF.

    Windows containing a non-finite sample are skipped. Returns a dict of arrays
    ``t_s, rms, iemg, mnf_hz, mdf_hz`` and ``n_skipped`` (windows dropped for NaN).
    """
    fs = _check_fs(fs)
    x = np.asarray(x, dtype=float)
    if not 0 <= overlap < 1:
        raise MSDTError(f"window overlap must be in [0, 1), got {overlap!r}")
    win = int(round(window_s * fs))
    if win < 8:
        raise MSDTError(f"window of {window_s:g} s holds fewer than 8 samples at {fs:g} Hz")
    step = max(1, int(round(win * (1.0 - overlap))))
    empty = {k: np.empty(0) for k in ("t_s", "rms", "iemg", "mnf_hz", "mdf_hz")}
    if x.size < win:
        return {**empty, "n_skipped": 0}
    starts = np.arange(0, x.size - win + 1, step)
    bad = np.concatenate(([0], np.cumsum(~np.isfinite(x))))
    ok = (bad[starts + win] - bad[starts]) == 0
    n_skipped = int((~ok).sum())
    starts = starts[ok]
    view = np.lib.stride_tricks.sliding_window_view(x, win)
    nps = _nperseg(fs, win)
    out = {k: [] for k in empty}
    for b in range(0, starts.size, batch):
        seg = view[starts[b : b + batch]]
        a = np.abs(seg)
        out["rms"].append(np.sqrt(np.mean(seg * seg, axis=1)))
        out["iemg"].append(np.trapezoid(a, dx=1.0 / fs, axis=1))
        f, p = welch_psd(seg, fs, nperseg=nps)
        mnf, mdf = mean_median_frequency(f, p, low, high)
        out["mnf_hz"].append(np.atleast_1d(mnf))
        out["mdf_hz"].append(np.atleast_1d(mdf))
    res = {k: (np.concatenate(v) if v else np.empty(0)) for k, v in out.items() if k != "t_s"}
    res["t_s"] = (starts + (win - 1) / 2.0) / fs
    res["n_skipped"] = n_skipped
    return res


def fatigue_slope(t, y, confidence: float = 0.95) -> dict:
    """Least-squares slope of ``y`` (Hz) against ``t`` (s) with a t-distribution confidence interval.

    Returns ``slope_hz_per_s``, ``ci_hz_per_s`` (low, high; None with fewer than 3 points),
    ``initial_hz`` (fit at the first time), ``slope_pct_per_min`` and ``ci_pct_per_min`` (relative to it).
    """
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    m = np.isfinite(t) & np.isfinite(y)
    t, y = t[m], y[m]
    if t.size < 2 or np.ptp(t) == 0:
        raise MSDTError(f"a fatigue slope needs at least 2 windows at distinct times, got {t.size}")
    fit = stats.linregress(t, y)
    slope = float(fit.slope)
    initial = float(fit.intercept + fit.slope * t[0])
    ci = None
    if t.size >= 3:
        h = float(stats.t.ppf(0.5 + confidence / 2, t.size - 2) * fit.stderr)
        ci = (slope - h, slope + h)
    scale = 60.0 * 100.0 / initial if initial != 0 else None
    return {
        "slope_hz_per_s": slope,
        "ci_hz_per_s": ci,
        "initial_hz": initial,
        "slope_pct_per_min": slope * scale if scale is not None else None,
        "ci_pct_per_min": (
            tuple(sorted((ci[0] * scale, ci[1] * scale))) if ci and scale is not None else None
        ),
        "n_windows": int(t.size),
    }


def symmetry_index(left, right):
    """Symmetry index in %: ``100 (L - R) / ((L + R) / 2)``; 0 = symmetric, positive = left larger.

    Scalars give a float (None when L + R == 0: undefined); arrays give an array with NaN there.
    """
    L = np.asarray(left, dtype=float)
    R = np.asarray(right, dtype=float)
    mean = (L + R) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        si = np.where(mean != 0, 100.0 * (L - R) / np.where(mean != 0, mean, 1.0), np.nan)
    if si.ndim == 0:
        return None if not np.isfinite(si) else float(si)
    return si


_SIDE = re.compile(r"^(?P<base>.*?)[\s_.\-]*(?P<side>left|right|l|r)$", re.IGNORECASE)


def find_pairs(names) -> dict:
    """Left/right channel pairs by name suffix (``_left/_right``, ``Left/Right``, ``_L/_R``, ``L/R``).

    Returns ``{base: (left_name, right_name)}``; only names whose counterpart exists are paired.
    """
    sides: dict = {}
    for name in names:
        m = _SIDE.match(str(name))
        if not m or not m.group("base"):
            continue
        side = m.group("side").lower()[0]
        sides.setdefault(m.group("base").lower(), {}).setdefault(side, name)
    return {base: (d["l"], d["r"]) for base, d in sides.items() if "l" in d and "r" in d}


def onsets(
    x,
    fs,
    cutoff: float = 50.0,
    baseline_s: float = 0.5,
    k_sd: float = 3.0,
    min_duration_s: float = 0.025,
    notes: list | None = None,
) -> list:
    """Activation onsets/offsets (s) of a conditioned (band-passed) sEMG signal.

    Envelope: rectification + zero-phase 2nd-order low-pass at ``cutoff`` Hz. Threshold: mean + ``k_sd`` SD of
    the envelope in the quietest ``baseline_s`` window. Active runs shorter than ``min_duration_s`` are dropped
    and gaps shorter than it are bridged. Non-finite samples count as inactive.
    """
    fs = _check_fs(fs)
    x = np.asarray(x, dtype=float)
    finite = np.isfinite(x)
    if finite.sum() < 2:
        return []
    xf = np.where(finite, x, 0.0)
    sos = signal.butter(2, min(cutoff, 0.45 * fs), btype="lowpass", fs=fs, output="sos")
    env = _filtfilt(sos, np.abs(xf))
    w = int(round(baseline_s * fs))
    if w < 2 or x.size < w:
        if notes is not None:
            notes.append(f"onsets: signal shorter than the {baseline_s:g} s baseline; not detected")
        return []
    c1 = np.concatenate(([0.0], np.cumsum(env)))
    cb = np.concatenate(([0], np.cumsum(~finite)))
    s = np.arange(0, x.size - w + 1)
    clean = (cb[s + w] - cb[s]) == 0
    if not clean.any():
        if notes is not None:
            notes.append(f"onsets: no NaN-free {baseline_s:g} s baseline; not detected")
        return []
    s = s[clean]
    mean = (c1[s + w] - c1[s]) / w
    i = s[np.argmin(mean)]
    base = env[i : i + w]
    thr = float(base.mean() + k_sd * base.std())
    active = (env > thr) & finite
    md = max(1, int(round(min_duration_s * fs)))
    runs = _runs(active)
    # bridge short gaps, then drop short activations
    merged: list = []
    for a, b in runs:
        if merged and a - merged[-1][1] < md:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return [{"onset_s": a / fs, "offset_s": b / fs} for a, b in merged if b - a >= md]


def _runs(mask: np.ndarray) -> list:
    """[start, end) index pairs of True runs."""
    d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


# ------------------------------------------------------------------------------------------ input checks


def _repair_nans(x: np.ndarray, fs: float, notes: list, max_gap_s: float = MAX_GAP_S) -> np.ndarray:
    """Interpolate non-finite runs shorter than ``max_gap_s`` (inside the signal); keep longer ones as NaN."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return x
    y = x.copy()
    y[bad] = np.nan
    runs = _runs(bad)
    max_len = max_gap_s * fs
    short = [(a, b) for a, b in runs if (b - a) < max_len and a > 0 and b < x.size]
    long_ = [(a, b) for a, b in runs if (a, b) not in set(short)]
    if short:
        good = np.flatnonzero(~bad)
        idx = np.concatenate([np.arange(a, b) for a, b in short])
        y[idx] = np.interp(idx, good, x[good])
        notes.append(
            f"{len(short)} NaN gap(s) shorter than {max_gap_s * 1000:g} ms "
            f"({idx.size} samples) linearly interpolated"
        )
    if long_:
        n = sum(b - a for a, b in long_)
        notes.append(
            f"{len(long_)} NaN run(s) of >= {max_gap_s * 1000:g} ms or at an edge ({n} samples, "
            f"{100 * n / x.size:.2f} %) left out: segments filtered separately, windows with NaN skipped"
        )
    return y


def clipped_fraction(x, min_count: int = CLIP_MIN_RUN) -> float:
    """Fraction of samples sitting exactly at the signal's min or max (ADC clipping).

    A rail counts as clipping when at least ``min_count`` samples hold that value and at least two of them are
    consecutive (a flat run); an unclipped continuous signal reaches its extremes once.
    """
    x = np.asarray(x, dtype=float)
    fin = x[np.isfinite(x)]
    if fin.size == 0:
        return 0.0
    lo, hi = fin.min(), fin.max()
    total = 0
    for level in (lo, hi) if hi > lo else (lo,):
        at = x == level
        count = int(at.sum())
        if count >= min_count and np.any(at[1:] & at[:-1]):
            total += count
    return total / x.size


def _condition(x, fs, low, high, mains, highpass_hz, notes) -> np.ndarray:
    """Band-pass (+ optional high-pass and notch) every finite segment separately; NaN gaps stay NaN."""
    y = np.full_like(x, np.nan)
    dropped = 0
    for a, b in _runs(np.isfinite(x)):
        seg = x[a:b]
        if b - a < 16:
            dropped += b - a
            continue
        seg = bandpass(seg, fs, low, high)
        if highpass_hz:
            seg = highpass(seg, fs, highpass_hz)
        if mains:
            seg = notch(seg, fs, mains)
        y[a:b] = seg
    if dropped:
        notes.append(f"{dropped} samples in finite segments shorter than 16 samples left out")
    return y


# ----------------------------------------------------------------------------------------------- results


@dataclass
class ChannelResult:
    """Features of one sEMG channel (amplitudes in ``unit``, IEMG in ``unit``·s, frequencies in Hz)."""

    name: str
    unit: str
    fs_hz: float
    n_samples: int = 0
    duration_s: float = 0.0
    band_hz: tuple | None = None
    rms: float | None = None
    iemg: float | None = None
    mnf_hz: float | None = None
    mdf_hz: float | None = None
    mdf_slope_hz_per_s: float | None = None
    mdf_slope_ci_hz_per_s: tuple | None = None
    mdf_slope_pct_per_min: float | None = None
    mdf_slope_ci_pct_per_min: tuple | None = None
    mnf_slope_hz_per_s: float | None = None
    mnf_slope_ci_hz_per_s: tuple | None = None
    mnf_slope_pct_per_min: float | None = None
    mnf_slope_ci_pct_per_min: tuple | None = None
    clipped_fraction: float = 0.0
    nan_fraction: float = 0.0
    windows: list = field(default_factory=list)
    onsets: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict (floats, lists, None; no NaN)."""
        # _jsonable already copies every container; dataclasses.asdict would deep-copy the windows a second time.
        return _jsonable({f.name: getattr(self, f.name) for f in fields(self)})


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(u) for k, u in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(u) for u in v]
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(v) else None
    return v


def _f(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def analyse_channel(
    x,
    fs,
    name: str = "EMG",
    unit: str = "",
    window_s: float = 1.0,
    overlap: float = 0.5,
    low: float = 20.0,
    high: float = 450.0,
    mains: float | None = None,
    highpass_hz: float | None = None,
    detect_onsets: bool = True,
) -> ChannelResult:
    """Condition one channel and compute whole-signal and per-window features, fatigue slopes and onsets.

    Pipeline: short NaN gaps interpolated -> band-pass ``[low, high]`` Hz (``high`` <= 0.45 fs) -> optional
    high-pass ``highpass_hz`` (ECG) -> optional ``mains`` notch (50/60 Hz + 2 harmonics) -> features on the
    conditioned signal; MNF/MDF restricted to the (effective) band. Raises :class:`MSDTError` for input that
    cannot be analysed at all (non-numeric, non-positive fs, constant, band empty at this fs).
    """
    fs = _check_fs(fs)
    x = _as_signal(x, name)
    res = ChannelResult(
        name=str(name), unit=str(unit), fs_hz=fs, n_samples=int(x.size), duration_s=x.size / fs
    )
    notes = res.notes
    finite = np.isfinite(x)
    res.nan_fraction = float(1.0 - finite.mean())
    if not finite.any():
        raise MSDTError(f"{name}: no finite samples (all NaN/inf)")
    xf = x[finite]
    if np.ptp(xf) == 0:
        raise MSDTError(f"{name}: constant signal (every finite sample = {xf[0]:g} {unit}); no features")
    res.clipped_fraction = clipped_fraction(x)
    if res.clipped_fraction > 0:
        notes.append(
            f"clipped: {100 * res.clipped_fraction:.3f} % of samples in flat runs at the ADC min/max "
            f"({xf.min():g} / {xf.max():g} {unit}); amplitude underestimated, spectrum distorted there"
        )
    high = _clip_high(fs, high, notes)
    if highpass_hz:
        low = max(low, float(highpass_hz))
    if not 0 < low < high:
        raise MSDTError(f"{name}: analysis band {low:g}-{high:g} Hz is empty at fs = {fs:g} Hz")
    res.band_hz = (float(low), float(high))
    xr = _repair_nans(x, fs, notes)
    y = _condition(xr, fs, low, high, mains, highpass_hz, notes)

    # whole-signal features over the finite segments
    segs = [(a, b) for a, b in _runs(np.isfinite(y))]
    if not segs:
        raise MSDTError(f"{name}: no finite segment long enough to filter")
    valid = y[np.isfinite(y)]
    res.rms = _f(np.sqrt(np.mean(valid * valid)))
    res.iemg = _f(sum(np.trapezoid(np.abs(y[a:b]), dx=1.0 / fs) for a, b in segs))
    nps = _nperseg(fs, int(round(window_s * fs)))
    psd, weight, f = None, 0, None
    for a, b in segs:
        if b - a < nps and len(segs) > 1:
            continue
        f, p = welch_psd(y[a:b], fs, nperseg=min(nps, b - a))
        if psd is not None and p.shape != psd.shape:
            continue
        psd = p * (b - a) if psd is None else psd + p * (b - a)
        weight += b - a
    if psd is not None:
        mnf, mdf = mean_median_frequency(f, psd / weight, low, high)
        res.mnf_hz, res.mdf_hz = _f(mnf), _f(mdf)
    if res.mdf_hz is None:
        notes.append("no spectral power in the analysis band: MNF/MDF not computed")

    # sliding windows
    if x.size < int(round(window_s * fs)):
        notes.append(
            f"signal ({x.size / fs:.3f} s) shorter than one {window_s:g} s window: whole-signal features only"
        )
    else:
        wf = window_features(y, fs, window_s, overlap, low, high)
        if wf["n_skipped"]:
            notes.append(f"{wf['n_skipped']} window(s) containing NaN skipped")
        res.windows = [
            {"t_s": float(t), "rms": _f(r), "iemg": _f(i), "mnf_hz": _f(mn), "mdf_hz": _f(md)}
            for t, r, i, mn, md in zip(
                wf["t_s"], wf["rms"], wf["iemg"], wf["mnf_hz"], wf["mdf_hz"], strict=True
            )
        ]
        for key in ("mdf", "mnf"):
            try:
                s = fatigue_slope(wf["t_s"], wf[f"{key}_hz"])
            except MSDTError as exc:
                notes.append(f"{key.upper()} slope not computed: {exc}")
                continue
            setattr(res, f"{key}_slope_hz_per_s", _f(s["slope_hz_per_s"]))
            setattr(res, f"{key}_slope_ci_hz_per_s", s["ci_hz_per_s"])
            setattr(res, f"{key}_slope_pct_per_min", s["slope_pct_per_min"])
            setattr(res, f"{key}_slope_ci_pct_per_min", s["ci_pct_per_min"])
            if s["ci_hz_per_s"] is None:
                notes.append(f"{key.upper()} slope from 2 windows: no confidence interval")
    if detect_onsets:
        res.onsets = onsets(y, fs, notes=notes)
    return res


def analyse_recording(
    signals: dict, channels=None, window_s: float = 1.0, overlap: float = 0.5, **kwargs
) -> dict:
    """Analyse several channels ``{name: (x, fs_hz, unit)}``; JSON-ready result.

    ``channels`` restricts the analysis (unknown names raise :class:`MSDTError` listing the available ones).
    Each channel that cannot be analysed gets ``{"error": message}`` while the others are still analysed.
    ``"symmetry"`` holds, for each left/right pair (see :func:`find_pairs`), the symmetry index (%) of RMS,
    IEMG, MNF and MDF. ``kwargs`` go to :func:`analyse_channel` (``low``, ``high``, ``mains``, ``highpass_hz``).
    """
    if not isinstance(signals, dict) or not signals:
        raise MSDTError("signals must be a non-empty dict {name: (x, fs_hz, unit)}")
    names = list(signals)
    if channels is not None:
        if isinstance(channels, str):
            channels = [channels]
        unknown = [c for c in channels if c not in signals]
        if unknown:
            raise MSDTError(f"unknown channel(s) {unknown}; available: {names}")
        names = list(channels)
    out: dict = {"channels": {}, "symmetry": {}}
    for name in names:
        item = signals[name]
        try:
            if not isinstance(item, tuple | list) or len(item) not in (2, 3):
                raise MSDTError(f"{name}: expected (x, fs_hz, unit), got {type(item).__name__}")
            x, fs = item[0], item[1]
            unit = item[2] if len(item) == 3 else ""
            r = analyse_channel(x, fs, name=name, unit=unit, window_s=window_s, overlap=overlap, **kwargs)
            out["channels"][name] = r.to_dict()
        except MSDTError as exc:
            out["channels"][name] = {"error": str(exc), "notes": [], "windows": [], "onsets": []}
    done = [n for n in names if "error" not in out["channels"][n] or out["channels"][n]["error"] is None]
    for base, (left, right) in find_pairs(names).items():
        entry = {"left": left, "right": right}
        if left not in done or right not in done:
            entry["error"] = "one side of the pair could not be analysed"
        else:
            L, R = out["channels"][left], out["channels"][right]
            if L["unit"] != R["unit"]:
                entry["note"] = (
                    f"units differ ({L['unit']!r} vs {R['unit']!r}): amplitude indices not comparable"
                )
            for key in ("rms", "iemg", "mnf_hz", "mdf_hz"):
                if L[key] is None or R[key] is None:
                    entry[key] = None
                else:
                    entry[key] = symmetry_index(L[key], R[key])
        out["symmetry"][base] = entry
    return out
