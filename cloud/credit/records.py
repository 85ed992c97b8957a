"""The credit tables of migration 050 as row types, and the SQL that reads and writes them.

Every function runs in the caller's transaction (in the tenant's scope: row-level security applies) and
names the tenant explicitly as well.  The state machine is ``service``'s; here are only rows.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from cloud.credit.errors import CreditInvalid, CreditNotFound
from cloud.store.db import ROW_SCHEMA

Status = Literal["submitted", "scored", "approved", "referred", "declined", "appealed", "under_review", "decided",
                 "cancelled"]
Outcome = Literal["approve", "refer", "decline"]
T = TypeVar("T")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


@dataclass(frozen=True)
class Application:
    """A loan application."""

    __pydantic_config__ = ROW_SCHEMA
    id: str
    tenant_id: str
    farmer_id: str
    farm_id: str
    season: str
    """the farm-season whose data is assessed"""
    season_start: datetime
    season_end: datetime
    product_id: str | None
    """the product asked for, if any"""
    amount: float
    term_months: int
    purpose: str
    prior_loans: int
    prior_repaid: int
    """loans repaid on time among prior_loans"""
    status: str
    """submitted, scored, approved, referred, declined, appealed, under_review, decided or cancelled"""
    outcome: str | None
    """the decision in force (approve, refer, decline); null until an officer decided"""
    submitted_by: str
    assisted_by: str | None
    """the clerk who filed it for the farmer"""
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Assessment:
    """An assessment of an application, as computed (the newest is current)."""

    __pydantic_config__ = ROW_SCHEMA
    id: str
    application_id: str
    model_name: str
    model_version: str
    model_sha256: str
    shelf_version: int
    policy_version: str
    score: int
    pd: float
    """probability of a bad, from the score"""
    grade: str
    optimistic_score: int
    """the score with every missing or untrusted characteristic at its best bin"""
    reasons: list[dict[str, Any]]
    """scorecard reason codes (at most four), each with its text in en and zh-CN"""
    counterfactuals: list[dict[str, Any]]
    contributions: list[dict[str, Any]]
    """every characteristic's value, bin, points and the most it could earn"""
    trust: float | None
    """data trust in [0, 1]; null: no farm data"""
    coverage: float | None
    trust_parts: dict[str, float]
    untrusted_sources: list[str]
    provenance_sha256: str | None
    """SHA-256 of exactly the readings the trust was computed on"""
    features: dict[str, Any]
    untrusted_features: list[str]
    data_scopes: list[str]
    """the consented data scopes read"""
    data_withheld: list[str]
    """data scopes the farmer did not consent to: not read, treated as missing"""
    credit_limit: float | None
    currency: str
    recommendation: str
    decision_key: str
    decision: dict[str, Any]
    """the recommendation with its reasons"""
    limit_detail: dict[str, Any]
    products: list[dict[str, Any]]
    """every product of the shelf, ranked, with why (not) and what it costs"""
    hint: dict[str, str]
    assessed_by: str
    created_at: datetime


@dataclass(frozen=True)
class Decision:
    """An officer's decision; an override (outcome differs from the recommendation) needs a second officer."""

    __pydantic_config__ = ROW_SCHEMA
    id: str
    application_id: str
    assessment_id: str
    maker: str
    outcome: str
    recommended: str
    override: bool
    reason: str
    status: str
    """in_force, pending (an override waiting for its checker), rejected, withdrawn or superseded"""
    checker: str | None
    checker_note: str | None
    checked_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Appeal:
    """A farmer's appeal: before a person until a decision closes it."""

    __pydantic_config__ = ROW_SCHEMA
    id: str
    application_id: str
    appealed_outcome: str
    note: str
    filed_by: str
    status: str
    """appealed, under_review, upheld, changed or withdrawn"""
    reviewer: str | None
    review_started_at: datetime | None
    decision_id: str | None
    closed_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Notice:
    """An adverse-action notice exactly as issued."""

    __pydantic_config__ = ROW_SCHEMA
    id: str
    application_id: str
    decision_id: str
    text_zh: str
    text_en: str
    reasons: dict[str, list[str]]
    issued_at: datetime


def _columns(row_type: type) -> str:
    return ", ".join(f.name for f in fields(row_type))


_TABLES = {Application: "loan_applications", Assessment: "credit_assessments", Decision: "credit_decisions",
           Appeal: "credit_appeals", Notice: "credit_notices"}


def _all(conn: psycopg.Connection, row_type: type[T], where: str, params: Sequence[object], order: str = "") -> list[T]:
    query = f"SELECT {_columns(row_type)} FROM ft.{_TABLES[row_type]} WHERE tenant_id = %s AND {where} {order}"
    with conn.cursor(row_factory=class_row(row_type)) as cur:
        return cur.execute(query, params).fetchall()  # type: ignore[arg-type]


def _insert(conn: psycopg.Connection, row_type: type[T], values: dict[str, Any]) -> T:
    names = list(values)
    query = sql.SQL("INSERT INTO ft.{} ({}) VALUES ({}) RETURNING {}").format(
        sql.Identifier(_TABLES[row_type]), sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(sql.Placeholder() * len(names)), sql.SQL(_columns(row_type)))
    args = [Jsonb(v) if isinstance(v, dict | list) and not _is_text_array(k) else v for k, v in values.items()]
    with conn.cursor(row_factory=class_row(row_type)) as cur:
        row = cur.execute(query, args).fetchone()
    assert row is not None
    return row


_TEXT_ARRAYS = {"untrusted_sources", "untrusted_features", "data_scopes", "data_withheld"}


def _is_text_array(column: str) -> bool:
    return column in _TEXT_ARRAYS


# -- applications -----------------------------------------------------------------------------------------------


def insert_application(conn: psycopg.Connection, values: dict[str, Any]) -> Application:
    try:
        with conn.transaction():
            return _insert(conn, Application, {"id": new_id("la"), **values})
    except psycopg.errors.CheckViolation as exc:
        raise CreditInvalid(f"application refused by the database: {exc.diag.constraint_name}") from None


def application(conn: psycopg.Connection, tenant: str, application_id: str, *, lock: bool = False) -> Application:
    rows = _all(conn, Application, "id = %s", (tenant, application_id), "FOR UPDATE" if lock else "")
    if not rows:
        raise CreditNotFound(f"application {application_id!r} not found in tenant {tenant!r}")
    return rows[0]


def set_status(conn: psycopg.Connection, tenant: str, application_id: str, status: Status,
               outcome: Outcome | None = None, *, keep_outcome: bool = False) -> None:
    conn.execute("UPDATE ft.loan_applications SET status = %s, outcome = CASE WHEN %s THEN outcome ELSE %s END,"
                 " updated_at = now() WHERE tenant_id = %s AND id = %s",
                 (status, keep_outcome, outcome, tenant, application_id))


# -- assessments, decisions, appeals, notices ------------------------------------------------------------------


def insert_assessment(conn: psycopg.Connection, tenant: str, values: dict[str, Any]) -> Assessment:
    return _insert(conn, Assessment, {"id": new_id("ca"), "tenant_id": tenant, **values})


def current_assessment(conn: psycopg.Connection, tenant: str, application_id: str) -> Assessment | None:
    rows = _all(conn, Assessment, "application_id = %s", (tenant, application_id), "ORDER BY created_at DESC LIMIT 1")
    return rows[0] if rows else None


def insert_decision(conn: psycopg.Connection, tenant: str, values: dict[str, Any]) -> Decision:
    return _insert(conn, Decision, {"id": new_id("cd"), "tenant_id": tenant, **values})


def decisions(conn: psycopg.Connection, tenant: str, application_id: str) -> list[Decision]:
    return _all(conn, Decision, "application_id = %s", (tenant, application_id), "ORDER BY created_at, id")


def update_decisions(conn: psycopg.Connection, tenant: str, application_id: str, from_status: str,
                     to_status: str) -> None:
    conn.execute("UPDATE ft.credit_decisions SET status = %s WHERE tenant_id = %s AND application_id = %s"
                 " AND status = %s", (to_status, tenant, application_id, from_status))


def check_decision(conn: psycopg.Connection, tenant: str, decision_id: str, status: str, checker: str,
                   note: str) -> Decision:
    with conn.cursor(row_factory=class_row(Decision)) as cur:
        row = cur.execute(f"UPDATE ft.credit_decisions SET status = %s, checker = %s, checker_note = %s,"
                          f" checked_at = now() WHERE tenant_id = %s AND id = %s RETURNING {_columns(Decision)}",
                          (status, checker, note, tenant, decision_id)).fetchone()
    assert row is not None
    return row


def insert_appeal(conn: psycopg.Connection, tenant: str, values: dict[str, Any]) -> Appeal:
    return _insert(conn, Appeal, {"id": new_id("cp"), "tenant_id": tenant, **values})


def appeals(conn: psycopg.Connection, tenant: str, application_id: str) -> list[Appeal]:
    return _all(conn, Appeal, "application_id = %s", (tenant, application_id), "ORDER BY created_at, id")


def update_open_appeal(conn: psycopg.Connection, tenant: str, application_id: str, **changes: Any) -> None:
    assignments = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder()) for k in changes)
    conn.execute(sql.SQL("UPDATE ft.credit_appeals SET {} WHERE tenant_id = %s AND application_id = %s"
                         " AND status IN ('appealed', 'under_review')").format(assignments),
                 [*changes.values(), tenant, application_id])


def insert_notice(conn: psycopg.Connection, tenant: str, values: dict[str, Any]) -> Notice:
    return _insert(conn, Notice, {"id": new_id("an"), "tenant_id": tenant, **values})


def notices(conn: psycopg.Connection, tenant: str, application_id: str) -> list[Notice]:
    return _all(conn, Notice, "application_id = %s", (tenant, application_id), "ORDER BY issued_at, id")
