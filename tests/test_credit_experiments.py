"""The experiments that prove the pipeline on SYNTHETIC farms (hardware.synthetic_farms).

* Farm data adds discrimination where outcomes depend on the farm, and none on the null world,
  where they do not: lift ≤ 0.01 AUC there is a property of a pipeline that does not leak.
* Injected faults lower the faulty farms' trust and refer them; the clean farms do not change.
"""

from __future__ import annotations

import pytest

from fieldtrust.demo import credit_world as experiments
from rural_credit.scorecard.training import TrainingConfig

FAST = TrainingConfig(folds=3, n_bootstrap=0)


@pytest.fixture(scope="module")
def lifts() -> dict[str, experiments.Lift]:
    return {r.world: r for r in experiments.lift_experiment(farms=2000, seed=3, config=FAST)}


def test_farm_data_lifts_auc_in_the_real_world(lifts: dict[str, experiments.Lift]) -> None:
    real = lifts["real"]
    assert real.lift > 0.05
    assert real.kept_with_farm_data > real.kept_application_only


def test_no_lift_on_the_null_world(lifts: dict[str, experiments.Lift]) -> None:
    null = lifts["null"]
    assert null.lift <= 0.01
    assert null.application_only.auc.value > 0.55  # the application part still predicts there
    table = experiments.lift_table(list(lifts.values()))
    assert "real" in table and "null" in table


@pytest.fixture(scope="module")
def corruption() -> list[experiments.CorruptionRow]:
    assessor, world, readings = experiments.corruption_world(farms=6, days=14, model_farms=2000)
    return experiments.corruption_experiment(assessor, world, readings)


def test_faults_lower_trust_and_refer(corruption: list[experiments.CorruptionRow]) -> None:
    faulty = [r for r in corruption if r.fault]
    assert len(faulty) == len(experiments.FAULTS)
    for r in faulty:
        assert r.trust_faulty < r.trust_clean - 0.3, r
        assert r.outcome_faulty == "refer", r
        assert r.reasons_faulty[0] == "data_trust_low", r
        assert r.newly_neutral, r  # the faulty quantity's features are scored neutrally (missing or untrusted)


def test_clean_farms_keep_trust_score_and_decision(corruption: list[experiments.CorruptionRow]) -> None:
    clean = [r for r in corruption if not r.fault]
    assert len(clean) == 2
    for r in clean:
        assert (r.trust_faulty, r.score_faulty, r.outcome_faulty) == (r.trust_clean, r.score_clean, r.outcome_clean)
        assert r.untrusted_faulty == [] and r.newly_neutral == []
