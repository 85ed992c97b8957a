"""Train a scorecard: bins, characteristic selection, logistic regression, points — and cross-validate it.

One fit (``fit_scorecard``) bins every characteristic on the rows it is given, keeps those with an
information value of at least ``min_iv``, fits a logistic regression of a bad on their WoE, drops a
characteristic whose coefficient has the wrong sign (more WoE must mean less risk) and refits, then
scales the coefficients into integer points.

``cross_validate`` repeats that whole fit on the training folds of a stratified k-fold split and
scores each held-out fold with the fold's model, read back from its JSON form: the bins never see
the rows they are judged on, and the figure is the one the scored model file earns.  ``train`` then
fits the final model on all rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from rural_credit.scorecard.binning import FittedBins, Kind, Trend, fit_bins, infer_kind
from rural_credit.scorecard.metrics import Discrimination, discrimination
from rural_credit.scorecard.model_file import ModelFile, Scaling, ScoreBands
from rural_credit.scorecard.scaling import DEFAULT_GRADES, grades, points_table
from rural_credit.scorecard.scoring import ScoreModel


class TrainingError(ValueError):
    """Training data that cannot make a scorecard; the message names what is wrong."""


@dataclass(frozen=True)
class TrainingConfig:
    folds: int = 5
    seed: int = 0
    min_iv: float = 0.02
    min_bin_size: float = 0.05
    max_bins: int = 8
    regularisation_c: float = 1.0  # inverse L2 strength of the logistic regression
    scaling: Scaling = field(default_factory=Scaling)
    grade_bands: tuple[tuple[str, float | None], ...] = DEFAULT_GRADES
    kinds: Mapping[str, Kind] = field(default_factory=dict)  # override the inferred kind of a column
    trends: Mapping[str, Trend] = field(default_factory=dict)  # bad-rate trend per column (default auto)
    score_bands: int = 10
    n_bootstrap: int = 1000


@dataclass(frozen=True)
class Fit:
    model: ModelFile
    dropped: dict[str, str]  # characteristic → why it is not in the model


@dataclass(frozen=True)
class CrossValidation:
    metrics: Discrimination  # on the pooled out-of-fold scores
    fold_auc: list[float]
    out_of_fold_scores: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]  # (training rows, validation rows) by position
    fold_models: list[ModelFile]


@dataclass(frozen=True)
class TrainingResult:
    model: ModelFile
    dropped: dict[str, str]
    cv: CrossValidation
    in_sample: Discrimination
    data_sha256: str


def target_vector(frame: pd.DataFrame, target: str, bad: str | None = None) -> tuple[np.ndarray, str]:
    """1 for a bad and 0 for a good, from ``target``; ``bad`` names the bad value (default: 1 of 0/1)."""
    if frame.empty:
        raise TrainingError("the data has no rows")
    if target not in frame.columns:
        raise TrainingError(f"the data has no column {target!r}; columns: {', '.join(map(str, frame.columns))}")
    column = frame[target]
    if column.isna().any():
        raise TrainingError(f"target {target!r} is empty in {int(column.isna().sum())} rows")
    text = column.map(_text)
    values = sorted(set(text))
    if len(values) != 2:
        raise TrainingError(f"target {target!r} must have exactly two values; it has {len(values)}: "
                            f"{', '.join(values[:10])}")
    if bad is None:
        if values != ["0", "1"]:
            raise TrainingError(f"target {target!r} has values {values[0]!r} and {values[1]!r}: "
                                "say which one is bad (--bad VALUE)")
        bad = "1"
    bad = _text(bad)
    if bad not in values:
        raise TrainingError(f"bad value {bad!r} is not a value of {target!r} ({values[0]!r}, {values[1]!r})")
    return (text == bad).to_numpy(dtype=int), bad


def frame_sha256(frame: pd.DataFrame) -> str:
    """A SHA-256 of the table's content (its CSV form), for a model card when no file is at hand."""
    return hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()


def fit_scorecard(x: pd.DataFrame, bad: np.ndarray, config: TrainingConfig, name: str = "scorecard",
                  target: str = "bad", bad_value: str = "1") -> Fit:
    """One scorecard fitted on these rows only (``x``: the candidate characteristics)."""
    if int(bad.sum()) == 0 or int(bad.sum()) == len(bad):
        raise TrainingError("the training rows need both goods and bads")
    dropped: dict[str, str] = {}
    candidates: list[FittedBins] = []
    for col in x.columns:
        kind = config.kinds.get(col) or infer_kind(x[col])
        fb = fit_bins(str(col), x[col], bad, kind, config.trends.get(col, "auto"), config.min_bin_size,
                      config.max_bins)
        if fb.iv < config.min_iv:
            dropped[str(col)] = f"information value {fb.iv:.3f} < {config.min_iv:g}"
        else:
            candidates.append(fb)
    while True:
        if not candidates:
            raise TrainingError(f"no characteristic predicts the target (information value >= {config.min_iv:g})")
        woe = np.column_stack([fb.woe_of(x[fb.name].to_numpy()) for fb in candidates])
        lr = LogisticRegression(C=config.regularisation_c, max_iter=2000).fit(woe, bad)
        coef = lr.coef_[0]
        worst = int(np.argmax(coef))
        if coef[worst] < 0:  # every characteristic: more WoE, fewer bads
            break
        dropped[candidates[worst].name] = f"coefficient {coef[worst]:+.3f} has the wrong sign next to the others"
        del candidates[worst]
    chars = points_table(candidates, coef.tolist(), float(lr.intercept_[0]), config.scaling)
    draft = ModelFile(name=name, created_at=datetime.now(UTC), target=target, bad_value=bad_value,
                      training_rows=len(bad), training_bads=int(bad.sum()), intercept=float(lr.intercept_[0]),
                      scaling=config.scaling, characteristics=chars,
                      grades=grades(config.scaling, config.grade_bands), score_bands=ScoreBands(edges=[], expected=[1]))
    scores = ScoreModel(draft).score_frame(x, reasons=False)["score"].to_numpy()
    return Fit(draft.model_copy(update={"score_bands": score_bands(scores, config.score_bands)}), dropped)


def score_bands(scores: np.ndarray, bands: int) -> ScoreBands:
    """Quantile bands of the training scores, with the share of training rows in each."""
    edges = np.unique(np.quantile(scores, np.linspace(0, 1, bands + 1)[1:-1], method="higher"))
    edges = edges[edges > scores.min()]  # no empty first band
    counts = np.bincount(np.searchsorted(edges, scores, side="right"), minlength=len(edges) + 1)
    return ScoreBands(edges=edges.astype(float).tolist(), expected=(counts / counts.sum()).tolist())


def cross_validate(x: pd.DataFrame, bad: np.ndarray, config: TrainingConfig) -> CrossValidation:
    """Stratified k-fold: fit on k−1 folds (bins included), score the held-out fold from the model's JSON."""
    if int(bad.sum()) < config.folds or int(len(bad) - bad.sum()) < config.folds:
        raise TrainingError(f"{config.folds}-fold cross-validation needs at least {config.folds} bads and goods")
    splitter = StratifiedKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    oof = np.empty(len(bad), dtype=float)
    folds, models, fold_auc = [], [], []
    for train_rows, valid_rows in splitter.split(np.zeros(len(bad)), bad):
        fit = fit_scorecard(x.iloc[train_rows], bad[train_rows], config)
        scorer = ScoreModel.from_json(fit.model.to_json())  # judged as the file it would be saved as
        oof[valid_rows] = scorer.score_frame(x.iloc[valid_rows], reasons=False)["score"].to_numpy()
        folds.append((train_rows, valid_rows))
        models.append(fit.model)
        fold_auc.append(float(discrimination(bad[valid_rows], oof[valid_rows], n_bootstrap=0).auc.value))
    return CrossValidation(discrimination(bad, oof, config.n_bootstrap, config.seed), fold_auc, oof, folds, models)


def train(frame: pd.DataFrame, target: str, bad: str | None = None, config: TrainingConfig | None = None,
          name: str = "scorecard", exclude: tuple[str, ...] = (), data_sha256: str | None = None) -> TrainingResult:
    """Cross-validate, then fit the final scorecard on every row of ``frame``."""
    config = config or TrainingConfig()
    y, bad_value = target_vector(frame, target, bad)
    unknown = [c for c in exclude if c not in frame.columns]
    if unknown:
        raise TrainingError(f"cannot exclude {', '.join(map(repr, unknown))}: no such column")
    x = frame.drop(columns=[target, *exclude]).reset_index(drop=True)
    if x.shape[1] == 0:
        raise TrainingError("the data has no column to score besides the target")
    cv = cross_validate(x, y, config)
    fit = fit_scorecard(x, y, config, name=name, target=target, bad_value=bad_value)
    scores = ScoreModel(fit.model).score_frame(x, reasons=False)["score"].to_numpy()
    return TrainingResult(fit.model, fit.dropped, cv, discrimination(y, scores, config.n_bootstrap, config.seed),
                          data_sha256 or frame_sha256(frame))


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
