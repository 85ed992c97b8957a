"""Scorecard training: cross-validation that never fits bins on held-out rows, metrics, input errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedKFold

from rural_credit.scorecard import training
from rural_credit.scorecard.metrics import discrimination
from rural_credit.scorecard.training import TrainingConfig, TrainingError, cross_validate, target_vector, train
from tests.test_scorecard_model import synthetic

FAST = TrainingConfig(folds=4, n_bootstrap=200)


def _fold_canary(bad: np.ndarray, config: TrainingConfig) -> list[str]:
    """The target, written as categories that live in one validation fold each (40 rows each).

    One row in ten is written with the wrong outcome: optbinning never forms a bin without goods or bads.
    """
    splitter = StratifiedKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    noisy = bad ^ (np.random.default_rng(11).random(len(bad)) < 0.1)
    canary = np.empty(len(bad), dtype=object)
    for fold, (_, valid_rows) in enumerate(splitter.split(np.zeros(len(bad)), bad)):
        for outcome in (0, 1):
            rows = valid_rows[noisy[valid_rows] == outcome]
            for j, row in enumerate(rows):
                canary[row] = f"fold{fold}-{'bad' if outcome else 'good'}-{j // 40}"
    return canary.tolist()


def test_cv_bins_are_fitted_on_training_folds_only(monkeypatch):
    """A leakage canary: a column equal to the target, in categories that each live in one fold.

    Bins fitted on every row (the in-sample figure) read the target off it; honestly cross-validated,
    a held-out fold's categories were never seen, earn neutral points and add nothing.
    """
    frame, bad = synthetic(n=2000, seed=3)
    honest = cross_validate(frame, bad, FAST).metrics.auc.value
    seen_rows: list[set[int]] = []
    real_fit_bins = training.fit_bins

    def spy(name, values, *args, **kwargs):
        if name == "canary":
            seen_rows.append(set(values.index))
        return real_fit_bins(name, values, *args, **kwargs)

    monkeypatch.setattr(training, "fit_bins", spy)
    result = train(frame.assign(canary=_fold_canary(bad, FAST), bad=bad), "bad", config=FAST)
    assert "canary" in [c.name for c in result.model.characteristics]
    assert result.in_sample.auc.value > 0.93  # the canary can leak …
    assert result.cv.metrics.auc.value < honest + 0.01  # … but not through cross-validation
    assert len(seen_rows) == FAST.folds + 1  # each fold's bins, then the final model's
    for (train_rows, valid_rows), rows in zip(result.cv.folds, seen_rows, strict=False):
        assert rows == set(train_rows.tolist()) and not rows & set(valid_rows.tolist())
    assert seen_rows[-1] == set(range(len(bad)))


def test_metrics_agree_with_scikit_learn_and_bracket_the_estimate():
    frame, bad = synthetic(n=1500, seed=5)
    cv = cross_validate(frame, bad, FAST)
    score = cv.out_of_fold_scores
    fpr, tpr, _ = roc_curve(bad, -score)
    m = cv.metrics
    assert m.auc.value == pytest.approx(roc_auc_score(bad, -score), abs=1e-12)
    assert m.ks.value == pytest.approx(np.max(tpr - fpr), abs=1e-12)
    assert m.gini.value == pytest.approx(2 * m.auc.value - 1)
    for est in (m.auc, m.gini, m.ks):
        assert est.ci_low < est.value < est.ci_high
    assert 0.70 < m.auc.value < 0.95
    assert len(cv.fold_auc) == 4


def test_discrimination_of_a_perfect_and_a_useless_score():
    bad = np.array([1] * 50 + [0] * 50)
    perfect = discrimination(bad, np.arange(100), n_bootstrap=50)
    assert perfect.auc.value == 1.0 and perfect.ks.value == 1.0
    flat = discrimination(bad, np.zeros(100), n_bootstrap=50)
    assert flat.auc.value == 0.5 and flat.ks.value == 0.0


@pytest.mark.parametrize(("column", "bad", "message"), [
    ("nope", None, "no column 'nope'"),
    ("crop", None, "exactly two values"),
    ("outcome", None, "say which one is bad"),
    ("outcome", "late", "'late' is not a value"),
])
def test_target_errors_name_what_is_wrong(column, bad, message):
    frame = pd.DataFrame({"crop": ["a", "b", "c"], "outcome": ["good", "bad", "good"]})
    with pytest.raises(TrainingError, match=message):
        target_vector(frame, column, bad)


def test_target_accepts_zero_one_and_a_named_bad_value():
    y, bad = target_vector(pd.DataFrame({"t": [0, 1, 1]}), "t")
    assert bad == "1" and y.tolist() == [0, 1, 1]
    y, bad = target_vector(pd.DataFrame({"t": ["good", "bad", "good"]}), "t", "bad")
    assert y.tolist() == [0, 1, 0]


def test_training_refuses_data_without_signal():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"noise": rng.normal(size=400), "bad": rng.integers(0, 2, 400)})
    with pytest.raises(TrainingError, match="no characteristic predicts"):
        train(frame, "bad", config=FAST)
