"""Fairness monitoring: approval rates and AUC by group (sex, age band, region) where the data has them.

For each group column present, per group: the number of applications, approvals and the approval
rate; the ratio of that rate to the highest group's rate, flagged when below 0.8 (the four-fifths
rule of thumb for adverse impact); and, where outcomes are known and the group has both goods and
bads, the AUC of the score within the group (does the score rank risk as well for everyone?).
Groups with fewer than :data:`MIN_GROUP` applications are reported but not flagged: their rates
are too noisy to judge.  The groups are only read here — never scored.

:func:`monitor_report` puts this beside the scorecard's PSI/CSI report (``scorecard.monitoring``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from rural_credit.scorecard.metrics import auc
from rural_credit.scorecard.monitoring import monitor
from rural_credit.scorecard.scoring import ScoreModel
from rural_credit.trust.frames import FrameError

GROUP_COLUMNS = ("sex", "age_band", "region")
FOUR_FIFTHS = 0.8
MIN_GROUP = 30
AGE_BANDS = ((18, 25), (26, 35), (36, 45), (46, 55), (56, 65), (66, 120))


@dataclass(frozen=True)
class GroupStats:
    column: str
    group: str
    applications: int
    approvals: int
    approval_rate: float
    ratio_to_highest: float
    flagged: bool  # ratio below four fifths, with at least MIN_GROUP applications
    auc: float | None  # None without outcomes, or without both goods and bads in the group
    bads: int | None


@dataclass(frozen=True)
class FairnessReport:
    groups: list[GroupStats]
    missing_columns: list[str]  # group columns the data does not have

    @property
    def flagged(self) -> list[GroupStats]:
        return [g for g in self.groups if g.flagged]

    def as_dict(self) -> dict[str, Any]:
        return {"groups": [asdict(g) for g in self.groups],
                "flagged": [f"{g.column}={g.group}" for g in self.flagged], "missing_columns": self.missing_columns,
                "rule": f"approval rate < {FOUR_FIFTHS:g} x the highest group's"}


def age_band(age: pd.Series) -> pd.Series:
    """Ages in years to bands such as ``26-35`` (``66+`` at the top; missing stays missing)."""
    years = pd.to_numeric(age, errors="coerce")
    labels = [f"{lo}-{hi}" for lo, hi in AGE_BANDS[:-1]] + [f"{AGE_BANDS[-1][0]}+"]
    edges = [AGE_BANDS[0][0], *[hi + 1 for _, hi in AGE_BANDS]]
    return pd.cut(years, bins=edges, right=False, labels=labels).astype(object).where(years.notna())


def fairness_report(frame: pd.DataFrame, approved: str = "approved", bad: str | None = None,
                    score: str | None = None, groups: Sequence[str] = GROUP_COLUMNS) -> FairnessReport:
    """Per group column of ``groups`` present in ``frame`` (``age`` is banded when ``age_band`` is absent).

    ``approved``: a boolean column (or an ``outcome`` column, approve = approved); ``bad`` (1 = bad) and
    ``score`` (higher = better) give the AUC per group.
    """
    frame = frame.copy()
    if approved not in frame.columns:
        if "outcome" not in frame.columns:
            raise FrameError(f"fairness needs a column {approved!r} or 'outcome'")
        frame[approved] = frame["outcome"] == "approve"
    if "age_band" in groups and "age_band" not in frame.columns and "age" in frame.columns:
        frame["age_band"] = age_band(frame["age"])
    for column in (bad, score):
        if column is not None and column not in frame.columns:
            raise FrameError(f"fairness: no column {column!r}")
    out: list[GroupStats] = []
    for column in [g for g in groups if g in frame.columns]:
        present = frame[frame[column].notna()]
        rates = present.groupby(column)[approved].agg(["size", "sum"])
        rates["rate"] = rates["sum"] / rates["size"]
        top = rates.loc[rates["size"] >= MIN_GROUP, "rate"].max() if (rates["size"] >= MIN_GROUP).any() \
            else rates["rate"].max()
        for group, row in rates.iterrows():
            ratio = float(row["rate"] / top) if top > 0 else 1.0
            rows = present[present[column] == group]
            group_auc, bads = None, None
            if bad is not None and score is not None:
                y = rows[bad].astype(int).to_numpy()
                bads = int(y.sum())
                if 0 < bads < len(y):
                    group_auc = auc(y, rows[score].to_numpy(dtype=float))
            out.append(GroupStats(column, str(group), int(row["size"]), int(row["sum"]), float(row["rate"]), ratio,
                                  bool(ratio < FOUR_FIFTHS and row["size"] >= MIN_GROUP), group_auc, bads))
    return FairnessReport(out, [g for g in groups if g not in frame.columns])


def monitor_report(scorer: ScoreModel, features: pd.DataFrame, decisions: pd.DataFrame,
                   untrusted: Mapping[str, Any] | None = None, bad: str | None = None) -> dict[str, Any]:
    """The monitoring report: population stability (PSI/CSI) of ``features`` against the model's training
    data, and fairness of ``decisions`` (``outcome``, ``score`` and the group columns, e.g. from
    ``pipeline.assess_batch``; ``bad`` a column of known outcomes, when there are any)."""
    stability = monitor(scorer, features, untrusted)
    fairness = fairness_report(decisions, bad=bad, score="score" if bad else None)
    outcomes = decisions["outcome"].value_counts().reindex(["approve", "refer", "decline"], fill_value=0)
    return {"stability": stability.as_dict(), "fairness": fairness.as_dict(),
            "outcomes": {k: int(v) for k, v in outcomes.items()},
            "verdict": "review" if fairness.flagged or stability.verdict != "stable" else "ok",
            "rows": int(len(decisions)), "approval_rate": float(np.mean(decisions["outcome"] == "approve"))}
