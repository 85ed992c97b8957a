"""Registering a provisioned node in the cloud, now or later (``fieldtrust node sync``), exactly once.

The key was made on the laptop and waits in the vault (:mod:`provisioning.vault`).  Registration
sends it with the device (``POST …/devices``), then records the ``provisioned`` event under an id
chosen when the key was made, so a retry is recorded once.  Before the request goes out the vault
entry notes ``attempted``: if the answer is lost and the retry meets "already exists", the device is
checked (a node on the same farm) and taken as ours instead of failing.  After registration the
entry is wiped once the board has the key too (the journal says so), never before.

A node provisioned with a claim code (``--claim``) is registered without a farm, then the code is
redeemed (``POST …/claim-codes/redeem``): the cloud puts the node on the code's farm and field.  The
code waits in the vault entry like the key (offline: until ``node sync``), and ``claim_attempted`` is
noted before it is sent, so a retry that meets "code already used" with the node on a farm takes it
as its own redemption.
"""

from __future__ import annotations

import getpass
import os
import time
from dataclasses import dataclass
from typing import Any

from provisioning.cloud_client import CloudClient
from provisioning.errors import ClaimRefused, CloudRefused, CloudUnreachable, ProvisioningError
from provisioning.journal import JournalStore
from provisioning.vault import Entry, Vault

TOOL = "fieldtrust node provision"
#: reading a registration back: attempts, and the pause before the first retry (it grows linearly)
VISIBLE_ATTEMPTS, VISIBLE_PAUSE_S = 8, 0.05


def technician() -> str:
    """Who provisions: FIELDTRUST_TECHNICIAN, else the laptop's login (recorded in the event's detail)."""
    try:
        return os.environ.get("FIELDTRUST_TECHNICIAN") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def register_entry(cloud: CloudClient, vault: Vault, entry: Entry) -> dict[str, Any]:
    """Register ``entry``'s node (on its claim code's farm, if it has one) and record its ``provisioned`` event;
    the device as the cloud has it (``key_epoch`` is the epoch of the key in the entry)."""
    reg = entry.secret["registration"]
    if not entry.secret.get("attempted"):
        entry = vault.put(entry.device_id, entry.tenant, entry.secret | {"attempted": True}, entry.state)
    try:
        created = cloud.register_node(entry.tenant, entry.device_id, entry.secret["key_hex"], reg.get("farm_id"),
                                      reg.get("gateway_id"), reg.get("spec"))
        device = created["device"]
    except CloudRefused as exc:
        if exc.status != 409 or not entry.secret.get("attempted"):
            raise
        device = cloud.device(entry.tenant, entry.device_id)
        claimed_before = reg.get("claim_code") and entry.secret.get("claim_attempted")  # now on the code's farm
        if device is None or device["kind"] != "node" or (
                device.get("farm_id") != reg.get("farm_id") and not claimed_before):
            raise
    _until_visible(cloud, entry.tenant, entry.device_id)
    if reg.get("claim_code"):
        device = _claim(cloud, vault, entry)
    cloud.record_event(entry.tenant, entry.device_id, "provisioned", reg.get("event_detail", {}),
                       reg.get("event_id"))
    return device


def _claim(cloud: CloudClient, vault: Vault, entry: Entry) -> dict[str, Any]:
    """Redeem the entry's claim code for its node, once; the device on the code's farm (and field)."""
    reg = entry.secret["registration"]
    if entry.secret.get("claimed"):
        device = cloud.device(entry.tenant, entry.device_id)
        if device is not None:
            return device
    if not entry.secret.get("claim_attempted"):
        entry = vault.put(entry.device_id, entry.tenant, entry.secret | {"claim_attempted": True}, entry.state)
    try:
        device = cloud.redeem_claim(entry.tenant, reg["claim_code"], entry.device_id, reg.get("gateway_id"))["device"]
    except ClaimRefused:
        found = cloud.device(entry.tenant, entry.device_id)
        if found is None or found.get("farm_id") is None:
            raise
        device = found  # the first redemption's answer was lost: the node is on the code's farm already
    vault.put(entry.device_id, entry.tenant, entry.secret | {"claimed": True}, entry.state)
    return device


def _until_visible(cloud: CloudClient, tenant: str, device_id: str, attempts: int = VISIBLE_ATTEMPTS) -> None:
    """Read the new device back before using it: the API may answer before its transaction is committed
    (its connection dependency commits after the response is sent), so a request right after the
    registration can miss the row.  ProvisioningError if it never shows."""
    for attempt in range(attempts):
        if cloud.device(tenant, device_id) is not None:
            return
        time.sleep(VISIBLE_PAUSE_S * (attempt + 1))
    raise ProvisioningError(f"{device_id} was registered but the cloud does not show it",
                            todo="run the same command again: it continues from here")


@dataclass(frozen=True)
class SyncResult:
    device_id: str
    tenant: str
    registered: bool
    message: str


def sync_pending(cloud: CloudClient, vault: Vault, journals: JournalStore) -> list[SyncResult]:
    """Register every node provisioned offline; wipe each entry once its board has the key as well.

    Stops at the first CloudUnreachable (the rest waits for the next sync); a node the cloud refuses
    (unknown farm, id taken) is reported and kept.
    """
    results = []
    for device_id in vault.entries("pending-sync"):
        entry = vault.get(device_id)
        if entry is None:
            continue
        try:
            device = register_entry(cloud, vault, entry)
        except CloudUnreachable:
            raise
        except ProvisioningError as exc:
            results.append(SyncResult(device_id, entry.tenant, False, f"{exc} ({exc.todo})"))
            continue
        journal = journals.by_device(device_id)
        board_has_key = journal is None or journal.done("settings")
        epoch_note = ""
        if journal is not None:
            journal.mark("register")
            journal.offline = False
            journal.notes["farm"] = device.get("farm_id")
            written = journal.notes.get("key_epoch")
            if written is not None and device.get("key_epoch") not in (None, written):
                epoch_note = (f"; but the board signs with key epoch {written} and the cloud has {device['key_epoch']}:"
                              " provision the board again with --restart")
            journals.save(journal)
        if board_has_key:
            vault.wipe(device_id)
            note = "registered; its key is wiped from this laptop"
        else:
            vault.set_state(device_id, "held")
            note = "registered; its key stays in the vault until its board is provisioned (run provision again)"
        results.append(SyncResult(device_id, entry.tenant, True, note + epoch_note))
    return results
