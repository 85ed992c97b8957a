"""``fieldtrust node``: a technician provisions, checks, calibrates, replaces and updates sensor nodes.

Thin: options are parsed here, the work is in :mod:`provisioning`.  Errors print their code, what
happened and what to do (docs/technician-provisioning.md has a section per code), exit status 1.
The cloud is the API at FIELDTRUST_API_URL with FIELDTRUST_ADMIN_TOKEN; the vault's passphrase comes
from FIELDTRUST_VAULT_PASSPHRASE or a prompt.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from fieldtrust.cli.provisioning_support import (
    RichProgress,
    cloud_client,
    console,
    fail,
    passphrase,
    ports_from,
    workspace,
)

app = typer.Typer(no_args_is_help=True)

_API = typer.Option(None, "--api-url", help="The cloud API (default: FIELDTRUST_API_URL).")
_TOKEN = typer.Option(None, "--token", help="The API credential (default: FIELDTRUST_ADMIN_TOKEN).")
_DATA = typer.Option(None, "--data-dir", help="The technician's folder (default: FIELDTRUST_TECH_DIR or per user).")
_PORT = typer.Option(..., "--port", help="The board's USB serial port, e.g. /dev/ttyUSB0.")
_TENANT = typer.Option(None, "--tenant", envvar="FIELDTRUST_TENANT", help="The tenant (FIELDTRUST_TENANT).")


@app.command()
def provision(
    port: str | None = typer.Option(None, "--port", help="One board's port, e.g. /dev/ttyUSB0."),
    ports: str | None = typer.Option(None, "--ports", help="Several boards in turn: P1,P2,..."),
    all_ports: bool = typer.Option(False, "--all", help="Every USB serial board plugged in, in turn."),
    tenant: str = typer.Option(..., "--tenant", envvar="FIELDTRUST_TENANT", help="The tenant (FIELDTRUST_TENANT)."),
    farm: str | None = typer.Option(None, "--farm", help="The farm the node goes to (or --claim)."),
    claim: str | None = typer.Option(None, "--claim", envvar="FIELDTRUST_CLAIM_CODE",
                                     help="A claim code from the office (instead of --farm): the node goes to its "
                                          "farm and field."),
    spec: list[str] = typer.Option(..., "--spec", help="A sensor's model (repeat for each sensor on the node)."),
    wifi: str = typer.Option(..., "--wifi", help="The Wi-Fi name (SSID) of the farm's gateway."),
    wifi_password: str | None = typer.Option(None, "--wifi-password", envvar="FIELDTRUST_WIFI_PASSWORD",
                                             help="Its password (FIELDTRUST_WIFI_PASSWORD, else asked)."),
    broker: str = typer.Option("192.168.4.1:1883", "--broker", help="The gateway's broker as the node reaches it."),
    gateway: str | None = typer.Option(None, "--gateway", help="The gateway the node reports through."),
    device_id: str | None = typer.Option(None, "--id", help="Device id (default: node-<12 hex of the board id>)."),
    battery: bool = typer.Option(True, "--battery/--no-battery", help="Report the battery voltage (GPIO35)."),
    modbus_unit: int | None = typer.Option(None, "--modbus-unit", min=1, max=247, help="A Modbus probe's unit id."),
    ds18b20_rom: str | None = typer.Option(None, "--ds18b20-rom", help="The DS18B20 to use when several answer."),
    bundle: Path | None = typer.Option(None, "--bundle", help="A firmware bundle folder (default: built here)."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for the node's first message in the cloud."),
    wait_timeout: float = typer.Option(180.0, "--wait-timeout", min=1, help="Seconds to wait for it."),
    offline: bool = typer.Option(False, "--offline", help="Do not try the cloud: register later with `node sync`."),
    restart: bool = typer.Option(False, "--restart", help="Forget this board's unfinished provisioning first."),
    label_dir: Path | None = typer.Option(None, "--label-dir", help="Where label PNGs go (default: data dir)."),
    api_url: str | None = _API,
    token: str | None = _TOKEN,
    data_dir: Path | None = _DATA,
) -> None:
    """Provision boards: register the device and its key, write settings and firmware, wait for its first message.

    A failure halfway (board unplugged, no signal) is resumed by running the same command again.
    """
    from provisioning.errors import ProvisioningError
    from provisioning.node_settings import parse_broker
    from provisioning.steps import Context, Request, provision

    targets = ports_from(port, ports, all_ports)
    if (farm is None) == (claim is None):
        raise typer.BadParameter("give exactly one of --farm or --claim")
    if claim is not None and len(targets) > 1:
        raise typer.BadParameter("--claim: a claim code is for one node; use --farm for several boards")
    try:
        broker_at = parse_broker(broker)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    password = wifi_password if wifi_password is not None else typer.prompt(f"Wi-Fi password for {wifi}",
                                                                            hide_input=True)
    ws = workspace(data_dir)
    try:
        ctx = Context(ws.journals, ws.vault(passphrase(ws)), None if offline else cloud_client(api_url, token),
                      ws.bundle(bundle), label_dir or ws.labels, ws.private_tmp)
    except ProvisioningError as exc:
        fail(exc)
    failed = []
    for target in targets:
        console.rule(f"[bold]{target}")
        request = Request(target, tenant, farm, tuple(spec), wifi, password, broker_at, gateway, device_id, battery,
                          modbus_unit, ds18b20_rom, wait, wait_timeout, restart, claim)
        try:
            with RichProgress() as progress:
                outcome = provision(request, ctx, progress)
        except ProvisioningError as exc:
            failed.append(target)
            fail(exc, exit_now=len(targets) == 1)
            continue
        console.print(outcome.label.terminal(), highlight=False)
        console.print(f"label: {outcome.png}" + (f"  (resumed at: {outcome.resumed_from})" if outcome.resumed_from
                                                 else ""))
        if outcome.offline:
            console.print("[yellow]offline:[/] the key stays encrypted on this laptop; run `fieldtrust node sync` "
                          "when online.")
    if len(targets) > 1:
        console.print(f"{len(targets) - len(failed)} of {len(targets)} boards provisioned"
                      + (f"; failed: {', '.join(failed)} (run again for those)" if failed else ""))
    if failed:
        raise typer.Exit(1)


@app.command()
def sync(api_url: str | None = _API, token: str | None = _TOKEN, data_dir: Path | None = _DATA) -> None:
    """Register the nodes provisioned offline (then wipe their keys from this laptop), and store the calibrations
    measured offline."""
    from provisioning.errors import ProvisioningError
    from provisioning.pending import send_pending
    from provisioning.registration import sync_pending

    ws = workspace(data_dir)
    results: list[tuple[bool, str]] = []
    try:
        vault = ws.vault(passphrase(ws))
        if not vault.entries("pending-sync") and not ws.pending.all():
            console.print("nothing to sync: no node waits for registration, no calibration for the cloud")
            return
        cloud = cloud_client(api_url, token)
        for r in sync_pending(cloud, vault, ws.journals):  # first: a node's config needs the node
            results.append((r.registered, f"{r.device_id} ({r.tenant}): {r.message}"))
        for c in send_pending(cloud, ws.pending):
            results.append((c.stored, f"{c.device_id} ({c.tenant}): {c.message}"))
    except ProvisioningError as exc:
        for ok, text in results:
            console.print(("[green]✓[/] " if ok else "[red]✗[/] ") + escape(text), highlight=False)
        fail(exc)
    for ok, text in results:
        console.print(("[green]✓[/] " if ok else "[red]✗[/] ") + escape(text), highlight=False)
    if not all(ok for ok, _ in results):
        raise typer.Exit(1)


@app.command()
def verify(port: str = _PORT, tenant: str | None = _TENANT, api_url: str | None = _API, token: str | None = _TOKEN,
           data_dir: Path | None = _DATA) -> None:
    """On-site check: Wi-Fi signal, a live reading of each sensor next to its spec's plausible range."""
    from fieldtrust.cli.provisioning_support import run_onsite, verify_report

    run_onsite(port, tenant, api_url, token, data_dir, verify_report)


@app.command()
def calibrate(
    port: str = _PORT,
    air_mv: float | None = typer.Option(None, "--air-mv", min=0, max=3300,
                                        help="The dry-air point, measured before (default: measure it now)."),
    water_mv: float | None = typer.Option(None, "--water-mv", min=0, max=3300,
                                          help="The in-water point, measured before (default: measure it now)."),
    samples: int = typer.Option(5, "--samples", min=1, max=50, help="Readings per point (their median counts)."),
    tenant: str | None = _TENANT,
    api_url: str | None = _API,
    token: str | None = _TOKEN,
    data_dir: Path | None = _DATA,
) -> None:
    """Two-point (dry air, water) calibration of the soil probe, stored in the node's signed config.

    Asks to place the probe, then reads it on the board; --air-mv/--water-mv give a point instead (both:
    no prompt, for scripts).  Offline, the result waits on this laptop for `fieldtrust node sync`.
    """
    from fieldtrust.cli.provisioning_support import calibrate_guided, run_onsite

    run_onsite(port, tenant, api_url, token, data_dir, calibrate_guided(air_mv, water_mv, samples))


@app.command()
def info(port: str = _PORT, tenant: str | None = _TENANT, api_url: str | None = _API, token: str | None = _TOKEN,
         data_dir: Path | None = _DATA) -> None:
    """What the board holds (id, settings, firmware) and what the cloud knows of it (last seen, history)."""
    from fieldtrust.cli.provisioning_support import info_report, run_onsite

    run_onsite(port, tenant, api_url, token, data_dir, info_report)


@app.command()
def logs(port: str = _PORT, seconds: float | None = typer.Option(None, "--seconds", min=0.1,
                                                                  help="Stop after this long (default: Ctrl-C).")
         ) -> None:
    """Tail the board's own output (what the firmware prints)."""
    from provisioning.board import tail
    from provisioning.errors import ProvisioningError

    try:
        tail(port, seconds, lambda line: console.print(line, markup=False, highlight=False))
    except ProvisioningError as exc:
        fail(exc)
    except KeyboardInterrupt:
        pass


@app.command()
def replace(
    old: str = typer.Argument(..., help="The node taken away."),
    new: str = typer.Argument(..., help="The node put in its place (provisioned already)."),
    tenant: str = typer.Option(..., "--tenant", envvar="FIELDTRUST_TENANT", help="The tenant (FIELDTRUST_TENANT)."),
    note: str = typer.Option("", "--note", help="Why, for the history (e.g. 'probe cable cut')."),
    keep_old_key: bool = typer.Option(False, "--keep-old-key",
                                      help="Leave the old node's key valid (its messages still waiting at the "
                                           "gateway are then accepted; revoke it later with the keys API)."),
    api_url: str | None = _API,
    token: str | None = _TOKEN,
) -> None:
    """The new node takes over the old one's farm, field, install place, gateway and series; the old key is revoked."""
    from provisioning.errors import ProvisioningError

    try:
        done = cloud_client(api_url, token).replace(tenant, old, new, note, revoke_old_key=not keep_old_key)
    except ProvisioningError as exc:
        fail(exc)
    device = done["device"]
    place = f"farm {device.get('farm_id')}" + (f", field {device['field_id']}" if device.get("field_id") else "")
    console.print(f"{new} replaces {old} on {place} (gateway {device.get('gateway_id')}); recorded at "
                  f"{done['old_event']['at']}", highlight=False)
    revoked = done["old_event"]["detail"].get("revoked_epochs") or []
    console.print(f"key epoch(s) {', '.join(map(str, revoked))} of {old} revoked: the old board can no longer send"
                  if revoked else f"the key of {old} stays valid", highlight=False)


@app.command()
def update(
    device: str = typer.Argument(..., help="The node's device id."),
    version: int = typer.Option(..., "--version", min=1, help="The build number of a firmware release published "
                                "in the cloud (`fieldtrust cloud firmware publish`)."),
    tenant: str = typer.Option(..., "--tenant", envvar="FIELDTRUST_TENANT", help="The tenant (FIELDTRUST_TENANT)."),
    api_url: str | None = _API,
    token: str | None = _TOKEN,
) -> None:
    """Push an over-the-air update: the node fetches the release through its gateway at its next wake."""
    from provisioning.errors import ProvisioningError

    try:
        job = cloud_client(api_url, token).push_ota(tenant, device, version)
    except ProvisioningError as exc:
        fail(exc)
    console.print(f"OTA job {job.get('id')}: build {version} for {device} through gateway {job.get('gateway_id')}, "
                  f"{job.get('status')}; the node installs it at its next wake", highlight=False)
