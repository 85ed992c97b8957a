"""A tenant's loan products as data, and which of them fit a farm and an application, at what cost.

The shelf is a YAML or JSON file (``shelves/demo.yaml`` is the sample): products with eligibility
rules (crop, purpose, area, tenure, seasons of farm data observed, minimum data trust, grades),
amount and term ranges, and a pricing tier per grade.  Nothing about a product lives in code.

Each eligibility rule is one of three kinds, and the decision treats them differently:

* ``fixed`` — facts that no data-quality problem can change (crop, purpose, tenure, area, seasons
  observed, amount and term): when every product fails a fixed rule, no product can be offered.
* ``trust`` — the product's minimum data trust: failing it is a reason for review, never a decline.
* ``grade`` — the risk grade: the decision's score rules govern it.

Rules are evaluated on arrays (:func:`rule_masks`), so one farm and 100,000 farms take the same code;
:func:`match` turns one farm's masks into reasons and plain cost figures.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from device_specs.registry import UniqueKeyLoader

SHELVES_DIR = Path(__file__).parent / "shelves"
RuleKind = Literal["fixed", "trust", "grade"]


class ShelfError(ValueError):
    """A product shelf file that cannot be read or is invalid; the message names the file and field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Frozen):
    min: float = Field(ge=0)
    max: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.max < self.min:
            raise ValueError(f"max {self.max:g} is below min {self.min:g}")
        return self


class Eligibility(_Frozen):
    """Who a product is open to; an omitted list means any."""

    crops: list[str] | None = None
    purposes: list[str] | None = None
    tenures: list[str] | None = None
    min_area_ha: float = Field(0.0, ge=0)
    max_area_ha: float | None = Field(None, gt=0)
    min_seasons_observed: int = Field(0, ge=0)
    min_trust: float = Field(0.0, ge=0, le=1)
    grades: list[str] = Field(min_length=1, description="risk grades the product is open to")


class PricingTier(_Frozen):
    grades: list[str] = Field(min_length=1)
    annual_rate: float = Field(ge=0, lt=1, description="nominal yearly interest rate, e.g. 0.12")
    fee_rate: float = Field(0.0, ge=0, lt=0.2, description="one-off fee as a share of the amount")


class Product(_Frozen):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    name: str
    name_zh: str
    kind: Literal["seasonal_input", "equipment", "insurance_linked", "other"]
    amount: Range
    term_months: Range
    repayment: Literal["monthly", "end_of_term"] = Field(
        description="monthly: equal instalments; end_of_term: principal and interest in one payment at harvest")
    insurance_premium_rate: float = Field(0.0, ge=0, lt=0.2, description="crop insurance premium, share of amount")
    eligibility: Eligibility
    pricing: list[PricingTier] = Field(min_length=1)

    @model_validator(mode="after")
    def _priced(self) -> Product:
        priced = [g for tier in self.pricing for g in tier.grades]
        if len(priced) != len(set(priced)):
            raise ValueError(f"{self.id}: a grade is priced twice")
        unpriced = set(self.eligibility.grades) - set(priced)
        if unpriced:
            raise ValueError(f"{self.id}: grades {sorted(unpriced)} are eligible but have no pricing tier")
        return self

    def tier(self, grade: str) -> PricingTier | None:
        return next((t for t in self.pricing if grade in t.grades), None)


class Shelf(_Frozen):
    tenant: str
    currency: str = Field(min_length=3, max_length=3)
    products: list[Product] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Shelf:
        ids = [p.id for p in self.products]
        if len(ids) != len(set(ids)):
            raise ValueError("product ids must be unique")
        return self


def load_shelf(path: Path) -> Shelf:
    """A shelf from a YAML (``.yaml``/``.yml``) or JSON file."""
    path = Path(path)
    if not path.is_file():
        raise ShelfError(f"no product shelf at {path}")
    text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=UniqueKeyLoader)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ShelfError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
    try:
        return Shelf.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ShelfError(f"{path}: {problems}") from exc


def demo_shelf() -> Shelf:
    return load_shelf(SHELVES_DIR / "demo.yaml")


# -- rules on arrays --------------------------------------------------------------------------------

#: rule name → kind
RULES: dict[str, RuleKind] = {
    "crop": "fixed", "purpose": "fixed", "tenure": "fixed", "area": "fixed", "seasons_observed": "fixed",
    "amount": "fixed", "term": "fixed", "trust": "trust", "grade": "grade",
}


def rule_masks(product: Product, facts: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per rule, which rows pass it.  ``facts``: arrays crop, purpose, tenure, area_ha, seasons_observed,
    amount, term_months, trust (NaN: no data) and grade."""
    e = product.eligibility

    def within(values: Any, allowed: list[str] | None) -> np.ndarray:
        array = np.asarray(values, dtype=object)
        return np.ones(array.shape, bool) if allowed is None else np.isin(array.astype(str), allowed)

    area = np.asarray(facts["area_ha"], dtype=float)
    amount = np.asarray(facts["amount"], dtype=float)
    term = np.asarray(facts["term_months"], dtype=float)
    with np.errstate(invalid="ignore"):
        return {
            "crop": within(facts["crop"], e.crops),
            "purpose": within(facts["purpose"], e.purposes),
            "tenure": within(facts["tenure"], e.tenures),
            "area": (area >= e.min_area_ha) & (area <= (e.max_area_ha or np.inf)),
            "seasons_observed": np.asarray(facts["seasons_observed"], dtype=float) >= e.min_seasons_observed,
            "amount": (amount >= product.amount.min) & (amount <= product.amount.max),
            "term": (term >= product.term_months.min) & (term <= product.term_months.max),
            "trust": np.nan_to_num(np.asarray(facts["trust"], dtype=float), nan=0.0) >= e.min_trust,
            "grade": within(facts["grade"], e.grades),
        }


def passes(masks: Mapping[str, np.ndarray], kinds: tuple[RuleKind, ...]) -> np.ndarray:
    """Rows passing every rule of the given kinds."""
    return np.logical_and.reduce([m for rule, m in masks.items() if RULES[rule] in kinds])


def costs(product: Product, amount: np.ndarray, term_months: np.ndarray, grade: np.ndarray) -> dict[str, np.ndarray]:
    """Plain cost figures per row: rate, fee, premium, total interest, instalment and total repayable.

    ``monthly``: equal monthly instalments of an amortising loan at ``annual_rate / 12`` a month.
    ``end_of_term``: one payment at the end, simple interest ``amount × annual_rate × months / 12``.
    Fee and insurance premium are charged once, on the amount.  NaN where the grade has no tier.
    """
    amount = np.asarray(amount, dtype=float)
    n = np.asarray(term_months, dtype=float)
    rate = np.array([t.annual_rate if (t := product.tier(str(g))) else np.nan for g in np.asarray(grade)], float)
    fee_rate = np.array([t.fee_rate if (t := product.tier(str(g))) else np.nan for g in np.asarray(grade)], float)
    if product.repayment == "monthly":
        r = rate / 12
        with np.errstate(divide="ignore", invalid="ignore"):
            instalment = np.where(r > 0, amount * r / (1 - (1 + r) ** -n), amount / n)
        interest, count = instalment * n - amount, n
    else:
        interest = amount * rate * n / 12
        instalment, count = amount + interest, np.ones_like(n)
    fees = amount * (fee_rate + product.insurance_premium_rate)
    return {"annual_rate": rate, "fees": fees, "total_interest": interest, "instalment": instalment,
            "instalments": count, "total_repayable": amount + interest + fees, "total_cost": interest + fees}


# -- one farm ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductMatch:
    """One product for one application: does it fit, why (not), and what it would cost."""

    product_id: str
    name: str
    name_zh: str
    eligible: bool
    failed: dict[str, str]  # rule → why it fails
    failed_kinds: tuple[RuleKind, ...]
    cost: dict[str, float] | None  # costs(); None when the grade has no price
    currency: str
    repayment: str

    def as_dict(self) -> dict[str, Any]:
        return {"product_id": self.product_id, "name": self.name, "name_zh": self.name_zh, "eligible": self.eligible,
                "failed": self.failed, "failed_kinds": list(self.failed_kinds), "currency": self.currency,
                "repayment": self.repayment, "cost": self.cost}


def match(shelf: Shelf, facts: Mapping[str, Any]) -> list[ProductMatch]:
    """Every product of the shelf for one application (``facts`` as :func:`rule_masks`, scalars), ranked:
    eligible products first by total cost, then the others by how few rules they fail."""
    one = {k: np.array([v], dtype=object if isinstance(v, str) or v is None else float) for k, v in facts.items()}
    out = []
    for product in shelf.products:
        masks = rule_masks(product, one)
        failed = {rule: _why(rule, product, facts) for rule, m in masks.items() if not m[0]}
        figures = costs(product, one["amount"], one["term_months"], np.array([facts["grade"]], dtype=object))
        cost = None if np.isnan(figures["annual_rate"][0]) else {k: round(float(v[0]), 2) for k, v in figures.items()}
        out.append(ProductMatch(product.id, product.name, product.name_zh, not failed, failed,
                                tuple(sorted({RULES[r] for r in failed})), cost, shelf.currency, product.repayment))
    return sorted(out, key=lambda m: (not m.eligible, len(m.failed),
                                      m.cost["total_cost"] if m.cost else float("inf"), m.product_id))


def _why(rule: str, p: Product, facts: Mapping[str, Any]) -> str:
    e = p.eligibility
    return {
        "crop": f"crop {facts['crop']} is not financed (only {', '.join(e.crops or [])})",
        "purpose": f"purpose {facts['purpose']} is not financed (only {', '.join(e.purposes or [])})",
        "tenure": f"tenure {facts['tenure']} is not accepted (only {', '.join(e.tenures or [])})",
        "area": f"area {facts['area_ha']} ha is outside {e.min_area_ha:g}–{e.max_area_ha or '∞'} ha",
        "seasons_observed": f"{facts['seasons_observed']} season(s) of farm data, {e.min_seasons_observed} needed",
        "amount": f"amount {facts['amount']} is outside {p.amount.min:g}–{p.amount.max:g}",
        "term": f"term {facts['term_months']} months is outside {p.term_months.min:g}–{p.term_months.max:g}",
        "trust": f"data trust {_num(facts['trust'])} is below the product's {e.min_trust:g}",
        "grade": f"grade {facts['grade']} is not offered (only {', '.join(e.grades)})",
    }[rule]


def _num(value: Any) -> str:
    return "none" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{float(value):.2f}"
