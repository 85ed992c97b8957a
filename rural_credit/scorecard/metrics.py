"""Discrimination of a score: AUC, Gini and KS, each with a bootstrap confidence interval.

A higher score means a better (less risky) applicant.  Both figures come from the counts of bads
and goods at each distinct score, which handles ties exactly (a tie counts half in the AUC) and
lets a thousand bootstrap resamples be counted at once with numpy.  The interval is the percentile
interval of a stratified bootstrap (bads and goods resampled apart, so every resample keeps the bad
rate): simple, and honest for KS, which has no closed form.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float

    def __str__(self) -> str:
        return f"{self.value:.3f} (95% CI {self.ci_low:.3f}–{self.ci_high:.3f})"


@dataclass(frozen=True)
class Discrimination:
    auc: Estimate
    gini: Estimate
    ks: Estimate
    rows: int
    bads: int

    def as_dict(self) -> dict:
        return asdict(self)


def _auc_ks(bad_counts: np.ndarray, good_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUC and KS from counts per distinct score (columns in ascending score), one row per sample."""
    nb = bad_counts.sum(axis=1, keepdims=True)
    ng = good_counts.sum(axis=1, keepdims=True)
    goods_above = ng - np.cumsum(good_counts, axis=1)
    auc = ((bad_counts * (goods_above + 0.5 * good_counts)).sum(axis=1, keepdims=True) / (nb * ng))[:, 0]
    ks = np.abs(np.cumsum(bad_counts, axis=1) / nb - np.cumsum(good_counts, axis=1) / ng).max(axis=1)
    return auc, ks


def _counts(bad: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bad = np.asarray(bad, dtype=int)
    score = np.asarray(score, dtype=float)
    if bad.shape != score.shape or bad.ndim != 1 or set(np.unique(bad)) != {0, 1}:
        raise ValueError("discrimination needs one score per outcome (0 good, 1 bad), with goods and bads")
    _, level = np.unique(score, return_inverse=True)
    return bad, level, np.bincount(level)


def auc(bad: np.ndarray, score: np.ndarray) -> float:
    return float(discrimination(bad, score, n_bootstrap=0).auc.value)


def ks(bad: np.ndarray, score: np.ndarray) -> float:
    """Largest gap between the cumulative shares of bads and goods up to a score."""
    return float(discrimination(bad, score, n_bootstrap=0).ks.value)


def discrimination(bad: np.ndarray, score: np.ndarray, n_bootstrap: int = 1000, seed: int = 0,
                   level: float = 0.95) -> Discrimination:
    """AUC, Gini (2·AUC − 1) and KS of ``score`` against ``bad`` (1 = bad) with bootstrap intervals."""
    bad, levels, per_level = _counts(bad, score)
    k = per_level.size
    b0 = np.bincount(levels[bad == 1], minlength=k)[None, :]
    g0 = np.bincount(levels[bad == 0], minlength=k)[None, :]
    (a,), (d,) = _auc_ks(b0, g0)
    if n_bootstrap == 0:
        nan = float("nan")
        return Discrimination(Estimate(float(a), nan, nan), Estimate(float(2 * a - 1), nan, nan),
                              Estimate(float(d), nan, nan), int(bad.size), int(bad.sum()))
    rng = np.random.default_rng(seed)
    bad_levels, good_levels = levels[bad == 1], levels[bad == 0]
    offsets = (np.arange(n_bootstrap) * k)[:, None]

    def resampled(of: np.ndarray) -> np.ndarray:
        picks = of[rng.integers(0, of.size, size=(n_bootstrap, of.size))] + offsets
        return np.bincount(picks.ravel(), minlength=n_bootstrap * k).reshape(n_bootstrap, k)

    aucs, kss = _auc_ks(resampled(bad_levels), resampled(good_levels))
    tail = (1 - level) / 2 * 100

    def estimate(value: float, samples: np.ndarray) -> Estimate:
        lo, hi = np.percentile(samples, [tail, 100 - tail])
        return Estimate(float(value), float(lo), float(hi))

    return Discrimination(auc=estimate(a, aucs), gini=estimate(2 * a - 1, 2 * aucs - 1), ks=estimate(d, kss),
                          rows=int(bad.size), bads=int(bad.sum()))
