"""``fieldtrust bench``: the benchmarks of ``bench/`` (a source checkout's folder, not an installed package).

``all`` runs every benchmark in a child process of its own and prints one table (bench/runner.py);
the other commands hand their arguments to the benchmark's own ``main`` so that ``fieldtrust bench X``
and ``python -m bench.X`` are the same program.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)
REPO = Path(__file__).resolve().parents[2]


def _bench_module(name: str):  # -> the module bench.<name>
    """Import ``bench.<name>`` from the checkout this command was installed from."""
    import importlib

    if not (REPO / "bench" / f"{name}.py").is_file():
        typer.echo(f"bench/{name}.py not found next to {REPO / 'fieldtrust'}: benchmarks run from a source checkout",
                   err=True)
        raise typer.Exit(2)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module(f"bench.{name}")


@app.command()
def ingest(
    messages: int = typer.Option(200, "--messages", min=1, help="Gateway batches of 1,000 readings."),
    node_messages: int = typer.Option(10_000, "--node-messages", min=1, help="Single-node messages of 5 readings."),
    repeat: int = typer.Option(3, "--repeat", min=1, help="Runs of each figure (the median is reported)."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Ingest throughput, broker to committed rows, with the COPY ceiling and the write path as baselines."""
    argv = ["--messages", str(messages), "--node-messages", str(node_messages), "--repeat", str(repeat)]
    raise typer.Exit(_bench_module("ingest").main(argv + (["--json"] if as_json else [])))


@app.command("all")
def all_benchmarks(
    only: list[str] = typer.Option([], "--only", help="Run only these benchmarks (repeatable); default: all."),
    quick: bool = typer.Option(False, "--quick", help="Small sizes: the whole suite in minutes (not for timing)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    write_docs: bool = typer.Option(False, "--write-docs", help="Rewrite the generated table in docs/performance.md."),
) -> None:
    """Every benchmark, each in its own process: one table of figures, baselines, ratios and targets."""
    runner = _bench_module("runner")
    try:
        names = runner.check_names(list(only)) if only else list(runner.MODULES)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    suite = runner.run_all(names, quick, progress=True)
    if as_json:
        typer.echo(json.dumps(suite.as_dict(), indent=2))
    else:
        runner.print_table(suite)
    if write_docs:
        runner.write_docs(suite)
        typer.echo(f"wrote the table into {runner.PERFORMANCE_MD}", err=True)
    raise typer.Exit(0 if suite.ok else 1)


@app.command()
def load(
    devices: int = typer.Option(10_000, "--devices", min=10, help="Bus devices and nodes in all."),
    duration: float = typer.Option(300.0, "--duration", min=1.0, help="Seconds of steady load."),
    burst: bool = typer.Option(False, "--burst", help="Then every gateway reconnects and drains a backlog at once."),
    as_json: bool = typer.Option(False, "--json", help="Print the account as JSON."),
) -> None:
    """Many gateways and nodes at field intervals; every message accounted for (exit 1 if any is unknown)."""
    argv = ["--devices", str(devices), "--duration", str(duration)] + (["--burst"] if burst else [])
    raise typer.Exit(_bench_module("fleet_load").main(argv + (["--json"] if as_json else [])))


@app.command()
def scaleout(
    messages: int = typer.Option(200, "--messages", min=1, help="Gateway batches of 1,000 readings."),
    node_messages: int = typer.Option(10_000, "--node-messages", min=1, help="Single-node messages of 5 readings."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Ingest with 1, 2 and 4 workers on one shared subscription, and which process is the limit."""
    argv = ["--messages", str(messages), "--node-messages", str(node_messages)]
    raise typer.Exit(_bench_module("ingest_scaleout").main(argv + (["--json"] if as_json else [])))
