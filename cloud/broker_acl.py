"""Mosquitto access control from the registry: one credential and one topic ACL per gateway.

A gateway may publish only to its own uplink topics (``up``, ``health``, ``state``) and read only
its own downlink (``receipt``, ``config``); an ingest credential reads every gateway's uplink
(through the ``$share`` group, which Mosquitto checks against the plain filter) and writes
receipts.  Anything not granted is denied, so one gateway can neither publish as another nor read
another's receipts.  A downlink credential (``fieldtrust cloud downlink``) writes gateways' node
config, OTA manifest and OTA file topics, which each gateway may read for itself only.  A fleet
credential (``fieldtrust cloud fleet``) reads every gateway's heartbeats and births/wills (``health``,
``state``) and writes agent updates (``update``), which each gateway reads for itself only.  The files
are Mosquitto 2 formats: ``password_file`` lines ``user:$7$<iterations>$<base64 salt>$<base64
PBKDF2-SHA512>`` and an ``acl_file`` of ``user`` and ``topic read|write`` lines.  Mosquitto rereads both on SIGHUP.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from contract import topics

#: PBKDF2 rounds of new hashes.  mosquitto_passwd 2.0 writes 101; more costs the broker a little
#: at each connect and an attacker holding the file a lot.
PBKDF2_ITERATIONS = 10_000
SALT_BYTES = 12  # what mosquitto_passwd uses
HASH_BYTES = 64  # SHA-512 output

GATEWAY_PUBLISHES = ("up", "health", "state")
GATEWAY_READS = ("receipt", "config", "update")
ALL_GATEWAYS = f"{topics.ROOT}/+/gw/+"
INGEST_READS = tuple(f"{ALL_GATEWAYS}/{leaf}" for leaf in GATEWAY_PUBLISHES)
INGEST_WRITES = (f"{ALL_GATEWAYS}/receipt",)
DOWNLINK_WRITES = (f"{ALL_GATEWAYS}/node/#", f"{ALL_GATEWAYS}/file/#")
FLEET_READS = (f"{ALL_GATEWAYS}/health", f"{ALL_GATEWAYS}/state")
FLEET_WRITES = (f"{ALL_GATEWAYS}/update",)

ServiceRole = Literal["ingest", "downlink", "fleet"]
#: (topics it may write, topics it may read) of each cloud service's login
SERVICE_ACLS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ingest": (INGEST_WRITES, INGEST_READS),
    "downlink": (DOWNLINK_WRITES, ()),
    "fleet": (FLEET_WRITES, FLEET_READS),
}

PASSWORD_FILE = "fieldtrust.passwd"
ACL_FILE = "fieldtrust.acl"


@dataclass(frozen=True)
class BrokerAccount:
    """One broker login: a gateway's (with its tenant) or a service's such as the ingest."""

    username: str
    password_hash: str
    role: Literal["gateway", "ingest", "downlink", "fleet"]
    tenant_id: str | None = None
    gateway_id: str | None = None


def check_username(username: str) -> str:
    """Usernames share the identifier alphabet, so they cannot break a password or ACL line."""
    if not topics.valid_id(username):
        raise ValueError(f"MQTT username must be 1-64 characters of A-Z a-z 0-9 - _ . ; got {username!r}")
    return username


def new_password() -> str:
    """A random broker password (24 random bytes, URL-safe text)."""
    return secrets.token_urlsafe(24)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """A Mosquitto 2 ``$7$`` password hash (PBKDF2-HMAC-SHA512), as ``mosquitto_passwd`` writes it."""
    if not password:
        raise ValueError("MQTT password must not be empty")
    if iterations < 1:
        raise ValueError(f"PBKDF2 iterations must be >= 1; got {iterations}")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, HASH_BYTES)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def gateway_acl(tenant_id: str, gateway_id: str) -> tuple[list[str], list[str]]:
    """(topics the gateway may write, topics it may read): its own, named in full (its nodes' downlink by filter)."""
    return (
        [topics.gateway(tenant_id, gateway_id, leaf) for leaf in GATEWAY_PUBLISHES],
        [topics.gateway(tenant_id, gateway_id, leaf) for leaf in GATEWAY_READS]
        + topics.gateway_downlink_filter(tenant_id, gateway_id),
    )


def render_password_file(accounts: Iterable[BrokerAccount]) -> str:
    lines = ["# written by `fieldtrust cloud broker-config` from the registry; do not edit"]
    lines += [f"{check_username(a.username)}:{a.password_hash}" for a in accounts]
    return "\n".join(lines) + "\n"


def render_acl_file(accounts: Iterable[BrokerAccount]) -> str:
    lines = ["# written by `fieldtrust cloud broker-config` from the registry; do not edit",
             "# anything not granted below is denied"]
    for account in accounts:
        lines += ["", f"user {check_username(account.username)}"]
        if account.role == "gateway":
            if account.tenant_id is None or account.gateway_id is None:
                raise ValueError(f"gateway account {account.username!r} has no tenant or gateway id")
            writes, reads = gateway_acl(account.tenant_id, account.gateway_id)
        elif account.role in SERVICE_ACLS:
            writes, reads = (list(t) for t in SERVICE_ACLS[account.role])
        else:  # a role this code does not know must not get some other role's rights
            raise ValueError(f"account {account.username!r} has an unknown role {account.role!r}")
        lines += [f"topic write {t}" for t in writes]
        lines += [f"topic read {t}" for t in reads]
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a broker reloading mid-write sees old or new, whole."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_broker_config(accounts: Iterable[BrokerAccount], out_dir: Path) -> tuple[Path, Path]:
    """Write the password file and the ACL file into ``out_dir``; returns their paths."""
    accounts = list(accounts)
    names = [a.username for a in accounts]
    doubles = sorted({n for n in names if names.count(n) > 1})
    if doubles:
        raise ValueError(f"MQTT usernames used twice: {', '.join(doubles)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    password_path, acl_path = out_dir / PASSWORD_FILE, out_dir / ACL_FILE
    _write_private(password_path, render_password_file(accounts))
    _write_private(acl_path, render_acl_file(accounts))
    return password_path, acl_path
