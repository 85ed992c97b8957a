"""Decisions: low trust or coverage never declines (a property test), maker-checker overrides, appeals,
the adverse-action notice in English and Chinese from one catalogue, policy files.

The model is trained on a SYNTHETIC world (hardware.synthetic_farms) by tests.test_assessment_pipeline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rural_credit.assessment import reasons, review
from rural_credit.assessment.decision import PolicyError, apply_rules, demo_policy, load_policy
from rural_credit.assessment.notice import adverse_action_notice
from rural_credit.assessment.pipeline import Assessment, Assessor, assess
from rural_credit.features.build import Features
from rural_credit.features.catalogue import CATALOGUE
from tests.test_assessment_pipeline import Lab, make_lab


@pytest.fixture(scope="module")
def lab() -> Lab:
    return make_lab()


def assess_row(lab: Lab, i: int, *, trust: float | None, coverage: float, untrusted: set[str] = frozenset(),
               amount: float | None = None) -> Assessment:
    """Farm i of the lab world, its stored features with ``untrusted`` features marked untrusted."""
    values, trusted = lab.features.values.iloc[[i]], lab.features.trusted.iloc[[i]].copy()
    for name in untrusted:
        trusted[name] = False
    farm, application, season = lab.rows(i)
    if amount is not None:
        application = {**application, "amount": amount}
    return assess(lab.assessor, farm, application, season, farm_features=Features(values, trusted),
                  trust={"trust": np.nan if trust is None else trust, "coverage": coverage})


SENSOR = ["gdd", "heat_days", "frost_days", "moisture_stress_days", "soil_moisture_mean", "rainfall_mm",
          "irrigation_events", "irrigation_regularity"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(i=st.integers(0, 399), trust=st.floats(0, 1), coverage=st.floats(0, 1),
       trust_drop=st.floats(0, 1), coverage_drop=st.floats(0, 1),
       untrusted=st.sets(st.sampled_from(SENSOR)), more=st.sets(st.sampled_from(SENSOR)),
       amount=st.one_of(st.none(), st.floats(50, 3000)), lose_data=st.booleans())
def test_lowering_trust_or_coverage_never_turns_a_decision_into_decline(lab: Lab, i: int, trust: float,
                                                                        coverage: float, trust_drop: float,
                                                                        coverage_drop: float, untrusted: set[str],
                                                                        more: set[str], amount: float | None,
                                                                        lose_data: bool) -> None:
    before = assess_row(lab, i, trust=trust, coverage=coverage, untrusted=untrusted, amount=amount)
    after = assess_row(lab, i, trust=None if lose_data else trust * (1 - trust_drop),
                       coverage=coverage * (1 - coverage_drop), untrusted=untrusted | more, amount=amount)
    assert after.optimistic_score >= before.optimistic_score
    if after.decision.outcome == "decline":
        assert before.decision.outcome == "decline"
        assert [r.key for r in after.decision.reasons] == [r.key for r in before.decision.reasons]


def test_low_trust_and_low_coverage_refer_with_both_reasons_in_two_languages(lab: Lab) -> None:
    a = assess_row(lab, 0, trust=0.3, coverage=0.2)
    assert a.decision.outcome == "refer"
    assert [r.key for r in a.decision.reasons] == ["data_trust_low", "coverage_low"]
    assert "trust 0.30 below 0.6" in a.decision.reasons[0].text("en")
    assert "可信度 0.30" in a.decision.reasons[0].text("zh-CN")
    no_data = assess_row(lab, 0, trust=None, coverage=0.0)
    assert [r.key for r in no_data.decision.reasons] == ["no_farm_data", "coverage_low"]


def test_a_score_decline_lists_the_scorecard_reasons_and_never_rests_on_neutral_data(lab: Lab) -> None:
    declined = lab.declined()
    a = assess_row(lab, declined, trust=0.95, coverage=0.98)
    assert a.decision.outcome == "decline" and [r.key for r in a.decision.reasons] == ["score_low"]
    assert 1 <= len(a.decision.principal_reasons) <= 4
    assert [r.key for r in a.decision.principal_reasons] == [r.characteristic for r in a.explanation.reasons]
    assert lab.assessor.scorer.grades_of(np.array([a.optimistic_score]))[0] == "E"


def test_a_low_score_resting_on_untrusted_data_is_referred() -> None:
    policy = demo_policy()
    r = apply_rules(policy, grade=["E", "E"], optimistic_grade=["E", "C"], trust=[0.9, 0.9], coverage=[0.9, 0.9],
                    fixed_ok=[True, True], eligible=[False, False], amount=[100, 100], limit=[0, 0])
    assert list(r.outcome) == ["decline", "refer"]
    assert r.reason_keys(1) == ["decline_rests_on_missing_data"]
    assert list(r.primary_reason()) == ["score_low", "decline_rests_on_missing_data"]


def test_no_product_declines_whatever_the_trust_and_amount_above_limit_refers() -> None:
    r = apply_rules(demo_policy(), grade=["A", "A", "A"], optimistic_grade=["A", "A", "A"], trust=[0.1, 0.9, 0.9],
                    coverage=[0.1, 0.9, 0.9], fixed_ok=[False, True, True], eligible=[False, True, True],
                    amount=[100, 900, 100], limit=[500, 500, np.nan])
    assert list(r.outcome) == ["decline", "refer", "refer"]
    assert r.reason_keys(1) == ["amount_above_limit"] and r.reason_keys(2) == ["amount_above_limit"]


def test_overrides_need_a_reason_and_a_second_officer(lab: Lab) -> None:
    decision = assess_row(lab, lab.declined(), trust=0.95, coverage=0.98).decision
    with pytest.raises(review.ReviewError, match="needs a reason"):
        review.propose_override(decision, "approve", "ok", "officer.li")
    proposed = review.propose_override(decision, "approve", "harvest contract with the mill on file", "officer.li")
    assert review.final_outcome(decision, [proposed]) == "decline"
    with pytest.raises(review.ReviewError, match="second officer"):
        review.check_override(proposed, "officer.li", approve=True)
    rejected = review.check_override(proposed, "officer.wang", approve=False, note="contract unsigned")
    assert review.final_outcome(decision, [rejected]) == "decline"
    approved = review.check_override(proposed, "officer.wang", approve=True, note="contract seen")
    assert review.final_outcome(decision, [approved]) == "approve"
    assert [e.action for e in approved.events] == ["proposed decline -> approve", "approved"]
    with pytest.raises(review.ReviewError, match="already approved"):
        review.check_override(approved, "officer.zhao", approve=False)


def test_an_appeal_puts_the_case_before_a_person_with_the_farmers_note(lab: Lab) -> None:
    decision = assess_row(lab, lab.declined(), trust=0.95, coverage=0.98).decision
    appeal = review.file_appeal(decision, "My irrigation pump was repaired in May; receipts attached.", "farmer-7")
    assert appeal.status == "under_review" and appeal.status_text == "under review by a person"
    assert appeal.note.startswith("My irrigation pump")
    with pytest.raises(review.ReviewError, match="needs the farmer's note"):
        review.file_appeal(decision, "  ", "farmer-7")
    closed = review.close_appeal(appeal, "officer.wang", changed=False, note="Reviewed the receipts; stands.")
    assert closed.status == "upheld" and [e.action for e in closed.events] == ["appealed", "upheld"]


def test_adverse_action_notice_in_english_and_chinese(lab: Lab) -> None:
    a = assess_row(lab, lab.declined(), trust=0.95, coverage=0.98)
    notice = adverse_action_notice(a.decision, a.counterfactual_hint)
    assert set(notice.text) == {"en", "zh-CN"}
    assert len(notice.reasons["en"]) == len(a.decision.principal_reasons) == len(notice.reasons["zh-CN"])
    for r in a.decision.principal_reasons:
        assert reasons.characteristic_text(r.key, "en") in notice.text["en"]
        assert reasons.characteristic_text(r.key, "zh-CN") in notice.text["zh-CN"]
    assert "appeal" in notice.text["en"] and "申诉" in notice.text["zh-CN"]
    assert "贷款申请决定通知书" in notice.text["zh-CN"]
    approved = assess_row(lab, lab.approved(), trust=0.95, coverage=0.98)
    with pytest.raises(ValueError, match="declined application"):
        adverse_action_notice(approved.decision)


def test_the_catalogue_covers_every_scored_feature_in_both_languages() -> None:
    entries = reasons.catalogue()["characteristics"]
    scorable = [f.name for f in CATALOGUE if f.group != "coverage"]
    assert [n for n in scorable if n not in entries] == []
    assert reasons.characteristic_text("checking_status", "en") == "Your checking status lowered the score."
    with pytest.raises(reasons.CatalogueError, match="language"):
        reasons.text("decisions", "approved", "fr", grade="A")


def test_policy_files_are_checked(tmp_path: Path, lab: Lab) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("version: x\nmin_trust: 0.6\nmin_coverage: 0.6\napprove_grades: [A, B]\nrefer_grades: [B]\n"
                   "decline_grades: [E]\nlimit_share: {A: 0.5}\n")
    with pytest.raises(PolicyError, match="more than one"):
        load_policy(bad)
    bad.write_text("version: x\nmin_trust: 0.6\nmin_coverage: 0.6\napprove_grades: [A]\nrefer_grades: [B]\n"
                   "decline_grades: [E]\nlimit_share: {A: 0.5}\n")
    with pytest.raises(PolicyError, match="grade\\(s\\) C, D"):
        Assessor(lab.assessor.scorer, load_policy(bad), lab.assessor.shelf, lab.assessor.crops)
