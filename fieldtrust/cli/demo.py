"""``fieldtrust demo``: the whole path on this machine; the exit status says whether every reading is stored."""

from __future__ import annotations

from pathlib import Path

import typer

from fieldtrust.services.broker import BrokerKind

#: exit statuses: every reading stored / readings unaccounted for / could not start / interrupted twice
OK, UNACCOUNTED, CANNOT_START, INTERRUPTED = 0, 1, 2, 130


def run_demo(farms: int, duration_s: float | None, port: int | None, broker: BrokerKind,
             data_dir: Path | None) -> int:
    from rich.console import Console

    from fieldtrust.demo import DemoError, DemoOptions
    from fieldtrust.demo import run_demo as run

    console = Console()
    options = DemoOptions(farms=farms, duration_s=duration_s, api_port=port, broker=broker, data_dir=data_dir)
    try:
        account = run(options, console)
    except DemoError as exc:
        typer.echo(f"the demo cannot start: {exc}", err=True)
        return CANNOT_START
    except KeyboardInterrupt:
        typer.echo("interrupted during the wind-down; everything started was stopped, no account taken", err=True)
        return INTERRUPTED
    return OK if account.ok else UNACCOUNTED
