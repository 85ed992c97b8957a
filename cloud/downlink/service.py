"""The downlink's operations, each one transaction: lock the node, sign with its key, store, notify the publisher.

Routes and the CLI call these; nothing is half written (a refusal at any step rolls back the
whole).  Signing happens here, at request time, with the node key unwrapped by the KEK: the
publisher only relays stored frames.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import psycopg

from cloud.downlink import frames
from cloud.store import downlink as store
from cloud.store.registry import Conflict, Invalid, key_for


def _node_key(conn: psycopg.Connection, node: store.NodeTarget, kek: bytes) -> bytes:
    key = key_for(conn, "device", node.device_id, node.key_epoch, kek, tenant=node.tenant_id)
    if key is None:  # lock_node found this epoch unrevoked in the same transaction
        raise Conflict(f"node {node.device_id!r}: key epoch {node.key_epoch} is not usable")
    return key


def set_node_config(conn: psycopg.Connection, tenant: str, device_id: str, cfg: dict[str, object], kek: bytes,
                    created_by: str) -> store.ConfigVersion:
    """Store ``cfg`` as the node's next config version, signed for it."""
    with conn.transaction():
        node = store.lock_node(conn, tenant, device_id)
        version = store.next_config_version(conn, node)
        frame = frames.config_frame(_node_key(conn, node, kek), device_id, version, int(time.time() * 1000), cfg)
        return store.insert_config(conn, node, version, cfg, frame, created_by)


def build_number(bundle_version: str, build: int | None = None) -> int:
    """The release's build number: ``build`` when given, else the bundle's version if it is a whole number.

    A node compares builds as integers (``firmware/ota.py``), so a version such as "0.2.0" needs one.
    """
    if build is not None:
        if build < 1:
            raise Invalid(f"build number must be >= 1; got {build}")
        return build
    if bundle_version.isdigit() and int(bundle_version) >= 1:
        return int(bundle_version)
    raise Invalid(f"bundle version {bundle_version!r} is not a build number (a node compares whole numbers); "
                  "give the release one with --build N")


def create_release(conn: psycopg.Connection, version: int, files: Sequence[frames.FirmwareFile],
                   created_by: str) -> store.Release:
    """A firmware release from its files, checked by the node's manifest rules."""
    entries = frames.check_release(version, files)
    return store.insert_release(conn, version, entries, [f.content for f in files], created_by)


def create_ota_job(conn: psycopg.Connection, tenant: str, device_id: str, version: int, kek: bytes,
                   created_by: str) -> store.OtaJob:
    """Send release ``version`` to the node: its manifest signed for it, published after the files."""
    with conn.transaction():
        node = store.lock_node(conn, tenant, device_id)
        release = store.get_release(conn, version)
        _config, running, _at = store.reported(conn, tenant, device_id)
        if running is not None and running >= version:
            raise Conflict(f"node {device_id!r} reports build {running}; it installs only a higher one than that")
        frame = frames.ota_frame(_node_key(conn, node, kek), device_id, version, release.manifest["files"])
        return store.insert_ota_job(conn, node, version, frame, created_by)
