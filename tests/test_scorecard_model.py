"""Scorecard scoring rules on a model trained from synthetic data: points, neutral bins, reasons, JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rural_credit.scorecard import model_file
from rural_credit.scorecard.scoring import MAX_REASONS, ScoreModel
from rural_credit.scorecard.training import TrainingConfig, fit_scorecard


def synthetic(n: int = 3000, seed: int = 7) -> tuple[pd.DataFrame, np.ndarray]:
    """Risk falls with rainfall and farm size, depends on the crop; some values missing."""
    rng = np.random.default_rng(seed)
    rain = rng.normal(600, 150, n)
    hectares = rng.gamma(2.0, 3.0, n)
    crop = rng.choice(["maize", "beans", "coffee", "tea", "rice"], n)
    crop_risk = pd.Series(crop).map({"maize": 0.4, "beans": 0.2, "coffee": -0.3, "tea": -0.5, "rice": 0.0})
    noise = rng.normal(0, 1, n)
    logit = -1.0 - (rain - 600) / 150 - 0.15 * (hectares - 6) + crop_risk.to_numpy()
    bad = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame({"rain_mm": rain, "hectares": hectares, "crop": crop, "noise": noise})
    frame.loc[rng.random(n) < 0.05, "rain_mm"] = np.nan
    frame.loc[rng.random(n) < 0.03, "crop"] = None
    return frame, bad


@pytest.fixture(scope="module")
def trained():
    frame, bad = synthetic()
    fit = fit_scorecard(frame, bad, TrainingConfig())
    return frame, bad, fit


@pytest.fixture(scope="module")
def scorer(trained) -> ScoreModel:
    return ScoreModel(trained[2].model)


def test_selection_keeps_the_informative_characteristics(trained):
    _, _, fit = trained
    names = [c.name for c in fit.model.characteristics]
    assert set(names) == {"rain_mm", "hectares", "crop"}
    assert "noise" in fit.dropped
    assert all(c.coefficient < 0 for c in fit.model.characteristics)


def test_numerical_bins_are_monotonic_in_bad_rate(trained):
    for ch in trained[2].model.characteristics:
        if ch.kind != "numerical":
            continue
        rates = np.array([b.bads / b.count for b in ch.bins])
        assert len(rates) >= 3
        steps = np.diff(rates)
        assert (steps <= 0).all() or (steps >= 0).all(), (ch.name, rates)
        points = np.array([b.points for b in ch.bins])
        assert ((np.diff(points) >= 0).all() if (steps <= 0).all() else (np.diff(points) <= 0).all())


def test_points_are_integers_and_the_score_is_their_sum(trained, scorer):
    frame, _, fit = trained
    model = fit.model
    assert all(isinstance(b.points, int) for c in model.characteristics for b in c.bins)
    result = scorer.score_frame(frame)
    points = scorer.points_matrix(scorer.bin_indices(frame))
    assert (result["score"].to_numpy() == points.sum(axis=1)).all()
    for row in frame.head(50).to_dict(orient="records"):
        e = scorer.explain(row)
        assert e.score == sum(c.points for c in e.contributions)
    # the scaling the file states: PD of a score and the grade cut-offs follow from it
    s = model.scaling
    assert s.odds == "good:bad"
    assert result["pd"].to_numpy() == pytest.approx(
        [s.pd_of(v) for v in result["score"].to_numpy()], rel=1e-12)
    assert s.score_of(1 / (1 + s.base_odds)) == pytest.approx(s.base_score)
    assert s.score_of(1 / (1 + 2 * s.base_odds)) == pytest.approx(s.base_score + s.pdo)


def test_neutral_points_are_those_of_a_woe_of_zero(trained):
    for ch in trained[2].model.characteristics:
        assert ch.min_points < ch.neutral_points < ch.max_points
        for b in ch.bins:  # WoE below 0 never earns more than neutral, above 0 never less
            assert (b.points <= ch.neutral_points) if b.woe < 0 else (b.points >= ch.neutral_points)


def _application(model: model_file.ModelFile, picks: list[int]) -> dict:
    app = {}
    for ch, k in zip(model.characteristics, picks, strict=False):
        b = ch.bins[k % len(ch.bins)]
        if ch.kind == "categorical":
            app[ch.name] = b.categories[0]
        else:
            app[ch.name] = b.lower if b.lower is not None else b.upper - 1.0
    return app


@settings(max_examples=200, deadline=None)
@given(picks=st.lists(st.integers(0, 50), min_size=3, max_size=3), which=st.integers(0, 2),
       how=st.sampled_from(["missing", "none", "empty", "untrusted", "unknown"]))
def test_missing_or_untrusted_earns_neutral_and_never_a_penalty(scorer, picks, which, how):
    """Replacing a value by missing/untrusted/unknown gives exactly the neutral points: never below them.

    So the score never falls when the value was scored at or below neutral (below-average evidence), and
    never falls below the score the characteristic's neutral points give.
    """
    model = scorer.model
    app = _application(model, picks)
    before = scorer.explain(app)
    ch = model.characteristics[which]
    changed, untrusted = dict(app), ()
    if how == "missing":
        changed.pop(ch.name)
    elif how == "none":
        changed[ch.name] = None
    elif how == "empty":
        changed[ch.name] = ""
    elif how == "untrusted":
        untrusted = (ch.name,)
    else:
        changed[ch.name] = "no-such-category" if ch.kind == "categorical" else "not a number"
    after = scorer.explain(changed, untrusted=untrusted)
    was = before.contributions[which].points
    assert after.contributions[which].points == ch.neutral_points
    assert after.score == before.score - was + ch.neutral_points
    if was <= ch.neutral_points:
        assert after.score >= before.score
    assert after.contributions[which].status in {"missing", "untrusted", "unknown"}
    assert ch.code not in {r.code for r in after.reasons}


def test_reason_codes_rules(trained, scorer):
    frame, _, _ = trained
    batch = scorer.score_frame(frame)
    for i, row in enumerate(frame.head(300).to_dict(orient="records")):
        e = scorer.explain(row)
        assert len(e.reasons) <= MAX_REASONS
        assert all(r.status == "scored" and r.points_lost > 0 for r in e.reasons)
        lost = [r.points_lost for r in e.reasons]
        assert lost == sorted(lost, reverse=True)
        scored_losers = [c for c in e.contributions if c.status == "scored" and c.points_lost > 0]
        assert len(e.reasons) == min(MAX_REASONS, len(scored_losers))
        assert min(lost, default=10**9) >= max((c.points_lost for c in scored_losers if c not in e.reasons),
                                               default=0)
        codes = [batch.iloc[i][f"reason_{k + 1}"] for k in range(MAX_REASONS)]
        assert [c for c in codes if c] == [r.code for r in e.reasons]  # batch and single agree


def test_counterfactuals_raise_the_score(trained, scorer):
    frame, _, _ = trained
    seen = 0
    for row in frame.head(200).to_dict(orient="records"):
        e = scorer.explain(row)
        assert {cf.code for cf in e.counterfactuals} <= {r.code for r in e.reasons}
        for cf in e.counterfactuals:
            changed = {**row, cf.characteristic: cf.example}
            after = scorer.explain(changed)
            assert cf.points_gain > 0
            assert after.score == cf.new_score > e.score
            seen += 1
    assert seen > 50


def test_json_round_trip_scores_identically(tmp_path, trained, scorer):
    frame, _, fit = trained
    path = tmp_path / "model.json"
    model_file.save(fit.model, path)
    again = ScoreModel.from_file(path)
    assert again.model == fit.model
    pd.testing.assert_frame_equal(again.score_frame(frame), scorer.score_frame(frame))


def test_model_file_refuses_unknown_format_or_broken_tables(trained):
    raw = json.loads(trained[2].model.to_json())
    with pytest.raises(model_file.ModelFileError, match="format_version 2"):
        model_file.parse(json.dumps({**raw, "format_version": 2}))
    with pytest.raises(model_file.ModelFileError, match="not a FieldTrust scorecard"):
        model_file.parse(json.dumps({**raw, "format": "pickle"}))
    broken = json.loads(json.dumps(raw))
    num = next(c for c in broken["characteristics"] if c["kind"] == "numerical")
    num["bins"][1]["lower"] = num["bins"][1]["lower"] + 1  # a gap between two bins
    with pytest.raises(model_file.ModelFileError, match="contiguous"):
        model_file.parse(json.dumps(broken))


def test_the_scorer_imports_no_training_library(tmp_path, trained):
    path = tmp_path / "model.json"
    model_file.save(trained[2].model, path)
    code = (
        "import sys, pandas as pd\n"
        "from rural_credit.scorecard.scoring import ScoreModel\n"
        "from rural_credit.scorecard.monitoring import monitor\n"
        f"m = ScoreModel.from_json(open({str(path)!r}).read())\n"
        "r = m.score_frame(pd.DataFrame({'rain_mm': [500.0], 'hectares': [3.0], 'crop': ['tea']}))\n"
        "e = m.explain({'rain_mm': 500.0})\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in {'optbinning', 'sklearn', 'ortools', 'scipy'})\n"
        "print(int(r['score'].iloc[0]), bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    score, loaded = done.stdout.strip().split(" ", 1)
    assert int(score) > 0
    assert loaded == "[]"


ODD_VALUES = ["", "  ", " 12.5 ", "abc", None, float("nan"), float("inf"), "-inf", "1e3", True, 5, 700.0, "tea",
              " tea ", 3.0, "3", pd.NA, "nan", np.float32("nan"), np.int64(7), False]


def test_one_application_and_a_batch_read_values_alike(scorer):
    for table in scorer.tables:
        batch = table.assign(np.array(ODD_VALUES, dtype=object))
        assert [table.assign_one(v) for v in ODD_VALUES] == batch.tolist(), table.ch.name
    frame = pd.DataFrame({name: ODD_VALUES for name in scorer.names})
    scores = scorer.score_frame(frame)["score"].tolist()
    assert scores == [scorer.explain(row).score for row in frame.to_dict(orient="records")]


def test_batch_scoring_names_absent_columns(scorer):
    from rural_credit.scorecard.scoring import ScoringError

    with pytest.raises(ScoringError, match="'crop'"):
        scorer.score_frame(pd.DataFrame({"rain_mm": [1.0], "hectares": [2.0]}))
