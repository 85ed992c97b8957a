"""Product shelf as data: loading with precise errors, eligibility by rule kind, plain cost figures; limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rural_credit.assessment import limit, products
from rural_credit.assessment.products import ShelfError, demo_shelf, load_shelf, match

FARM = {"crop": "maize", "purpose": "inputs", "tenure": "owned", "area_ha": 2.0, "seasons_observed": 3.0,
        "amount": 600.0, "term_months": 6.0, "trust": 0.93, "grade": "B"}


def test_demo_shelf_loads_and_every_grade_it_admits_is_priced() -> None:
    shelf = demo_shelf()
    assert {p.id for p in shelf.products} == {"seasonal-input", "insurance-linked", "equipment", "farm-general"}
    for p in shelf.products:
        assert all(p.tier(g) is not None for g in p.eligibility.grades)


def test_shelf_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "shelf.yaml"
    bad.write_text("tenant: t\ncurrency: USD\nproducts:\n  - id: x\n    name: X\n    name_zh: X\n    kind: other\n"
                   "    amount: {min: 500, max: 100}\n    term_months: {min: 1, max: 12}\n    repayment: monthly\n"
                   "    eligibility: {grades: [A]}\n    pricing: [{grades: [A], annual_rate: 0.1}]\n")
    with pytest.raises(ShelfError, match=r"products\.0\.amount.*max 100 is below min 500"):
        load_shelf(bad)
    bad.write_text("tenant: t\ntenant: u\n")
    with pytest.raises(ShelfError, match="duplicate key"):
        load_shelf(bad)
    with pytest.raises(ShelfError, match="no product shelf"):
        load_shelf(tmp_path / "absent.yaml")


def test_match_ranks_eligible_products_by_cost_with_reasons_for_the_rest() -> None:
    matches = match(demo_shelf(), FARM)
    eligible = [m.product_id for m in matches if m.eligible]
    # 600 for 6 months at grade B: amortising 17 % + 1.5 % fee (≈ 39.4) beats 13 % at term + 1 % (45.0),
    # and 9 % + 1 % + a 4 % insurance premium (57.0)
    assert eligible == ["farm-general", "seasonal-input", "insurance-linked"]
    costs = [m.cost["total_cost"] for m in matches if m.eligible]
    assert costs == sorted(costs)
    equipment = next(m for m in matches if m.product_id == "equipment")
    assert not equipment.eligible and set(equipment.failed) == {"purpose"}
    assert equipment.failed_kinds == ("fixed",)
    assert "inputs is not financed" in equipment.failed["purpose"]


def test_trust_and_grade_failures_are_their_own_kinds() -> None:
    low = match(demo_shelf(), {**FARM, "trust": 0.5, "grade": "D"})
    insured = next(m for m in low if m.product_id == "insurance-linked")
    assert insured.failed_kinds == ("trust",) and "data trust 0.50" in insured.failed["trust"]
    general = next(m for m in low if m.product_id == "farm-general")
    assert general.failed_kinds == ("grade",)
    no_data = match(demo_shelf(), {**FARM, "trust": float("nan")})
    assert "data trust none" in next(m for m in no_data if m.product_id == "insurance-linked").failed["trust"]


def test_costs_are_the_textbook_figures() -> None:
    shelf = demo_shelf()
    monthly = next(p for p in shelf.products if p.id == "farm-general")  # B: 17 % a year, 1.5 % fee
    c = products.costs(monthly, np.array([1200.0]), np.array([12.0]), np.array(["B"], dtype=object))
    r = 0.17 / 12
    instalment = 1200 * r / (1 - (1 + r) ** -12)
    assert c["instalment"][0] == pytest.approx(instalment)
    assert c["total_interest"][0] == pytest.approx(12 * instalment - 1200)
    assert c["fees"][0] == pytest.approx(18.0)
    bullet = next(p for p in shelf.products if p.id == "insurance-linked")  # A: 9 %, 1 % fee, 4 % premium
    c = products.costs(bullet, np.array([1000.0]), np.array([6.0]), np.array(["A"], dtype=object))
    assert c["total_interest"][0] == pytest.approx(45.0)
    assert c["instalments"][0] == 1 and c["instalment"][0] == pytest.approx(1045.0)
    assert c["total_repayable"][0] == pytest.approx(1045.0 + 50.0)
    assert np.isnan(products.costs(bullet, np.array([1000.0]), np.array([6.0]),
                                   np.array(["E"], dtype=object))["annual_rate"][0])


def test_limit_is_a_share_of_expected_revenue_leaning_on_the_farms_own_history() -> None:
    table = limit.demo_crop_table()
    shares = {"A": 0.5, "C": 0.3}
    plain = limit.recommend(table, shares, "maize", 2.0, "C")
    maize = table.crops["maize"]
    assert plain.expected_revenue == pytest.approx(2.0 * maize.yield_t_per_ha * maize.price_per_t)
    assert plain.limit == np.floor(plain.expected_revenue * 0.3 / 10) * 10
    assert plain.sources["yield"].startswith("FAOSTAT")
    history = limit.yield_history(pd.DataFrame({"farm_id": ["f1"] * 3 + ["f2"], "crop": ["maize"] * 3 + ["maize"],
                                                "yield_t_per_ha": [8.0, 9.0, 10.0, 1.0]}))
    own = limit.recommend(table, shares, "maize", 2.0, "C", history, "f1")
    assert own.own_seasons == 3 and own.expected_yield_t_per_ha == pytest.approx((3 * 9.0 + 3 * 5.8) / 6)
    assert own.limit > plain.limit
    assert limit.recommend(table, shares, "maize", 2.0, "E").limit == 0
    assert np.isnan(limit.recommend(table, shares, "coffee", 2.0, "A").limit)
    with pytest.raises(ValueError, match="yield_t_per_ha must be a number"):
        limit.yield_history(pd.DataFrame({"farm_id": ["f"], "crop": ["maize"], "yield_t_per_ha": [-1.0]}))
