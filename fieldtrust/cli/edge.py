"""``fieldtrust edge``: run and check the gateway agent, scan a bus."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


@app.command()
def run(
    config: Path = typer.Option(..., "--config", "-c", help="The gateway's YAML configuration file."),
) -> None:
    """Run the gateway agent until SIGTERM or Ctrl-C.  A bad configuration exits 2, naming the field."""
    from edge_agent.agent import Agent
    from edge_agent.config import ConfigError, load_config
    from edge_agent.logging_setup import setup_logging
    from edge_agent.outbox import OutboxError

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(f"invalid configuration\n{exc}", err=True)
        raise typer.Exit(2) from None
    setup_logging(cfg.logging)
    try:
        agent = Agent(cfg)
    except OutboxError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(agent.run())


@app.command()
def scan(
    port: str | None = typer.Option(None, "--port", help="Serial port of the RS485 adapter, e.g. /dev/ttyUSB0."),
    tcp: str | None = typer.Option(None, "--tcp", help="A Modbus TCP endpoint HOST:PORT instead of a serial port."),
    baud: int = typer.Option(9600, "--baud", help="Serial speed."),
    parity: str = typer.Option("N", "--parity", help="N, E or O."),
    stop_bits: int = typer.Option(1, "--stop-bits", help="1 or 2."),
    units: str = typer.Option("1-247", "--units", help="Unit ids to probe: 1-20, 5 or 1,3,10-12."),
    timeout_ms: int = typer.Option(100, "--timeout-ms", help="How long to wait for each unit's answer."),
) -> None:
    """Find which unit ids answer on a bus and which known sensor model each one is."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from edge_agent.bus.transport import LinkError
    from edge_agent.commissioning.link import open_link
    from edge_agent.commissioning.scan import AMBIGUOUS, UNKNOWN, parse_units
    from edge_agent.commissioning.scan import scan as scan_bus

    err = Console(stderr=True)
    try:
        unit_ids = parse_units(units)
        transport = open_link(port, tcp, baud, parity, stop_bits)
    except ValueError as exc:
        err.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(2) from None
    out = Console()
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task(f"scanning {transport.description}", total=len(unit_ids))
        try:
            found = scan_bus(transport, unit_ids, timeout_s=timeout_ms / 1000,
                             on_unit=lambda unit: progress.update(task, advance=1, description=f"unit {unit}"))
        except LinkError as exc:
            err.print(f"[red]bus unreachable:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
    table = Table("unit", "model", "candidates (points matched)", "why not a full match", title=transport.description)
    for result in found:
        verdict = result.verdict
        style = {AMBIGUOUS: "yellow", UNKNOWN: "red"}.get(verdict, "green")
        ranked = [c for c in result.candidates if c.matched][:3]
        best = result.candidates[0] if result.candidates else None
        table.add_row(
            str(result.unit), f"[{style}]{verdict}[/{style}]",
            ", ".join(f"{c.spec.key} {c.matched}/{c.total}" for c in ranked) or "-",
            "; ".join(best.problems[:2]) if best is not None and verdict == UNKNOWN else "",
        )
    out.print(table)
    out.print(f"{len(found)} of {len(unit_ids)} unit ids answered", highlight=False)
    raise typer.Exit(0 if found else 1)


@app.command()
def check(
    config: Path = typer.Option(..., "--config", "-c", help="The gateway's YAML configuration file."),
) -> None:
    """Validate a configuration and read every device once (run it with the agent stopped).

    Exits 2 on a bad configuration (naming the field), 1 if a device does not answer, else 0.
    """
    from rich.console import Console
    from rich.table import Table

    from edge_agent.commissioning.check import check_config
    from edge_agent.config import ConfigError, load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(f"invalid configuration\n{exc}", err=True)
        raise typer.Exit(2) from None
    rows = check_config(cfg)
    table = Table("device", "bus", "unit", "spec", "status", "values", "response ms", title=str(config))
    for row in rows:
        style = {"ok": "green", "error": "red"}.get(row.status, "dim")
        values = "\n".join(
            f"{r.metric} = {'-' if r.value is None else r.value} {r.unit}".rstrip()
            + (" (out of range)" if r.quality else "")
            for r in row.readings
        )
        table.add_row(row.device_id, row.bus_id, str(row.unit), row.spec, f"[{style}]{row.status}[/{style}]",
                      values or (row.error or ""), "" if row.response_ms is None else f"{row.response_ms:.1f}")
    Console(width=max(160, Console().width)).print(table)
    raise typer.Exit(0 if all(r.ok for r in rows) else 1)


# -- agent updates (edge_agent.updater) ------------------------------------------------------------------

update_app = typer.Typer(no_args_is_help=True, help="Install the agent release the cloud sent, or show releases.")
app.add_typer(update_app, name="update")

_CONFIG = typer.Option(Path("/etc/fieldtrust/gateway.yaml"), "--config", "-c", help="The gateway's configuration.")
_ROOT = typer.Option(Path("/opt/fieldtrust"), "--root", help="Where releases/, current and previous live.")


@update_app.command("apply")
def update_apply(
    config: Path = _CONFIG,
    root: Path = _ROOT,
    unit: str = typer.Option("fieldtrust-edge.service", "--unit", help="The agent's systemd unit, restarted."),
    health_timeout: float = typer.Option(120.0, "--health-timeout", min=1,
                                         help="Seconds the switched release has to show a heartbeat."),
) -> None:
    """Install the update the agent received (its data_dir/update/pending), switch, restart the agent, and switch
    back when no heartbeat follows.  Run as root by fieldtrust-edge-update.service (started by its .path unit
    when an update is pending, and at boot to finish a trial a power cut interrupted)."""
    import logging

    from edge_agent.config import ConfigError, load_config
    from edge_agent.updater import HeartbeatFile, ReleaseLayout, SystemdRestart, Updater, UpdateSpool, run_pending

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(config)
        key = cfg.gateway.key()
    except ConfigError as exc:
        typer.echo(f"invalid configuration\n{exc}", err=True)
        raise typer.Exit(2) from None
    updater = Updater(ReleaseLayout(root), SystemdRestart(unit), HeartbeatFile(cfg.heartbeat_path),
                      health_timeout_s=health_timeout)
    outcome = run_pending(UpdateSpool(cfg.update_dir), updater, key, cfg.gateway.id)
    typer.echo("no agent update pending" if outcome is None
               else f"agent release {outcome.version}: {outcome.result} {outcome.detail}".rstrip())


@update_app.command("status")
def update_status(config: Path = _CONFIG, root: Path = _ROOT) -> None:
    """The installed releases, the current and previous one, those that failed, and the last update's outcome."""
    import json

    from edge_agent.config import ConfigError, load_config
    from edge_agent.updater import ReleaseLayout, UpdateSpool

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(f"invalid configuration\n{exc}", err=True)
        raise typer.Exit(2) from None
    layout, spool = ReleaseLayout(root), UpdateSpool(cfg.update_dir)
    typer.echo(f"current:   {layout.current_version() or '-'}")
    typer.echo(f"previous:  {layout.version_of(layout.previous) or '-'}")
    typer.echo(f"installed: {', '.join(layout.installed()) or '-'}")
    typer.echo(f"failed:    {', '.join(layout.failed_versions()) or '-'}")
    typer.echo(f"pending:   {'yes' if spool.pending.exists() else 'no'}")
    typer.echo(f"last:      {json.dumps(spool.last_outcome()) if spool.last_outcome() else '-'}")
