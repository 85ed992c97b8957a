"""Population stability: PSI of the score and CSI of each characteristic, against the training data.

Both are ``Σ (actual − expected) · ln(actual / expected)`` over shares of rows: score bands for the
PSI (the model's ``score_bands``), a characteristic's bins plus one "not scored" bucket (missing,
unknown or untrusted values) for its CSI.  An empty share would make the logarithm infinite, so
every share is floored at ``EPSILON`` first.  Verdicts follow the usual reading: below 0.1 stable,
0.1 to 0.25 watch, above 0.25 shift.  Only numpy and pandas, like scoring.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rural_credit.scorecard.scoring import ScoreModel

EPSILON = 1e-4
WATCH, SHIFT = 0.1, 0.25


@dataclass(frozen=True)
class Stability:
    name: str
    index: float
    verdict: str
    expected: list[float]
    actual: list[float]


@dataclass(frozen=True)
class MonitoringReport:
    rows: int
    score: Stability  # PSI
    characteristics: list[Stability]  # CSI, in model order

    @property
    def verdict(self) -> str:
        """The worst verdict of the score and the characteristics."""
        order = ["stable", "watch", "shift"]
        return max([self.score.verdict, *(c.verdict for c in self.characteristics)], key=order.index)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "verdict": self.verdict, "psi": asdict(self.score),
                "csi": [asdict(c) for c in self.characteristics]}


def stability_index(expected: np.ndarray, actual: np.ndarray, eps: float = EPSILON) -> float:
    """PSI/CSI of two distributions (counts or shares; each normalised, empty shares floored at ``eps``)."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape or e.ndim != 1 or e.size == 0:
        raise ValueError(f"expected and actual need the same non-empty length; got {e.shape} and {a.shape}")
    if e.sum() <= 0 or a.sum() <= 0 or (e < 0).any() or (a < 0).any():
        raise ValueError("expected and actual must be non-negative with a positive total")
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def verdict(index: float) -> str:
    return "stable" if index < WATCH else "watch" if index <= SHIFT else "shift"


def monitor(scorer: ScoreModel, frame: Mapping[str, Any], untrusted: Mapping[str, Any] | None = None
            ) -> MonitoringReport:
    """Compare ``frame`` (new applications) with the data the model was trained on."""
    model = scorer.model
    index = scorer.bin_indices(frame, untrusted)
    if index.shape[0] == 0:
        raise ValueError("no rows to monitor")
    scores = scorer.points_matrix(index).sum(axis=1)
    bands = model.score_bands
    actual = np.bincount(np.searchsorted(np.asarray(bands.edges), scores, side="right"),
                         minlength=len(bands.expected))
    psi = _stability("score", np.asarray(bands.expected), actual)
    csis = []
    for j, ch in enumerate(model.characteristics):
        expected = np.array([b.count for b in ch.bins] + [ch.missing_count], dtype=float)
        col = index[:, j]
        counts = np.append(np.bincount(col[col >= 0], minlength=len(ch.bins)), np.count_nonzero(col < 0))
        csis.append(_stability(ch.name, expected, counts))
    return MonitoringReport(rows=int(index.shape[0]), score=psi, characteristics=csis)


def _stability(name: str, expected: np.ndarray, actual: np.ndarray) -> Stability:
    value = stability_index(expected, actual)
    return Stability(name, value, verdict(value), (expected / expected.sum()).tolist(),
                     (actual / actual.sum()).tolist())
