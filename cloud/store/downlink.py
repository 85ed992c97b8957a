"""The downlink's SQL: node config versions, firmware releases and their files, OTA jobs, and what is pending.

Like :mod:`cloud.store.registry`, functions take a connection and leave committing to the caller;
tenancy is enforced here (a node is found only within its tenant).  Version numbers are taken
under a lock on the node's ``ft.devices`` row (:func:`lock_node`), so two concurrent updates of
one node cannot get the same version.  Every insert that gives the publisher work also sends
``NOTIFY ft_downlink``, delivered when the transaction commits (never for rolled-back rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from cloud.store.db import ROW_SCHEMA
from cloud.store.registry import Conflict, NotFound, get_device

NOTIFY_CHANNEL = "ft_downlink"


@dataclass(frozen=True)
class NodeTarget:
    """A node that can be sent a downlink: behind a gateway, with a key epoch not revoked."""

    tenant_id: str
    device_id: str
    gateway_id: str
    key_epoch: int


@dataclass(frozen=True)
class ConfigVersion:
    """One version of a node's config; the newest is the desired state."""

    __pydantic_config__ = ROW_SCHEMA
    device: str
    version: int
    config: dict[str, Any]
    """the cfg object signed for the node (fields left out take the node's defaults)"""
    gateway_id: str
    key_epoch: int
    """the node key epoch that signed it"""
    status: str
    """pending, published (the broker acknowledged it), or superseded (a newer version came first)"""
    created_at: datetime
    created_by: str
    published_at: datetime | None


@dataclass(frozen=True)
class Release:
    """A firmware release: a build number that only grows, and its files by path, SHA-256 and size."""

    __pydantic_config__ = ROW_SCHEMA
    version: int
    manifest: dict[str, Any]
    created_at: datetime
    created_by: str


@dataclass(frozen=True)
class OtaJob:
    """One release for one node: pending, published (PUBACK), done or failed (reported), or superseded."""

    __pydantic_config__ = ROW_SCHEMA
    id: int
    device: str
    version: int
    gateway_id: str
    key_epoch: int
    status: str
    detail: str
    created_at: datetime
    created_by: str
    published_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class PendingConfig:
    tenant_id: str
    device_id: str
    gateway_id: str
    version: int
    frame: bytes


@dataclass(frozen=True)
class PendingOta:
    id: int
    tenant_id: str
    device_id: str
    gateway_id: str
    version: int
    frame: bytes
    files: list[str]
    """the SHA-256 of each file the manifest names"""


def notify(conn: psycopg.Connection) -> None:
    conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))


# -- nodes -------------------------------------------------------------------------------------------


def lock_node(conn: psycopg.Connection, tenant: str, device_id: str) -> NodeTarget:
    """Lock the node's row until the transaction ends; NotFound / Conflict when it cannot take a downlink."""
    row = conn.execute(
        "SELECT d.kind, d.gateway_id, (SELECT max(k.epoch) FROM ft.keys k WHERE k.owner_kind = 'device'"
        "   AND k.owner_id = d.id AND k.revoked_at IS NULL)"
        " FROM ft.devices d WHERE d.tenant_id = %s AND d.id = %s FOR UPDATE OF d",
        (tenant, device_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"device {device_id!r} not found in tenant {tenant!r}")
    kind, gateway_id, epoch = row
    if kind != "node":
        raise Conflict(f"device {device_id!r} is a {kind} device: only sensor nodes take config and OTA from the cloud")
    if gateway_id is None:
        raise Conflict(f"node {device_id!r} has no gateway to relay its downlink; register it with one")
    if epoch is None:
        raise Conflict(f"node {device_id!r}: every key epoch is revoked, so nothing can be signed for it")
    return NodeTarget(tenant, device_id, gateway_id, epoch)


# -- config versions ---------------------------------------------------------------------------------

_CONFIG = (
    "SELECT c.device_id AS device, c.version, c.config, c.gateway_id, c.key_epoch,"
    " CASE WHEN c.published_at IS NOT NULL THEN 'published'"
    "      WHEN c.version < (SELECT max(m.version) FROM ft.node_configs m WHERE m.device_id = c.device_id)"
    "      THEN 'superseded' ELSE 'pending' END AS status,"
    " c.created_at, c.created_by, c.published_at FROM ft.node_configs c"
)


def next_config_version(conn: psycopg.Connection, node: NodeTarget) -> int:
    """The node's next config version (call under :func:`lock_node`)."""
    row = conn.execute("SELECT coalesce(max(version), 0) + 1 FROM ft.node_configs WHERE device_id = %s",
                       (node.device_id,)).fetchone()
    assert row is not None
    return int(row[0])


def insert_config(conn: psycopg.Connection, node: NodeTarget, version: int, config: dict[str, Any], frame: bytes,
                  created_by: str) -> ConfigVersion:
    conn.execute(
        "INSERT INTO ft.node_configs (tenant_id, device_id, version, config, gateway_id, key_epoch, frame, created_by)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (node.tenant_id, node.device_id, version, Jsonb(config), node.gateway_id, node.key_epoch, frame, created_by),
    )
    notify(conn)
    return _one(conn, ConfigVersion, _CONFIG + " WHERE c.device_id = %s AND c.version = %s",
                (node.device_id, version))


def config_history(conn: psycopg.Connection, tenant: str, device_id: str) -> list[ConfigVersion]:
    """Every config version of the node, newest first (NotFound for an unknown device)."""
    get_device(conn, tenant, device_id)
    return _all(conn, ConfigVersion, _CONFIG + " WHERE c.tenant_id = %s AND c.device_id = %s ORDER BY c.version DESC",
                (tenant, device_id))


def reported(conn: psycopg.Connection, tenant: str, device_id: str) -> tuple[int | None, int | None, datetime | None]:
    """(config version, firmware build, when) the node last reported; Nones when it has not."""
    row = conn.execute("SELECT config_version, firmware_version, reported_at FROM ft.node_reported"
                       " WHERE tenant_id = %s AND device_id = %s", (tenant, device_id)).fetchone()
    return (row[0], row[1], row[2]) if row is not None else (None, None, None)


def record_node_report(conn: psycopg.Connection, tenant: str, device_id: str, *, config_version: int | None = None,
                       firmware_version: int | None = None) -> None:
    """What a node said it runs (its birth's ``config_version``, its installed build): kept as reported state,
    and an OTA job of the installed build is done (older ones it skipped are superseded)."""
    get_device(conn, tenant, device_id)
    with conn.transaction():
        conn.execute(
            "INSERT INTO ft.node_reported (tenant_id, device_id, config_version, firmware_version)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (device_id) DO UPDATE SET"
            " config_version = coalesce(excluded.config_version, ft.node_reported.config_version),"
            " firmware_version = coalesce(excluded.firmware_version, ft.node_reported.firmware_version),"
            " reported_at = now()",
            (tenant, device_id, config_version, firmware_version),
        )
        if firmware_version is not None:
            conn.execute(
                "UPDATE ft.ota_jobs SET status = CASE WHEN version = %s THEN 'done' ELSE 'superseded' END,"
                " finished_at = now() WHERE tenant_id = %s AND device_id = %s AND version <= %s"
                " AND status IN ('pending', 'published')",
                (firmware_version, tenant, device_id, firmware_version),
            )


def fail_ota(conn: psycopg.Connection, tenant: str, device_id: str, version: int, reason: str) -> None:
    """A node refused or rolled back ``version`` (its reason kept as the job's detail)."""
    conn.execute("UPDATE ft.ota_jobs SET status = 'failed', detail = %s, finished_at = now()"
                 " WHERE tenant_id = %s AND device_id = %s AND version = %s AND status IN ('pending', 'published')",
                 (reason, tenant, device_id, version))


# -- firmware releases --------------------------------------------------------------------------------

_RELEASE = "SELECT version, manifest, created_at, created_by FROM ft.firmware_releases"


def insert_release(conn: psycopg.Connection, version: int, entries: Sequence[dict[str, Any]],
                   contents: Sequence[bytes], created_by: str) -> Release:
    """A release with its files (``entries`` path/sha256/size, ``contents`` their bytes, in the same order)."""
    manifest = {"version": version, "files": list(entries)}
    with conn.transaction():
        try:
            conn.execute("INSERT INTO ft.firmware_releases (version, manifest, created_by) VALUES (%s, %s, %s)",
                         (version, Jsonb(manifest), created_by))
        except errors.UniqueViolation:
            raise Conflict(f"firmware release {version} already exists; releases are never changed, "
                           "publish a higher build number") from None
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO ft.firmware_blobs (sha256, size, content) VALUES (%s, %s, %s)"
                            " ON CONFLICT (sha256) DO NOTHING",
                            [(e["sha256"], e["size"], c) for e, c in zip(entries, contents, strict=True)])
            cur.executemany("INSERT INTO ft.firmware_release_files (version, path, sha256) VALUES (%s, %s, %s)",
                            [(version, e["path"], e["sha256"]) for e in entries])
    return get_release(conn, version)


def get_release(conn: psycopg.Connection, version: int) -> Release:
    row = _maybe(conn, Release, _RELEASE + " WHERE version = %s", (version,))
    if row is None:
        raise NotFound(f"firmware release {version} not found")
    return row


def list_releases(conn: psycopg.Connection) -> list[Release]:
    return _all(conn, Release, _RELEASE + " ORDER BY version DESC")


def file_content(conn: psycopg.Connection, sha256: str) -> bytes:
    row = conn.execute("SELECT content FROM ft.firmware_blobs WHERE sha256 = %s", (sha256,)).fetchone()
    if row is None:
        raise NotFound(f"firmware file {sha256} not found")
    return bytes(row[0])


# -- OTA jobs ------------------------------------------------------------------------------------------

_JOB = ("SELECT id, device_id AS device, version, gateway_id, key_epoch, status, detail, created_at, created_by,"
        " published_at, finished_at FROM ft.ota_jobs")


def insert_ota_job(conn: psycopg.Connection, node: NodeTarget, version: int, frame: bytes, created_by: str) -> OtaJob:
    """A pending job (call under :func:`lock_node`); the node's unfinished older jobs are superseded, since its
    retained manifest is about to be replaced."""
    if conn.execute("SELECT 1 FROM ft.ota_jobs WHERE device_id = %s AND version = %s",
                    (node.device_id, version)).fetchone() is not None:
        raise Conflict(f"node {node.device_id!r} already has an OTA job for release {version}")
    conn.execute("UPDATE ft.ota_jobs SET status = 'superseded', finished_at = now()"
                 " WHERE device_id = %s AND status IN ('pending', 'published')", (node.device_id,))
    row = conn.execute(
        "INSERT INTO ft.ota_jobs (tenant_id, device_id, version, gateway_id, key_epoch, frame, created_by)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (node.tenant_id, node.device_id, version, node.gateway_id, node.key_epoch, frame, created_by),
    ).fetchone()
    assert row is not None
    notify(conn)
    return _one(conn, OtaJob, _JOB + " WHERE id = %s", (row[0],))


def list_ota_jobs(conn: psycopg.Connection, tenant: str, device_id: str) -> list[OtaJob]:
    """The node's OTA jobs, newest first (NotFound for an unknown device)."""
    get_device(conn, tenant, device_id)
    return _all(conn, OtaJob, _JOB + " WHERE tenant_id = %s AND device_id = %s ORDER BY id DESC", (tenant, device_id))


# -- what the publisher sends ----------------------------------------------------------------------------


def pending_configs(conn: psycopg.Connection) -> list[PendingConfig]:
    """The newest config of each node whose newest is not yet published (older unpublished ones never will be)."""
    return _all(conn, PendingConfig,
                "SELECT c.tenant_id, c.device_id, c.gateway_id, c.version, c.frame FROM ft.node_configs c"
                " WHERE c.published_at IS NULL AND c.version ="
                " (SELECT max(m.version) FROM ft.node_configs m WHERE m.device_id = c.device_id)"
                " ORDER BY c.created_at")


def pending_ota(conn: psycopg.Connection) -> list[PendingOta]:
    return _all(conn, PendingOta,
                "SELECT j.id, j.tenant_id, j.device_id, j.gateway_id, j.version, j.frame,"
                " array(SELECT f.sha256 FROM ft.firmware_release_files f WHERE f.version = j.version"
                "       ORDER BY f.path) AS files"
                " FROM ft.ota_jobs j WHERE j.status = 'pending' ORDER BY j.id")


def mark_config_published(conn: psycopg.Connection, device_id: str, version: int) -> None:
    conn.execute("UPDATE ft.node_configs SET published_at = now() WHERE device_id = %s AND version = %s"
                 " AND published_at IS NULL", (device_id, version))


def mark_ota_published(conn: psycopg.Connection, job_id: int) -> None:
    """Published, unless the job moved on meanwhile (superseded by a newer one, or already reported)."""
    conn.execute("UPDATE ft.ota_jobs SET status = 'published', published_at = now()"
                 " WHERE id = %s AND status = 'pending'", (job_id,))


def _maybe(conn: psycopg.Connection, row_type: type[Any], query: str, params: Sequence[object]) -> Any:
    with conn.cursor(row_factory=class_row(row_type)) as cur:
        return cur.execute(query, params).fetchone()  # type: ignore[arg-type]


def _one(conn: psycopg.Connection, row_type: type[Any], query: str, params: Sequence[object]) -> Any:
    row = _maybe(conn, row_type, query, params)
    assert row is not None, "the row was just written"
    return row


def _all(conn: psycopg.Connection, row_type: type[Any], query: str, params: Sequence[object] = ()) -> list[Any]:
    with conn.cursor(row_factory=class_row(row_type)) as cur:
        return cur.execute(query, params).fetchall()  # type: ignore[arg-type]
