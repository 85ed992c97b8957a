"""``fieldtrust node provision`` as a state machine whose every step is journalled, so it can be resumed.

Steps, in order (each skipped when the board's journal says it is done)::

    identify   port free, MicroPython REPL, unique id, versions (every run: the board may have changed)
    farm       the farm exists in the cloud (offline: checked at sync; with --claim: the code names it)
    key        a new key for the device, sealed in the vault before anyone else sees it
    register   the device and its key in the cloud, its claim code redeemed (--claim), and its
               "provisioned" event (offline: at sync)
    settings   /ft_node.json: id, key and its epoch (``ep``), broker, Wi-Fi, sensors (a DS18B20's ROM
               read from the bus, its rail switched on for the scan)
    firmware   the compiled bundle, files already on the board with the right SHA-256 skipped,
               main.py last, then the manifest; checked by hash afterwards
    reset      the board boots the firmware
    wait       the node's first signed message reached the cloud (device last-seen), unless --no-wait
    label      id, farm, spec and a QR code, in the terminal and as PNG

A failure anywhere leaves the journal at the last step done; the same command runs on from there with
the same device id, key and event id (never a second device or key).  The vault entry of the key is
wiped once the cloud and the board both have it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from firmware.main import FIRST_KEY_EPOCH
from provisioning import node_settings
from provisioning.board import MANIFEST_PATH, SETTINGS_PATH, Board, BoardInfo, check_version
from provisioning.bundle import Bundle
from provisioning.cloud_client import CloudClient
from provisioning.errors import (
    AlreadyProvisioned,
    BoardCommandFailed,
    CloudUnreachable,
    JournalMismatch,
    NoFirstMessage,
    ProvisioningError,
)
from provisioning.journal import Journal, JournalStore
from provisioning.label import Label
from provisioning.registration import TOOL, register_entry, technician
from provisioning.vault import Entry, Vault

STEPS = (
    ("identify", "Identify the board"),
    ("farm", "Check the farm"),
    ("key", "Create the device key"),
    ("register", "Register in the cloud"),
    ("settings", "Write settings and key"),
    ("firmware", "Copy the firmware"),
    ("reset", "Reset the board"),
    ("wait", "Wait for the first signed message"),
    ("label", "Print the label"),
)
WAIT_POLL_S = 2.0
DEFAULT_WAIT_S = 180.0
BOARD_MAIN = "main.py"


class Progress(Protocol):
    """What the steps report; the CLI draws a progress bar from it."""

    def step(self, name: str, label: str) -> None: ...
    def total(self, n: int) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def done(self, note: str = "") -> None: ...
    def skipped(self, why: str) -> None: ...


@dataclass(frozen=True)
class Request:
    """One board to provision, as the technician asked."""

    port: str
    tenant: str
    farm: str | None
    """None with ``claim``: the code names the farm"""
    specs: tuple[str, ...]
    wifi_ssid: str
    wifi_password: str
    broker: tuple[str, int]
    gateway: str | None = None
    device_id: str | None = None
    battery: bool = True
    modbus_unit: int | None = None
    ds18b20_rom: str | None = None
    wait: bool = True
    wait_timeout_s: float = DEFAULT_WAIT_S
    restart: bool = False
    claim: str | None = None
    """a claim code (instead of ``farm``): redeemed once the node is registered; kept in the vault, never the
    journal"""

    def options(self) -> dict[str, Any]:
        """What a resumed run must repeat (no secrets: the Wi-Fi password is asked again)."""
        return {"farm": self.farm, "specs": list(self.specs), "gateway": self.gateway, "wifi": self.wifi_ssid,
                "broker": list(self.broker), "device_id": self.device_id, "battery": self.battery,
                "modbus_unit": self.modbus_unit}


@dataclass
class Context:
    """Where provisioning keeps and sends things."""

    journals: JournalStore
    vault: Vault
    cloud: CloudClient | None
    bundle: Bundle
    label_dir: Path
    private_dir: Path | None = None
    board_timeout_s: float = 60.0
    sleep: Callable[[float], None] = time.sleep


@dataclass
class Outcome:
    device_id: str
    uid: str
    offline: bool
    label: Label
    png: Path
    resumed_from: str | None
    notes: dict[str, Any] = field(default_factory=dict)


def default_device_id(uid: str) -> str:
    return f"node-{uid[-12:]}"


def provision(req: Request, ctx: Context, progress: Progress) -> Outcome:
    board = Board(req.port, timeout=ctx.board_timeout_s, private_dir=ctx.private_dir)
    specs = node_settings.load_specs(list(req.specs))

    progress.step("identify", "Identify the board")
    info = board.identify()
    check_version(info, ctx.bundle.mpy_version)
    journal = _journal(req, ctx, info)
    resumed_from = next((name for name, _ in STEPS[1:] if not journal.done(name)), None) if journal.steps else None
    journal.mark("identify")
    ctx.journals.save(journal)
    progress.done(f"{journal.device_id} (board {info.uid}, MicroPython {'.'.join(map(str, info.micropython))})")

    online = ctx.cloud is not None
    progress.step("farm", "Check the farm")
    if journal.done("farm"):
        progress.skipped("checked before")
    elif req.farm is None:
        progress.skipped("the claim code names it (redeemed once the node is registered)")
    elif ctx.cloud is None:
        progress.skipped("offline: checked at sync")
    else:
        try:
            ctx.cloud.check_farm(req.tenant, req.farm)
            journal.mark("farm")
            ctx.journals.save(journal)
            progress.done(req.farm)
        except CloudUnreachable as exc:
            online = False
            progress.skipped(f"offline ({exc}): checked at sync")

    progress.step("key", "Create the device key")
    entry = ctx.vault.get(journal.device_id)
    if entry is None and journal.done("key"):
        if not (journal.done("register") and journal.done("settings")):
            raise ProvisioningError(f"the key of {journal.device_id} is no longer in the vault "
                                    f"({ctx.vault.directory})", todo="start over with --restart")
        progress.skipped("the cloud and the board have it (wiped here)")
    elif entry is None:
        journal.event_id = str(uuid.uuid4())
        registration = {"farm_id": req.farm, "gateway_id": req.gateway, "spec": specs[0].key if specs else None,
                        "event_id": journal.event_id, "claim_code": req.claim,
                        "event_detail": {"board_uid": info.uid, "specs": [s.key for s in specs],
                                         "firmware": ctx.bundle.version, "technician": technician(), "tool": TOOL}}
        entry = ctx.vault.put(journal.device_id, req.tenant, {"key_hex": os.urandom(32).hex(),
                                                              "registration": registration})
        journal.mark("key")
        ctx.journals.save(journal)
        progress.done("sealed in the vault")
    else:
        entry = _new_claim_code(ctx, entry, req.claim)
        progress.skipped("made before (in the vault)")

    progress.step("register", "Register in the cloud")
    if journal.done("register"):
        progress.skipped("registered before")
    elif ctx.cloud is None or not online:
        _go_offline(ctx, journal)
        progress.skipped("offline: kept encrypted until `fieldtrust node sync`")
    else:
        assert entry is not None  # only wiped once registered
        try:
            device = register_entry(ctx.cloud, ctx.vault, entry)
            journal.notes["key_epoch"] = device.get("key_epoch") or FIRST_KEY_EPOCH
            journal.notes["farm"] = device.get("farm_id")
            journal.mark("register")
            journal.offline = False
            ctx.journals.save(journal)
            progress.done(f"{journal.device_id} in {req.tenant}, farm {device.get('farm_id')}"
                          + (f", field {device['field_id']}" if device.get("field_id") else ""))
        except CloudUnreachable as exc:
            online = False
            _go_offline(ctx, journal)
            progress.skipped(f"offline ({exc}): kept encrypted until `fieldtrust node sync`")

    progress.step("settings", "Write settings and key")
    if journal.done("settings"):
        progress.skipped("written before")
    else:
        assert entry is not None  # only wiped once the settings are written
        sensors = node_settings.sensors(specs, board, battery=req.battery, modbus_unit=req.modbus_unit,
                                        ds18b20_rom=req.ds18b20_rom)
        # a new device's key is the cloud's first epoch; offline, sync checks that the cloud agrees
        epoch = journal.notes.setdefault("key_epoch", FIRST_KEY_EPOCH)
        settings = node_settings.settings_file(journal.device_id, entry.secret["key_hex"], req.broker,
                                               req.wifi_ssid, req.wifi_password, sensors, key_epoch=epoch)
        board.write_file(SETTINGS_PATH, json.dumps(settings).encode())
        journal.notes["sensors"] = sensors
        journal.mark("settings")
        ctx.journals.save(journal)
        progress.done(", ".join(sorted(sensors)))

    progress.step("firmware", "Copy the firmware")
    if journal.done("firmware") and journal.notes.get("firmware") == ctx.bundle.version:
        progress.skipped("copied before")
    else:
        copied = copy_firmware(board, ctx.bundle, progress)
        journal.notes["firmware"] = ctx.bundle.version
        journal.mark("firmware")
        ctx.journals.save(journal)
        progress.done(f"{ctx.bundle.version}: {copied} of {len(ctx.bundle.files)} files copied")

    if journal.done("register") and ctx.vault.wipe(journal.device_id):
        journal.notes["key_wiped"] = True  # the cloud and the board have it: nothing to keep here
        ctx.journals.save(journal)

    progress.step("reset", "Reset the board")
    if journal.done("reset"):
        progress.skipped("reset before")
    else:
        board.reset()
        journal.mark("reset")
        ctx.journals.save(journal)
        progress.done()

    progress.step("wait", "Wait for the first signed message")
    if journal.done("wait"):
        progress.skipped("arrived before")
    elif not req.wait:
        progress.skipped("--no-wait")
    elif ctx.cloud is None or not journal.done("register"):
        progress.skipped("offline")
    else:
        seen = wait_first_message(ctx.cloud, req.tenant, journal.device_id, req.wait_timeout_s, ctx.sleep, progress)
        journal.notes["first_seen"] = seen
        journal.mark("wait")
        ctx.journals.save(journal)
        progress.done(f"last seen {seen}")

    progress.step("label", "Print the label")
    label = Label(req.tenant, journal.device_id, req.farm or journal.notes.get("farm"), tuple(s.key for s in specs),
                  offline=not journal.done("register"))
    png = label.save_png(ctx.label_dir)
    journal.mark("label")
    journal.completed_at = journal.steps["label"]
    ctx.journals.save(journal)
    progress.done(str(png))
    return Outcome(journal.device_id, info.uid, not journal.done("register"), label, png, resumed_from,
                   dict(journal.notes))


def _journal(req: Request, ctx: Context, info: BoardInfo) -> Journal:
    """The board's journal: a new one, or the unfinished one when this request matches it."""
    found = ctx.journals.load(info.uid)
    options = req.options()
    if found is not None and req.restart:
        entry_state = ctx.vault.entries("pending-sync")
        if found.device_id in entry_state:
            raise ProvisioningError(f"{found.device_id} waits for `fieldtrust node sync`; a restart would lose it",
                                    todo="run `fieldtrust node sync` first, then --restart")
        ctx.vault.wipe(found.device_id)
        ctx.journals.discard(info.uid)
        found = None
    if found is None:
        return Journal(info.uid, req.device_id or default_device_id(info.uid), req.tenant, options)
    if found.completed_at is not None:
        raise AlreadyProvisioned(f"board {info.uid} was provisioned as {found.device_id} on {found.completed_at}")
    if found.tenant != req.tenant or found.options != options:
        changed = sorted(k for k in options if found.options.get(k) != options[k])
        if found.tenant != req.tenant:
            changed.insert(0, "tenant")
        raise JournalMismatch(f"board {info.uid} has an unfinished provisioning as {found.device_id} with other "
                              f"options ({', '.join(changed)} differ)")
    return found


def _new_claim_code(ctx: Context, entry: Entry, claim: str | None) -> Entry:
    """A run again with another --claim (the first was refused) replaces the code waiting in the vault."""
    reg = entry.secret["registration"]
    if claim is None or reg.get("claim_code") in (None, claim) or entry.secret.get("claimed"):
        return entry
    secret = entry.secret | {"registration": reg | {"claim_code": claim}, "claim_attempted": False}
    return ctx.vault.put(entry.device_id, entry.tenant, secret, entry.state)


def _go_offline(ctx: Context, journal: Journal) -> None:
    journal.offline = True
    ctx.vault.set_state(journal.device_id, "pending-sync")
    ctx.journals.save(journal)


def copy_firmware(board: Board, bundle: Bundle, progress: Progress) -> int:
    """Copy what the board lacks (by SHA-256), ``main.py`` last so a half copy never boots; the count copied."""
    files = sorted(bundle.files, key=lambda f: (f.path == BOARD_MAIN, f.path))
    progress.total(len(files))
    on_board = board.hashes(f.path for f in files)
    todo = [f for f in files if on_board.get(f.path) != f.sha256]
    progress.advance(len(files) - len(todo))
    board.copy([(bundle.out_dir / f.path, f.path) for f in todo], on_file=lambda _: progress.advance(1))
    board.write_file(MANIFEST_PATH, bundle.manifest_path.read_bytes())
    after = board.hashes(f.path for f in files)
    wrong = [f.path for f in files if after.get(f.path) != f.sha256]
    if wrong:
        raise BoardCommandFailed(f"after the copy {len(wrong)} file(s) differ on the board: {', '.join(wrong[:5])}")
    return len(todo)


def wait_first_message(cloud: CloudClient, tenant: str, device_id: str, timeout_s: float,
                       sleep: Callable[[float], None], progress: Progress) -> str:
    """Poll the device's last-seen until it is set; NoFirstMessage after ``timeout_s``."""
    polls = max(1, int(timeout_s / WAIT_POLL_S))
    progress.total(polls)
    for _ in range(polls):
        device = cloud.device(tenant, device_id)
        if device is not None and device.get("last_seen_at"):
            return str(device["last_seen_at"])
        progress.advance(1)
        sleep(WAIT_POLL_S)
    raise NoFirstMessage(f"no message from {device_id} reached the cloud within {timeout_s:g} s")
