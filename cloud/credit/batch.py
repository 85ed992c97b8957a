"""Batch scoring: every farm of a tenant assessed at once (``pipeline.assess_batch``), each farm's row kept.

A farm is scored on its open application for the season (submitted, scored or referred), else on the
run's *notional* application (amount, term, purpose given with the request): a pre-qualification of the
whole portfolio.  Farms are left out, each with its reason in ``skipped``, when they have no farmer, no
season that has begun, or no consent to ``credit_assessment`` of their registry data (the refusal is on
record, as for a single application).  Trust is computed over all scored farms' readings together, per
season window, so the cross-farm checks (neighbours' weather by village, the same series on two farms)
see every farm of the run.  Batch rows never change an application: its own assessment does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from cloud.audit import log
from cloud.auth.principal import Principal
from cloud.credit import assess, data, models, records
from cloud.credit.errors import CreditInvalid
from rural_credit.assessment import pipeline
from rural_credit.features.build import build_features
from rural_credit.trust.frames import FrameError

OPEN = ("submitted", "scored", "referred")


@dataclass(frozen=True)
class NotionalApplication:
    amount: float
    term_months: int
    purpose: str
    prior_loans: int = 0
    prior_repaid: int = 0


@dataclass(frozen=True)
class BatchScore:
    farm_id: str
    season: str
    application_id: str | None
    """the open application scored; null: the run's notional application"""
    score: int
    grade: str
    trust: float | None
    coverage: float | None
    outcome: str
    reason: str
    """the first reason of the outcome (a decision reason key)"""
    credit_limit: float | None
    product_id: str | None


@dataclass(frozen=True)
class BatchRun:
    id: str
    model: str
    shelf_version: int
    season: str | None
    farms: int
    scored: int
    outcomes: dict[str, int]
    skipped: dict[str, str] = field(default_factory=dict)
    """farm id → why it was not scored"""
    scores: list[BatchScore] = field(default_factory=list)


def score_tenant(conn: psycopg.Connection, principal: Principal, tenant: str, notional: NotionalApplication,
                 season: str | None = None, now: datetime | None = None) -> BatchRun:
    scoring = models.scoring(conn, tenant)
    run_id = records.new_id("cb")
    skipped: dict[str, str] = {}
    windows: dict[str, data.Window] = {}
    farmers: dict[str, str] = {}
    farms = conn.execute("SELECT id, farmer_id FROM ft.farms WHERE tenant_id = %s ORDER BY id", (tenant,)).fetchall()
    for farm_id, farmer_id in farms:
        if farmer_id is None:
            skipped[farm_id] = "no farmer on record"
            continue
        try:
            windows[farm_id] = data.season_window(conn, tenant, farm_id, season, now)
            farmers[farm_id] = farmer_id
        except CreditInvalid as exc:
            skipped[farm_id] = str(exc)
    farm_data = data.load(conn, principal, tenant, windows, target_type="credit_batch", target_id=run_id,
                          farmers=farmers, refused=skipped)
    scores: list[BatchScore] = []
    if farm_data.windows:
        table, applied = _assess(conn, tenant, scoring, farm_data, notional, skipped)
        scores = [_row(r, applied) for r in table.itertuples(index=False)]
    outcomes = dict(Counter(s.outcome for s in scores))
    run = BatchRun(run_id, f"{scoring.model.name} {scoring.model.version}", scoring.shelf.version, season, len(farms),
                   len(scores), outcomes, skipped, scores)
    _store(conn, principal, tenant, run, notional)
    return run


def _assess(conn: psycopg.Connection, tenant: str, scoring: models.Scoring, fd: data.FarmData,
            notional: NotionalApplication, skipped: dict[str, str]) -> tuple[pd.DataFrame, dict[str, str]]:
    farm_ids = [f for f in fd.windows if _complete(fd.farms[f], skipped)]
    registry = pd.DataFrame([fd.farms[f] for f in farm_ids]).rename(columns={"village": "region"})
    seasons = pd.DataFrame([{"farm_id": f, **fd.season(f), "crop": fd.farms[f]["crop"]} for f in farm_ids])
    applied = _open_applications(conn, tenant, fd, farm_ids)
    apps = pd.DataFrame([{"farm_id": f, "season_id": fd.windows[f].season,
                          **(applied[f][1] if f in applied else vars(notional))} for f in farm_ids])
    trust_rows, metric_trust = [], []
    groups: dict[tuple[datetime, datetime], list[str]] = {}
    for f in farm_ids:
        groups.setdefault((fd.windows[f].start, fd.windows[f].end), []).append(f)
    for members in groups.values():
        report = assess.trust_report(fd, members)
        for f in members:
            row, mt = assess.trust_of(report, f)
            trust_rows.append({"farm_id": f, "trust": row["trust"], "coverage": row["coverage"]})
            if mt is not None:
                metric_trust.append(mt)
    trust = pd.DataFrame(trust_rows, columns=["farm_id", "trust", "coverage"])
    try:
        features = build_features(fd.rollups, seasons, registry, apps,
                                  metric_trust=pd.concat(metric_trust, ignore_index=True) if metric_trust else None)
        table = pipeline.assess_batch(scoring.assessor, features, registry, apps, trust)
    except (pipeline.AssessmentError, FrameError) as exc:
        raise CreditInvalid(f"batch scoring failed: {exc}") from None
    return table, {f: a[0] for f, a in applied.items()}


def _complete(farm: dict[str, Any], skipped: dict[str, str]) -> bool:
    missing = [k for k in pipeline.FARM_FIELDS if farm.get(k) is None]
    if missing:
        skipped[farm["farm_id"]] = f"the farm's registry record lacks {', '.join(missing)}"
    return not missing


def _open_applications(conn: psycopg.Connection, tenant: str, fd: data.FarmData, farm_ids: list[str]
                       ) -> dict[str, tuple[str, dict[str, Any]]]:
    """Per farm, its latest open application for the run's season: (id, application fields)."""
    rows = conn.execute(
        "SELECT DISTINCT ON (farm_id) farm_id, season, id, amount, term_months, purpose, prior_loans, prior_repaid"
        " FROM ft.loan_applications WHERE tenant_id = %s AND farm_id = ANY(%s) AND status = ANY(%s)"
        " ORDER BY farm_id, created_at DESC", (tenant, farm_ids, list(OPEN))).fetchall()
    return {r[0]: (r[2], dict(zip(pipeline.APPLICATION_FIELDS, r[3:], strict=True))) for r in rows
            if r[1] == fd.windows[r[0]].season}


def _row(r: Any, applied: dict[str, str]) -> BatchScore:
    def number(v: Any) -> float | None:
        return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)

    return BatchScore(str(r.farm_id), str(r.season_id), applied.get(str(r.farm_id)), int(r.score), str(r.grade),
                      number(r.trust), number(r.coverage), str(r.outcome), str(r.reason), number(r.limit),
                      None if r.product_id is None else str(r.product_id))


def _store(conn: psycopg.Connection, principal: Principal, tenant: str, run: BatchRun,
           notional: NotionalApplication) -> None:
    model_name, _, model_version = run.model.rpartition(" ")
    conn.execute(
        "INSERT INTO ft.credit_batch_runs (id, tenant_id, model_name, model_version, shelf_version, season, request,"
        " farms, scored, skipped, started_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (run.id, tenant, model_name, model_version, run.shelf_version, run.season, Jsonb(vars(notional)), run.farms,
         run.scored, Jsonb(run.skipped), principal.id))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO ft.credit_batch_scores (tenant_id, run_id, farm_id, season, application_id, score, grade,"
            " trust, coverage, outcome, reason, credit_limit, product_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(tenant, run.id, s.farm_id, s.season, s.application_id, s.score, s.grade, s.trust, s.coverage, s.outcome,
              s.reason, s.credit_limit, s.product_id) for s in run.scores])
    log.record(conn, principal, "credit.batch_scored", "credit_batch", run.id, tenant_id=tenant,
               purpose=data.PURPOSE, detail={"model": run.model, "farms": run.farms, "scored": run.scored,
                                             "skipped": len(run.skipped), "outcomes": run.outcomes})
