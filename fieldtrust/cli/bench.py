"""``fieldtrust bench``: the benchmarks of ``bench/`` (a source checkout's folder, not an installed package).

Each command hands its arguments to the benchmark's own ``main`` so that ``fieldtrust bench X``
and ``python -m bench.X`` are the same program.
"""

from __future__ import annotations

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
