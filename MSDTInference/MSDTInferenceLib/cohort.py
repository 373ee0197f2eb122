"""Synthetic spine cohort with a KNOWN logistic surgery-risk function (a test utility).

Features are correlated Gaussians in physical units; the true logit is
``TRUE_INTERCEPT + sum_j beta_j * (x_j - mean_j) / sd_j`` with the per-SD coefficients below, and the
outcome is Bernoulli(sigmoid(logit)).
"""

from __future__ import annotations

import numpy as np

from MSDTLib.errors import MSDTError

# name: (mean, sd, true log-odds per SD)
FEATURES = {
    "lordosis_deg": (45.0, 10.0, -0.25),
    "disc_height_L4_L5_mm": (10.0, 2.0, -1.0),
    "emg_mdf_slope_pct_per_min": (-0.8, 0.5, -0.6),
    "trunk_rom_deg": (60.0, 12.0, -0.5),
    "l1_hu": (150.0, 40.0, -0.1),
}
TRUE_INTERCEPT = -1.0
# correlation among the features above (same order)
CORRELATION = np.array(
    [
        [1.0, 0.4, 0.1, 0.3, 0.2],
        [0.4, 1.0, 0.2, 0.6, 0.2],
        [0.1, 0.2, 1.0, 0.3, 0.0],
        [0.3, 0.6, 0.3, 1.0, 0.1],
        [0.2, 0.2, 0.0, 0.1, 1.0],
    ]
)


def _select(features):
    names = list(FEATURES) if features is None else list(features)
    unknown = [f for f in names if f not in FEATURES]
    if unknown:
        raise MSDTError(f"unknown synthetic feature(s) {unknown}; available: {list(FEATURES)}")
    idx = [list(FEATURES).index(f) for f in names]
    return names, idx


def true_logit(X, names=None):
    """The known logit for rows of X (columns in ``names`` order)."""
    names, _ = _select(names)
    X = np.atleast_2d(np.asarray(X, dtype=float))
    out = np.full(len(X), TRUE_INTERCEPT)
    for j, n in enumerate(names):
        mean, sd, beta = FEATURES[n]
        out += beta * (X[:, j] - mean) / sd
    return out


def true_risk(X, names=None):
    return 1.0 / (1.0 + np.exp(-true_logit(X, names)))


def synthetic_cohort(n, seed=0, features=None, missing_rate=0.0):
    """Draw ``n`` patients. Returns (X, y, true_risk, names); X has NaN at MCAR-missing entries
    (``missing_rate``), true_risk is computed from the complete features (over the chosen subset)."""
    if n < 1:
        raise MSDTError(f"synthetic cohort size must be positive, got {n}")
    if not 0.0 <= missing_rate < 1.0:
        raise MSDTError(f"missing_rate must be in [0, 1), got {missing_rate}")
    names, idx = _select(features)
    rng = np.random.default_rng(seed)
    R = CORRELATION[np.ix_(idx, idx)]
    Z = rng.multivariate_normal(np.zeros(len(idx)), R, size=n)
    means = np.array([FEATURES[f][0] for f in names])
    sds = np.array([FEATURES[f][1] for f in names])
    X = means + Z * sds
    risk = true_risk(X, names)
    y = (rng.random(n) < risk).astype(int)
    if missing_rate > 0:
        X = X.copy()
        X[rng.random(X.shape) < missing_rate] = np.nan
    return X, y, risk, names


def synthetic_visits(n, visits=3, seed=0, visit_drift=None, noise_sd=0.2):
    """Longitudinal cohort: each patient's standardised features drift linearly per visit.

    ``visit_drift``: dict name -> drift per visit in physical units (default: disc height -0.3 mm,
    trunk ROM -2 deg per visit). Returns (X[n, visits, p], risk[n, visits], names).
    """
    names = list(FEATURES)
    drift = {"disc_height_L4_L5_mm": -0.3, "trunk_rom_deg": -2.0} if visit_drift is None else visit_drift
    bad = [k for k in drift if k not in FEATURES]
    if bad:
        raise MSDTError(f"visit_drift names unknown feature(s) {bad}")
    X0, _, _, _ = synthetic_cohort(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    sds = np.array([FEATURES[f][1] for f in names])
    d = np.array([drift.get(f, 0.0) for f in names])
    X = np.empty((n, visits, len(names)))
    for v in range(visits):
        X[:, v] = X0 + v * d + noise_sd * sds * rng.standard_normal(X0.shape) * (v > 0)
    risk = np.stack([true_risk(X[:, v]) for v in range(visits)], axis=1)
    return X, risk, names
