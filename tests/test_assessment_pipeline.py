"""The one-call pipeline and the batch: readings → trust → features → score → decision, on SYNTHETIC farms.

Also: the single and batch paths agree, stored farm features give the same answer as rollups, the
declared features match ``features.application``, a model that scores coverage is refused, fairness.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fieldtrust.demo import credit_world as experiments
from hardware import synthetic_farms as sf
from rural_credit.assessment import fairness
from rural_credit.assessment.pipeline import (
    AssessmentError,
    Assessor,
    assess,
    assess_batch,
    daily_rollups,
    declared_features,
)
from rural_credit.features.build import Features, build_features
from rural_credit.scorecard.scoring import ScoreModel
from rural_credit.scorecard.training import TrainingConfig, fit_scorecard
from rural_credit.trust import checks
from rural_credit.trust import score as trust_score


@dataclass
class Lab:
    world: sf.World
    assessor: Assessor
    features: Features  # sensor features only (as a batch run stores them)
    trust: pd.DataFrame

    def rows(self, i: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        reg, app, s = self.world.registry.iloc[i], self.world.applications.iloc[i], self.world.seasons.iloc[i]
        farm = {k: reg[k] for k in ("farm_id", "area_ha", "crop", "tenure", "seasons_observed")}
        application = {k: app[k] for k in ("amount", "term_months", "purpose", "prior_loans", "prior_repaid")}
        return farm, application, {"season_id": s["season_id"], "start": s["start"], "end": s["end"]}

    def batch(self) -> pd.DataFrame:
        if not hasattr(self, "_batch"):
            full = build_features(self.world.rollups, self.world.seasons, self.world.registry, self.world.applications)
            self._batch = assess_batch(self.assessor, full, self.world.registry, self.world.applications, self.trust)
        return self._batch

    def declined(self) -> int:
        return int(np.flatnonzero((self.batch()["outcome"] == "decline") & (self.batch()["reason"] == "score_low"))[0])

    def approved(self) -> int:
        return int(np.flatnonzero(self.batch()["outcome"] == "approve")[0])


def make_lab() -> Lab:
    """A farm-data scorecard trained on a SYNTHETIC world, with the demo policy, shelf and crop table."""
    world = sf.generate_world(2500, seed=21)
    frame = experiments.training_frame(world)
    fit = fit_scorecard(frame.drop(columns=[experiments.TARGET]), frame[experiments.TARGET].to_numpy(),
                        TrainingConfig(n_bootstrap=0), name="synthetic-farm-data")
    assessor = Assessor.demo(ScoreModel.from_json(fit.model.to_json()))
    return Lab(world, assessor, build_features(world.rollups, world.seasons), experiments.rollup_trust(world))


@pytest.fixture(scope="module")
def lab() -> Lab:
    return make_lab()


def test_one_call_from_raw_readings_returns_what_an_officer_needs(lab: Lab) -> None:
    readings = sf.farm_readings(farms=3, days=7, start="2025-04-01")
    events = sf.provisioning_events(readings)
    farm, application, _ = lab.rows(0)
    farm = {**farm, "farm_id": "syn-farm-2"}
    season = {"season_id": "2025-04", "start": pd.Timestamp("2025-04-01", tz="UTC"),
              "end": pd.Timestamp("2025-04-08", tz="UTC")}
    a = assess(lab.assessor, farm, application, season, readings=readings, events=events)
    assert a.trust.trust == pytest.approx((0.9 * 2 + 1.0) / 3)  # clean: only the origin weights count
    assert a.trust.coverage == pytest.approx(1.0, abs=0.01)
    assert len(a.trust.provenance_sha256) == 64 and a.trust.untrusted_sources == []
    assert a.decision.outcome in {"approve", "refer", "decline"} and a.decision.reasons
    assert a.features["amount"] == application["amount"] and not np.isnan(a.features["gdd"])
    record = json.loads(json.dumps(a.as_dict(), default=str))
    assert {"score", "grade", "reasons", "trust", "provenance_sha256", "decision", "limit", "products"} <= set(record)
    assert all(set(r["text"]) == {"en", "zh-CN"} for r in record["reasons"])
    # the same data and application: the same decision key; another amount: another key
    report = trust_score.assess(readings, checks.Window(season["start"], season["end"]), events=events)
    assert assess(lab.assessor, farm, application, season, trust_report=report).decision.key == a.decision.key
    assert assess(lab.assessor, farm, {**application, "amount": 999.0}, season,
                  trust_report=report).decision.key != a.decision.key


def test_single_and_batch_paths_agree(lab: Lab) -> None:
    batch = lab.batch()
    trust = lab.trust.set_index("farm_id")
    for i in range(0, 2500, 311):
        farm, application, season = lab.rows(i)
        roll = lab.world.rollups[lab.world.rollups["farm_id"] == farm["farm_id"]]
        t = trust.loc[farm["farm_id"]].to_dict()
        from_rollups = assess(lab.assessor, farm, application, season, rollups=roll, trust=t)
        stored = Features(lab.features.values.iloc[[i]], lab.features.trusted.iloc[[i]])
        from_stored = assess(lab.assessor, farm, application, season, farm_features=stored, trust=t)
        row = batch.iloc[i]
        assert from_rollups.explanation.score == from_stored.explanation.score == row["score"]
        assert from_rollups.optimistic_score == row["optimistic_score"]
        assert from_rollups.decision.outcome == from_stored.decision.outcome == row["outcome"]
        assert from_rollups.decision.reasons[0].key == row["reason"]
        if row["outcome"] == "approve":
            assert from_rollups.decision.product_id == row["product_id"]
        assert from_rollups.limit.limit == pytest.approx(row["limit"], nan_ok=True)


def test_batch_outcomes_are_a_plausible_mix(lab: Lab) -> None:
    counts = lab.batch()["outcome"].value_counts()
    assert set(counts.index) == {"approve", "refer", "decline"}
    assert counts["approve"] > 0.2 * len(lab.batch())


def test_declared_features_equal_the_feature_module(lab: Lab) -> None:
    full = build_features(lab.world.rollups.iloc[:0], lab.world.seasons, lab.world.registry, lab.world.applications)
    edge = {"area_ha": 0.0, "prior_loans": 0, "prior_repaid": 0}
    for i in range(0, 2500, 97):
        farm, application, _ = lab.rows(i)
        mine = declared_features(farm, application)
        theirs = full.values.iloc[i]
        for name, value in mine.items():
            assert value == theirs[name] or (pd.isna(value) and pd.isna(theirs[name])), name
    mine = declared_features({**lab.rows(0)[0], "area_ha": edge["area_ha"]},
                             {**lab.rows(0)[1], "prior_loans": 0, "prior_repaid": 0})
    assert np.isnan(mine["amount_per_ha"]) and np.isnan(mine["prior_repaid_share"]) and mine["first_loan"] == 1.0
    with pytest.raises(AssessmentError, match="prior_repaid exceeds"):
        declared_features(lab.rows(0)[0], {**lab.rows(0)[1], "prior_loans": 1, "prior_repaid": 2})


def test_bad_input_is_named(lab: Lab) -> None:
    farm, application, season = lab.rows(0)
    with pytest.raises(AssessmentError, match="application lacks 'purpose'"):
        assess(lab.assessor, farm, {k: v for k, v in application.items() if k != "purpose"}, season)
    with pytest.raises(AssessmentError, match="with their trust"):
        assess(lab.assessor, farm, application, season, rollups=lab.world.rollups.iloc[:10])


def test_a_model_that_scores_coverage_is_refused(lab: Lab) -> None:
    model = lab.assessor.scorer.model
    first = model.characteristics[0].model_copy(update={"name": "data_coverage"})
    scoring_coverage = model.model_copy(update={"characteristics": [first, *model.characteristics[1:]]})
    with pytest.raises(AssessmentError, match="scores data coverage"):
        Assessor.demo(ScoreModel(scoring_coverage))


def test_daily_rollups_fold_readings_as_the_store_does() -> None:
    readings = sf.farm_readings(farms=1, days=2)
    daily = daily_rollups(readings)
    one = daily[(daily["metric"] == "air_temperature")].iloc[0]
    day = readings[(readings["metric"] == "air_temperature") & (readings["ts"] < readings["ts"].min()
                                                                 + pd.Timedelta(days=1))]
    assert one["n"] == len(day) == 144
    assert one["sum"] == pytest.approx(day["value"].sum()) and one["max"] == day["value"].max()


def test_fairness_flags_a_group_below_four_fifths() -> None:
    rng = np.random.default_rng(3)
    n = 600
    frame = pd.DataFrame({"sex": rng.choice(["female", "male"], n), "age": rng.integers(18, 80, n),
                          "region": rng.choice(["north", "south", "tiny"], n, p=(0.48, 0.48, 0.04)),
                          "score": rng.normal(600, 30, n)})
    approve_p = np.where(frame["sex"] == "female", 0.4, 0.7)
    frame["outcome"] = np.where(rng.random(n) < approve_p, "approve", "refer")
    frame["bad"] = (rng.random(n) < 1 / (1 + np.exp((frame["score"] - 560) / 20))).astype(int)
    report = fairness.fairness_report(frame, bad="bad", score="score")
    by = {(g.column, g.group): g for g in report.groups}
    assert by[("sex", "female")].flagged and not by[("sex", "male")].flagged
    assert by[("sex", "female")].ratio_to_highest == pytest.approx(
        by[("sex", "female")].approval_rate / by[("sex", "male")].approval_rate)
    assert {g.group for g in report.groups if g.column == "age_band"} <= {"18-25", "26-35", "36-45", "46-55",
                                                                          "56-65", "66+"}
    assert not by[("region", "tiny")].flagged  # too few to judge
    assert 0.5 < by[("sex", "male")].auc < 1.0
    assert report.missing_columns == []
    assert fairness.fairness_report(frame[["outcome", "region"]]).missing_columns == ["sex", "age_band"]


def test_monitor_report_joins_stability_and_fairness(lab: Lab) -> None:
    batch = lab.batch()
    full = build_features(lab.world.rollups, lab.world.seasons, lab.world.registry, lab.world.applications)
    outcomes = lab.world.outcomes["defaulted"].astype(int).to_numpy()
    report = fairness.monitor_report(lab.assessor.scorer, full.for_scoring().reset_index(drop=True),
                                     batch.assign(bad=outcomes), bad="bad")
    assert report["stability"]["verdict"] == "stable"  # the training world's twin
    regions = [g for g in report["fairness"]["groups"] if g["column"] == "region"]
    assert len(regions) == 50 and sum(g["applications"] for g in regions) == 2500
    assert sum(report["outcomes"].values()) == 2500
