"""From a logistic regression on WoE to an integer points table.

With the logit of a bad ``b0 + Σ b_i·WoE_i`` and ``score = offset + factor·ln(odds good:bad)``
(``factor = PDO / ln 2``, ``offset = base score − factor·ln(base odds)``), the score splits into a
sum over the n characteristics of ``−factor·b_i·WoE + (offset − factor·b0) / n``.  Each bin's
points are that term rounded to an integer, and the score is the sum of the points: nothing is
added or scaled afterwards.  The neutral points of a characteristic are the term at WoE 0.
Rounding is monotone, so a bin with a WoE below 0 never earns more than the neutral points.

Grades are bands of probability of a bad, turned into score cut-offs with the same scaling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rural_credit.scorecard.binning import FittedBins
from rural_credit.scorecard.model_file import Bin, Characteristic, Grade, Scaling

# grade → the highest probability of a bad it admits; the last grade takes everything else
DEFAULT_GRADES: tuple[tuple[str, float | None], ...] = (("A", 0.05), ("B", 0.10), ("C", 0.20), ("D", 0.35),
                                                        ("E", None))


def points_table(fitted: Sequence[FittedBins], coefficients: Sequence[float], intercept: float,
                 scaling: Scaling) -> list[Characteristic]:
    """The characteristics of a model with integer points per bin and their neutral points."""
    n = len(fitted)
    share = (scaling.offset - scaling.factor * intercept) / n
    out = []
    for i, (fb, beta) in enumerate(zip(fitted, coefficients, strict=True)):
        def points(woe: float, beta: float = beta) -> int:
            return int(round(-scaling.factor * beta * woe + share))

        if fb.kind == "numerical":
            bounds = [None, *fb.splits, None]
            bins = [Bin(lower=bounds[k], upper=bounds[k + 1], count=fb.counts[k], bads=fb.bads[k], woe=fb.woe[k],
                        points=points(fb.woe[k])) for k in range(len(fb.counts))]
        else:
            bins = [Bin(categories=list(fb.groups[k]), count=fb.counts[k], bads=fb.bads[k], woe=fb.woe[k],
                        points=points(fb.woe[k])) for k in range(len(fb.counts))]
        out.append(Characteristic(name=fb.name, code=f"RC{i + 1:02d}", kind=fb.kind, trend=fb.trend,
                                  coefficient=float(beta), iv=fb.iv, bins=bins, neutral_points=points(0.0),
                                  missing_count=fb.missing_count))
    return out


def grades(scaling: Scaling, bands: Sequence[tuple[str, float | None]] = DEFAULT_GRADES) -> list[Grade]:
    """Score cut-offs for bands of probability of a bad: grade g takes integer scores whose PD <= its max."""
    if not bands or bands[-1][1] is not None or any(pd is None for _, pd in bands[:-1]):
        raise ValueError("grades: give a maximum PD for every grade but the last")
    pds = [pd for _, pd in bands[:-1]]
    if pds != sorted(pds) or len(set(pds)) != len(pds):
        raise ValueError(f"grades: maximum PDs must increase from the best grade; got {pds}")
    return [Grade(grade=name, min_score=None if pd is None else math.ceil(scaling.score_of(pd) - 1e-9), max_pd=pd)
            for name, pd in bands]
