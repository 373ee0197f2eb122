"""sEMG conditioning, features, fatigue and bad-input handling (MSDTMotionLib.emg)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from MSDTLib.errors import MSDTError
from MSDTMotionLib import emg

ROOT = Path(__file__).resolve().parents[3]
BIOSPPY = ROOT / "Testing" / "Data" / "biosppy_emg"
C3D_CANDIDATES = [
    ROOT / "Testing" / "Data" / "pyomeca_c3d_markers_emg" / "markers_analogs.c3d",
    Path("/work/shared/data/pyomeca_c3d_markers_emg/markers_analogs.c3d"),
]
FS = 2000.0


def _shaped_semg(duration_s=60.0, s0=1.0, s1=0.7, snr_db=10.0, seed=1):
    """White noise shaped by a 50-150 Hz Butterworth band-pass, time-compressed so that its spectrum scales
    linearly from s0 to s1 (fatigue), plus white noise at snr_db. Returns x, true-MDF function of time."""
    rng = np.random.default_rng(seed)
    fsy = 8 * FS
    sos_shape = signal.butter(2, [50, 150], btype="bandpass", fs=fsy, output="sos")
    t = np.arange(int(duration_s * FS)) / FS
    k = (s1 - s0) / duration_s
    tau = s0 * t + 0.5 * k * t * t  # warped time: instantaneous spectral scale s(t) = s0 + k t
    ny = int(tau[-1] * fsy) + 10
    y = signal.sosfilt(sos_shape, rng.standard_normal(ny + 4000))[4000:]
    x = np.interp(tau * fsy, np.arange(ny), y)
    x /= x.std()
    x = x + rng.standard_normal(x.size) * 10 ** (-snr_db / 20)
    fg = np.linspace(0.01, fsy / 2, 200000)
    _, h = signal.sosfreqz(sos_shape, worN=fg, fs=fsy)
    py = np.abs(h) ** 2
    sos_bp = signal.butter(4, [20, 450], btype="bandpass", fs=FS, output="sos")

    def true_mdf(tt, with_noise=True):
        # recorded PSD = unit-power shaped spectrum scaled by s + white noise, times |H_bp|^4 (filtfilt)
        s = s0 + k * tt
        f = np.linspace(20, 450, 20000)
        p_sig = np.interp(f / s, fg, py) / s
        p_sig /= np.trapezoid(np.interp(fg, fg, py), fg)
        p = p_sig + (10 ** (-snr_db / 10) / (FS / 2) if with_noise else 0.0)
        _, hb = signal.sosfreqz(sos_bp, worN=f, fs=FS)
        c = np.cumsum(p * np.abs(hb) ** 4)
        return float(np.interp(0.5 * c[-1], c, f))

    return x, true_mdf, k


def test_fatigue_mdf_and_slope_match_the_shaping_spectrum():
    x, true_mdf, _ = _shaped_semg()
    r = emg.analyse_channel(x, FS, "syn", "V")
    t = np.array([w["t_s"] for w in r.windows])
    mdf = np.array([w["mdf_hz"] for w in r.windows])
    truth = np.array([true_mdf(tt) for tt in t])
    assert abs(np.mean(mdf - truth)) < 2.0  # bias over the windows (per-window SD ~4 Hz at 1 s)
    true_slope = np.polyfit(t, truth, 1)[0]
    assert abs(r.mdf_slope_hz_per_s / true_slope - 1) < 0.10
    lo, hi = r.mdf_slope_ci_hz_per_s
    assert lo < r.mdf_slope_hz_per_s < hi and lo < true_slope < hi
    assert r.mnf_slope_hz_per_s < 0 and r.mdf_slope_pct_per_min < 0
    # a stationary 20 s stretch: whole-signal MDF within 2 Hz
    xs, true_s, _ = _shaped_semg(duration_s=20.0, s0=0.9, s1=0.9, seed=3)
    rs = emg.analyse_channel(xs, FS, "stat", "V")
    assert abs(rs.mdf_hz - true_s(0.0)) < 2.0
    assert abs(rs.mdf_slope_hz_per_s) < 0.5  # overlapping 1 s windows: noisy, not a fatigue trend


def test_features_equal_a_plain_numpy_reference():
    rng = np.random.default_rng(7)
    y = rng.standard_normal(int(5 * FS)) * 3.0
    wf = emg.window_features(y, FS, window_s=1.0, overlap=0.5, low=20, high=450)
    win, step, nps = 2000, 1000, 500
    for i, start in enumerate(range(0, y.size - win + 1, step)):
        seg = y[start : start + win]
        assert wf["t_s"][i] == pytest.approx((start + (win - 1) / 2) / FS)
        assert wf["rms"][i] == pytest.approx(np.sqrt(np.mean(seg**2)), rel=1e-6)
        a = np.abs(seg)
        assert wf["iemg"][i] == pytest.approx((a.sum() - 0.5 * (a[0] + a[-1])) / FS, rel=1e-6)
        f, p = signal.welch(seg, fs=FS, nperseg=nps, noverlap=nps // 2)
        band = (f >= 20) & (f <= 450)
        fb, pb = f[band], p[band]
        assert wf["mnf_hz"][i] == pytest.approx(np.sum(fb * pb) / np.sum(pb), rel=1e-6)
        df = f[1] - f[0]
        edges = np.concatenate(([fb[0] - df / 2], fb + df / 2))
        cum = np.concatenate(([0.0], np.cumsum(pb)))
        assert wf["mdf_hz"][i] == pytest.approx(np.interp(0.5 * cum[-1], cum, edges), rel=1e-6)
    assert emg.rms(y) == pytest.approx(np.sqrt(np.mean(y**2)), rel=1e-12)
    assert emg.iemg(y, FS) == pytest.approx(np.trapezoid(np.abs(y), dx=1 / FS), rel=1e-12)


def test_filters_notch_zero_phase_envelope_mvc():
    t = np.arange(int(10 * FS)) / FS
    hum = np.sin(2 * np.pi * 50 * t)
    out = emg.notch(hum, FS, mains=50)
    mid = slice(int(2 * FS), int(8 * FS))
    assert 20 * np.log10(emg.rms(out[mid]) / emg.rms(hum[mid])) < -40
    # a 100 Hz burst passes the band-pass; its envelope peak is not delayed
    pulse = np.exp(-0.5 * ((t - 5.0) / 0.05) ** 2) * np.sin(2 * np.pi * 100 * t)
    env = emg.linear_envelope(emg.bandpass(pulse, FS), FS, cutoff=6)
    assert abs(t[np.argmax(env)] - 5.0) < 1e-3
    hp = emg.highpass(np.sin(2 * np.pi * 5 * t), FS, cutoff=30)  # ECG-band content removed
    assert emg.rms(hp[mid]) < 1e-3
    mr = emg.moving_rms(np.full(1000, 2.0), FS, 0.05)
    np.testing.assert_allclose(mr, 2.0)
    assert emg.mvc_normalise(np.array([0.5, 1.0]), 2.0).tolist() == [25.0, 50.0]
    with pytest.raises(MSDTError, match="MVC"):
        emg.mvc_normalise([1.0], 0)
    notes = []
    emg.bandpass(np.random.default_rng(0).standard_normal(2000), 500.0, notes=notes)
    assert "225" in notes[0]


def test_onsets_on_a_burst_train():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(int(12 * FS)) * 0.05
    bursts = [(1.0, 1.8), (3.2, 3.7), (6.0, 7.5), (9.1, 9.5)]
    for a, b in bursts:
        x[int(a * FS) : int(b * FS)] += rng.standard_normal(int(b * FS) - int(a * FS))
    y = emg.bandpass(x, FS)
    found = emg.onsets(y, FS)
    assert len(found) == len(bursts)
    for (a, b), d in zip(bursts, found, strict=True):
        assert abs(d["onset_s"] - a) < 0.020 and abs(d["offset_s"] - b) < 0.030


def test_symmetry_and_pairs():
    assert emg.symmetry_index(3.0, 1.0) == pytest.approx(100.0)
    assert emg.symmetry_index(2.0, 2.0) == 0.0
    assert emg.symmetry_index(0.0, 0.0) is None
    pairs = emg.find_pairs(["ES_L", "ES_R", "RA left", "RA right", "Biceps", "Obl_left"])
    assert pairs == {"es": ("ES_L", "ES_R"), "ra": ("RA left", "RA right")}
    rng = np.random.default_rng(4)
    sig = {"ES_L": (2 * rng.standard_normal(6000), FS, "mV"), "ES_R": (rng.standard_normal(6000), FS, "mV")}
    out = emg.analyse_recording(sig)
    si = out["symmetry"]["es"]["rms"]
    L, R = out["channels"]["ES_L"]["rms"], out["channels"]["ES_R"]["rms"]
    assert si == pytest.approx(100 * (L - R) / ((L + R) / 2)) and 55 < si < 80


def test_bad_input_is_reported_and_the_rest_analysed():
    rng = np.random.default_rng(5)
    good = rng.standard_normal(int(10 * FS))
    gaps = good.copy()
    gaps[5000:5040] = np.nan  # 20 ms: interpolated
    gaps[12000:13000] = np.nan  # 0.5 s: windows skipped
    clipped = np.clip(good * 3, -4, 4)
    sig = {
        "good": (good, FS, "V"),
        "gaps": (gaps, FS, "V"),
        "clipped": (clipped, FS, "V"),
        "lowfs": (rng.standard_normal(5000), 500.0, "V"),
        "flat": (np.zeros(5000), FS, "V"),
        "short": (rng.standard_normal(600), FS, "V"),
        "allnan": (np.full(100, np.nan), FS, "V"),
        "badfs": (good, -1, "V"),
    }
    with pytest.raises(MSDTError, match="available"):
        emg.analyse_recording(sig, channels=["good", "nope"])
    out = emg.analyse_recording(sig)
    json.dumps(out, allow_nan=False)  # JSON-ready, no NaN anywhere
    ch = out["channels"]
    assert ch["good"]["error"] is None and 20 < ch["good"]["mdf_hz"] < 450
    notes = " ".join(ch["gaps"]["notes"])
    assert "interpolated" in notes and "skipped" in notes
    assert len(ch["gaps"]["windows"]) < len(ch["good"]["windows"])
    assert all(math.isfinite(w["mdf_hz"]) for w in ch["gaps"]["windows"])
    assert ch["clipped"]["clipped_fraction"] == pytest.approx(np.mean(np.abs(good * 3) >= 4), rel=1e-9)
    assert ch["good"]["clipped_fraction"] == 0.0
    assert "clipped" in " ".join(ch["clipped"]["notes"])
    assert ch["lowfs"]["band_hz"][1] == pytest.approx(225.0) and "below 2 x" in ch["lowfs"]["notes"][0]
    assert "constant" in ch["flat"]["error"]
    assert ch["short"]["windows"] == [] and "shorter than one" in " ".join(ch["short"]["notes"])
    assert ch["short"]["rms"] > 0 and ch["short"]["mdf_hz"] > 0
    assert "no finite samples" in ch["allnan"]["error"]
    assert "sample rate" in ch["badfs"]["error"]


def test_biosppy_raw_emg_end_to_end():
    for name in ("emg.txt", "emg_1.txt"):
        path = BIOSPPY / name
        header = [ln for ln in path.read_text().splitlines()[:4] if ln.startswith("#")]
        fs = float(next(h for h in header if "Sampling Rate" in h).split(":=")[1])
        x = np.loadtxt(path, comments="#")
        assert fs == 1000.0 and 0 <= x.min() and x.max() < 4096  # 12-bit ADC counts
        r = emg.analyse_channel(x, fs, name, "ADC counts", mains=50)
        assert r.error is None and r.band_hz == (20.0, 450.0)
        assert all(math.isfinite(v) for v in (r.rms, r.iemg, r.mnf_hz, r.mdf_hz, r.mdf_slope_hz_per_s))
        assert 20 < r.mdf_hz < 200
        assert all(20 < w["mdf_hz"] < 450 and w["rms"] > 0 for w in r.windows)
    # emg_1 has clear bursts over rest: several onsets and a large amplitude range across windows
    rms_w = [w["rms"] for w in r.windows]
    assert len(r.onsets) >= 3 and max(rms_w) / min(rms_w) > 5


def test_delsys_c3d_end_to_end():
    ezc3d = pytest.importorskip("ezc3d")
    path = next((p for p in C3D_CANDIDATES if p.exists()), None)
    if path is None:
        pytest.skip("pyomeca markers_analogs.c3d not available")
    c = ezc3d.c3d(str(path))
    a = c["data"]["analogs"][0]
    labels = c["parameters"]["ANALOG"]["LABELS"]["value"]
    units = c["parameters"]["ANALOG"]["UNITS"]["value"]
    fs = float(c["parameters"]["ANALOG"]["RATE"]["value"][0])
    assert fs == 2000.0
    sig = {lab: (a[i], fs, units[i]) for i, lab in enumerate(labels)}
    muscles = [
        lab
        for lab in labels
        if lab.split(".")[0]
        in (
            "Delt_ant",
            "Delt_med",
            "Delt_post",
            "Biceps",
            "Triceps",
            "Trap_sup",
            "Trap_inf",
            "Gd_dent",
            "Supra",
            "Infra",
            "Subscap",
            "Pec",
            "Gd_dors",
        )
    ]
    assert len(muscles) == 13
    out = emg.analyse_recording(sig, channels=muscles + ["Sensor 14.EMG14"])
    json.dumps(out, allow_nan=False)
    for m in muscles:
        r = out["channels"][m]
        assert r["error"] is None and r["unit"] == "V"
        assert all(math.isfinite(r[k]) for k in ("rms", "iemg", "mnf_hz", "mdf_hz", "mdf_slope_hz_per_s"))
        assert 20 < r["mdf_hz"] < 200 and len(r["windows"]) == 10
    assert "constant" in out["channels"]["Sensor 14.EMG14"]["error"]
