"""Fields of a farm: area, this season's crop and dates, and where the field is (a point or a polygon).

Crops are names from :data:`CROPS` (lower case, ``_`` between words), so that the registry, the CSV
import and the credit features (rural_credit.features.agronomy, whose crops must all be here: a test
checks it) speak of the same crop by the same name.  A crop the list lacks is added here, in one place.

A season is named ``<year>-<name>`` ("2026-long-rains", "2026-spring") with optional start and end dates.
A location is a point (latitude, longitude) and/or a small GeoJSON ``Polygon`` (RFC 7946: positions are
[longitude, latitude]; each ring closed, at least four positions; at most :data:`MAX_POSITIONS` in all).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from cloud.auth.principal import Principal
from cloud.store.db import ROW_SCHEMA
from cloud.store.registry import (
    Invalid,
    _all,
    _check_id,
    _found,
    _integrity,
    _of_farmer,
    _one,
    _paged,
    audit,
    get_farm,
    get_tenant,
    update_row,
)

CROPS: frozenset[str] = frozenset({
    "banana", "barley", "beans", "cabbage", "cashew", "cassava", "chickpea", "cocoa", "coffee", "cotton", "cowpea",
    "groundnut", "kale", "maize", "mango", "millet", "onion", "pigeon_pea", "potato", "pyrethrum", "rice", "sesame",
    "sorghum", "soybean", "sugarcane", "sunflower", "sweet_potato", "tea", "tobacco", "tomato", "wheat", "yam",
    "pasture", "fallow", "mixed",
})
SEASON = re.compile(r"^[0-9]{4}-[a-z0-9-]{1,32}$")
MAX_POSITIONS = 500
#: what a field's update may change (its id, tenant and farm never change)
FIELD_FIELDS = frozenset({"name", "area_ha", "crop", "season", "season_start", "season_end", "latitude", "longitude",
                          "boundary"})


@dataclass(frozen=True)
class Field:
    """A field of a farm, with this season's crop."""

    __pydantic_config__ = ROW_SCHEMA
    id: str
    tenant_id: str
    farm_id: str
    name: str
    area_ha: float | None
    crop: str | None
    """one of the registry's crop names (maize, sweet_potato, ...)"""
    season: str | None
    """<year>-<name>, e.g. 2026-long-rains"""
    season_start: date | None
    season_end: date | None
    latitude: float | None
    longitude: float | None
    boundary: dict[str, Any] | None
    """a GeoJSON Polygon ([longitude, latitude] positions)"""
    created_at: datetime
    updated_at: datetime


_COLUMNS = ("id, tenant_id, farm_id, name, area_ha, crop, season, season_start, season_end, latitude, longitude,"
            " boundary, created_at, updated_at")
_FIELD = f"SELECT {_COLUMNS} FROM ft.fields"


def check_crop(crop: str) -> str:
    if crop not in CROPS:
        raise Invalid(f"crop: unknown crop {crop!r} (known: {', '.join(sorted(CROPS))})")
    return crop


def check_season(season: str) -> str:
    if not SEASON.match(season):
        raise Invalid(f"season: '<year>-<name>' in lower case, e.g. '2026-long-rains'; got {season!r}")
    return season


def check_boundary(boundary: Mapping[str, Any]) -> dict[str, Any]:
    """``boundary`` if it is a small, valid GeoJSON Polygon; Invalid naming what is wrong."""
    if boundary.get("type") != "Polygon":
        raise Invalid(f"boundary: a GeoJSON Polygon is expected; got type {boundary.get('type')!r}")
    extra = sorted(set(boundary) - {"type", "coordinates"})
    if extra:
        raise Invalid(f"boundary: unexpected members {', '.join(extra)}")
    rings = boundary.get("coordinates")
    if not isinstance(rings, list) or not rings:
        raise Invalid("boundary: coordinates must be a list of rings")
    total = 0
    for r, ring in enumerate(rings):
        if not isinstance(ring, list) or len(ring) < 4:
            raise Invalid(f"boundary: ring {r} needs at least 4 positions (the first repeated last)")
        for p, position in enumerate(ring):
            if (not isinstance(position, list) or len(position) not in (2, 3)
                    or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in position)):
                raise Invalid(f"boundary: ring {r} position {p} must be [longitude, latitude]")
            if not (-180 <= position[0] <= 180 and -90 <= position[1] <= 90):
                raise Invalid(f"boundary: ring {r} position {p} is out of range: {position} ([longitude, latitude])")
        if ring[0] != ring[-1]:
            raise Invalid(f"boundary: ring {r} is not closed (its last position must repeat its first)")
        total += len(ring)
    if total > MAX_POSITIONS:
        raise Invalid(f"boundary: at most {MAX_POSITIONS} positions; got {total}")
    return {"type": "Polygon", "coordinates": rings}


def _checked(field_id: str, values: Mapping[str, object]) -> dict[str, object]:
    unknown = sorted(set(values) - FIELD_FIELDS)
    if unknown:
        raise Invalid(f"field {field_id!r}: unknown fields {', '.join(unknown)}")
    columns = dict(values)
    if columns.get("crop") is not None:
        check_crop(str(columns["crop"]))
    if columns.get("season") is not None:
        check_season(str(columns["season"]))
    if columns.get("boundary") is not None:
        columns["boundary"] = Jsonb(check_boundary(columns["boundary"]))  # type: ignore[arg-type]
    return columns


def register_field(conn: psycopg.Connection, tenant: str, field_id: str, farm_id: str,
                   values: Mapping[str, object], *, actor: Principal | None) -> Field:
    """A new field of ``farm_id`` from ``values`` (:data:`FIELD_FIELDS`; name required)."""
    _check_id("field", field_id)
    columns = _checked(field_id, values)
    if not str(columns.get("name") or "").strip():
        raise Invalid(f"field {field_id!r}: name is required")
    with conn.transaction():
        farm = get_farm(conn, tenant, farm_id)
        names = ["id", "tenant_id", "farm_id", *columns]
        with _integrity(f"field {field_id!r}"), conn.cursor(row_factory=class_row(Field)) as cur:
            cur.execute(f"INSERT INTO ft.fields ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})"
                        f" RETURNING {_COLUMNS}", [field_id, tenant, farm_id, *columns.values()])
            field = _one(cur.fetchone())
        audit(conn, actor, "field.created", "field", field_id, tenant, farmer_id=farm.farmer_id,
              detail={"farm_id": farm_id} | {k: v for k, v in values.items() if v is not None})
    return field


def update_field(conn: psycopg.Connection, tenant: str, field_id: str, changes: Mapping[str, object], *,
                 actor: Principal | None) -> Field:
    """Change some of :data:`FIELD_FIELDS` (a new season's crop and dates, a corrected boundary, ...)."""
    columns = _checked(field_id, changes)
    if "name" in columns and not str(columns["name"] or "").strip():
        raise Invalid(f"field {field_id!r}: name is required")
    with conn.transaction():
        current = get_field(conn, tenant, field_id)
        diff = update_row(conn, "fields", tenant, field_id, columns, f"field {field_id!r}",
                          hidden=frozenset({"boundary"}))
        if diff:
            farm = get_farm(conn, tenant, current.farm_id)
            audit(conn, actor, "field.updated", "field", field_id, tenant, farmer_id=farm.farmer_id,
                  detail=diff)
    return get_field(conn, tenant, field_id)


def get_field(conn: psycopg.Connection, tenant: str, field_id: str, *, farmer_id: str | None = None) -> Field:
    query, params = _of_farmer(_FIELD + " WHERE tenant_id = %s AND id = %s", [tenant, field_id], "farm_id", tenant,
                               farmer_id)
    return _found(conn, Field, query, params, f"field {field_id!r} not found in tenant {tenant!r}")


def list_fields(conn: psycopg.Connection, tenant: str, *, farm_id: str | None = None, crop: str | None = None,
                season: str | None = None, farmer_id: str | None = None, limit: int | None = None,
                after: str | None = None) -> list[Field]:
    """The tenant's fields by id, of one farm, crop or season if given (``farmer_id``: on that farmer's farms)."""
    get_tenant(conn, tenant)
    query, params = _of_farmer(_FIELD + " WHERE tenant_id = %s", [tenant], "farm_id", tenant, farmer_id)
    if farm_id is not None:
        get_farm(conn, tenant, farm_id, farmer_id=farmer_id)
    for column, value in (("farm_id", farm_id), ("crop", crop), ("season", season)):
        if value is not None:
            query, params = f"{query} AND {column} = %s", [*params, value]
    return _all(conn, Field, *_paged(query, params, "id", limit, after))
