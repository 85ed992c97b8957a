"""The demo's tenant, farms, gateways and devices in the registry: registered once, found again after.

Each run asks the registry first and registers only what is missing, so a second run (or a run
against a database that already has the demo tenant) resumes with the same ids.  Keys are not
kept anywhere else: a gateway's or a node's key is read back from the registry (decrypted with the
KEK), exactly as the ingest reads it to verify signatures.  Broker passwords exist only hashed, so
when the broker checks them (a private Mosquitto with the registry's password and ACL files) each
run sets a new one and hands it to the gateway.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import psycopg

from cloud.broker_acl import new_password
from cloud.keys import KeyCryptoError
from cloud.store import registry
from fieldtrust.demo.plan import TENANT_ID, TENANT_NAME, FarmPlan

#: the broker login the demo's ingest workers share (not ``ingest``: a real deployment's login stays untouched)
INGEST_USERNAME = "demo-ingest"


class DemoError(RuntimeError):
    """The demo cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class FarmIdentity:
    """What a farm's gateway and nodes need to sign and to log in."""

    gateway_epoch: int
    gateway_key: bytes
    mqtt_password: str | None  # this run's broker password, when the broker checks passwords
    node_keys: dict[str, tuple[int, bytes]]  # node id -> (key epoch, key)


def _usable_key(conn: psycopg.Connection, kind: str, owner: str, epoch: int | None, kek: bytes) -> tuple[int, bytes]:
    if epoch is None:
        raise DemoError(f"{kind} {owner!r} has every key revoked; rotate one (fieldtrust cloud rotate-key) "
                        "or start on fresh data (another FIELDTRUST_DEMO_DIR)")
    try:
        key = registry.key_for(conn, kind, owner, epoch, kek, tenant=TENANT_ID)
    except KeyCryptoError:
        raise DemoError(f"the {kind} key of {owner!r} cannot be decrypted: the demo's data was written with another "
                        "KEK (FIELDTRUST_KEK); use that one again, or another FIELDTRUST_DEMO_DIR") from None
    if key is None:
        raise DemoError(f"{kind} {owner!r}: key epoch {epoch} not found in tenant {TENANT_ID!r}")
    return epoch, key


def _ensure_tenant_and_farm(conn: psycopg.Connection, plan: FarmPlan) -> None:
    try:
        registry.get_tenant(conn, TENANT_ID)
    except registry.NotFound:
        registry.register_tenant(conn, TENANT_ID, TENANT_NAME)
    try:
        registry.get_farm(conn, TENANT_ID, plan.farm_id)
    except registry.NotFound:
        registry.register_farm(conn, TENANT_ID, plan.farm_id, plan.name, crop=plan.crop)


def _ensure_gateway(conn: psycopg.Connection, plan: FarmPlan, kek: bytes, with_login: bool) -> FarmIdentity:
    password = new_password() if with_login else None
    try:
        gateway = registry.get_gateway(conn, TENANT_ID, plan.gateway_id)
    except registry.NotFound:
        gateway = registry.register_gateway(conn, TENANT_ID, plan.gateway_id, plan.farm_id, secrets.token_bytes(32),
                                            kek, None, password, name=f"{plan.name} gateway")
    else:
        if gateway.farm_id != plan.farm_id:
            raise DemoError(f"gateway {plan.gateway_id!r} is registered on farm {gateway.farm_id!r}, "
                            f"not {plan.farm_id!r}; use another FIELDTRUST_DEMO_DIR or database")
        if password is not None:
            registry.set_gateway_password(conn, TENANT_ID, plan.gateway_id, password)
    epoch, key = _usable_key(conn, "gateway", plan.gateway_id, gateway.key_epoch, kek)
    return FarmIdentity(epoch, key, password, {})


def _ensure_devices(conn: psycopg.Connection, plan: FarmPlan, kek: bytes) -> dict[str, tuple[int, bytes]]:
    for device_id, spec in plan.bus_devices:
        try:
            registry.get_device(conn, TENANT_ID, device_id)
        except registry.NotFound:
            registry.register_device(conn, TENANT_ID, device_id, "bus", plan.farm_id, plan.gateway_id, spec, None,
                                     kek)
    node_keys = {}
    for node_id in plan.node_ids:
        try:
            node = registry.get_device(conn, TENANT_ID, node_id)
        except registry.NotFound:
            node = registry.register_device(conn, TENANT_ID, node_id, "node", plan.farm_id, plan.gateway_id, None,
                                            secrets.token_bytes(32), kek)
        node_keys[node_id] = _usable_key(conn, "device", node_id, node.key_epoch, kek)
    return node_keys


def register_demo(conn: psycopg.Connection, kek: bytes, plans: list[FarmPlan], *,
                  broker_logins: bool) -> dict[str, FarmIdentity]:
    """Register what is missing (one transaction, committed by the caller); farm id -> identity.

    ``broker_logins``: the broker checks passwords and ACLs from the registry, so each gateway
    gets this run's password, and :data:`INGEST_USERNAME` one for the workers (set by the caller).
    """
    identities = {}
    try:
        with conn.transaction():
            for plan in plans:
                _ensure_tenant_and_farm(conn, plan)
                identity = _ensure_gateway(conn, plan, kek, broker_logins)
                nodes = _ensure_devices(conn, plan, kek)
                identities[plan.farm_id] = FarmIdentity(identity.gateway_epoch, identity.gateway_key,
                                                        identity.mqtt_password, nodes)
    except registry.RegistryError as exc:
        raise DemoError(f"cannot register the demo's farms: {exc}") from None
    return identities
