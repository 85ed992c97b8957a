"""From a farm-season's data to a recommendation, in one call: trust → features → score → decision.

:func:`assess` takes one application with the farm's data in whichever form the caller holds it —
raw readings (trust is assessed here, flagged readings are left out of the daily rollups the
features are built from), or daily rollups with the trust the cloud computed earlier, or no farm
data at all — and returns everything an officer needs (:class:`Assessment`): score, grade, reasons
in two languages, counterfactuals, trust and its parts, coverage, the provenance hash of the data,
the decision, the limit and the matched products.

:func:`assess_batch` does the same for every farm-season of a feature frame at once (numpy over
columns, no per-row Python in the scoring and rules), returning a table.

Both read the data-quality features (season length and coverage) only to route to review: a model
that *scores* them is refused, because scoring coverage would let absent data lower a farmer's score.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rural_credit.assessment import limit as limits_
from rural_credit.assessment import products as products_
from rural_credit.assessment.decision import Decision, Policy, apply_rules, decision_reasons, demo_policy
from rural_credit.assessment.limit import CropTable, LimitRecommendation, demo_crop_table
from rural_credit.assessment.products import ProductMatch, Shelf, demo_shelf
from rural_credit.assessment.reasons import LANGUAGES, Reason, characteristic_text
from rural_credit.features.build import Features, build_features
from rural_credit.features.catalogue import BY_NAME
from rural_credit.scorecard.scoring import Explanation, ScoreModel
from rural_credit.trust import score as trust_score
from rural_credit.trust.checks import Window
from rural_credit.trust.frames import FrameError, require

#: features that describe the data rather than the farm: read for routing, never scored
DATA_QUALITY_FEATURES = tuple(f.name for f in BY_NAME.values() if f.group == "coverage")
APPLICATION_FIELDS = ("amount", "term_months", "purpose", "prior_loans", "prior_repaid")
FARM_FIELDS = ("farm_id", "area_ha", "crop", "tenure", "seasons_observed")


class AssessmentError(ValueError):
    """An application or its data cannot be assessed; the message names what is wrong."""


@dataclass(frozen=True)
class Assessor:
    """A scorecard with the tenant's policy, product shelf and crop table: what assessing needs."""

    scorer: ScoreModel
    policy: Policy
    shelf: Shelf
    crops: CropTable
    model_label: str = ""

    def __post_init__(self) -> None:
        self.policy.check_grades([g.grade for g in self.scorer.model.grades])
        scored = [n for n in self.scorer.names if n in DATA_QUALITY_FEATURES]
        if scored:
            raise AssessmentError(f"the model scores data coverage ({', '.join(scored)}): missing data would lower "
                                  "a farmer's score; retrain without the coverage features")
        if self.shelf.currency != self.crops.currency:
            raise AssessmentError(f"the shelf lends in {self.shelf.currency} but the crop table prices in "
                                  f"{self.crops.currency}")

    @classmethod
    def demo(cls, scorer: ScoreModel, model_label: str = "") -> Assessor:
        """With the sample policy, shelf and crop table."""
        return cls(scorer, demo_policy(), demo_shelf(), demo_crop_table(), model_label)

    def model_id(self) -> str:
        m = self.scorer.model
        return self.model_label or f"{m.name} {m.version or 'unversioned'}"


@dataclass(frozen=True)
class TrustSummary:
    trust: float | None  # None: no farm data
    coverage: float | None
    parts: dict[str, float] = field(default_factory=dict)
    provenance_sha256: str | None = None
    untrusted_sources: list[str] = field(default_factory=list)  # metrics that failed the checks


@dataclass(frozen=True)
class Assessment:
    farm_id: str
    season_id: str
    model: str
    explanation: Explanation
    optimistic_score: int
    trust: TrustSummary
    features: dict[str, Any]
    untrusted_features: list[str]
    decision: Decision
    limit: LimitRecommendation
    products: list[ProductMatch]
    counterfactual_hint: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        e = self.explanation
        return {
            "farm_id": self.farm_id, "season_id": self.season_id, "model": self.model,
            "score": e.score, "pd": e.pd, "grade": e.grade, "optimistic_score": self.optimistic_score,
            "reasons": [{**r, "text": {lang: characteristic_text(r["characteristic"], lang) for lang in LANGUAGES}}
                        for r in e.as_dict()["reasons"]],
            "contributions": e.as_dict()["contributions"], "counterfactuals": e.as_dict()["counterfactuals"],
            "trust": {"trust": self.trust.trust, "coverage": self.trust.coverage, "parts": self.trust.parts,
                      "untrusted_sources": self.trust.untrusted_sources},
            "provenance_sha256": self.trust.provenance_sha256,
            "features": {k: _plain(v) for k, v in self.features.items()}, "untrusted_features": self.untrusted_features,
            "decision": self.decision.as_dict(), "limit": self.limit.as_dict(),
            "products": [m.as_dict() for m in self.products],
        }


# -- readings to rollups -------------------------------------------------------------------------


def daily_rollups(readings: pd.DataFrame) -> pd.DataFrame:
    """Daily rollups (``frames.ROLLUPS``) of raw readings, as the store folds them: per farm, device,
    metric and UTC day, the count, sum, min and max of the values present."""
    present = readings[readings["value"].notna()]
    day = present["ts"].dt.floor("D").rename("bucket")
    grouped = present.groupby([present["farm_id"], present["device_id"], present["metric"], day], observed=True)
    return grouped["value"].agg(n="size", sum="sum", min="min", max="max").reset_index()


# -- one application -----------------------------------------------------------------------------


def assess(assessor: Assessor, farm: Mapping[str, Any], application: Mapping[str, Any], season: Mapping[str, Any], *,
           readings: pd.DataFrame | None = None, events: pd.DataFrame | None = None,
           limits: pd.DataFrame | None = None, regions: Mapping[str, str] | None = None,
           rollups: pd.DataFrame | None = None, trust: Mapping[str, Any] | None = None,
           metric_trust: pd.DataFrame | None = None, trust_report: trust_score.TrustReport | None = None,
           farm_features: Features | None = None, yields: pd.DataFrame | None = None) -> Assessment:
    """Assess one application.

    ``farm``: the registry row (farm_id, area_ha, crop, tenure, seasons_observed); ``application``:
    amount, term_months, purpose, prior_loans, prior_repaid; ``season``: season_id, start, end (UTC).
    Farm data, one of: ``readings`` (raw, may include neighbouring farms' for the cross-farm checks,
    with ``events``/``limits``/``regions`` as ``trust.score.assess`` takes them), or ``rollups``
    with ``trust`` (trust, coverage, parts…, provenance_sha256 as the cloud stored them) and
    optionally ``metric_trust`` — or, instead of rollups, the farm-season's ``farm_features`` as a batch
    run stored them (one row); or a ``trust_report`` already computed over many farms' readings (the
    report's readings of this farm are used); or none (no farm data: refer unless the policy's gate is 0).
    ``yields``: the farm's recorded harvests (farm_id, crop, yield_t_per_ha) for the limit.
    """
    farm_id, season_id = _field(farm, "farm_id", "farm"), str(_field(season, "season_id", "season"))
    for name in FARM_FIELDS:
        _field(farm, name, "farm")
    for name in APPLICATION_FIELDS:
        _field(application, name, "application")
    window = Window(pd.Timestamp(_field(season, "start", "season")), pd.Timestamp(_field(season, "end", "season")))
    if sum(x is not None for x in (readings, trust_report, trust)) > 1 or (rollups is not None and trust is None) \
            or (farm_features is not None and (trust is None or rollups is not None)):
        raise AssessmentError("give one of: raw readings, a trust report, or rollups (or stored farm features) "
                              "with their trust")
    if readings is not None:
        trust_report = trust_score.assess(readings, window, limits=limits, events=events, regions=regions)
    summary, rollups, metric_trust = _trust(farm_id, window, trust_report, rollups, trust, metric_trust)
    values, trusted = _features_one(farm, application, season, window, rollups, metric_trust, farm_features)
    untrusted = [n for n in assessor.scorer.names if not _missing(values.get(n)) and not trusted.get(n, True)]
    explanation = assessor.scorer.explain(values, untrusted=untrusted)
    optimistic = sum(c.points if c.status == "scored" else c.max_points for c in explanation.contributions)
    optimistic_grade = str(assessor.scorer.grades_of(np.array([optimistic]))[0])
    coverage = summary.coverage if summary.coverage is not None else _nan_none(values.get("data_coverage"))
    summary = TrustSummary(summary.trust, coverage, summary.parts, summary.provenance_sha256, summary.untrusted_sources)

    facts = {"crop": farm["crop"], "purpose": application["purpose"], "tenure": farm["tenure"],
             "area_ha": float(farm["area_ha"]), "seasons_observed": float(farm["seasons_observed"]),
             "amount": float(application["amount"]), "term_months": float(application["term_months"]),
             "trust": np.nan if summary.trust is None else summary.trust, "grade": explanation.grade}
    matches = products_.match(assessor.shelf, facts)
    fixed_ok = any(set(m.failed_kinds) <= {"trust", "grade"} for m in matches)
    eligible = [m for m in matches if m.eligible]
    history = limits_.yield_history(yields)
    lim = limits_.recommend(assessor.crops, assessor.policy.limit_share, str(farm["crop"]), float(farm["area_ha"]),
                            explanation.grade, history, farm_id)
    rules = apply_rules(assessor.policy, grade=[explanation.grade], optimistic_grade=[optimistic_grade],
                        trust=[facts["trust"]], coverage=[np.nan if coverage is None else coverage],
                        fixed_ok=[fixed_ok], eligible=[bool(eligible)], amount=[facts["amount"]], limit=[lim.limit])
    keys = rules.reason_keys(0)
    outcome = str(rules.outcome[0])
    neutral = [c.characteristic for c in explanation.contributions if c.status != "scored"]
    params = {
        "details": "; ".join(f"{m.product_id}: {', '.join(m.failed.values())}" for m in matches) or "empty shelf",
        "trust": summary.trust, "minimum": assessor.policy.min_trust,
        "coverage": "none" if coverage is None else coverage,
        "coverage_low.minimum": assessor.policy.min_coverage, "grade": explanation.grade, "names": neutral,
        "amount": f"{facts['amount']:,.0f}", "limit": "none" if np.isnan(lim.limit) else f"{lim.limit:,.0f}",
    }
    principal = []
    if "score_low" in keys:
        principal = [Reason(r.characteristic, kind="characteristic", code=r.code, points_lost=r.points_lost)
                     for r in explanation.reasons]
    key = _decision_key(assessor, farm, application, season_id, summary.provenance_sha256)
    approved_product = eligible[0].product_id if outcome == "approve" else None
    decision = Decision(key=key, outcome=outcome, reasons=decision_reasons(keys, params),  # type: ignore[arg-type]
                        principal_reasons=principal, product_id=approved_product,
                        amount=facts["amount"], currency=assessor.shelf.currency,
                        limit=None if np.isnan(lim.limit) else lim.limit, policy_version=assessor.policy.version,
                        score=explanation.score, grade=explanation.grade)
    return Assessment(farm_id, season_id, assessor.model_id(), explanation, int(optimistic), summary,
                      values, untrusted, decision, lim, matches, _hint(explanation))


def _field(row: Mapping[str, Any], name: str, what: str) -> Any:
    if name not in row or row[name] is None or (isinstance(row[name], float) and np.isnan(row[name])):
        raise AssessmentError(f"{what} lacks {name!r}")
    return row[name]


def _trust(farm_id: str, window: Window, report: trust_score.TrustReport | None, rollups: pd.DataFrame | None,
           trust: Mapping[str, Any] | None, metric_trust: pd.DataFrame | None
           ) -> tuple[TrustSummary, pd.DataFrame | None, pd.DataFrame | None]:
    if report is not None:
        if farm_id not in report.farms.index:
            return TrustSummary(None, 0.0), None, None
        row = report.farms.loc[farm_id]
        r = report.readings
        keep = ((r["farm_id"] == farm_id) & (r["ts"] >= window.start) & (r["ts"] < window.end)
                & ~report.flags.any(axis=1))
        mt = report.metric_trust[report.metric_trust["farm_id"] == farm_id]
        return (TrustSummary(float(row["trust"]), float(row["coverage"]), report.parts(farm_id),
                             str(row["provenance_sha256"]), sorted(mt.loc[~mt["trusted"], "metric"])),
                daily_rollups(r[keep]), mt)
    if trust is not None:
        value = _nan_none(trust.get("trust"))
        parts = {k.removeprefix("part_"): float(v) for k, v in trust.items() if str(k).startswith("part_")}
        bad = [] if metric_trust is None else sorted(metric_trust.loc[~metric_trust["trusted"].astype(bool), "metric"])
        return (TrustSummary(value, _nan_none(trust.get("coverage")), parts, trust.get("provenance_sha256"), bad),
                rollups, metric_trust)
    return TrustSummary(None, None), None, None


def _features_one(farm: Mapping[str, Any], application: Mapping[str, Any], season: Mapping[str, Any],
                  window: Window, rollups: pd.DataFrame | None, metric_trust: pd.DataFrame | None,
                  farm_features: Features | None) -> tuple[dict[str, Any], dict[str, bool]]:
    """One farm-season's feature values and trusted flags: the sensor part from ``farm_features`` (stored by a
    batch run) or built from ``rollups``, the declared part (registry, application) from the two rows."""
    farm_id = farm["farm_id"]
    if farm_features is None:
        seasons = pd.DataFrame({"farm_id": [farm_id], "season_id": [str(season["season_id"])],
                                "start": [window.start], "end": [window.end], "crop": [farm["crop"]]})
        rollups = _EMPTY_ROLLUPS if rollups is None else rollups[rollups["farm_id"] == farm_id]
        farm_features = build_features(rollups, seasons, metric_trust=metric_trust)
    elif len(farm_features.values) != 1:
        raise AssessmentError(f"farm_features must hold one farm-season; it holds {len(farm_features.values)}")
    values = farm_features.values.iloc[0].to_dict()
    trusted = {k: bool(v) for k, v in farm_features.trusted.iloc[0].items()}
    declared = declared_features(farm, application)
    values.update(declared)
    trusted.update({k: not _missing(v) for k, v in declared.items()})
    return values, trusted


def declared_features(farm: Mapping[str, Any], application: Mapping[str, Any]) -> dict[str, Any]:
    """The registry and application features of one application, as ``features.application`` computes them
    for a frame (a test keeps the two equal), without the cost of a pandas frame per application."""
    area = _number(farm["area_ha"])
    amount, term = _number(application["amount"]), _number(application["term_months"])
    loans, repaid = _number(application["prior_loans"]), _number(application["prior_repaid"])
    if repaid > loans:
        raise AssessmentError("application: prior_repaid exceeds prior_loans")
    per_ha = amount / area if area > 0 else float("nan")
    return {
        "area_ha": area, "crop": farm["crop"], "tenure": farm["tenure"],
        "seasons_observed": _number(farm["seasons_observed"]),
        "amount": amount, "term_months": term, "purpose": application["purpose"], "prior_loans": loans,
        "prior_repaid_share": repaid / loans if loans > 0 else float("nan"),
        "first_loan": float("nan") if np.isnan(loans) else float(loans == 0),
        "amount_per_ha": per_ha if np.isfinite(per_ha) else float("nan"),
    }


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


_EMPTY_ROLLUPS = pd.DataFrame({"farm_id": pd.Series(dtype=str), "device_id": pd.Series(dtype=str),
                               "metric": pd.Series(dtype=str), "bucket": pd.Series(dtype="datetime64[ns, UTC]"),
                               "n": pd.Series(dtype="int64"), "sum": pd.Series(dtype=float),
                               "min": pd.Series(dtype=float), "max": pd.Series(dtype=float)})


def _decision_key(assessor: Assessor, farm: Mapping[str, Any], application: Mapping[str, Any], season_id: str,
                  provenance: str | None) -> str:
    """SHA-256 of what the decision rests on: model, policy, farm, application and the data's provenance."""
    m = assessor.scorer.model
    basis = {"model": [m.name, m.version, m.created_at.isoformat()], "policy": assessor.policy.version,
             "shelf": assessor.shelf.tenant, "season": season_id, "provenance": provenance,
             "farm": {k: _plain(farm[k]) for k in FARM_FIELDS},
             "application": {k: _plain(application[k]) for k in APPLICATION_FIELDS}}
    return hashlib.sha256(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()


def _hint(explanation: Explanation) -> dict[str, str]:
    """The first counterfactual in words, per language (empty when the score cannot rise)."""
    if not explanation.counterfactuals:
        return {}
    cf = explanation.counterfactuals[0]
    return {"en": f"{cf.characteristic} in {cf.target_bin} would add {cf.points_gain} points (score {cf.new_score})",
            "zh-CN": f"{cf.characteristic} 达到 {cf.target_bin} 可增加 {cf.points_gain} 分（评分 {cf.new_score}）"}


def _nan_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if np.isnan(value) else value


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


# -- every farm at once --------------------------------------------------------------------------

TRUST_TABLE = ("farm_id", "trust", "coverage")


def score_arrays(scorer: ScoreModel, features: Features) -> dict[str, np.ndarray]:
    """Score, optimistic score (neutral characteristics at their best bin) and grades, per row."""
    values = features.values
    untrusted = {n: (~features.trusted[n] & values[n].notna()).to_numpy() for n in scorer.names}
    index = scorer.bin_indices(values, untrusted)
    points = scorer.points_matrix(index)
    best = np.array([t.ch.max_points for t in scorer.tables])
    score = points.sum(axis=1)
    optimistic = np.where(index >= 0, points, best[None, :]).sum(axis=1)
    return {"score": score, "pd": scorer.pd_of(score), "grade": scorer.grades_of(score),
            "optimistic_score": optimistic, "optimistic_grade": scorer.grades_of(optimistic),
            "neutral": (index < 0).sum(axis=1)}


def assess_batch(assessor: Assessor, features: Features, registry: pd.DataFrame, applications: pd.DataFrame,
                 trust: pd.DataFrame | None = None, yields: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per farm-season of ``features``: score, grade, trust, coverage, outcome, first reason,
    limit and best product (``trust``: farm_id[, season_id], trust, coverage as the cloud stored them;
    a farm without a row has no farm data).  Registry columns sex, age_band and region, when present,
    are carried along for fairness monitoring (never scored)."""
    keys = features.values.index.to_frame(index=False)
    n = len(keys)
    require(registry, FARM_FIELDS, "registry")
    require(applications, ("farm_id", "season_id", *APPLICATION_FIELDS), "applications")
    if registry["farm_id"].duplicated().any() or applications.duplicated(["farm_id", "season_id"]).any():
        raise FrameError("registry: one row per farm_id, applications: one per (farm_id, season_id) expected")
    reg = keys[["farm_id"]].merge(registry, on="farm_id", how="left")
    app = keys.merge(applications, on=["farm_id", "season_id"], how="left")
    if app["amount"].isna().any():
        raise FrameError(f"applications: {int(app['amount'].isna().sum())} farm-season(s) have no application")
    t = _trust_columns(keys, trust)
    coverage = np.where(np.isnan(t["coverage"]), features.values["data_coverage"].to_numpy(float), t["coverage"])
    s = score_arrays(assessor.scorer, features)

    facts = {"crop": reg["crop"].to_numpy(object), "purpose": app["purpose"].to_numpy(object),
             "tenure": reg["tenure"].to_numpy(object), "area_ha": reg["area_ha"].to_numpy(float),
             "seasons_observed": reg["seasons_observed"].to_numpy(float), "amount": app["amount"].to_numpy(float),
             "term_months": app["term_months"].to_numpy(float), "trust": t["trust"], "grade": s["grade"]}
    fixed_ok, eligible = np.zeros(n, bool), np.zeros(n, bool)
    best_cost, best_product = np.full(n, np.inf), np.full(n, None, dtype=object)
    for product in assessor.shelf.products:
        masks = products_.rule_masks(product, facts)
        fixed_ok |= products_.passes(masks, ("fixed",))
        ok = products_.passes(masks, ("fixed", "trust", "grade"))
        eligible |= ok
        cost = products_.costs(product, facts["amount"], facts["term_months"], facts["grade"])["total_cost"]
        better = ok & (cost < best_cost)
        best_cost, best_product = np.where(better, cost, best_cost), np.where(better, product.id, best_product)

    history = limits_.yield_history(yields)
    own = pd.DataFrame({"farm_id": keys["farm_id"], "crop": reg["crop"]}).join(history, on=["farm_id", "crop"])
    lim = limits_.limits(assessor.crops, assessor.policy.limit_share, facts["crop"], facts["area_ha"], s["grade"],
                         own["own_mean"].to_numpy(float), own["own_seasons"].to_numpy(float))
    rules = apply_rules(assessor.policy, grade=s["grade"], optimistic_grade=s["optimistic_grade"], trust=t["trust"],
                        coverage=coverage, fixed_ok=fixed_ok, eligible=eligible, amount=facts["amount"],
                        limit=lim["limit"])
    out = pd.DataFrame({
        "farm_id": keys["farm_id"].to_numpy(), "season_id": keys["season_id"].to_numpy(),
        "score": s["score"], "pd": s["pd"], "grade": s["grade"], "optimistic_score": s["optimistic_score"],
        "neutral_characteristics": s["neutral"], "trust": t["trust"], "coverage": coverage,
        "outcome": rules.outcome, "reason": rules.primary_reason(), "limit": lim["limit"],
        "product_id": np.where(rules.outcome == "approve", best_product, None),
    })
    for group in ("sex", "age", "age_band", "region"):
        if group in reg.columns:
            out[group] = reg[group].to_numpy()
    return out


def _trust_columns(keys: pd.DataFrame, trust: pd.DataFrame | None) -> dict[str, np.ndarray]:
    if trust is None:
        nan = np.full(len(keys), np.nan)
        return {"trust": nan, "coverage": nan.copy()}
    require(trust, TRUST_TABLE, "trust")
    on = ["farm_id", "season_id"] if "season_id" in trust.columns else ["farm_id"]
    if trust.duplicated(on).any():
        raise FrameError(f"trust: one row per ({', '.join(on)}) expected")
    joined = keys.merge(trust[[*on, "trust", "coverage"]], on=on, how="left")
    return {"trust": joined["trust"].to_numpy(float), "coverage": joined["coverage"].to_numpy(float)}
