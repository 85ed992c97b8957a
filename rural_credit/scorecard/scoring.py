"""Scoring from the model file alone: vectorised batch scores and one application's explanation.

Only numpy and pandas (and the pydantic schema) are imported here, never a training library: a
scoring process loads ``model.json`` and nothing else.

Every characteristic contributes the points of the bin its value falls in.  A value that is
missing, marked untrusted, or unknown to the model (a new category, text where a number belongs)
earns the characteristic's neutral points, the points of a WoE of 0: such data is never read as
evidence of risk; the trust layer lowers trust and routes the case to review instead.

Reason codes name at most four *scored* characteristics, ranked by the points each lost against
that characteristic's best bin (ties: the model's order).  A counterfactual says, for a reason,
the nearest bin that earns more points and the values that reach it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rural_credit.scorecard import model_file
from rural_credit.scorecard.assign import (
    STATUS_NAMES,
    UNTRUSTED,
    assign_categorical,
    assign_numerical,
    assign_one_categorical,
    assign_one_numerical,
)
from rural_credit.scorecard.model_file import Characteristic, ModelFile

MAX_REASONS = 4


class ScoringError(ValueError):
    """Data that cannot be scored by this model (named columns are absent, …)."""


@dataclass(frozen=True)
class Counterfactual:
    """What would raise the score: move ``characteristic`` into ``target_bin`` (values ``target_range``)."""

    characteristic: str
    code: str
    current_bin: str
    target_bin: str
    lower: float | None  # numerical: the values [lower, upper) that reach the bin
    upper: float | None
    categories: list[str] | None  # categorical: the categories that reach it
    example: Any  # one value that reaches it
    points_gain: int
    new_score: int


@dataclass(frozen=True)
class Contribution:
    characteristic: str
    code: str
    value: Any
    status: str  # scored / missing / unknown / untrusted
    bin: str | None
    points: int
    max_points: int
    neutral_points: int

    @property
    def points_lost(self) -> int:
        return self.max_points - self.points


@dataclass(frozen=True)
class Explanation:
    score: int
    pd: float
    grade: str
    contributions: list[Contribution]
    reasons: list[Contribution]  # at most four, scored characteristics only, most points lost first
    counterfactuals: list[Counterfactual] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def contrib(c: Contribution) -> dict[str, Any]:
            return {"characteristic": c.characteristic, "code": c.code, "value": _plain(c.value), "status": c.status,
                    "bin": c.bin, "points": c.points, "max_points": c.max_points, "points_lost": c.points_lost}

        return {
            "score": self.score, "pd": self.pd, "grade": self.grade,
            "contributions": [contrib(c) for c in self.contributions],
            "reasons": [{"code": r.code, "characteristic": r.characteristic, "points_lost": r.points_lost,
                         "bin": r.bin} for r in self.reasons],
            "counterfactuals": [{k: _plain(v) for k, v in vars(cf).items()} for cf in self.counterfactuals],
        }


class _Table:
    """One characteristic compiled for numpy: how to find a bin, and the points of each bin."""

    def __init__(self, ch: Characteristic) -> None:
        self.ch = ch
        self.split_list = ch.splits()
        self.splits = np.asarray(self.split_list, dtype=float)
        self.lookup = {cat: i for i, b in enumerate(ch.bins) for cat in (b.categories or [])}
        # points by bin index, with the neutral points appended at -1, -2 and -3 (missing/unknown/untrusted)
        self.points = np.array([b.points for b in ch.bins] + [ch.neutral_points] * 3, dtype=np.int64)
        self.nbins = len(ch.bins)

    def assign(self, values: np.ndarray) -> np.ndarray:
        if self.ch.kind == "numerical":
            return assign_numerical(values, self.splits)
        return assign_categorical(values, self.lookup)

    def assign_one(self, value: Any) -> int:
        if self.ch.kind == "numerical":
            return assign_one_numerical(value, self.split_list)
        return assign_one_categorical(value, self.lookup)


class ScoreModel:
    """A loaded scorecard: ``score_frame`` for batches, ``explain`` for one application."""

    def __init__(self, model: ModelFile) -> None:
        self.model = model
        self.tables = [_Table(ch) for ch in model.characteristics]
        self.names = [ch.name for ch in model.characteristics]
        self._grade_cuts = np.array([g.min_score for g in model.grades[:-1]], dtype=float)
        self._grade_names = np.array([g.grade for g in model.grades], dtype=object)

    @classmethod
    def from_json(cls, text: str) -> ScoreModel:
        return cls(model_file.parse(text))

    @classmethod
    def from_file(cls, path: Path) -> ScoreModel:
        return cls(model_file.load(path))

    # -- batches --------------------------------------------------------------------------------

    def bin_indices(self, columns: Mapping[str, Any], untrusted: Mapping[str, Any] | None = None) -> np.ndarray:
        """Bin index per row and characteristic (negative: missing/unknown/untrusted), shape (rows, chars).

        ``columns`` maps each characteristic's name to its values (a DataFrame works); ``untrusted``
        maps names to boolean masks of the values that failed trust checks.
        """
        absent = [n for n in self.names if n not in columns]
        if absent:
            raise ScoringError(f"the data has no column {', '.join(map(repr, absent))} that the model scores")
        first = np.asarray(columns[self.names[0]])
        rows = len(first)
        out = np.empty((rows, len(self.tables)), dtype=np.int64)
        for j, table in enumerate(self.tables):
            values = np.asarray(columns[table.ch.name])
            if len(values) != rows:
                raise ScoringError(f"column {table.ch.name!r} has {len(values)} values, expected {rows}")
            out[:, j] = table.assign(values)
        if untrusted is not None:
            for j, name in enumerate(self.names):
                if name in untrusted:
                    mask = np.asarray(untrusted[name], dtype=bool)
                    if mask.shape != (rows,):
                        raise ScoringError(f"untrusted mask for {name!r} has shape {mask.shape}, expected ({rows},)")
                    out[mask, j] = UNTRUSTED
        return out

    def points_matrix(self, index: np.ndarray) -> np.ndarray:
        points = np.empty(index.shape, dtype=np.int64)
        for j, table in enumerate(self.tables):
            points[:, j] = table.points[index[:, j]]  # negative indices land on the appended neutral points
        return points

    def grades_of(self, scores: np.ndarray) -> np.ndarray:
        # grades are listed best first: count the cut-offs a score falls below
        return self._grade_names[(scores[:, None] < self._grade_cuts[None, :]).sum(axis=1)]

    def pd_of(self, scores: np.ndarray) -> np.ndarray:
        s = self.model.scaling
        return 1.0 / (1.0 + np.exp((scores - s.offset) / s.factor))

    def score_frame(self, frame: Mapping[str, Any], untrusted: Mapping[str, Any] | None = None,
                    reasons: bool = True) -> pd.DataFrame:
        """Score, probability of a bad, grade and (``reasons``) up to four reason codes per row."""
        index = self.bin_indices(frame, untrusted)
        points = self.points_matrix(index)
        scores = points.sum(axis=1)
        out = pd.DataFrame({"score": scores, "pd": self.pd_of(scores), "grade": self.grades_of(scores)},
                           index=frame.index if isinstance(frame, pd.DataFrame) else None)
        if reasons:
            codes = np.array([t.ch.code for t in self.tables] + [""], dtype=object)
            ranked = _rank_reasons(index, points, np.array([t.ch.max_points for t in self.tables]))
            for k in range(MAX_REASONS):
                out[f"reason_{k + 1}"] = codes[ranked[:, k]]
            neutral = index < 0
            names = np.array(self.names, dtype=object)
            out["neutral"] = [";".join(names[row]) for row in neutral]
        return out

    # -- one application ---------------------------------------------------------------------------

    def explain(self, application: Mapping[str, Any], untrusted: Iterable[str] = ()) -> Explanation:
        """Score one application and say why: points per characteristic, reasons and counterfactuals.

        A characteristic absent from ``application`` counts as missing.
        """
        distrust = set(untrusted)
        index = np.array([UNTRUSTED if t.ch.name in distrust else t.assign_one(application.get(t.ch.name))
                          for t in self.tables], dtype=np.int64)
        points = np.array([t.points[i] for t, i in zip(self.tables, index, strict=True)], dtype=np.int64)
        score = int(points.sum())
        contributions = []
        for table, i, p in zip(self.tables, index, points, strict=True):
            ch = table.ch
            contributions.append(Contribution(
                characteristic=ch.name, code=ch.code, value=application.get(ch.name),
                status="scored" if i >= 0 else STATUS_NAMES[int(i)], bin=ch.bins[i].label() if i >= 0 else None,
                points=int(p), max_points=ch.max_points, neutral_points=ch.neutral_points))
        maxima = np.array([t.ch.max_points for t in self.tables])
        ranked = [j for j in _rank_reasons(index[None, :], points[None, :], maxima)[0] if j < len(self.tables)]
        reasons = [contributions[j] for j in ranked]
        counterfactuals = [cf for j in ranked if (cf := self._counterfactual(j, int(index[j]), score)) is not None]
        return Explanation(score=score, pd=float(self.pd_of(np.array([score]))[0]),
                           grade=str(self.grades_of(np.array([score]))[0]), contributions=contributions,
                           reasons=reasons, counterfactuals=counterfactuals)

    def _counterfactual(self, j: int, current: int, score: int) -> Counterfactual | None:
        """The nearest bin (by position; ties: more points) of characteristic j that earns more points."""
        ch = self.tables[j].ch
        here = ch.bins[current]
        better = [k for k, b in enumerate(ch.bins) if b.points > here.points]
        if not better:
            return None
        k = min(better, key=lambda k: (abs(k - current), -ch.bins[k].points))
        target = ch.bins[k]
        return Counterfactual(
            characteristic=ch.name, code=ch.code, current_bin=here.label(), target_bin=target.label(),
            lower=target.lower, upper=target.upper, categories=target.categories, example=_example(target),
            points_gain=target.points - here.points, new_score=score + target.points - here.points)


def _rank_reasons(index: np.ndarray, points: np.ndarray, maxima: np.ndarray) -> np.ndarray:
    """Per row, the characteristic positions of up to four reasons; the position ``len(chars)`` pads."""
    lost = maxima[None, :] - points
    lost = np.where((index >= 0) & (lost > 0), lost, -1)  # only scored characteristics that lost points
    order = np.argsort(-lost, axis=1, kind="stable")[:, :MAX_REASONS]
    keep = np.take_along_axis(lost, order, axis=1) > 0
    pad = np.full((index.shape[0], MAX_REASONS), index.shape[1], dtype=np.int64)
    pad[:, : order.shape[1]] = np.where(keep, order, index.shape[1])
    return pad


def _example(b: model_file.Bin) -> Any:
    """One value inside bin ``b``."""
    if b.categories is not None:
        return b.categories[0]
    if b.lower is not None:
        return b.lower
    return b.upper - 1 if b.upper is not None else 0.0


def _plain(value: Any) -> Any:
    """A JSON-friendly form of a value taken from a table (numpy scalars, NaN)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


__all__ = ["Contribution", "Counterfactual", "Explanation", "ScoreModel", "ScoringError"]
