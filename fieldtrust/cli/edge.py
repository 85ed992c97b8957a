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
