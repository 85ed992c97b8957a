"""Where a value falls in a characteristic's bins: one function that training and scoring share.

Training turns values into WoE with it and scoring turns them into points with it, so the two can
never disagree about a boundary.  Bins of a numerical characteristic are intervals ``[lower, upper)``
split at ``splits``; bins of a categorical one are groups of categories, compared as text
(``normalise_category``), so a category read as ``1`` from one CSV and ``1.0`` from another is one.

The result is a bin index per value, or one of the negative statuses below for a value that earns
the characteristic's neutral points instead of a bin's.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

MISSING = -1  # no value (null, NaN, empty text)
UNKNOWN = -2  # a value the model never saw: a new category, or text where a number belongs
UNTRUSTED = -3  # a value the caller marked as untrusted (failed data-trust checks)

STATUS_NAMES = {MISSING: "missing", UNKNOWN: "unknown", UNTRUSTED: "untrusted"}


def normalise_category(value: Any) -> str | None:
    """The text a category is matched by; ``None`` for a missing value."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float | np.floating) and np.isnan(value):
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    text = str(value).strip()
    return text or None


def assign_numerical(values: np.ndarray | Sequence[Any], splits: np.ndarray) -> np.ndarray:
    """Bin index of each value for bins ``[-inf, s0), [s0, s1), …, [s_last, inf)``."""
    array = np.asarray(values)
    if array.dtype.kind == "b":  # yes/no is not a number: a numerical characteristic never saw one
        return np.full(array.shape, UNKNOWN, dtype=np.int64)
    if array.dtype.kind in "fiu":
        numbers = array.astype(float)
        missing = np.isnan(numbers)
        invalid = np.isinf(numbers)
    else:
        text = pd.Series(array, dtype=object).map(lambda v: "yes/no" if isinstance(v, bool | np.bool_) else v)
        text = text.astype("string").str.strip()
        missing = text.isna().to_numpy(dtype=bool) | (text == "").to_numpy(dtype=bool, na_value=False)
        numbers = pd.to_numeric(text.mask(missing), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        invalid = ~missing & ~np.isfinite(numbers)
    index = np.searchsorted(splits, numbers, side="right").astype(np.int64)
    index[missing] = MISSING
    index[invalid] = UNKNOWN
    return index


def assign_categorical(values: np.ndarray | Sequence[Any], lookup: Mapping[str, int]) -> np.ndarray:
    """Bin index of each value from ``lookup`` (category text → bin); MISSING or UNKNOWN otherwise."""
    codes, uniques = pd.factorize(pd.Series(np.asarray(values, dtype=object)), use_na_sentinel=True)
    per_unique = np.array([_lookup(lookup, value) for value in uniques] + [MISSING], dtype=np.int64)
    return per_unique[codes]  # code -1 (pandas' missing) picks the appended MISSING


def assign_one_numerical(value: Any, splits: Sequence[float]) -> int:
    """``assign_numerical`` for one value (one application need not pay for arrays)."""
    if value is None or value is pd.NA or (isinstance(value, str) and not value.strip()):
        return MISSING
    if isinstance(value, float | np.floating) and math.isnan(value):
        return MISSING
    if isinstance(value, bool | np.bool_):
        return UNKNOWN
    try:
        number = float(value)
    except (TypeError, ValueError):
        return UNKNOWN
    return bisect.bisect_right(splits, number) if math.isfinite(number) else UNKNOWN


def assign_one_categorical(value: Any, lookup: Mapping[str, int]) -> int:
    """``assign_categorical`` for one value."""
    return _lookup(lookup, value)


def _lookup(lookup: Mapping[str, int], value: Any) -> int:
    key = normalise_category(value)
    return MISSING if key is None else lookup.get(key, UNKNOWN)
