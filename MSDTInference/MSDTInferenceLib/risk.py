"""Calibrated surgery-risk estimate: penalised Bayesian logistic regression on a cohort table.

The model works on standardised features z = (x - mean) / sd:

* logit = intercept + sum_j w_j z_j, fitted by Newton's method with an L2 penalty ``l2`` on the
  coefficients (a N(0, 1/l2) prior on the standardised log-odds per SD; the intercept is unpenalised);
  ``l2="cv"`` (default) picks it from a grid by inner 5-fold CV log loss.
* Laplace approximation: the posterior of (intercept, w) is Gaussian with covariance = inverse Hessian
  of the penalised negative log-likelihood at the MAP.  The 90 % interval of a patient's risk is the
  5-95 % range of the logistic of the (Gaussian) logit.
* Missing features are marginalised under a Gaussian model of the standardised features (cohort
  correlation matrix): the missing block gets its conditional mean given the observed features and its
  conditional covariance adds ``w_M' V w_M + tr(Sigma_MM V)`` to the logit variance (wider interval).
* Calibration: 5-fold out-of-fold predictions on the training cohort are recalibrated with a logistic
  fit ``y ~ a + b * logit(p)``; slope b and intercept a are reported, and applied (Platt scaling) only
  when the model is fitted with ``calibrate=True``.

The point ``risk`` is the posterior-predictive probability (probit approximation of E[sigmoid(logit)]
over parameter and missing-feature uncertainty); ``logit`` is the MAP linear predictor, which the
per-feature ``contributions`` (w_j * z_j in log-odds, z_j the conditional mean when missing) sum to
together with the intercept.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from MSDTLib.errors import MSDTError

Z90 = 1.6448536269514722
MODEL_FILE = "risk_model.json"
FORMAT_VERSION = 1

# (ratio, description) pairs for the unit heuristic: a value ~ratio x (or 1/ratio x) the cohort median.
_UNIT_RATIOS = (
    (10.0, "mm vs cm"),
    (1000.0, "mm vs m"),
    (180.0 / math.pi, "deg vs rad"),
    (100.0, "% vs fraction"),
)


def _expit(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=float)))


def _logit(p, eps=1e-6):
    p = np.clip(np.asarray(p, dtype=float), eps, 1.0 - eps)
    return np.log(p / (1.0 - p))


def fit_logistic(A, y, penalty, max_iter=100, tol=1e-10):
    """Penalised logistic regression by Newton's method. Returns (theta, Hessian at the optimum)."""
    A = np.asarray(A, dtype=float)
    y = np.asarray(y, dtype=float)
    pen = np.broadcast_to(np.asarray(penalty, dtype=float), (A.shape[1],)).copy()
    theta = np.zeros(A.shape[1])
    H = None
    for _ in range(max_iter):
        p = _expit(A @ theta)
        g = A.T @ (p - y) + pen * theta
        W = p * (1.0 - p)
        H = (A * W[:, None]).T @ A + np.diag(pen)
        step = np.linalg.solve(H, g)
        # damped step keeps near-separable problems from oscillating
        scale = min(1.0, 10.0 / max(1e-12, float(np.max(np.abs(step)))))
        theta = theta - scale * step
        if float(np.max(np.abs(step))) < tol:
            break
    p = _expit(A @ theta)
    W = p * (1.0 - p)
    H = (A * W[:, None]).T @ A + np.diag(pen)
    return theta, H


def calibration_slope_intercept(y, p):
    """Logistic recalibration y ~ a + b * logit(p): returns (slope b, intercept a)."""
    lp = _logit(p)
    A = np.column_stack([np.ones_like(lp), lp])
    theta, _ = fit_logistic(A, y, penalty=1e-8)
    return float(theta[1]), float(theta[0])


def expected_calibration_error(y, p, bins=10):
    """ECE with equal-width probability bins, weighted by bin size."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(y[sel].mean() - p[sel].mean())
    return float(ece)


def brier(y, p):
    return float(np.mean((np.asarray(p, dtype=float) - np.asarray(y, dtype=float)) ** 2))


def auc(y, p):
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def _check_cohort(X, y, folds=None):
    X = np.asarray(X, dtype=float)
    y = np.asarray(y)
    if X.ndim != 2:
        raise MSDTError(f"cohort features must be a 2-D table, got shape {X.shape}")
    if X.shape[0] != y.shape[0]:
        raise MSDTError(f"cohort has {X.shape[0]} feature rows but {y.shape[0]} outcomes")
    if X.shape[1] == 0:
        raise MSDTError("cohort has no numeric feature columns")
    if not np.all(np.isin(y, (0, 1))):
        raise MSDTError("cohort outcome must be binary 0/1")
    y = y.astype(int)
    n_pos = int(y.sum())
    n_neg = int(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise MSDTError(
            f"cohort has only one outcome class ({n_pos} positive, {n_neg} negative): a risk model needs both"
        )
    if len(y) < 20:
        raise MSDTError(f"cohort has too few rows: {len(y)} (at least 20 are needed)")
    if folds is not None and min(n_pos, n_neg) < folds:
        raise MSDTError(
            f"cohort has fewer rows per class than CV folds ({n_pos} positive, {n_neg} negative, {folds} folds)"
        )
    all_nan = np.all(np.isnan(X), axis=0)
    if all_nan.any():
        raise MSDTError(f"cohort feature column(s) {np.flatnonzero(all_nan).tolist()} have no values")
    return X, y


def _conditional(R, z, observed):
    """Gaussian conditional of the missing block of standardised features: (mean_M, cov_MM)."""
    obs = np.flatnonzero(observed)
    mis = np.flatnonzero(~observed)
    if mis.size == 0:
        return np.zeros(0), np.zeros((0, 0))
    if obs.size == 0:
        return np.zeros(mis.size), R[np.ix_(mis, mis)].copy()
    R_oo = R[np.ix_(obs, obs)]
    R_mo = R[np.ix_(mis, obs)]
    K = np.linalg.solve(R_oo, R_mo.T).T
    mu = K @ z[obs]
    V = R[np.ix_(mis, mis)] - K @ R_mo.T
    V = 0.5 * (V + V.T)
    return mu, V


@dataclass
class RiskResult:
    risk: float
    interval: list
    logit: float
    logit_sd: float
    intercept: float
    contributions: dict
    missing: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    def to_dict(self):
        return asdict(self)


class RiskModel:
    """Penalised (Laplace-Bayesian) logistic risk model on standardised cohort features."""

    L2_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)

    def __init__(self, l2="cv", calibrate=False):
        if not (l2 == "cv" or (isinstance(l2, (int, float)) and l2 > 0)):
            raise MSDTError(f"l2 penalty must be a positive number or 'cv', got {l2!r}")
        self.l2_spec = l2
        self.l2 = None if l2 == "cv" else float(l2)
        self.calibrate = bool(calibrate)
        self.names = []
        self.fitted = False

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y, names=None, check_calibration=True, seed=0):
        X, y = _check_cohort(X, y)
        p = X.shape[1]
        self.names = list(names) if names is not None else [f"x{j}" for j in range(p)]
        if len(self.names) != p:
            raise MSDTError(f"{len(self.names)} feature names for {p} feature columns")
        self.mean = np.nanmean(X, axis=0)
        sd = np.nanstd(X, axis=0)
        if np.any(sd <= 0):
            const = [self.names[j] for j in np.flatnonzero(sd <= 0)]
            raise MSDTError(f"cohort feature(s) {const} are constant: drop them")
        self.sd = sd
        self.lo = np.nanmin(X, axis=0)
        self.hi = np.nanmax(X, axis=0)
        self.median = np.nanmedian(X, axis=0)
        Z = (X - self.mean) / self.sd
        self.R = self._correlation(Z)
        Z = self._impute(Z)
        A = np.column_stack([np.ones(len(y)), Z])
        if self.l2_spec == "cv":
            self.l2 = self._choose_l2(A, y, seed)
        theta, H = fit_logistic(A, y, self._penalty(p))
        self.theta = theta
        self.cov = np.linalg.inv(H)
        self.cov = 0.5 * (self.cov + self.cov.T)
        self.n = int(len(y))
        self.n_pos = int(y.sum())
        self.platt = (0.0, 1.0)
        self.calibration = {}
        self.fitted = True
        if check_calibration and min(self.n_pos, self.n - self.n_pos) >= 5:
            oof = self._oof(X, y, seed=seed)
            slope, intercept = calibration_slope_intercept(y, oof)
            self.calibration = {
                "oof_slope": slope,
                "oof_intercept": intercept,
                "oof_ece": expected_calibration_error(y, oof),
                "oof_brier": brier(y, oof),
                "platt_applied": self.calibrate,
            }
            if self.calibrate:
                self.platt = (intercept, slope)
        return self

    def _penalty(self, p, l2=None):
        pen = np.full(p + 1, self.l2 if l2 is None else l2)
        pen[0] = 1e-8
        return pen

    def _choose_l2(self, A, y, seed, folds=5):
        """Inner stratified CV over L2_GRID by mean out-of-fold log loss (on the standardised design)."""
        from sklearn.model_selection import StratifiedKFold

        k = min(folds, int(min(y.sum(), len(y) - y.sum())))
        if k < 2:
            return 1.0
        splits = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(A, y))
        best, best_loss = 1.0, np.inf
        for l2 in self.L2_GRID:
            loss = 0.0
            for tr, te in splits:
                th, _ = fit_logistic(A[tr], y[tr], self._penalty(A.shape[1] - 1, l2))
                pr = np.clip(_expit(A[te] @ th), 1e-12, 1 - 1e-12)
                loss -= float(np.sum(y[te] * np.log(pr) + (1 - y[te]) * np.log(1 - pr)))
            if loss < best_loss - 1e-9:
                best, best_loss = l2, loss
        return float(best)

    def _oof(self, X, y, folds=5, seed=0):
        from sklearn.model_selection import StratifiedKFold

        oof = np.zeros(len(y))
        skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        for tr, te in skf.split(X, y):
            m = RiskModel(l2=self.l2_spec).fit(X[tr], y[tr], self.names, check_calibration=False, seed=seed)
            oof[te] = m.predict_proba(X[te])
        return oof

    @staticmethod
    def _correlation(Z):
        p = Z.shape[1]
        R = np.eye(p)
        for i in range(p):
            for j in range(i + 1, p):
                ok = ~np.isnan(Z[:, i]) & ~np.isnan(Z[:, j])
                if ok.sum() > 2:
                    R[i, j] = R[j, i] = np.corrcoef(Z[ok, i], Z[ok, j])[0, 1]
        # small shrinkage and eigenvalue floor keep the conditional solves well posed
        R = 0.99 * R + 0.01 * np.eye(p)
        w, v = np.linalg.eigh(R)
        R = (v * np.maximum(w, 1e-6)) @ v.T
        return 0.5 * (R + R.T)

    def _impute(self, Z):
        Z = Z.copy()
        for i in range(Z.shape[0]):
            obs = ~np.isnan(Z[i])
            if not obs.all():
                mu, _ = _conditional(self.R, np.nan_to_num(Z[i]), obs)
                Z[i, ~obs] = mu
        return Z

    # ---------------------------------------------------------------- prediction
    def _require(self):
        if not self.fitted:
            raise MSDTError("risk model is not trained: call fit() or RiskModel.load()")

    def _predict_z(self, z, observed):
        """Logit mean, logit variance, filled z for one standardised row."""
        mu, V = _conditional(self.R, np.where(observed, z, 0.0), observed)
        zf = np.where(observed, z, 0.0)
        mis = np.flatnonzero(~observed)
        zf[mis] = mu
        a = np.concatenate([[1.0], zf])
        m = float(a @ self.theta)
        var = float(a @ self.cov @ a)
        if mis.size:
            w_m = self.theta[1:][mis]
            S_mm = self.cov[1:, 1:][np.ix_(mis, mis)]
            var += float(w_m @ V @ w_m) + float(np.sum(S_mm * V))
        a_, b_ = self.platt
        return a_ + b_ * m, (b_**2) * var, zf

    def _risk_from(self, m, var):
        sd = math.sqrt(max(var, 0.0))
        risk = float(_expit(m / math.sqrt(1.0 + math.pi * var / 8.0)))
        return risk, [float(_expit(m - Z90 * sd)), float(_expit(m + Z90 * sd))], sd

    def predict_proba(self, X):
        """Posterior-predictive risks for a numeric table (NaN = missing, marginalised)."""
        self._require()
        X = np.atleast_2d(np.asarray(X, dtype=float))
        Z = (X - self.mean) / self.sd
        out = np.empty(len(Z))
        complete = ~np.isnan(Z).any(axis=1)
        if complete.any():
            A = np.column_stack([np.ones(int(complete.sum())), Z[complete]])
            m = A @ self.theta
            var = np.einsum("ij,jk,ik->i", A, self.cov, A)
            a_, b_ = self.platt
            m = a_ + b_ * m
            var = b_**2 * var
            out[complete] = _expit(m / np.sqrt(1.0 + math.pi * var / 8.0))
        for i in np.flatnonzero(~complete):
            m, var, _ = self._predict_z(np.nan_to_num(Z[i]), ~np.isnan(Z[i]))
            out[i] = self._risk_from(m, var)[0]
        return out

    def predict_logit_interval(self, X):
        """(logit mean, logit sd) arrays for complete rows of a numeric table."""
        self._require()
        X = np.atleast_2d(np.asarray(X, dtype=float))
        Z = (X - self.mean) / self.sd
        res = [self._predict_z(np.nan_to_num(z), ~np.isnan(z)) for z in Z]
        return np.array([r[0] for r in res]), np.sqrt(np.array([r[1] for r in res]))

    def _parse(self, features):
        """Feature dict -> (standardised z, observed mask, missing names, warnings)."""
        self._require()
        if not isinstance(features, dict):
            raise MSDTError(
                f"patient features must be a dict of name -> value, got {type(features).__name__}"
            )
        warnings = []
        index = {n: j for j, n in enumerate(self.names)}
        x = np.full(len(self.names), np.nan)
        for name, value in features.items():
            if name not in index:
                warnings.append(f"unknown feature '{name}' ignored (not in the model)")
                continue
            if value is None:
                continue
            try:
                v = float(value)
            except (TypeError, ValueError):
                warnings.append(f"feature '{name}' has non-numeric value {value!r}: treated as missing")
                continue
            if not math.isfinite(v):
                continue
            j = index[name]
            x[j] = v
            warnings.extend(self._value_warnings(j, v))
        observed = ~np.isnan(x)
        z = np.where(observed, (np.nan_to_num(x) - self.mean) / self.sd, 0.0)
        missing = [n for n, o in zip(self.names, observed, strict=True) if not o]
        return z, observed, missing, warnings

    def _value_warnings(self, j, v):
        name = self.names[j]
        out = []
        lo = self.lo[j] - 3 * self.sd[j]
        hi = self.hi[j] + 3 * self.sd[j]
        outside = v < lo or v > hi
        med = self.median[j]
        # units: a value beyond the observed cohort range at ~10x (1000x, 57x, 100x) or its inverse the median
        beyond = v < self.lo[j] or v > self.hi[j]
        if beyond and med != 0 and v != 0 and np.sign(med) == np.sign(v):
            r = abs(v / med)
            for ratio, desc in _UNIT_RATIOS:
                if ratio / 1.5 <= r <= ratio * 1.5 or 1 / (ratio * 1.5) <= r <= 1.5 / ratio:
                    big = r > 1
                    out.append(
                        f"feature '{name}' = {v:g} is ~{ratio if big else 1 / ratio:.3g}x the cohort median "
                        f"{med:g}: check units ({desc})"
                    )
                    break
        if outside:
            out.append(
                f"feature '{name}' = {v:g} is outside the cohort range [{self.lo[j]:g}, {self.hi[j]:g}] "
                f"by more than 3 SD ({self.sd[j]:g}): extrapolating"
            )
        return out

    def predict(self, features, zero_fill=False):
        """Risk for one patient given a dict name -> value. ``zero_fill`` (comparison only) sets missing
        standardised features to 0 (the cohort mean) without marginalising."""
        z, observed, missing, warnings = self._parse(features)
        if zero_fill:
            observed = np.ones_like(observed)
        m, var, zf = self._predict_z(z, observed)
        risk, interval, sd = self._risk_from(m, var)
        a_, b_ = self.platt
        w = self.theta[1:] * b_
        contributions = {n: float(w[j] * zf[j]) for j, n in enumerate(self.names)}
        return RiskResult(
            risk=risk,
            interval=interval,
            logit=m,
            logit_sd=sd,
            intercept=float(a_ + b_ * self.theta[0]),
            contributions=contributions,
            missing=missing,
            warnings=warnings,
        )

    @property
    def coefficients(self):
        """Coefficients in log-odds per cohort SD of each feature."""
        self._require()
        return {n: float(w) for n, w in zip(self.names, self.theta[1:], strict=True)}

    # ------------------------------------------------------------------ persistence
    def to_dict(self):
        self._require()
        return {
            "format": "MSDT risk model",
            "version": FORMAT_VERSION,
            "l2": self.l2,
            "l2_spec": self.l2_spec,
            "calibrate": self.calibrate,
            "names": self.names,
            "mean": self.mean.tolist(),
            "sd": self.sd.tolist(),
            "lo": self.lo.tolist(),
            "hi": self.hi.tolist(),
            "median": self.median.tolist(),
            "R": self.R.tolist(),
            "theta": self.theta.tolist(),
            "cov": self.cov.tolist(),
            "n": self.n,
            "n_pos": self.n_pos,
            "platt": list(self.platt),
            "calibration": self.calibration,
        }

    def save(self, directory):
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, MODEL_FILE)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=1)
        return path

    @classmethod
    def from_dict(cls, d):
        if d.get("format") != "MSDT risk model":
            raise MSDTError("not an MSDT risk model JSON (missing 'format': 'MSDT risk model')")
        m = cls(l2=d["l2"], calibrate=d.get("calibrate", False))
        m.l2_spec = d.get("l2_spec", d["l2"])
        m.names = list(d["names"])
        for key in ("mean", "sd", "lo", "hi", "median", "R", "theta", "cov"):
            setattr(m, key, np.asarray(d[key], dtype=float))
        m.n = int(d["n"])
        m.n_pos = int(d["n_pos"])
        m.platt = tuple(d.get("platt", (0.0, 1.0)))
        m.calibration = d.get("calibration", {})
        m.fitted = True
        return m

    @classmethod
    def load(cls, directory):
        path = os.path.join(directory, MODEL_FILE) if os.path.isdir(directory) else directory
        if not os.path.isfile(path):
            raise MSDTError(f"risk model file not found: {path}")
        try:
            with open(path, encoding="utf-8") as fh:
                d = json.load(fh)
        except json.JSONDecodeError as exc:
            raise MSDTError(f"risk model file {path} is not valid JSON: {exc}") from exc
        return cls.from_dict(d)


# ---------------------------------------------------------------------- validation
def _metrics(y, p):
    slope, intercept = calibration_slope_intercept(y, p)
    return {
        "auc": auc(y, p),
        "brier": brier(y, p),
        "calibration_slope": slope,
        "calibration_intercept": intercept,
        "ece": expected_calibration_error(y, p),
    }


def cross_validate(X, y, repeats=5, folds=5, seed=0, l2="cv", names=None, baseline=True):
    """Repeated stratified CV of the risk model and a gradient-boosting baseline in the same splits.

    Metrics are computed on each repeat's pooled out-of-fold predictions; mean and SD over repeats.
    """
    from threadpoolctl import threadpool_limits

    if repeats < 1 or folds < 2:
        raise MSDTError(f"cross-validation needs repeats >= 1 and folds >= 2 (got {repeats}, {folds})")
    X, y = _check_cohort(X, y, folds=folds)
    # one OpenMP thread: the boosting fits on a few hundred rows are far slower when oversubscribed
    with threadpool_limits(limits=1):
        runs = _cv_runs(X, y, repeats, folds, seed, l2, names, baseline)
    out = {"n": int(len(y)), "n_positive": int(y.sum()), "repeats": repeats, "folds": folds, "seed": seed}
    for key, lst in runs.items():
        if not lst:
            continue
        out[key] = {
            k: {
                "mean": float(np.mean([d[k] for d in lst])),
                "sd": float(np.std([d[k] for d in lst], ddof=1)) if len(lst) > 1 else 0.0,
            }
            for k in lst[0]
        }
    out["model"]["name"] = f"L2 logistic (Laplace), l2={l2 if l2 == 'cv' else f'{l2:g}'}"
    if baseline:
        out["baseline"]["name"] = "HistGradientBoostingClassifier (sklearn defaults)"
    return out


def _cv_runs(X, y, repeats, folds, seed, l2, names, baseline):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold

    runs = {"model": [], "baseline": []}
    for r in range(repeats):
        skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed + r)
        oof = np.zeros(len(y))
        oof_b = np.zeros(len(y))
        for tr, te in skf.split(X, y):
            m = RiskModel(l2=l2).fit(X[tr], y[tr], names, check_calibration=False, seed=seed + r)
            oof[te] = m.predict_proba(X[te])
            if baseline:
                gb = HistGradientBoostingClassifier(random_state=seed + r)
                gb.fit(X[tr], y[tr])
                oof_b[te] = gb.predict_proba(X[te])[:, 1]
        runs["model"].append(_metrics(y, oof))
        if baseline:
            runs["baseline"].append(_metrics(y, oof_b))
    return runs


# ------------------------------------------------------------------- exam suggestions
def suggest_exams(model, features, exams, draws=100, seed=0):
    """Rank exams by expected reduction of the 90 % interval width once their features are observed.

    For each exam, the currently missing model features it measures are drawn ``draws`` times from their
    Gaussian conditional given the observed features; the width (and risk) are recomputed with them
    observed and averaged.
    """
    if not isinstance(exams, dict):
        raise MSDTError("exams must be a dict of exam name -> list of feature names it measures")
    z, observed, _, _ = model._parse(features)
    m0, v0, _ = model._predict_z(z, observed)
    risk0, (lo0, hi0), _ = model._risk_from(m0, v0)
    width0 = hi0 - lo0
    index = {n: j for j, n in enumerate(model.names)}
    rng = np.random.default_rng(seed)
    mu, V = _conditional(model.R, z, observed)
    mis = np.flatnonzero(~observed)
    pos_in_mis = {j: k for k, j in enumerate(mis)}
    out = []
    for exam, feats in exams.items():
        targets = [index[f] for f in feats if f in index and not observed[index[f]]]
        if not targets:
            out.append(
                {
                    "exam": exam,
                    "expected_interval_width_reduction": 0.0,
                    "expected_change": 0.0,
                    "features": [],
                }
            )
            continue
        k = [pos_in_mis[j] for j in targets]
        L = np.linalg.cholesky(V[np.ix_(k, k)] + 1e-9 * np.eye(len(k)))
        samples = mu[k] + rng.standard_normal((draws, len(k))) @ L.T
        obs2 = observed.copy()
        obs2[targets] = True
        widths = []
        changes = []
        for s in samples:
            z2 = z.copy()
            z2[targets] = s
            m, v, _ = model._predict_z(z2, obs2)
            risk, (lo, hi), _ = model._risk_from(m, v)
            widths.append(hi - lo)
            changes.append(abs(risk - risk0))
        out.append(
            {
                "exam": exam,
                "expected_interval_width_reduction": float(width0 - np.mean(widths)),
                "expected_change": float(np.mean(changes)),
                "features": [model.names[j] for j in targets],
            }
        )
    out.sort(key=lambda d: d["expected_interval_width_reduction"], reverse=True)
    return out
