"""Monotonic optimal binning of one characteristic (optbinning), turned into plain bins with WoE.

optbinning finds the bins (a constraint-programming search for the split points or category groups
that maximise information value with each bin holding ``min_bin_size`` of the rows and the bad rate
constrained by ``trend``); the counts and WoE are then computed here from the training rows, so the
model file carries numbers this code can explain.  Missing values never form a scored bin: they
earn the neutral WoE of 0 (see ``scoring``).

``trend`` is the trend of the bad rate as the value grows: ``ascending``, ``descending``, or
``auto`` (optbinning's ``auto_asc_desc``: whichever of the two fits better, never a peak or valley).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from optbinning import OptimalBinning

from rural_credit.scorecard.assign import assign_categorical, assign_numerical, normalise_category

Kind = Literal["numerical", "categorical"]
Trend = Literal["auto", "ascending", "descending"]
TRENDS: dict[str, str] = {"auto": "auto_asc_desc", "ascending": "ascending", "descending": "descending"}
# a half count added to goods and bads of each bin, so a bin without bads has a finite WoE
SMOOTHING = 0.5


@dataclass(frozen=True)
class FittedBins:
    """The bins of one characteristic fitted on training rows, before any points are assigned."""

    name: str
    kind: Kind
    trend: Trend
    splits: list[float]  # numerical: bins [-inf, s0), [s0, s1), …
    groups: list[list[str]]  # categorical: the categories of each bin
    counts: list[int]
    bads: list[int]
    woe: list[float]
    iv: float
    missing_count: int

    def assign(self, values: np.ndarray) -> np.ndarray:
        if self.kind == "numerical":
            return assign_numerical(values, np.asarray(self.splits, dtype=float))
        return assign_categorical(values, {c: i for i, g in enumerate(self.groups) for c in g})

    def woe_of(self, values: np.ndarray) -> np.ndarray:
        """WoE of each value; 0 (neutral) for missing or unknown values."""
        index = self.assign(values)
        table = np.append(np.asarray(self.woe, dtype=float), 0.0)
        return table[np.where(index >= 0, index, len(self.woe))]


def infer_kind(series: pd.Series) -> Kind:
    """Numbers are numerical; text, booleans and pandas categories are categorical."""
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return "categorical"
    return "numerical"


def fit_bins(name: str, values: pd.Series, bad: np.ndarray, kind: Kind, trend: Trend = "auto",
             min_bin_size: float = 0.05, max_bins: int | None = 8) -> FittedBins:
    """Fit the bins of one characteristic on training rows (``bad``: 1 for a bad, 0 for a good)."""
    if trend not in TRENDS:
        raise ValueError(f"trend must be one of {sorted(TRENDS)}; got {trend!r}")
    if kind == "numerical":
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    else:
        x = np.array([normalise_category(v) for v in values], dtype=object)
        x = np.where(pd.isna(x), np.nan, x)
    optb = OptimalBinning(name=name, dtype=kind, monotonic_trend=TRENDS[trend], min_bin_size=min_bin_size,
                          max_n_bins=max_bins)
    present = ~pd.isna(x)
    if present.sum() == 0 or np.unique(bad[present]).size < 2:
        # nothing to learn from (no values, or one class): one bin, IV 0, and the characteristic is dropped
        splits, groups = [], ([] if kind == "numerical" or not present.any() else [sorted(set(x[present]))])
    else:
        optb.fit(x, bad)
        if kind == "numerical":
            splits, groups = [float(s) for s in optb.splits], []
        else:
            splits, groups = [], [sorted(str(c) for c in g) for g in optb.splits]
            groups = [g for g in groups if g]
    fitted = FittedBins(name, kind, trend, splits, groups, [], [], [], 0.0, int((~present).sum()))
    return _with_counts(fitted, x, bad)


def _with_counts(fitted: FittedBins, x: np.ndarray, bad: np.ndarray) -> FittedBins:
    index = fitted.assign(x)
    nbins = len(fitted.splits) + 1 if fitted.kind == "numerical" else len(fitted.groups)
    scored = index >= 0
    counts = np.bincount(index[scored], minlength=nbins)
    bads = np.bincount(index[scored], weights=bad[scored], minlength=nbins).astype(int)
    goods = counts - bads
    total_good, total_bad = max(goods.sum(), 1), max(bads.sum(), 1)
    good_share, bad_share = (goods + SMOOTHING) / total_good, (bads + SMOOTHING) / total_bad
    woe = np.log(good_share / bad_share)
    iv = float(np.sum((goods / total_good - bads / total_bad) * woe))
    return FittedBins(fitted.name, fitted.kind, fitted.trend, fitted.splits, fitted.groups, counts.tolist(),
                      bads.tolist(), woe.tolist(), max(iv, 0.0), fitted.missing_count)
