"""Approve, refer or decline, with reasons; the policy thresholds are data (``policies/demo.yaml``).

The rules, in the order they apply (each on arrays, so a batch and one application share them):

1. **No product** can take the application on its fixed facts (crop, purpose, tenure, area, seasons
   observed, amount, term: ``products.RULES``) → *decline*.  None of these facts depends on data trust.
2. **The data gate**: data trust below ``min_trust`` (no sensor data counts as trust 0) or coverage
   below ``min_coverage`` → *refer* to a person.  Low trust or low coverage never leads to a decline.
3. **Score decline**: the grade would be a decline grade *even with every missing or untrusted
   characteristic at its best bin* (the optimistic score) → *decline*.  A decline therefore never
   rests on data that is absent or untrusted: the scorecard scores such data at the neutral points
   (WoE 0) — which can be below what a good value earns — so a low score with neutral
   characteristics is referred (``decline_rests_on_missing_data``) rather than declined.
4. **Refer** when the grade is a refer grade, when no product is open to this grade and trust, or
   when the amount is above the recommended limit.
5. Otherwise **approve** with the best-ranked eligible product.

Why "lowering trust or coverage can never turn a decision into decline" holds (a property test checks
it): lowering trust or coverage can only fail the gate (→ refer) or mark more characteristics
untrusted, which can only *raise* the optimistic score; rule 1 does not read trust at all.

Overrides and appeals are in ``review``; the adverse-action notice in ``notice``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from device_specs.registry import UniqueKeyLoader
from rural_credit.assessment.reasons import Reason

POLICIES_DIR = Path(__file__).parent / "policies"
Outcome = Literal["approve", "refer", "decline"]
OUTCOMES: tuple[Outcome, ...] = ("approve", "refer", "decline")
#: the stage of the rules that settled a row, and the reason keys each stage can give
STAGES: tuple[tuple[Outcome, tuple[str, ...]], ...] = (
    ("decline", ("no_product",)),
    ("refer", ("no_farm_data", "data_trust_low", "coverage_low")),
    ("decline", ("score_low",)),
    ("refer", ("decline_rests_on_missing_data", "grade_needs_review", "no_eligible_product", "amount_above_limit")),
    ("approve", ("approved",)),
)


class PolicyError(ValueError):
    """A policy file that cannot be read, or a policy that does not fit the model's grades."""


class Policy(BaseModel):
    """A tenant's credit policy: data gate, what each grade leads to, and the limit share per grade."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: str = Field(min_length=1)
    min_trust: float = Field(ge=0, le=1, description="data trust below this: refer")
    min_coverage: float = Field(ge=0, le=1, description="share of the season's data present below this: refer")
    approve_grades: list[str]
    refer_grades: list[str]
    decline_grades: list[str]
    limit_share: dict[str, float] = Field(description="grade → share of expected revenue lent at most")

    @model_validator(mode="after")
    def _disjoint(self) -> Policy:
        sets = [set(self.approve_grades), set(self.refer_grades), set(self.decline_grades)]
        if (sets[0] & sets[1]) or (sets[0] & sets[2]) or (sets[1] & sets[2]):
            raise ValueError("a grade is in more than one of approve_grades, refer_grades, decline_grades")
        if any(not 0 <= s <= 1 for s in self.limit_share.values()):
            raise ValueError("limit_share values must be within 0 and 1")
        return self

    def check_grades(self, grades: Sequence[str]) -> None:
        """Every grade the model can give must lead somewhere."""
        known = set(self.approve_grades) | set(self.refer_grades) | set(self.decline_grades)
        missing = [g for g in grades if g not in known]
        if missing:
            raise PolicyError(f"policy {self.version} says nothing about grade(s) {', '.join(missing)} of the model")


def load_policy(path: Path) -> Policy:
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"no policy file at {path}")
    try:
        return Policy.model_validate(yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader))
    except (yaml.YAMLError, ValidationError) as exc:
        raise PolicyError(f"{path}: {exc}") from exc


def demo_policy() -> Policy:
    return load_policy(POLICIES_DIR / "demo.yaml")


@dataclass(frozen=True)
class RuleResult:
    """Per row: the outcome, the stage that settled it, and every rule's mask (by reason key)."""

    outcome: np.ndarray
    stage: np.ndarray
    masks: dict[str, np.ndarray]

    def reason_keys(self, row: int) -> list[str]:
        """The reasons of one row: the keys of its settling stage whose rule fired."""
        return [k for k in STAGES[int(self.stage[row])][1] if self.masks[k][row]]

    def primary_reason(self) -> np.ndarray:
        """Per row, the first reason key of its stage (for batch tables)."""
        out = np.empty(len(self.outcome), dtype=object)
        for s, (_, keys) in enumerate(STAGES):
            rows = self.stage == s
            first = np.full(rows.sum(), keys[0], dtype=object)
            for k in reversed(keys):
                first = np.where(self.masks[k][rows], k, first)
            out[rows] = first
        return out


def apply_rules(policy: Policy, *, grade: Any, optimistic_grade: Any, trust: Any, coverage: Any,
                fixed_ok: Any, eligible: Any, amount: Any, limit: Any) -> RuleResult:
    """The decision rules on arrays (see the module docstring); NaN trust: no farm data."""
    grade, optimistic = np.asarray(grade, dtype=object), np.asarray(optimistic_grade, dtype=object)
    trust, coverage = np.asarray(trust, dtype=float), np.asarray(coverage, dtype=float)
    amount, limit = np.asarray(amount, dtype=float), np.asarray(limit, dtype=float)
    no_data = np.isnan(trust)
    approvable = np.isin(grade, policy.approve_grades)
    masks = {
        "no_product": ~np.asarray(fixed_ok, dtype=bool),
        "no_farm_data": no_data & (policy.min_trust > 0),
        "data_trust_low": ~no_data & (np.nan_to_num(trust, nan=0.0) < policy.min_trust),
        "coverage_low": np.nan_to_num(coverage, nan=0.0) < policy.min_coverage,
        "score_low": np.isin(optimistic, policy.decline_grades),
        "decline_rests_on_missing_data": np.isin(grade, policy.decline_grades) & ~np.isin(optimistic,
                                                                                           policy.decline_grades),
        "grade_needs_review": np.isin(grade, policy.refer_grades),
        "no_eligible_product": approvable & ~np.asarray(eligible, dtype=bool),
        "amount_above_limit": approvable & ~(amount <= limit),  # an unknown (NaN) limit is not met either
    }
    masks["approved"] = np.ones(len(grade), dtype=bool)
    stage = np.full(len(grade), len(STAGES) - 1, dtype=np.int64)
    for s in range(len(STAGES) - 2, -1, -1):  # the earliest stage that fires wins
        fired = np.logical_or.reduce([masks[k] for k in STAGES[s][1]])
        stage = np.where(fired, s, stage)
    outcome = np.array([STAGES[s][0] for s in range(len(STAGES))], dtype=object)[stage]
    return RuleResult(outcome, stage, masks)


@dataclass(frozen=True)
class Decision:
    """The library's recommendation for one application (the cloud stores it, with any override)."""

    key: str  # SHA-256 of what the decision rests on (model, policy, data provenance, application)
    outcome: Outcome
    reasons: list[Reason]
    principal_reasons: list[Reason] = field(default_factory=list)  # scorecard reasons, for a notice
    product_id: str | None = None
    amount: float = 0.0
    currency: str = ""
    limit: float | None = None
    policy_version: str = ""
    score: int | None = None
    grade: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "outcome": self.outcome, "reasons": [r.as_dict() for r in self.reasons],
                "principal_reasons": [r.as_dict() for r in self.principal_reasons], "product_id": self.product_id,
                "amount": self.amount, "currency": self.currency, "limit": self.limit,
                "policy_version": self.policy_version, "score": self.score, "grade": self.grade}


def decision_reasons(keys: Sequence[str], params: Mapping[str, Any]) -> list[Reason]:
    """Reason objects for the keys, each with the parameters its catalogue text needs."""
    wanted = {
        "no_product": ("details",), "data_trust_low": ("trust", "minimum"), "coverage_low": ("coverage", "minimum"),
        "score_low": ("grade",), "decline_rests_on_missing_data": ("names",), "grade_needs_review": ("grade",),
        "no_eligible_product": ("details",), "amount_above_limit": ("amount", "limit"), "approved": ("grade",),
        "no_farm_data": (),
    }
    out = []
    for key in keys:
        values = {p: params[f"{key}.{p}"] if f"{key}.{p}" in params else params[p] for p in wanted[key]}
        out.append(Reason(key, values))
    return out
