"""The registry's SQL: tenants, farms, gateways, devices, their HMAC keys and broker logins.

Every function takes a psycopg connection and leaves committing to its caller (a pool's
``connection()`` block commits on success); functions that write several rows run them in one
``conn.transaction()``.  Tenancy is enforced here, not in the routes: a farm, gateway or device
is found only within the tenant given, so a reference to another tenant's row is refused as
unknown.  Keys are stored encrypted (:mod:`cloud.keys`), MQTT passwords only as Mosquitto hashes.

The row types below never carry a key or a password hash (their queries do not select them):
the API answers with them as they are, and documents their fields from their docstrings.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import psycopg
from psycopg import errors
from psycopg.abc import Query
from psycopg.rows import class_row

from cloud.broker_acl import BrokerAccount, check_username, hash_password
from cloud.keys import OWNER_KINDS, decrypt_key, encrypt_key
from cloud.store.db import ROW_SCHEMA
from contract import topics

FIRST_EPOCH = 1  # the edge agent's default ``gateway.key_epoch``
DEVICE_KINDS = ("node", "bus")
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


# -- tenants and farms ---------------------------------------------------------------------------


def register_tenant(conn: psycopg.Connection, tenant_id: str, name: str) -> Tenant:
    _check_id("tenant", tenant_id)
    with _integrity(f"tenant {tenant_id!r}"), conn.cursor(row_factory=class_row(Tenant)) as cur:
        cur.execute("INSERT INTO ft.tenants (id, name) VALUES (%s, %s) RETURNING id, name, created_at",
                    (tenant_id, name))
        return _one(cur.fetchone())


def get_tenant(conn: psycopg.Connection, tenant_id: str) -> Tenant:
    return _found(conn, Tenant, "SELECT id, name, created_at FROM ft.tenants WHERE id = %s", (tenant_id,),
                  f"tenant {tenant_id!r} not found")


def list_tenants(conn: psycopg.Connection) -> list[Tenant]:
    return _all(conn, Tenant, "SELECT id, name, created_at FROM ft.tenants ORDER BY id")


_FARM = "SELECT id, tenant_id, name, latitude, longitude, area_ha, crop, created_at FROM ft.farms"


def register_farm(
    conn: psycopg.Connection, tenant: str, farm_id: str, name: str, *, latitude: float | None = None,
    longitude: float | None = None, area_ha: float | None = None, crop: str | None = None,
) -> Farm:
    _check_id("farm", farm_id)
    get_tenant(conn, tenant)
    with _integrity(f"farm {farm_id!r}"), conn.cursor(row_factory=class_row(Farm)) as cur:
        cur.execute(
            "INSERT INTO ft.farms (id, tenant_id, name, latitude, longitude, area_ha, crop)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " RETURNING id, tenant_id, name, latitude, longitude, area_ha, crop, created_at",
            (farm_id, tenant, name, latitude, longitude, area_ha, crop),
        )
        return _one(cur.fetchone())


def get_farm(conn: psycopg.Connection, tenant: str, farm_id: str) -> Farm:
    return _found(conn, Farm, _FARM + " WHERE tenant_id = %s AND id = %s", (tenant, farm_id),
                  f"farm {farm_id!r} not found in tenant {tenant!r}")


def list_farms(conn: psycopg.Connection, tenant: str) -> list[Farm]:
    get_tenant(conn, tenant)
    return _all(conn, Farm, _FARM + " WHERE tenant_id = %s ORDER BY id", (tenant,))


# -- gateways ------------------------------------------------------------------------------------

_ACTIVE_EPOCH = ("(SELECT max(k.epoch) FROM ft.keys k WHERE k.owner_kind = '{kind}' AND k.owner_id = {alias}.id"
                 " AND k.revoked_at IS NULL) AS key_epoch")
_GATEWAY = ("SELECT g.id, g.tenant_id, g.farm_id, g.name, g.mqtt_username, g.created_at, g.last_seen_at, "
            + _ACTIVE_EPOCH.format(kind="gateway", alias="g") + " FROM ft.gateways g")


def register_gateway(
    conn: psycopg.Connection, tenant: str, gateway_id: str, farm_id: str | None, key: bytes, kek: bytes,
    mqtt_username: str | None, mqtt_password: str | None, *, name: str = "", epoch: int = FIRST_EPOCH,
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
    return get_gateway(conn, tenant, gateway_id)


def get_gateway(conn: psycopg.Connection, tenant: str, gateway_id: str) -> Gateway:
    return _found(conn, Gateway, _GATEWAY + " WHERE g.tenant_id = %s AND g.id = %s", (tenant, gateway_id),
                  f"gateway {gateway_id!r} not found in tenant {tenant!r}")


def list_gateways(conn: psycopg.Connection, tenant: str, farm_id: str | None = None) -> list[Gateway]:
    get_tenant(conn, tenant)
    query, params = _GATEWAY + " WHERE g.tenant_id = %s", [tenant]
    if farm_id is not None:
        get_farm(conn, tenant, farm_id)
        query, params = query + " AND g.farm_id = %s", params + [farm_id]
    return _all(conn, Gateway, query + " ORDER BY g.id", params)


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
           + _ACTIVE_EPOCH.format(kind="device", alias="d") + " FROM ft.devices d")


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
) -> Device:
    """A sensor node (``kind="node"``, signs with its own ``key``) or a bus device behind a gateway
    (``kind="bus"``: no key of its own, a gateway and a spec required).  Without ``farm_id`` the
    device is on its gateway's farm."""
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
        with _integrity(f"device {device_id!r}"):
            conn.execute(
                "INSERT INTO ft.devices (id, tenant_id, farm_id, gateway_id, kind, spec_key)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (device_id, tenant, farm_id, gateway_id, kind, spec),
            )
        if blob is not None:
            _insert_key(conn, tenant, "device", device_id, epoch, blob)
    return get_device(conn, tenant, device_id)


def get_device(conn: psycopg.Connection, tenant: str, device_id: str) -> Device:
    return _found(conn, Device, _DEVICE + " WHERE d.tenant_id = %s AND d.id = %s", (tenant, device_id),
                  f"device {device_id!r} not found in tenant {tenant!r}")


def list_devices(
    conn: psycopg.Connection, tenant: str, farm_id: str | None = None, gateway_id: str | None = None
) -> list[Device]:
    get_tenant(conn, tenant)
    query, params = _DEVICE + " WHERE d.tenant_id = %s", [tenant]
    if farm_id is not None:
        get_farm(conn, tenant, farm_id)
        query, params = query + " AND d.farm_id = %s", params + [farm_id]
    if gateway_id is not None:
        get_gateway(conn, tenant, gateway_id)
        query, params = query + " AND d.gateway_id = %s", params + [gateway_id]
    return _all(conn, Device, query + " ORDER BY d.id", params)


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
