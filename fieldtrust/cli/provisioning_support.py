"""Shared parts of ``fieldtrust node`` and ``fieldtrust gateway``: settings, progress bar, errors, on-site reports.

Errors become ``error [code]: message`` plus ``what to do: …`` on stderr and exit status 1, never a
traceback; the codes are the sections of docs/technician-provisioning.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn
from rich.table import Table

from provisioning.errors import CloudUnreachable, ProvisioningError

if TYPE_CHECKING:  # the commands import these when they run, so `fieldtrust --help` stays quick
    from provisioning.board import Board
    from provisioning.cloud_client import CloudClient
    from provisioning.workspace import Workspace

console = Console()
err_console = Console(stderr=True)


def fail(exc: ProvisioningError, exit_now: bool = True) -> None:
    err_console.print(f"[red]error {escape(f'[{exc.code}]')}[/red]: {escape(str(exc))}", highlight=False)
    err_console.print(f"  what to do: {escape(exc.todo)}", highlight=False)
    if exit_now:
        raise typer.Exit(1)


def workspace(data_dir: Path | None) -> Workspace:
    from provisioning.workspace import Workspace

    return Workspace.default(data_dir)


def cloud_client(api_url: str | None, token: str | None) -> CloudClient:
    from provisioning.cloud_client import CloudClient, CloudSettings

    return CloudClient(CloudSettings.from_env(api_url, token))


def passphrase(ws: Workspace) -> str:
    """FIELDTRUST_VAULT_PASSPHRASE, else asked (twice when the vault is new)."""
    given = os.environ.get("FIELDTRUST_VAULT_PASSPHRASE")
    if given:
        return given
    new = not (ws.vault_dir / "vault.json").exists()
    return typer.prompt("Passphrase of the key vault on this laptop", hide_input=True, confirmation_prompt=new)


def ports_from(port: str | None, ports: str | None, all_ports: bool) -> list[str]:
    chosen = [x for x in (port is not None, ports is not None, all_ports) if x]
    if len(chosen) != 1:
        raise typer.BadParameter("give exactly one of --port, --ports or --all")
    if port is not None:
        return [port]
    if ports is not None:
        found = [p.strip() for p in ports.split(",") if p.strip()]
        if not found:
            raise typer.BadParameter("--ports: a comma-separated list of ports")
        return found
    from provisioning.board import usb_serial_ports

    found = usb_serial_ports()
    if not found:
        raise typer.BadParameter("--all: no ESP32 board is plugged in (no CP210x, CH340/CH9102, FTDI or Espressif "
                                 "USB serial port); check the cable, or name the ports with --ports")
    return found


class RichProgress:
    """The provisioning steps as a progress bar: one line per step done, a bar for steps that count."""

    def __init__(self) -> None:
        from provisioning.steps import STEPS

        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            console=console, transient=True)
        self.overall = self.bar.add_task("provisioning", total=len(STEPS))
        self.sub: TaskID | None = None
        self.label = ""

    def __enter__(self) -> RichProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def step(self, name: str, label: str) -> None:
        self._end_sub()
        self.label = label
        self.bar.update(self.overall, description=label)

    def total(self, n: int) -> None:
        self._end_sub()
        self.sub = self.bar.add_task(f"  {self.label}", total=n)

    def advance(self, n: int = 1) -> None:
        if self.sub is not None:
            self.bar.advance(self.sub, n)

    def done(self, note: str = "") -> None:
        self._end(f"[green]✓[/] {self.label}" + (f": {escape(note)}" if note else ""))

    def skipped(self, why: str) -> None:
        self._end(f"[dim]– {self.label}: {escape(why)}[/]")

    def _end(self, line: str) -> None:
        self._end_sub()
        self.bar.console.print(line, highlight=False)
        self.bar.advance(self.overall)

    def _end_sub(self) -> None:
        if self.sub is not None:
            self.bar.remove_task(self.sub)
            self.sub = None


# -- on-site commands --------------------------------------------------------------------------------

OnsiteAction = Callable[["Board", str, "str | None", "CloudClient", "Workspace"], None]


def run_onsite(port: str, tenant: str | None, api_url: str | None, token: str | None, data_dir: Path | None,
               action: OnsiteAction) -> None:
    """Identify the board, find its device id (and tenant, from the journal), run ``action``, reset the board."""
    from provisioning.board import Board
    from provisioning.onsite import node_id

    ws = workspace(data_dir)
    board = Board(port, private_dir=ws.private_tmp)
    try:
        board.identify()
        device = node_id(board)
        journal = ws.journals.by_device(device)
        tenant = tenant or (journal.tenant if journal else None)
        try:
            action(board, device, tenant, cloud_client(api_url, token), ws)
        finally:
            board.reset()  # the firmware was interrupted to ask: back to work
    except ProvisioningError as exc:
        fail(exc)


def _specs(ws: Workspace, device: str) -> list[Any]:
    from provisioning.node_settings import load_specs

    journal = ws.journals.by_device(device)
    return load_specs(journal.options["specs"]) if journal else []


def _calibration(cloud: CloudClient, tenant: str | None, device: str) -> dict[str, tuple[float, float]] | None:
    """The node's calibration in its desired config; None when there is none or the cloud cannot say."""
    from provisioning.node_config import calibration_of, desired_config

    if tenant is None:
        return None
    try:
        return calibration_of(desired_config(cloud.config(tenant, device))) or None
    except ProvisioningError:
        return None


def verify_report(board: Board, device: str, tenant: str | None, cloud: CloudClient, ws: Workspace) -> None:
    from provisioning.onsite import assess, readings, signal_quality, wifi

    signal = wifi(board)
    console.print(f"node {device}: Wi-Fi {signal['ssid']!r} "
                  + (f"connected, {signal['rssi']} dBm ({signal_quality(signal['rssi'])})" if signal["connected"]
                     else "[red]not connected[/]: check the name and password, and that the gateway is on"),
                  highlight=False)
    table = Table("metric", "reading", "plausible range", "")
    bad = 0
    for r in assess(_specs(ws, device), readings(board, samples=3), _calibration(cloud, tenant, device)):
        value = r.error or "-" if r.value is None else f"{r.value:.4g} {r.unit}" + (
            f" (from {r.derived_from})" if r.derived_from else "")
        span = "" if r.low is None else f"{r.low:g} .. {r.high:g} {r.unit}"
        verdict = {True: "[green]ok[/]", False: "[red]out of range[/]", None: ""}[r.plausible]
        bad += r.plausible is False or r.value is None
        table.add_row(r.metric, value, span, verdict)
    console.print(table)
    if tenant is not None:
        try:
            found = cloud.device(tenant, device)
            seen = (found or {}).get("last_seen_at")
            console.print(f"cloud: last message {seen}" if seen else "cloud: no message from this node yet",
                          highlight=False)
        except CloudUnreachable:
            console.print("cloud: not reachable from here (the node's own link is checked above)")
    if bad:
        raise ProvisioningError(f"{bad} reading(s) missing or out of range on {device}",
                                todo="check the sensor's wiring against the technician's guide and its placement")


def calibrate_guided(air_mv: float | None, water_mv: float | None, samples: int) -> OnsiteAction:
    """``node calibrate``: each point given, or measured on the board (median of ``samples`` readings, the
    rail on) after the technician placed the probe; the result stored in the node's config, else queued."""

    def action(board: Board, device: str, tenant: str | None, cloud: CloudClient, ws: Workspace) -> None:
        from provisioning.node_config import store_calibration
        from provisioning.onsite import SOIL_METRIC, soil_raw_mv, two_point_calibration

        if tenant is None:
            raise ProvisioningError("no tenant for this node", todo="give --tenant (or FIELDTRUST_TENANT)")

        def point(given: float | None, where: str) -> float:
            if given is not None:
                console.print(f"{where}: {given:.0f} mV (given)")
                return given
            typer.prompt(f"Put the probe {where.upper()}, then press Enter", default="", show_default=False)
            measured = soil_raw_mv(board, samples)
            console.print(f"{where}: {measured:.0f} mV (median of {samples} readings)")
            return measured

        air = point(air_mv, "in dry air (clean and dry)")
        water = point(water_mv, "in water up to the line")
        scale, offset = two_point_calibration(air, water)
        console.print(f"calibration: gain {scale:.6g}, offset {offset:.6g} (dry air {air:.0f} mV = 0 %, water "
                      f"{water:.0f} mV = 100 %)", highlight=False)
        calibration = {SOIL_METRIC: (scale, offset)}
        try:
            stored = store_calibration(cloud, tenant, device, calibration)
        except CloudUnreachable as exc:
            ws.pending.queue(tenant, device, calibration, {"air_mv": air, "water_mv": water, "samples": samples})
            console.print(f"[yellow]offline[/] ({escape(str(exc))}): the calibration is kept on this laptop; "
                          "`fieldtrust node sync` stores it when you are online", highlight=False)
            return
        console.print(f"stored as config version {stored.get('version')} of {device}; it reaches the node signed, "
                      "at its next wake", highlight=False)

    return action


def info_report(board: Board, device: str, tenant: str | None, cloud: CloudClient, ws: Workspace) -> None:
    from provisioning.onsite import board_facts

    facts = board_facts(board)
    console.print(f"board on {board.port}: node {device}, firmware {facts['firmware'] or 'unknown'}",
                  highlight=False)
    console.print_json(data=facts["settings"])
    journal = ws.journals.by_device(device)
    if journal is not None:
        console.print(f"provisioned here: started {journal.started_at}, completed {journal.completed_at or 'no'}"
                      + (" [yellow](registration waits for `node sync`)[/]" if journal.offline else ""))
    if tenant is None:
        return
    try:
        found = cloud.device(tenant, device)
        if found is None:
            console.print(f"cloud: {device} is not registered in {tenant}")
            return
        console.print(f"cloud: farm {found.get('farm_id')}, gateway {found.get('gateway_id')}, key epoch "
                      f"{found.get('key_epoch')}, last seen {found.get('last_seen_at') or 'never'}", highlight=False)
        for event in cloud.events(tenant, device):
            console.print(f"  {event['at']} {event['kind']} by {event['by']}: {event['detail']}", highlight=False)
    except CloudUnreachable:
        console.print("cloud: not reachable")
