"""Farmers of a tenant: who works the farms, how to reach them, and whether a person is registered already.

A farmer's national id is never stored.  The registry keeps HMAC-SHA256 of the normalised id under a key
derived from the KEK (which lives outside the database) with the tenant id as salt, so the same id gives
the same hash within a tenant (the registry can refuse a second record of one person, and a clerk can
find a farmer by id card) and different hashes in two tenants (records cannot be linked across tenants),
and a dump of the database alone cannot be searched for an id: national ids are short enough that a
plain hash would be reversed by trying them all.  Changing the KEK therefore changes every hash: a KEK
rotation must re-hash from the ids on file or drop the hashes (they are for matching, nothing else).

Sex and birth year are optional and kept only with the farmer's consent (``demographics_consent``); they
serve fairness monitoring by group (credit decisions compared across groups), never a decision itself.
Withdrawing the consent erases both.

Ids are unique within a tenant (a co-operative's member numbers), not across tenants.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg.rows import class_row

from cloud.auth.principal import Principal
from cloud.store.db import ROW_SCHEMA
from cloud.store.registry import (
    Conflict,
    Invalid,
    _all,
    _check_id,
    _found,
    _integrity,
    _one,
    _paged,
    audit,
    get_tenant,
    update_row,
)

SEXES = ("female", "male", "other")
#: the fields an update may change; ``national_id`` and ``demographics_consent`` are inputs, not columns
FARMER_FIELDS = frozenset({"name", "phone", "village", "national_id", "sex", "birth_year", "demographics_consent"})
_HASH_INFO = b"fieldtrust national-id v1"
_PHONE_JUNK = re.compile(r"[\s().-]")


@dataclass(frozen=True)
class Farmer:
    """A farmer of a tenant (never the national id or its hash)."""

    __pydantic_config__ = ROW_SCHEMA
    id: str
    tenant_id: str
    name: str
    phone: str | None
    village: str | None
    has_national_id: bool
    """whether a national id is on file (only its keyed hash is kept, for matching)"""
    sex: str | None
    """female, male or other; only with the farmer's consent"""
    birth_year: int | None
    """only with the farmer's consent"""
    demographics_consented_at: datetime | None
    """when the farmer consented to sex and birth year being kept (for fairness monitoring by group)"""
    created_at: datetime
    updated_at: datetime


_COLUMNS = ("id, tenant_id, name, phone, village, national_id_hash IS NOT NULL AS has_national_id, sex, birth_year,"
            " demographics_consented_at, created_at, updated_at")
_FARMER = f"SELECT {_COLUMNS} FROM ft.farmers"


def national_id_hash(kek: bytes, tenant: str, national_id: str) -> bytes:
    """The stored form of a national id: HMAC-SHA256 keyed from the KEK, salted with the tenant.

    The id is normalised first (spaces, dots and hyphens dropped, upper case), so "12 345-678" and
    "12345678" match."""
    normalised = re.sub(r"[\s.-]", "", national_id).upper()
    if not 4 <= len(normalised) <= 32 or not normalised.isalnum():
        raise Invalid("national_id: must be 4-32 letters or digits (spaces, dots and hyphens are ignored)")
    if len(kek) != 32:
        raise Invalid(f"national ids are kept only as keyed hashes: the KEK must be 32 bytes; got {len(kek)}")
    key = hmac.new(kek, _HASH_INFO, hashlib.sha256).digest()  # never the KEK itself: one key per purpose
    return hmac.new(key, tenant.encode() + b"\x00" + normalised.encode(), hashlib.sha256).digest()


def normalise_phone(phone: str) -> str:
    """Digits with an optional leading +, without spaces, hyphens, dots or brackets."""
    cleaned = _PHONE_JUNK.sub("", phone)
    if not re.fullmatch(r"\+?[0-9]{6,20}", cleaned):
        raise Invalid(f"phone: 6-20 digits, optionally after a +; got {phone!r}")
    return cleaned


def _columns(tenant: str, farmer_id: str, values: Mapping[str, object], kek: bytes | None,
             consented: datetime | None) -> dict[str, object]:
    """The table's columns for the input ``values`` (a full record or the fields of an update)."""
    unknown = sorted(set(values) - FARMER_FIELDS)
    if unknown:
        raise Invalid(f"farmer {farmer_id!r}: unknown fields {', '.join(unknown)}")
    columns = {k: v for k, v in values.items() if k in ("name", "village", "sex", "birth_year")}
    if "name" in columns and not str(columns["name"] or "").strip():
        raise Invalid(f"farmer {farmer_id!r}: name is required")
    if values.get("phone") is not None:
        columns["phone"] = normalise_phone(str(values["phone"]))
    elif "phone" in values:
        columns["phone"] = None
    if values.get("national_id") is not None:
        if kek is None:
            raise Invalid("national_id: cannot be kept without the KEK (FIELDTRUST_KEK)")
        columns["national_id_hash"] = national_id_hash(kek, tenant, str(values["national_id"]))
    elif "national_id" in values:
        columns["national_id_hash"] = None
    if values.get("sex") is not None and values["sex"] not in SEXES:
        raise Invalid(f"sex: one of {', '.join(SEXES)}; got {values['sex']!r}")
    consent = values.get("demographics_consent")
    demographics = columns.get("sex") is not None or columns.get("birth_year") is not None
    if consent is True and consented is None:
        columns["demographics_consented_at"] = datetime.now(UTC)
    elif demographics and (consent is False or consented is None):
        raise Invalid(f"farmer {farmer_id!r}: sex and birth year are kept only with the farmer's consent "
                      "(demographics_consent: true)")
    elif consent is False and consented is not None:  # withdrawn: what was kept under it goes with it
        columns |= {"sex": None, "birth_year": None, "demographics_consented_at": None}
    return columns


def register_farmer(conn: psycopg.Connection, tenant: str, farmer_id: str, values: Mapping[str, object], *,
                    actor: Principal | None, kek: bytes | None = None) -> Farmer:
    """A new farmer from ``values`` (:data:`FARMER_FIELDS`; name required).  ``kek`` is needed only when a
    national id is given.  Conflict when the id, or the national id, is registered already."""
    _check_id("farmer", farmer_id)
    columns = _columns(tenant, farmer_id, values, kek, None)
    if "name" not in columns:
        raise Invalid(f"farmer {farmer_id!r}: name is required")
    with conn.transaction():
        get_tenant(conn, tenant)
        _national_id_free(conn, tenant, farmer_id, columns.get("national_id_hash"))
        names = ["id", "tenant_id", *columns]
        with _integrity(f"farmer {farmer_id!r}"), conn.cursor(row_factory=class_row(Farmer)) as cur:
            cur.execute(f"INSERT INTO ft.farmers ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})"
                        f" RETURNING {_COLUMNS}", [farmer_id, tenant, *columns.values()])
            farmer = _one(cur.fetchone())
        audit(conn, actor, "farmer.created", "farmer", farmer_id, tenant, farmer_id=farmer_id,
              detail={k: ("(set)" if k == "national_id_hash" else v) for k, v in columns.items() if v is not None})
    return farmer


def update_farmer(conn: psycopg.Connection, tenant: str, farmer_id: str, changes: Mapping[str, object], *,
                  actor: Principal | None, kek: bytes | None = None) -> Farmer:
    """Change some of :data:`FARMER_FIELDS` (None clears an optional one); audited with what changed (the
    national id as "changed", never a value)."""
    return _update_farmer(conn, tenant, farmer_id, changes, actor, kek)[0]


def upsert_farmer(conn: psycopg.Connection, tenant: str, farmer_id: str, values: Mapping[str, object], *,
                  actor: Principal | None, kek: bytes | None = None) -> str:
    """Register the farmer or bring the record to ``values``: "created", "updated" or "unchanged"."""
    exists = conn.execute("SELECT 1 FROM ft.farmers WHERE tenant_id = %s AND id = %s", (tenant, farmer_id)).fetchone()
    if exists is None:
        register_farmer(conn, tenant, farmer_id, values, actor=actor, kek=kek)
        return "created"
    return "updated" if _update_farmer(conn, tenant, farmer_id, values, actor, kek)[1] else "unchanged"


def _update_farmer(conn: psycopg.Connection, tenant: str, farmer_id: str, changes: Mapping[str, object],
                   actor: Principal | None, kek: bytes | None) -> tuple[Farmer, dict[str, object]]:
    with conn.transaction():
        current = get_farmer(conn, tenant, farmer_id)
        columns = _columns(tenant, farmer_id, changes, kek, current.demographics_consented_at)
        if "name" in columns and columns["name"] is None:
            raise Invalid(f"farmer {farmer_id!r}: name is required")
        _national_id_free(conn, tenant, farmer_id, columns.get("national_id_hash"))
        diff = update_row(conn, "farmers", tenant, farmer_id, columns, f"farmer {farmer_id!r}",
                          hidden=frozenset({"national_id_hash"}))
        if diff:
            audit(conn, actor, "farmer.updated", "farmer", farmer_id, tenant, farmer_id=farmer_id, detail=diff)
    return get_farmer(conn, tenant, farmer_id), diff


def _national_id_free(conn: psycopg.Connection, tenant: str, farmer_id: str, hashed: object) -> None:
    if hashed is None:
        return
    row = conn.execute("SELECT id FROM ft.farmers WHERE tenant_id = %s AND national_id_hash = %s AND id <> %s",
                       (tenant, hashed, farmer_id)).fetchone()
    if row is not None:
        raise Conflict(f"farmer {farmer_id!r}: this national id is already registered, as farmer {row[0]!r}")


def get_farmer(conn: psycopg.Connection, tenant: str, farmer_id: str) -> Farmer:
    return _found(conn, Farmer, _FARMER + " WHERE tenant_id = %s AND id = %s", (tenant, farmer_id),
                  f"farmer {farmer_id!r} not found in tenant {tenant!r}")


def list_farmers(conn: psycopg.Connection, tenant: str, *, village: str | None = None,
                 national_id_hashed: bytes | None = None, only: str | None = None, limit: int | None = None,
                 after: str | None = None) -> list[Farmer]:
    """The tenant's farmers by id (``only``: that one farmer's record, for a farmer's own account); a page of
    ``limit`` after the id ``after``.  ``national_id_hashed`` (:func:`national_id_hash`) finds a person."""
    get_tenant(conn, tenant)
    query, params = _FARMER + " WHERE tenant_id = %s", list[object]([tenant])
    for condition, value in (("village = %s", village), ("national_id_hash = %s", national_id_hashed),
                             ("id = %s", only)):
        if value is not None:
            query, params = f"{query} AND {condition}", [*params, value]
    return _all(conn, Farmer, *_paged(query, params, "id", limit, after))
