"""``fieldtrust spec``: validate spec files, show a model, compact it for a node, certify a device against its spec."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from device_specs.registry import MODELS_DIR, SpecError, builtin_specs, get_spec, load_spec_file
from device_specs.schema import Point

app = typer.Typer(no_args_is_help=True)
out = Console()
err = Console(stderr=True)


@app.command()
def validate(paths: list[Path] = typer.Argument(None, help="Spec files or folders (default: shipped specs).")) -> None:
    """Validate spec files; exit 1 if any is invalid, naming file, point and key."""
    files: list[Path] = []
    for p in paths or [MODELS_DIR]:
        files.extend(sorted(p.glob("*.yaml")) if p.is_dir() else [p])
    if not files:
        err.print("no spec files found")
        raise typer.Exit(1)
    bad = 0
    for f in files:
        try:
            s = load_spec_file(f)
        except SpecError as exc:
            bad += 1
            err.print(f"[red]invalid[/red] {exc}", highlight=False)
        else:
            out.print(f"[green]ok[/green] {f}  {s.key}  ({len(s.points)} points)", highlight=False)
    if bad:
        err.print(f"{bad} of {len(files)} spec files invalid")
        raise typer.Exit(1)


@app.command("list")
def list_models() -> None:
    """List the shipped sensor models."""
    t = Table("model", "version", "interface", "category", "points", "manufacturer")
    for s in builtin_specs().values():
        t.add_row(s.model, s.version, s.interface.value, s.category, str(len(s.points)), s.manufacturer)
    out.print(t)


def _where(p: Point) -> str:
    """Where a point lives: its Modbus table, serial-line field or node channel."""
    if p.table is not None:
        return p.table.value
    if p.field is not None:
        return f"field {p.field}"
    return f"channel {p.channel}" if p.channel is not None else "-"


@app.command()
def show(model: str = typer.Argument(..., help="Model id, model@version or a spec file.")) -> None:
    """Show a model's identity, line defaults and register map."""
    try:
        s = get_spec(model)
    except SpecError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(1) from None
    out.print(f"[bold]{s.key}[/bold]  {s.manufacturer} — {s.name}", highlight=False)
    line = f"interface {s.interface.value}"
    if s.serial:
        ser = s.serial
        line += f", {ser.baud} baud {ser.data_bits}{ser.parity.value}{ser.stop_bits}, unit {ser.unit_id}"
    if s.i2c_address is not None:
        line += f", i2c address 0x{s.i2c_address:02X}"
    out.print(line, highlight=False)
    tm = s.timing
    timing = f"timing: timeout {tm.response_timeout_ms} ms, slowest answer {tm.max_response_ms} ms"
    if s.interface.is_modbus:
        timing += f", ≤{tm.max_registers_per_read} registers per read, gaps ≤{tm.max_gap}"
    out.print(f"{timing}, warm-up {tm.warmup_ms} ms", highlight=False)
    out.print(f"source: {s.source.document} (rev. {s.source.revision})", highlight=False)
    t = Table("metric", "where", "address", "type", "order", "scale", "offset", "unit", "range", "poll s", "verified")
    for p in s.points:
        t.add_row(
            p.metric, _where(p),
            f"{p.address} (0x{p.address:04X})" if p.address is not None else "-",
            p.type.value + (f" bit {p.bit}" if p.bit is not None else "") + (f"[{p.length}]" if p.length else ""),
            p.order.value, f"{p.scale:g}", f"{p.offset:g}", p.unit,
            f"{p.range[0]:g}..{p.range[1]:g}" if p.range else "-", f"{p.poll_interval_s:g}",
            "yes" if p.verified else "no",
        )
    out.print(t)


@app.command()
def compact(model: str = typer.Argument(..., help="Model id, model@version or a spec file (Modbus RTU).")) -> None:
    """Print the compact JSON a sensor node polls the model with, then its size (on stderr)."""
    from device_specs.compact import CompactError, to_json
    from device_specs.compact import compact as compact_form

    try:
        text = to_json(compact_form(get_spec(model)))
    except (SpecError, CompactError) as exc:
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    print(text)
    err.print(f"{len(text.encode())} bytes", highlight=False)


@app.command()
def certify(
    spec: str = typer.Option(..., "--spec", help="Model id, model@version or a spec file."),
    port: str | None = typer.Option(None, "--port", help="Serial port of the RS485 adapter, e.g. /dev/ttyUSB0."),
    tcp: str | None = typer.Option(None, "--tcp", help="A Modbus TCP endpoint HOST:PORT instead of a serial port."),
    unit: int | None = typer.Option(None, "--unit", help="Unit id (default: the spec's)."),
    baud: int | None = typer.Option(None, "--baud", help="Serial speed (default: the spec's)."),
    parity: str | None = typer.Option(None, "--parity", help="N, E or O (default: the spec's)."),
    stop_bits: int | None = typer.Option(None, "--stop-bits", help="1 or 2 (default: the spec's)."),
    rounds: int = typer.Option(3, "--rounds", min=1, max=1000, help="Times every point is read."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check a device against its spec: points, ranges, timing, exception answers, CRC.  Exit 0 pass, 1 fail."""
    import json

    from edge_agent.commissioning.certify import certify as run_certify
    from edge_agent.commissioning.link import open_link

    try:
        s = get_spec(spec)
        if not s.interface.is_modbus:
            raise SpecError(f"{s.key} is a {s.interface.value} sensor; certify checks Modbus devices")
        serial = s.serial
        transport = open_link(
            port, tcp, baud or (serial.baud if serial else 9600), parity or (serial.parity.value if serial else "N"),
            stop_bits or (serial.stop_bits if serial else 1),
        )
    except (SpecError, ValueError) as exc:
        err.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(2) from None
    report = run_certify(s, transport, unit if unit is not None else (serial.unit_id if serial else 1), rounds)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
        raise typer.Exit(0 if report.passed else 1)
    verdict = "[green]PASS[/green]" if report.passed else "[red]FAIL[/red]"
    out.print(f"{verdict}  {report.spec} at unit {report.unit} on {report.endpoint}, {report.rounds} rounds",
              highlight=False)
    checks = Table("check", "result", "detail")
    for c in report.checks:
        checks.add_row(c.name, "[green]pass[/green]" if c.passed else "[red]fail[/red]", c.detail)
    out.print(checks)
    t = report.timing
    if t.samples:
        out.print(f"device response time over {t.samples} answers: min {t.min_ms} / median {t.median_ms} / "
                  f"p95 {t.p95_ms} / max {t.max_ms} ms (spec: at most {t.limit_ms} ms)", highlight=False)
    points = Table("metric", "ok", "in range", "min", "max", "last", "unit", "error")
    for p in report.points:
        points.add_row(p.metric, f"{p.ok}/{p.reads}", f"{p.in_range}/{p.ok}", str(p.low if p.low is not None else "-"),
                       str(p.high if p.high is not None else "-"), str(p.last if p.last is not None else "-"), p.unit,
                       p.errors[0] if p.errors else "")
    out.print(points)
    raise typer.Exit(0 if report.passed else 1)
