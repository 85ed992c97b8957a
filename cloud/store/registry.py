"""The registry's SQL: tenants, farms, gateways, devices, their HMAC keys and broker logins.

Every function takes a psycopg connection and leaves committing to its caller (a pool's
``connection()`` block commits on success); functions that write several rows run them in one
``conn.transaction()``.  Tenancy is enforced here, not in the routes: a farm, gateway or device
is found only within the tenant given, so a reference to another tenant's row is refused as
unknown (and row-level security hides other tenants' rows from the services' role anyway).
Keys are stored encrypted (:mod:`cloud.keys`), MQTT passwords only as Mosquitto hashes.

The row types below never carry a key or a password hash (their queries do not select them).

Farmers, fields and claim codes are in their own modules (:mod:`cloud.store.farmers`,
:mod:`cloud.store.fields`, :mod:`cloud.store.claim_codes`); what they share is here: the errors,
:func:`audit` (every change is written to the audit log in the same transaction, when the caller
says who acts: the API and the CLI always do; seeding code such as benchmarks may not),
:func:`update_row` (a partial update that reports what changed), and keyset pagination
(``limit`` and ``after``: the last id of the previous page; ids are compared in byte order, "C").

``farmer_id`` on the reads narrows them to what a farmer's own account may see: the farmer's farms
and what stands on them.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

import psycopg
from psycopg import errors, sql
from psycopg.abc import Query
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from cloud.audit import log as audit_log
from cloud.auth.principal import Principal
from cloud.broker_acl import BrokerAccount, check_username, hash_password
from cloud.keys import OWNER_KINDS, decrypt_key, encrypt_key
from cloud.store.db import ROW_SCHEMA
from contract import topics

FIRST_EPOCH = 1  # the edge agent's default ``gateway.key_epoch``
DEVICE_KINDS = ("node", "bus")
TENURES = ("owned", "leased", "communal")
#: the longest page a list answers
MAX_PAGE = 500
T = TypeVar("T")


class RegistryError(Exception):
    """A registration cannot be done; the message says which row and why."""


class NotFound(RegistryError):
    pass


class Conflict(RegistryError):
    pass


class Invalid(RegistryError):
    pass


@dataclass(frozen=True)
class Tenant:
    """An organisation whose farms, gateways and devices no other tenant can see."""

    __pydantic_config__ = ROW_SCHEMA
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class Farm:
    """A farm of a tenant."""

    __pydantic_config__ = ROW_SCHEMA
    id: str
    tenant_id: str
    name: str
    latitude: float | None
    longitude: float | None
    area_ha: float | None
    crop: str | None
    created_at: datetime
    farmer_id: str | None = None
    """the farmer who works it"""
    tenure: str | None = None
    """owned, leased or communal"""
    village: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Gateway:
    """A gateway: it attests its bus devices' readings and carries its nodes' frames to the cloud."""

    __pydantic_config__ = ROW_SCHEMA
    id: str
    tenant_id: str
    farm_id: str | None
    name: str
    mqtt_username: str | None
    created_at: datetime
    last_seen_at: datetime | None
    key_epoch: int | None
    """the newest key epoch not revoked; null when every key is revoked"""


@dataclass(frozen=True)
class Device:
    """A sensor node (signs its own frames) or a bus device behind a gateway (attested by it)."""

    __pydantic_config__ = ROW_SCHEMA
    id: str
    tenant_id: str
    farm_id: str | None
    gateway_id: str | None
    kind: str
    """node or bus"""
    spec_key: str | None
    """the device spec as model@version"""
    created_at: datetime
    last_seen_at: datetime | None
    key_epoch: int | None
    """nodes only, the newest key epoch not revoked: bus devices are attested with their gateway's key"""
    field_id: str | None = None
    """the field it measures (on its farm)"""
    firmware_version: str | None = None
    """the firmware version it was installed with or last updated to"""
    install_note: str | None = None
    """where it is installed, in words ("north corner, 30 cm deep")"""
    install_latitude: float | None = None
    install_longitude: float | None = None
    installed_at: datetime | None = None


@dataclass(frozen=True)
class KeyEpoch:
    """One epoch of a gateway's or a node's HMAC key (never the key itself)."""

    __pydantic_config__ = ROW_SCHEMA
    owner_kind: str
    owner_id: str
    epoch: int
    created_at: datetime
    revoked_at: datetime | None


def _check_id(what: str, ident: str) -> str:
    if not topics.valid_id(ident):
        raise Invalid(f"{what} id must be 1-64 characters of A-Z a-z 0-9 - _ . ; got {ident!r}")
    return ident


@contextmanager
def _integrity(what: str) -> Iterator[None]:
    """Turn the database's constraint errors into registry errors that name the row."""
    try:
        yield
    except errors.UniqueViolation:
        raise Conflict(f"{what} already exists") from None
    except errors.NotNullViolation as exc:
        raise Invalid(f"{what}: {exc.diag.column_name or 'a value'} is required") from None
    except errors.CheckViolation as exc:
        name = exc.diag.constraint_name or ""
        column = name.removeprefix(f"{exc.diag.table_name}_").removesuffix("_check") or "a value"
        raise Invalid(f"{what}: {column} is not allowed (constraint {name})") from None
    except errors.ForeignKeyViolation as exc:
        raise NotFound(f"{what}: {exc.diag.message_detail or 'refers to a missing row'}") from None


def audit(conn: psycopg.Connection, actor: Principal | None, action: str, target_type: str, target_id: str,
          tenant: str, *, farmer_id: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
    """Write one audit entry for a change, in the caller's transaction (nothing without an ``actor``)."""
    if actor is not None:
        audit_log.record(conn, actor, action, target_type, target_id, farmer_id=farmer_id, tenant_id=tenant,
                         detail={k: jsonable(v) for k, v in (detail or {}).items()})


def jsonable(value: object) -> object:
    """``value`` as JSON can hold it (dates as ISO text, bytes never: they are hashes or keys)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return "(hidden)"
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def update_row(conn: psycopg.Connection, table: str, tenant: str, ident: str, changes: Mapping[str, object],
               what: str, *, touch: bool = True, hidden: frozenset[str] = frozenset()) -> dict[str, object]:
    """Set ``changes`` (column -> value) on row ``ident`` of ``ft.<table>`` of ``tenant``; the columns whose
    value changed as ``{column: [old, new]}`` (``hidden`` columns as ``"changed"``, never their values).

    ``touch`` sets ``updated_at`` when anything changed.  NotFound when the row is not the tenant's."""
    columns = list(changes)
    target = sql.Identifier("ft", table)
    with _integrity(what):
        before = conn.execute(
            sql.SQL("SELECT {} FROM {} WHERE tenant_id = %s AND id = %s FOR UPDATE").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)) if columns else sql.SQL("1"), target),
            (tenant, ident)).fetchone()
        if before is None:
            raise NotFound(f"{what} not found in tenant {tenant!r}")
        # no columns: the row was only checked for existence (``SELECT 1``), and nothing changes
        diff = {c: (old, changes[c]) for c, old in zip(columns, before if columns else (), strict=True)
                if old != _plain(changes[c])}
        if diff:
            assignments: list[sql.Composable] = [sql.SQL("{} = %s").format(sql.Identifier(c)) for c in diff]
            if touch:
                assignments.append(sql.SQL("updated_at = now()"))
            conn.execute(sql.SQL("UPDATE {} SET {} WHERE tenant_id = %s AND id = %s").format(
                target, sql.SQL(", ").join(assignments)), [*(new for _, new in diff.values()), tenant, ident])
    return {c: "changed" if c in hidden else [old, new] for c, (old, new) in diff.items()}


def delete_row(conn: psycopg.Connection, table: str, tenant: str, ident: str, what: str) -> None:
    """Remove row ``ident`` of ``ft.<table>`` of ``tenant``: NotFound when there is none, Conflict while other
    rows refer to it (a farm with fields or devices, a farmer with farms)."""
    try:
        with conn.transaction():
            deleted = conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = %s AND id = %s").format(
                sql.Identifier("ft", table)), (tenant, ident)).rowcount
    except errors.ForeignKeyViolation as exc:
        found = re.search(r'from table "(\w+)"', exc.diag.message_detail or "")
        referrer = found.group(1).replace("_", " ").removesuffix("s") if found else "another record"
        raise Conflict(f"{what} cannot be removed while a {referrer} refers to it") from None
    if not deleted:
        raise NotFound(f"{what} not found in tenant {tenant!r}")


def _plain(value: object) -> object:
    """A value as the database gives it back (a JSON document, not its adapter)."""
    return value.obj if isinstance(value, Jsonb) else value


def check_page(limit: int | None) -> None:
    if limit is not None and not 1 <= limit <= MAX_PAGE + 1:  # one more than a page: to know whether one follows
        raise Invalid(f"limit must be 1-{MAX_PAGE}; got {limit}")


def _paged(query: str, params: Sequence[object], id_column: str, limit: int | None, after: str | None
           ) -> tuple[str, list[object]]:
    """``query`` (ending in its WHERE conditions) with the page's condition, order and limit."""
    check_page(limit)
    params = list(params)
    if after is not None:
        query, params = query + f' AND {id_column} > %s COLLATE "C"', [*params, after]
    query += f' ORDER BY {id_column} COLLATE "C"'
    if limit is not None:
        query, params = query + " LIMIT %s", [*params, limit]
    return query, params


#: farms of one farmer, for the reads narrowed to a farmer's own (``{alias}`` is the row's farm id)
_OF_FARMER = " AND {alias} IN (SELECT f.id FROM ft.farms f WHERE f.tenant_id = %s AND f.farmer_id = %s)"


def _of_farmer(query: str, params: Sequence[object], column: str, tenant: str, farmer_id: str | None
               ) -> tuple[str, list[object]]:
    if farmer_id is None:
        return query, list(params)
    return query + _OF_FARMER.format(alias=column), [*params, tenant, farmer_id]


# -- tenants and farms ---------------------------------------------------------------------------


def register_tenant(conn: psycopg.Connection, tenant_id: str, name: str, *, actor: Principal | None = None) -> Tenant:
    _check_id("tenant", tenant_id)
    with conn.transaction():
        with _integrity(f"tenant {tenant_id!r}"), conn.cursor(row_factory=class_row(Tenant)) as cur:
            cur.execute("INSERT INTO ft.tenants (id, name) VALUES (%s, %s) RETURNING id, name, created_at",
                        (tenant_id, name))
            tenant = _one(cur.fetchone())
        audit(conn, actor, "tenant.created", "tenant", tenant_id, tenant_id, detail={"name": name})
    return tenant


def get_tenant(conn: psycopg.Connection, tenant_id: str) -> Tenant:
    return _found(conn, Tenant, "SELECT id, name, created_at FROM ft.tenants WHERE id = %s", (tenant_id,),
                  f"tenant {tenant_id!r} not found")


def list_tenants(conn: psycopg.Connection) -> list[Tenant]:
    return _all(conn, Tenant, "SELECT id, name, created_at FROM ft.tenants ORDER BY id")


_FARM_COLUMNS = ("id, tenant_id, name, latitude, longitude, area_ha, crop, created_at, farmer_id, tenure, village,"
                 " updated_at")
_FARM = f"SELECT {_FARM_COLUMNS} FROM ft.farms"
#: what a farm's update may change (its id and tenant never change)
FARM_FIELDS = frozenset({"name", "latitude", "longitude", "area_ha", "crop", "farmer_id", "tenure", "village"})


def _check_farm(farm_id: str, values: Mapping[str, object]) -> None:
    tenure = values.get("tenure")
    if tenure is not None and tenure not in TENURES:
        raise Invalid(f"farm {farm_id!r}: tenure must be one of {', '.join(TENURES)}; got {tenure!r}")
    crop = values.get("crop")
    if crop is not None:
        from cloud.store.fields import check_crop

        check_crop(str(crop))


def register_farm(
    conn: psycopg.Connection, tenant: str, farm_id: str, name: str, *, latitude: float | None = None,
    longitude: float | None = None, area_ha: float | None = None, crop: str | None = None,
    farmer_id: str | None = None, tenure: str | None = None, village: str | None = None,
    actor: Principal | None = None,
) -> Farm:
    _check_id("farm", farm_id)
    values = {"name": name, "latitude": latitude, "longitude": longitude, "area_ha": area_ha, "crop": crop,
              "farmer_id": farmer_id, "tenure": tenure, "village": village}
    _check_farm(farm_id, values)
    with conn.transaction():
        get_tenant(conn, tenant)
        if farmer_id is not None:
            _farmer_exists(conn, tenant, farmer_id)
        with _integrity(f"farm {farm_id!r}"), conn.cursor(row_factory=class_row(Farm)) as cur:
            cur.execute(
                "INSERT INTO ft.farms (id, tenant_id, name, latitude, longitude, area_ha, crop, farmer_id, tenure,"
                f" village) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_FARM_COLUMNS}",
                (farm_id, tenant, name, latitude, longitude, area_ha, crop, farmer_id, tenure, village),
            )
            farm = _one(cur.fetchone())
        audit(conn, actor, "farm.created", "farm", farm_id, tenant, farmer_id=farmer_id,
              detail={k: v for k, v in values.items() if v is not None})
    return farm


def update_farm(conn: psycopg.Connection, tenant: str, farm_id: str, changes: Mapping[str, object], *,
                actor: Principal | None) -> Farm:
    """Change some of :data:`FARM_FIELDS`; audited with the old and new values of what changed."""
    return _update_farm(conn, tenant, farm_id, changes, actor)[0]


def _update_farm(conn: psycopg.Connection, tenant: str, farm_id: str, changes: Mapping[str, object],
                 actor: Principal | None) -> tuple[Farm, dict[str, object]]:
    unknown = sorted(set(changes) - FARM_FIELDS)
    if unknown:
        raise Invalid(f"farm {farm_id!r}: cannot change {', '.join(unknown)}")
    _check_farm(farm_id, changes)
    with conn.transaction():
        if changes.get("farmer_id") is not None:
            _farmer_exists(conn, tenant, str(changes["farmer_id"]))
        diff = update_row(conn, "farms", tenant, farm_id, changes, f"farm {farm_id!r}")
        farm = get_farm(conn, tenant, farm_id)
        if diff:
            audit(conn, actor, "farm.updated", "farm", farm_id, tenant, farmer_id=farm.farmer_id, detail=diff)
    return farm, diff


def upsert_farm(conn: psycopg.Connection, tenant: str, farm_id: str, values: Mapping[str, object], *,
                actor: Principal | None) -> str:
    """Register the farm, or bring an existing farm of ``tenant`` to ``values``: "created", "updated" or
    "unchanged".  A farm id of another tenant is refused (Conflict), never overwritten."""
    _check_id("farm", farm_id)
    unknown = sorted(set(values) - FARM_FIELDS)
    if unknown:
        raise Invalid(f"farm {farm_id!r}: unknown fields {', '.join(unknown)}")
    owner = conn.execute("SELECT tenant_id FROM ft.farms WHERE id = %s", (farm_id,)).fetchone()
    if owner is None:
        values = dict(values)
        register_farm(conn, tenant, farm_id, str(values.pop("name")), actor=actor, **values)  # type: ignore[arg-type]
        return "created"
    if owner[0] != tenant:  # visible in platform scope (the CLI) only; a tenant's insert fails on the key below
        raise Conflict(f"farm id {farm_id!r} is used by another tenant")
    return "updated" if _update_farm(conn, tenant, farm_id, values, actor)[1] else "unchanged"


def _farmer_exists(conn: psycopg.Connection, tenant: str, farmer_id: str) -> None:
    found = conn.execute("SELECT 1 FROM ft.farmers WHERE tenant_id = %s AND id = %s", (tenant, farmer_id)).fetchone()
    if found is None:
        raise NotFound(f"farmer {farmer_id!r} not found in tenant {tenant!r}")


def get_farm(conn: psycopg.Connection, tenant: str, farm_id: str, *, farmer_id: str | None = None) -> Farm:
    query, params = _of_farmer(_FARM + " WHERE tenant_id = %s AND id = %s", [tenant, farm_id], "id", tenant, farmer_id)
    return _found(conn, Farm, query, params, f"farm {farm_id!r} not found in tenant {tenant!r}")


def list_farms(conn: psycopg.Connection, tenant: str, *, farmer_id: str | None = None, limit: int | None = None,
               after: str | None = None) -> list[Farm]:
    """The tenant's farms (``farmer_id``: that farmer's), by id; a page of ``limit`` after the id ``after``."""
    get_tenant(conn, tenant)
    query, params = _FARM + " WHERE tenant_id = %s", [tenant]
    if farmer_id is not None:
        query, params = query + " AND farmer_id = %s", [*params, farmer_id]
    return _all(conn, Farm, *_paged(query, params, "id", limit, after))


# -- gateways ------------------------------------------------------------------------------------

_ACTIVE_EPOCH = ("(SELECT max(k.epoch) FROM ft.keys k WHERE k.owner_kind = '{kind}' AND k.owner_id = {alias}.id"
                 " AND k.revoked_at IS NULL) AS key_epoch")
_GATEWAY = ("SELECT g.id, g.tenant_id, g.farm_id, g.name, g.mqtt_username, g.created_at, g.last_seen_at, "
            + _ACTIVE_EPOCH.format(kind="gateway", alias="g") + " FROM ft.gateways g")


def register_gateway(
    conn: psycopg.Connection, tenant: str, gateway_id: str, farm_id: str | None, key: bytes, kek: bytes,
    mqtt_username: str | None, mqtt_password: str | None, *, name: str = "", epoch: int = FIRST_EPOCH,
    actor: Principal | None = None,
) -> Gateway:
    """A gateway with its first key (``epoch``) and, when ``mqtt_password`` is given, its broker
    login (``mqtt_username`` defaults to the gateway id)."""
    _check_id("gateway", gateway_id)
    username = password_hash = None
    if mqtt_password is not None:
        username = _check_username(mqtt_username or gateway_id)
        password_hash = hash_password(mqtt_password)
    blob = encrypt_key(kek, "gateway", gateway_id, epoch, key)
    with conn.transaction():
        get_tenant(conn, tenant)
        if farm_id is not None:
            get_farm(conn, tenant, farm_id)
        if conn.execute("SELECT 1 FROM ft.gateways WHERE id = %s", (gateway_id,)).fetchone() is not None:
            raise Conflict(f"gateway {gateway_id!r} already exists")  # before its username: the likelier mistake
        if username is not None:
            _username_free(conn, username)
        with _integrity(f"gateway {gateway_id!r}"):
            conn.execute(
                "INSERT INTO ft.gateways (id, tenant_id, farm_id, name, mqtt_username, mqtt_password_hash)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (gateway_id, tenant, farm_id, name, username, password_hash),
            )
        _insert_key(conn, tenant, "gateway", gateway_id, epoch, blob)
        audit(conn, actor, "gateway.created", "gateway", gateway_id, tenant,
              detail={"farm_id": farm_id, "name": name, "mqtt_username": username, "key_epoch": epoch})
    return get_gateway(conn, tenant, gateway_id)


#: what a gateway's update may change
GATEWAY_FIELDS = frozenset({"name", "farm_id"})


def update_gateway(conn: psycopg.Connection, tenant: str, gateway_id: str, changes: Mapping[str, object], *,
                   actor: Principal | None) -> Gateway:
    """Rename a gateway or move it to another farm of the tenant (its devices stay where they are)."""
    unknown = sorted(set(changes) - GATEWAY_FIELDS)
    if unknown:
        raise Invalid(f"gateway {gateway_id!r}: cannot change {', '.join(unknown)}")
    with conn.transaction():
        if changes.get("farm_id") is not None:
            get_farm(conn, tenant, str(changes["farm_id"]))
        diff = update_row(conn, "gateways", tenant, gateway_id, changes, f"gateway {gateway_id!r}", touch=False)
        if diff:
            audit(conn, actor, "gateway.updated", "gateway", gateway_id, tenant, detail=diff)
    return get_gateway(conn, tenant, gateway_id)


def get_gateway(conn: psycopg.Connection, tenant: str, gateway_id: str, *, farmer_id: str | None = None) -> Gateway:
    query, params = _of_farmer(_GATEWAY + " WHERE g.tenant_id = %s AND g.id = %s", [tenant, gateway_id],
                               "g.farm_id", tenant, farmer_id)
    return _found(conn, Gateway, query, params, f"gateway {gateway_id!r} not found in tenant {tenant!r}")


def list_gateways(conn: psycopg.Connection, tenant: str, farm_id: str | None = None, *, farmer_id: str | None = None,
                  limit: int | None = None, after: str | None = None) -> list[Gateway]:
    get_tenant(conn, tenant)
    query, params = _of_farmer(_GATEWAY + " WHERE g.tenant_id = %s", [tenant], "g.farm_id", tenant, farmer_id)
    if farm_id is not None:
        get_farm(conn, tenant, farm_id, farmer_id=farmer_id)
        query, params = query + " AND g.farm_id = %s", params + [farm_id]
    return _all(conn, Gateway, *_paged(query, params, "g.id", limit, after))


def set_gateway_password(conn: psycopg.Connection, tenant: str, gateway_id: str, mqtt_password: str) -> Gateway:
    """A new broker password for a gateway (its username stays, or becomes its id)."""
    gateway = get_gateway(conn, tenant, gateway_id)
    username = gateway.mqtt_username or gateway_id
    with conn.transaction():
        if gateway.mqtt_username is None:
            _username_free(conn, username)
        with _integrity(f"MQTT username {username!r}"):
            conn.execute("UPDATE ft.gateways SET mqtt_username = %s, mqtt_password_hash = %s WHERE id = %s",
                         (username, hash_password(mqtt_password), gateway_id))
    return get_gateway(conn, tenant, gateway_id)


# -- devices -------------------------------------------------------------------------------------

_DEVICE = ("SELECT d.id, d.tenant_id, d.farm_id, d.gateway_id, d.kind, d.spec_key, d.created_at, d.last_seen_at, "
           + _ACTIVE_EPOCH.format(kind="device", alias="d")
           + ", d.field_id, d.firmware_version, d.install_note, d.install_latitude, d.install_longitude,"
             " d.installed_at FROM ft.devices d")
#: what a device's update may change (``spec`` is given as model or model@version, stored as spec_key)
DEVICE_FIELDS = frozenset({"spec", "firmware_version", "farm_id", "field_id", "gateway_id", "install_note",
                           "install_latitude", "install_longitude", "installed_at"})
#: the columns whose change moves a device (a ``moved`` event in its maintenance history)
_PLACE = ("farm_id", "field_id", "gateway_id")


def _spec_key(spec_key: str) -> str:
    """The spec's canonical ``model@version``: the spec must be one this installation knows."""
    from device_specs.registry import SpecError, get_spec

    if "/" in spec_key or spec_key.endswith((".yaml", ".yml")):
        raise Invalid(f"spec must be a model or model@version, not a path; got {spec_key!r}")
    try:
        return get_spec(spec_key).key
    except SpecError as exc:
        raise Invalid(f"spec {spec_key!r}: {exc}") from None


def register_device(
    conn: psycopg.Connection, tenant: str, device_id: str, kind: str, farm_id: str | None,
    gateway_id: str | None, spec_key: str | None, key: bytes | None, kek: bytes, *, epoch: int = FIRST_EPOCH,
    actor: Principal | None = None, details: Mapping[str, object] | None = None,
) -> Device:
    """A sensor node (``kind="node"``, signs with its own ``key``) or a bus device behind a gateway
    (``kind="bus"``: no key of its own, a gateway and a spec required).  Without ``farm_id`` the
    device is on its gateway's farm.  ``details``: any of field_id, firmware_version and the install_*
    columns (a field puts the device on the field's farm)."""
    _check_id("device", device_id)
    if kind not in DEVICE_KINDS:
        raise Invalid(f"device kind must be 'node' or 'bus'; got {kind!r}")
    if kind == "node" and key is None:
        raise Invalid(f"device {device_id!r}: a node signs its own messages, so it needs a key")
    if kind == "bus" and key is not None:
        raise Invalid(f"device {device_id!r}: a bus device is attested by its gateway and takes no key")
    if kind == "bus" and (gateway_id is None or spec_key is None):
        raise Invalid(f"device {device_id!r}: a bus device needs its gateway and its spec")
    spec = _spec_key(spec_key) if spec_key is not None else None
    blob = encrypt_key(kek, "device", device_id, epoch, key) if key is not None else None
    with conn.transaction():
        get_tenant(conn, tenant)
        if farm_id is not None:
            get_farm(conn, tenant, farm_id)
        if gateway_id is not None:
            gateway_farm = get_gateway(conn, tenant, gateway_id).farm_id
            farm_id = farm_id if farm_id is not None else gateway_farm
        extra = dict(details or {})
        unknown = sorted(set(extra) - (DEVICE_FIELDS - {"spec", "farm_id", "gateway_id"}))
        if unknown:
            raise Invalid(f"device {device_id!r}: unknown details {', '.join(unknown)}")
        if extra.get("field_id") is not None:
            farm_id = _field_farm(conn, tenant, str(extra["field_id"]), farm_id)
        with _integrity(f"device {device_id!r}"):
            conn.execute(
                "INSERT INTO ft.devices (id, tenant_id, farm_id, gateway_id, kind, spec_key)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (device_id, tenant, farm_id, gateway_id, kind, spec),
            )
        if extra:
            update_row(conn, "devices", tenant, device_id, extra, f"device {device_id!r}", touch=False)
        if blob is not None:
            _insert_key(conn, tenant, "device", device_id, epoch, blob)
        audit(conn, actor, "device.created", "device", device_id, tenant,
              detail={"kind": kind, "farm_id": farm_id, "gateway_id": gateway_id, "spec_key": spec,
                      "key_epoch": epoch if blob is not None else None} | extra)
    return get_device(conn, tenant, device_id)


def _field_farm(conn: psycopg.Connection, tenant: str, field_id: str, farm_id: str | None) -> str:
    """The farm of ``field_id``; Invalid when ``farm_id`` is given and is another farm."""
    row = conn.execute("SELECT farm_id FROM ft.fields WHERE tenant_id = %s AND id = %s", (tenant, field_id)).fetchone()
    if row is None:
        raise NotFound(f"field {field_id!r} not found in tenant {tenant!r}")
    if farm_id is not None and farm_id != row[0]:
        raise Invalid(f"field {field_id!r} is on farm {row[0]!r}, not on farm {farm_id!r}")
    return str(row[0])


def update_device(conn: psycopg.Connection, tenant: str, device_id: str, changes: Mapping[str, object], *,
                  actor: Principal | None, event_detail: Mapping[str, object] | None = None) -> Device:
    """Change some of :data:`DEVICE_FIELDS`.  A new field puts the device on that field's farm; a new farm
    without a field takes it off its field.  A change of farm, field or gateway is a ``moved`` event in the
    device's maintenance history (``detail.from`` and ``detail.to``, plus ``event_detail``), besides the
    audit entry."""
    from cloud.store.device_events import record_event

    unknown = sorted(set(changes) - DEVICE_FIELDS)
    if unknown:
        raise Invalid(f"device {device_id!r}: cannot change {', '.join(unknown)}")
    values = dict(changes)
    if "spec" in values:
        spec = values.pop("spec")
        values["spec_key"] = _spec_key(str(spec)) if spec is not None else None
    with conn.transaction():
        device = get_device(conn, tenant, device_id)
        if values.get("field_id") is not None:
            farm = values.get("farm_id")
            values["farm_id"] = _field_farm(conn, tenant, str(values["field_id"]), None if farm is None else str(farm))
        elif "farm_id" in values and values["farm_id"] != device.farm_id and "field_id" not in values:
            values["field_id"] = None  # a field belongs to one farm: leaving the farm leaves the field
        if values.get("farm_id") is not None:
            get_farm(conn, tenant, str(values["farm_id"]))
        if values.get("gateway_id") is not None:
            get_gateway(conn, tenant, str(values["gateway_id"]))
        if device.kind == "bus" and "gateway_id" in values and values["gateway_id"] is None:
            raise Invalid(f"device {device_id!r}: a bus device needs its gateway")
        diff = update_row(conn, "devices", tenant, device_id, values, f"device {device_id!r}", touch=False)
        moved = {c: diff[c] for c in _PLACE if c in diff}
        if moved:
            place_from = {c: getattr(device, c) for c in _PLACE}
            place_to = place_from | {c: values[c] for c in _PLACE if c in values}
            record_event(conn, tenant, device_id, "moved",
                         {"from": place_from, "to": place_to} | dict(event_detail or {}),
                         actor.id if actor is not None else "system")
        if diff:
            audit(conn, actor, "device.updated", "device", device_id, tenant, detail=diff)
    return get_device(conn, tenant, device_id)


def get_device(conn: psycopg.Connection, tenant: str, device_id: str, *, farmer_id: str | None = None) -> Device:
    query, params = _of_farmer(_DEVICE + " WHERE d.tenant_id = %s AND d.id = %s", [tenant, device_id], "d.farm_id",
                               tenant, farmer_id)
    return _found(conn, Device, query, params, f"device {device_id!r} not found in tenant {tenant!r}")


def list_devices(
    conn: psycopg.Connection, tenant: str, farm_id: str | None = None, gateway_id: str | None = None, *,
    field_id: str | None = None, farmer_id: str | None = None, limit: int | None = None, after: str | None = None,
) -> list[Device]:
    get_tenant(conn, tenant)
    query, params = _of_farmer(_DEVICE + " WHERE d.tenant_id = %s", [tenant], "d.farm_id", tenant, farmer_id)
    if farm_id is not None:
        get_farm(conn, tenant, farm_id, farmer_id=farmer_id)
        query, params = query + " AND d.farm_id = %s", params + [farm_id]
    if gateway_id is not None:
        get_gateway(conn, tenant, gateway_id, farmer_id=farmer_id)
        query, params = query + " AND d.gateway_id = %s", params + [gateway_id]
    if field_id is not None:
        _field_farm(conn, tenant, field_id, None)
        query, params = query + " AND d.field_id = %s", params + [field_id]
    return _all(conn, Device, *_paged(query, params, "d.id", limit, after))


# -- keys ----------------------------------------------------------------------------------------


def _insert_key(conn: psycopg.Connection, tenant: str, kind: str, owner_id: str, epoch: int, blob: bytes) -> None:
    with _integrity(f"{kind} {owner_id!r} key epoch {epoch}"):
        conn.execute("INSERT INTO ft.keys (tenant_id, owner_kind, owner_id, epoch, key_enc)"
                     " VALUES (%s, %s, %s, %s, %s)", (tenant, kind, owner_id, epoch, blob))


def _check_owner_kind(owner_kind: str) -> None:
    if owner_kind not in OWNER_KINDS:
        raise Invalid(f"owner kind must be one of {', '.join(OWNER_KINDS)}; got {owner_kind!r}")


def _lock_owner(conn: psycopg.Connection, tenant: str, owner_kind: str, owner_id: str) -> None:
    """Lock the owner's row, so that two rotations cannot pick the same epoch."""
    _check_owner_kind(owner_kind)
    if owner_kind == "gateway":
        query = "SELECT 'gateway' FROM ft.gateways WHERE tenant_id = %s AND id = %s FOR UPDATE"
    else:
        query = "SELECT kind FROM ft.devices WHERE tenant_id = %s AND id = %s FOR UPDATE"
    row = conn.execute(query, (tenant, owner_id)).fetchone()
    if row is None:
        raise NotFound(f"{owner_kind} {owner_id!r} not found in tenant {tenant!r}")
    if row[0] == "bus":
        raise Invalid(f"device {owner_id!r} is a bus device: it has no key of its own (its gateway signs)")


def rotate_key(
    conn: psycopg.Connection, tenant: str, owner_kind: str, owner_id: str, key: bytes, kek: bytes
) -> int:
    """Store ``key`` as the owner's next epoch; returns it.  Older epochs stay valid (messages
    signed before the switch are still in outboxes) until :func:`revoke_key`."""
    with conn.transaction():
        _lock_owner(conn, tenant, owner_kind, owner_id)
        row = conn.execute("SELECT max(epoch) FROM ft.keys WHERE owner_kind = %s AND owner_id = %s",
                           (owner_kind, owner_id)).fetchone()
        epoch = FIRST_EPOCH if row is None or row[0] is None else row[0] + 1
        _insert_key(conn, tenant, owner_kind, owner_id, epoch, encrypt_key(kek, owner_kind, owner_id, epoch, key))
    return epoch


def revoke_key(conn: psycopg.Connection, tenant: str, owner_kind: str, owner_id: str, epoch: int) -> KeyEpoch:
    """Mark one epoch revoked (kept, so old frames stay explainable); revoking twice keeps the first time."""
    _check_owner_kind(owner_kind)
    return _found(
        conn, KeyEpoch,
        "UPDATE ft.keys SET revoked_at = coalesce(revoked_at, now())"
        " WHERE tenant_id = %s AND owner_kind = %s AND owner_id = %s AND epoch = %s"
        " RETURNING owner_kind, owner_id, epoch, created_at, revoked_at",
        (tenant, owner_kind, owner_id, epoch),
        f"{owner_kind} {owner_id!r} has no key epoch {epoch} in tenant {tenant!r}",
    )


def list_keys(conn: psycopg.Connection, tenant: str, owner_kind: str, owner_id: str) -> list[KeyEpoch]:
    """The owner's key epochs (never the keys)."""
    return _all(
        conn, KeyEpoch,
        "SELECT owner_kind, owner_id, epoch, created_at, revoked_at FROM ft.keys"
        " WHERE tenant_id = %s AND owner_kind = %s AND owner_id = %s ORDER BY epoch",
        (tenant, owner_kind, owner_id),
    )


def key_for(
    conn: psycopg.Connection, owner_kind: str, owner_id: str, epoch: int, kek: bytes, *, tenant: str | None = None
) -> bytes | None:
    """The HMAC key of (owner, epoch), or None when unknown, revoked, or (with ``tenant``) another
    tenant's.  Raises :class:`cloud.keys.KeyCryptoError` when the stored key cannot be decrypted
    (the KEK is wrong: an operator's error, not the sender's).  Per message, use :class:`KeyCache`."""
    row = conn.execute(
        "SELECT tenant_id, key_enc FROM ft.keys"
        " WHERE owner_kind = %s AND owner_id = %s AND epoch = %s AND revoked_at IS NULL",
        (owner_kind, owner_id, epoch),
    ).fetchone()
    if row is None or (tenant is not None and row[0] != tenant):
        return None
    return decrypt_key(kek, owner_kind, owner_id, epoch, bytes(row[1]))


class KeyCache:
    """:func:`key_for` behind a bounded, thread-safe cache.

    Found keys are kept ``ttl_s`` and misses ``miss_ttl_s`` (so a flood of messages naming unknown
    devices costs one query per id and period, and a newly registered device is seen soon).  A
    revocation therefore takes effect within ``ttl_s``; :meth:`forget` makes it immediate.
    """

    def __init__(self, kek: bytes, *, ttl_s: float = 60.0, miss_ttl_s: float = 5.0, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._kek = kek
        self._ttl, self._miss_ttl = ttl_s, miss_ttl_s
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str, int, str | None], tuple[float, bytes | None]] = OrderedDict()
        self._lock = threading.Lock()
        self.lookups = 0  # database queries made: how well the cache works

    def get(self, conn: psycopg.Connection, owner_kind: str, owner_id: str, epoch: int, *,
            tenant: str | None = None) -> bytes | None:
        entry_key = (owner_kind, owner_id, epoch, tenant)
        now = self._clock()
        with self._lock:
            hit = self._entries.get(entry_key)
            if hit is not None and hit[0] > now:
                self._entries.move_to_end(entry_key)
                return hit[1]
        key = key_for(conn, owner_kind, owner_id, epoch, self._kek, tenant=tenant)
        with self._lock:
            self.lookups += 1
            self._entries[entry_key] = (now + (self._ttl if key is not None else self._miss_ttl), key)
            self._entries.move_to_end(entry_key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return key

    def forget(self, owner_kind: str, owner_id: str) -> None:
        """Drop every cached epoch of one owner (after a rotation or revocation in this process)."""
        with self._lock:
            for entry_key in [k for k in self._entries if k[0] == owner_kind and k[1] == owner_id]:
                del self._entries[entry_key]


# -- broker logins -------------------------------------------------------------------------------


def _check_username(username: str) -> str:
    try:
        return check_username(username)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def _username_free(conn: psycopg.Connection, username: str) -> None:
    taken = conn.execute(
        "SELECT 'gateway ' || id FROM ft.gateways WHERE mqtt_username = %s"
        " UNION ALL SELECT role || ' service' FROM ft.service_accounts WHERE username = %s",
        (username, username),
    ).fetchone()
    if taken is not None:
        raise Conflict(f"MQTT username {username!r} is already used by {taken[0]}")


def register_service_account(conn: psycopg.Connection, username: str, password: str, role: str = "ingest") -> None:
    """A broker login for a cloud service (the ingest workers share one); registering an existing
    username again replaces its password."""
    _check_username(username)
    with conn.transaction():
        if conn.execute("SELECT 1 FROM ft.gateways WHERE mqtt_username = %s", (username,)).fetchone():
            raise Conflict(f"MQTT username {username!r} belongs to a gateway")
        with _integrity(f"service account {username!r}"):
            conn.execute(
                "INSERT INTO ft.service_accounts (username, role, password_hash) VALUES (%s, %s, %s)"
                " ON CONFLICT (username) DO UPDATE SET role = excluded.role, password_hash = excluded.password_hash",
                (username, role, hash_password(password)),
            )


def broker_accounts(conn: psycopg.Connection) -> list[BrokerAccount]:
    """Every broker login: services, and gateways that have a password and a key not revoked (a
    gateway whose every key is revoked cannot sign, and loses the broker too)."""
    services = conn.execute("SELECT username, password_hash, role FROM ft.service_accounts ORDER BY username")
    accounts = [BrokerAccount(username=u, password_hash=h, role=r) for u, h, r in services.fetchall()]
    gateways = conn.execute(
        "SELECT g.mqtt_username, g.mqtt_password_hash, g.tenant_id, g.id FROM ft.gateways g"
        " WHERE g.mqtt_password_hash IS NOT NULL AND EXISTS (SELECT 1 FROM ft.keys k"
        "   WHERE k.owner_kind = 'gateway' AND k.owner_id = g.id AND k.revoked_at IS NULL)"
        " ORDER BY g.tenant_id, g.id"
    )
    accounts += [BrokerAccount(username=u, password_hash=h, role="gateway", tenant_id=t, gateway_id=g)
                 for u, h, t, g in gateways.fetchall()]
    return accounts


def _found(conn: psycopg.Connection, row_type: type[T], query: Query, params: Sequence[object], missing: str) -> T:
    """The row ``query`` finds, as ``row_type``; NotFound saying ``missing`` when there is none."""
    with conn.cursor(row_factory=class_row(row_type)) as cur:
        row = cur.execute(query, params).fetchone()
    if row is None:
        raise NotFound(missing)
    return row


def _all(conn: psycopg.Connection, row_type: type[T], query: Query, params: Sequence[object] = ()) -> list[T]:
    """Every row ``query`` finds, as ``row_type``."""
    with conn.cursor(row_factory=class_row(row_type)) as cur:
        return cur.execute(query, params).fetchall()


def _one(row: T | None) -> T:
    if row is None:  # an INSERT ... RETURNING always returns its row; this guards the type
        raise RegistryError("the database returned no row")
    return row
