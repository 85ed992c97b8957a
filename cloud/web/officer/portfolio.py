"""The officer console's portfolio: the score distribution of the tenant's current assessments, approval
rates of the decisions in force, and the PSI of the live scores against the champion model's training
sample (its ``score_bands``: :func:`rural_credit.scorecard.monitoring.stability_index`, with its verdicts).

Scores are read from the stored assessments (the newest per application, cancelled ones included: they
were scored on the live population too); nothing is rescored here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import psycopg

from cloud.credit import models
from cloud.credit.errors import NotDeployed
from rural_credit.scorecard.monitoring import stability_index, verdict
from rural_credit.scorecard.scoring import ScoreModel

_SCORES = """
SELECT DISTINCT ON (a.id) a.id, s.score, s.grade, a.outcome
FROM ft.loan_applications a JOIN ft.credit_assessments s ON s.tenant_id = a.tenant_id AND s.application_id = a.id
WHERE a.tenant_id = %s ORDER BY a.id, s.created_at DESC
"""


@dataclass(frozen=True)
class Band:
    label: str
    expected: float
    """share of the training sample"""
    actual: float
    count: int


@dataclass(frozen=True)
class Portfolio:
    applications: int
    grades: dict[str, int]
    outcomes: dict[str, int]
    """decisions in force: approve, refer, decline"""
    approval_rate: float | None
    """approved among decided"""
    bands: list[Band]
    psi: float | None
    psi_verdict: str | None
    model: str | None


def portfolio(conn: psycopg.Connection, tenant: str) -> Portfolio:
    rows = conn.execute(_SCORES, (tenant,)).fetchall()
    grades: dict[str, int] = {}
    outcomes = {"approve": 0, "refer": 0, "decline": 0}
    for _, _, grade, outcome in rows:
        grades[grade] = grades.get(grade, 0) + 1
        if outcome in outcomes:
            outcomes[outcome] += 1
    decided = sum(outcomes.values())
    rate = outcomes["approve"] / decided if decided else None
    try:
        deployed, text = models.champion(conn, tenant)
    except NotDeployed:
        return Portfolio(len(rows), dict(sorted(grades.items())), outcomes, rate, [], None, None, None)
    bands_of = ScoreModel.from_json(text).model.score_bands
    edges = list(bands_of.edges)
    scores = np.array([r[1] for r in rows], dtype=float)
    counts = np.bincount(np.searchsorted(np.asarray(edges), scores, side="right"), minlength=len(bands_of.expected))
    total = max(int(counts.sum()), 1)
    labels = [_label(edges, i) for i in range(len(bands_of.expected))]
    bands = [Band(labels[i], float(bands_of.expected[i]), int(counts[i]) / total, int(counts[i]))
             for i in range(len(bands_of.expected))]
    psi = stability_index(np.asarray(bands_of.expected), counts) if len(rows) else None
    return Portfolio(len(rows), dict(sorted(grades.items())), outcomes, rate, bands, psi,
                     verdict(psi) if psi is not None else None, f"{deployed.name} {deployed.version}")


def _label(edges: list[float], i: int) -> str:
    if i == 0:
        return f"< {edges[0]:g}"
    if i == len(edges):
        return f"≥ {edges[-1]:g}"
    return f"{edges[i - 1]:g}–{edges[i]:g}"
