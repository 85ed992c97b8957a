"""PSI/CSI monitoring and the model registry's approval rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rural_credit.scorecard.monitoring import EPSILON, monitor, stability_index, verdict
from rural_credit.scorecard.registry import DataSummary, ModelRegistry, RegistryError
from rural_credit.scorecard.scoring import ScoreModel
from rural_credit.scorecard.training import TrainingConfig, fit_scorecard
from tests.test_scorecard_model import synthetic


@pytest.fixture(scope="module")
def fitted():
    frame, bad = synthetic(n=2000, seed=9)
    return frame, bad, fit_scorecard(frame, bad, TrainingConfig()).model


def test_psi_known_values():
    assert stability_index([0.5, 0.5], [0.5, 0.5]) == 0.0
    expected = 0.1 * math.log(0.6 / 0.5) + (-0.1) * math.log(0.4 / 0.5)
    assert stability_index([0.5, 0.5], [0.6, 0.4]) == pytest.approx(expected)
    assert stability_index([50, 50], [60, 40]) == pytest.approx(expected)  # counts or shares alike
    assert [verdict(v) for v in (0.0, 0.099, 0.1, 0.25, 0.2501)] == ["stable", "stable", "watch", "watch", "shift"]


def test_psi_with_empty_bins_is_finite():
    value = stability_index([0.5, 0.5, 0.0], [0.4, 0.4, 0.2])
    e, a = np.array([0.5, 0.5, EPSILON]), np.array([0.4, 0.4, 0.2])
    assert math.isfinite(value)
    assert value == pytest.approx(float(np.sum((a - e) * np.log(a / e))))
    assert math.isfinite(stability_index([1, 0], [0, 1])) and verdict(stability_index([1, 0], [0, 1])) == "shift"
    with pytest.raises(ValueError, match="same non-empty length"):
        stability_index([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="positive total"):
        stability_index([0, 0], [1, 1])


def test_monitoring_sees_no_shift_on_the_training_data_and_a_shift_on_drier_farms(fitted):
    frame, _, model = fitted
    scorer = ScoreModel(model)
    same = monitor(scorer, frame)
    assert same.score.index == pytest.approx(0.0, abs=1e-9) and same.verdict == "stable"
    drought = frame.assign(rain_mm=frame["rain_mm"] - 250)
    shifted = monitor(scorer, drought)
    csi = {c.name: c for c in shifted.characteristics}
    assert csi["rain_mm"].verdict == "shift" and csi["crop"].verdict == "stable"
    assert shifted.score.index > 0.1
    untrusted = monitor(scorer, frame, untrusted={"crop": np.ones(len(frame), dtype=bool)})
    assert {c.name: c.verdict for c in untrusted.characteristics}["crop"] == "shift"  # all in "not scored"


def _summary() -> DataSummary:
    return DataSummary(sha256="0" * 64, rows=2000, bads=600, bad_rate=0.3)


def test_registry_versions_and_four_eyes_approval(tmp_path, fitted):
    model = fitted[2]
    reg = ModelRegistry(tmp_path / "reg")
    first = reg.register(model, "alice", _summary(), {"cross_validated": {}})
    second = reg.register(model, "alice", _summary(), {})
    assert (first.version, second.version) == ("v0001", "v0002") and first.state == "draft"
    assert reg.load_model("v0002").version == "v0002"
    with pytest.raises(RegistryError, match="only an approved version"):
        reg.promote("v0001")
    with pytest.raises(RegistryError, match="someone else must approve"):
        reg.approve("v0001", "alice")
    assert reg.approve("v0001", "bob").approved_by == "bob"
    with pytest.raises(RegistryError, match="only a draft"):
        reg.approve("v0001", "carol")
    reg.promote("v0001")
    assert reg.champion() == "v0001"
    assert reg.resolve()[0].version == "v0001"  # the champion scores, not the newer draft
    reg.approve("v0002", "carol")
    reg.promote("v0002")
    assert reg.champion() == "v0002" and reg.card("v0001").role == "challenger"
    reg.retire("v0002")
    assert reg.champion() is None and reg.resolve()[0].version == "v0001"
    with pytest.raises(RegistryError, match="only an approved version"):
        reg.promote("v0002")
    with pytest.raises(RegistryError, match="no version 'v0009'"):
        reg.card("v0009")


def test_registry_refuses_a_model_changed_after_registration(tmp_path, fitted):
    reg = ModelRegistry(tmp_path / "reg")
    reg.register(fitted[2], "alice", _summary(), {})
    path = tmp_path / "reg" / "v0001" / "model.json"
    path.write_text(path.read_text().replace('"points": ', '"points": 1', 1))
    with pytest.raises(RegistryError, match="does not match its model card"):
        reg.load_model("v0001")
