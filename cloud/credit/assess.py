"""One farm-season's assessment from store data: trust over the raw readings, features from the daily rollups.

This is the pipeline's "as the cloud holds it" path (``pipeline.assess(..., rollups=, trust=,
metric_trust=)``): the trust checks run over the window's raw readings (with the devices' events and
limits; neighbours' weather by village when several farms are assessed together), and the features are
built from the store's daily rollups, a metric that failed the checks marked untrusted (scored neutrally).
Without raw readings the trust is unknown, which the decision rules refer to a person (never decline).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from cloud.credit.data import FarmData, expected_peak_h
from cloud.credit.errors import CreditInvalid
from cloud.credit.models import Scoring
from rural_credit.assessment import pipeline
from rural_credit.trust import score as trust_score
from rural_credit.trust.checks import Window
from rural_credit.trust.frames import FrameError

APPLICATION_FIELDS = pipeline.APPLICATION_FIELDS


def trust_report(data: FarmData, farm_ids: list[str]) -> trust_score.TrustReport | None:
    """The trust checks over the readings of ``farm_ids`` (which share one window), None without readings."""
    readings = data.readings[data.readings["farm_id"].isin(farm_ids)]
    if readings.empty:
        return None
    w = data.windows[farm_ids[0]]
    regions = {f: data.farms[f]["village"] for f in farm_ids if data.farms[f].get("village")}
    peak = expected_peak_h([data.farms[f]["longitude"] for f in farm_ids if data.farms[f].get("longitude") is not None])
    return trust_score.assess(readings, Window(pd.Timestamp(w.start), pd.Timestamp(w.end)), limits=data.limits,
                              events=data.events, regions=regions or None, expected_peak_h=peak)


def trust_of(report: trust_score.TrustReport | None, farm_id: str) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """One farm's stored-trust row (trust, coverage, part_*, provenance) and its metric trust."""
    if report is None or farm_id not in report.farms.index:
        return {"trust": math.nan, "coverage": math.nan}, None
    row = report.farms.loc[farm_id].to_dict()
    return row, report.metric_trust[report.metric_trust["farm_id"] == farm_id]


def run(scoring: Scoring, data: FarmData, farm_id: str, application: Mapping[str, Any],
        report: trust_score.TrustReport | None) -> pipeline.Assessment:
    """The library's assessment of one application; CreditInvalid naming what the farm's records lack."""
    trust, metric_trust = trust_of(report, farm_id)
    rollups = data.rollups[data.rollups["farm_id"] == farm_id]
    try:
        return pipeline.assess(scoring.assessor, data.farms[farm_id], application, data.season(farm_id),
                               rollups=rollups, trust=trust, metric_trust=metric_trust)
    except (pipeline.AssessmentError, FrameError) as exc:
        raise CreditInvalid(f"farm {farm_id!r} cannot be assessed: {exc} (complete the farm's registry record)"
                            ) from None


def stored(result: pipeline.Assessment, data: FarmData, scoring: Scoring, by: str) -> dict[str, Any]:
    """The ``ft.credit_assessments`` columns of a result."""
    d = result.as_dict()
    return json_safe({
        "model_name": scoring.model.name, "model_version": scoring.model.version,
        "model_sha256": scoring.model.model_sha256, "shelf_version": scoring.shelf.version,
        "policy_version": scoring.shelf.policy.version, "score": d["score"], "pd": d["pd"], "grade": d["grade"],
        "optimistic_score": d["optimistic_score"], "reasons": d["reasons"], "counterfactuals": d["counterfactuals"],
        "contributions": d["contributions"], "trust": d["trust"]["trust"], "coverage": d["trust"]["coverage"],
        "trust_parts": d["trust"]["parts"], "untrusted_sources": d["trust"]["untrusted_sources"],
        "provenance_sha256": d["provenance_sha256"], "features": d["features"],
        "untrusted_features": d["untrusted_features"], "data_scopes": data.scopes.get(result.farm_id, []),
        "data_withheld": data.withheld.get(result.farm_id, []), "credit_limit": d["limit"]["limit"],
        "currency": scoring.shelf.shelf.currency, "recommendation": d["decision"]["outcome"],
        "decision_key": d["decision"]["key"], "decision": d["decision"], "limit_detail": d["limit"],
        "products": d["products"], "hint": result.counterfactual_hint, "assessed_by": by,
    })


def json_safe(value: Any) -> Any:
    """Plain JSON values: numpy scalars as Python, NaN and infinities as None, times as ISO text."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    return value
