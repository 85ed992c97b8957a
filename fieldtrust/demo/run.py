"""``run_demo``: the whole path on this machine, from an empty folder to the account of every reading.

Order of start: database, registry, broker, ingest workers, store upkeep, API (the cloud stack),
then the farms.  The run ends when ``duration_s`` is reached or on SIGINT/SIGTERM (a second
signal interrupts the wind-down).  Wind-down: the producers stop (buses, nodes), the gateways'
outboxes drain until the cloud has receipted every batch, the farms and the ingest workers stop,
and only then is the account counted in the database; the broker and database stop last.
Whatever was started is stopped on every way out, errors included.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.live import Live

from cloud.store import db
from fieldtrust.demo import report
from fieldtrust.demo.account import Account, count_run, tenant_readings
from fieldtrust.demo.farm import VirtualFarm
from fieldtrust.demo.plan import TENANT_ID, farm_plans
from fieldtrust.demo.stack import CloudStack
from fieldtrust.services.broker import BrokerKind, choose_kind

DEMO_DIR_ENV = "FIELDTRUST_DEMO_DIR"
#: how long the wind-down waits for the outboxes to drain (every batch receipted)
DRAIN_TIMEOUT_S = 30.0
#: a progress line this often when the console is not a terminal
PROGRESS_LINE_S = 10.0


def default_data_dir() -> Path:
    """``FIELDTRUST_DEMO_DIR``, else ``var/demo`` in the current folder (the project's, under ``make demo``)."""
    return Path(os.environ.get(DEMO_DIR_ENV) or Path("var") / "demo").resolve()


@dataclass(frozen=True)
class DemoOptions:
    farms: int = 2
    duration_s: float | None = None  # None: until SIGINT/SIGTERM
    api_port: int | None = None  # None: a free port
    broker: BrokerKind = "auto"
    data_dir: Path | None = None  # None: default_data_dir()


class StopSignals:
    """SIGINT and SIGTERM ask the run to wind down; a second one interrupts the wind-down.

    Installed only in the main thread (signals cannot be caught elsewhere); restored on exit.
    """

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._previous: dict[int, object] = {}

    def __enter__(self) -> threading.Event:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self.requested

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested.is_set():
            raise KeyboardInterrupt
        self.requested.set()

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]


@contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """Every component's log lines into one file while the demo runs, none over the live view."""
    root = logging.getLogger()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(previous)


class _Display:
    """The live view on a terminal; a progress line every few seconds elsewhere."""

    def __init__(self, console: Console, stack: CloudStack, farms: list[VirtualFarm], started: float) -> None:
        self.console, self.stack, self.farms, self.started = console, stack, farms, started
        self._live: Live | None = None
        self._next_line = started + PROGRESS_LINE_S

    def __enter__(self) -> _Display:
        if self.console.is_terminal:
            self._live = Live(self._view(), console=self.console, refresh_per_second=2)
            self._live.__enter__()
        return self

    def _view(self, note: str = "") -> object:
        return report.live_view(self.stack, self.farms, time.monotonic() - self.started, note)

    def update(self, note: str = "") -> None:
        now = time.monotonic()
        if self._live is not None:
            self._live.update(self._view(note))  # type: ignore[arg-type]
        elif now >= self._next_line:
            self._next_line = now + PROGRESS_LINE_S
            self.console.print(report.progress_line(self.farms, self.stack, now - self.started), highlight=False)

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)


def _produce(stop: threading.Event, duration_s: float | None, display: _Display) -> None:
    """Let the farms run (buses and nodes on their own threads) until the duration is over or a stop is asked for."""
    deadline = time.monotonic() + duration_s if duration_s is not None else None
    while not stop.is_set():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return
        display.update()
        stop.wait(min(0.5, deadline - now) if deadline is not None else 0.5)


def _drain(farms: list[VirtualFarm], display: _Display, timeout: float) -> bool:
    """Wait until every farm's gateway took its nodes' frames and every batch is receipted."""
    deadline = time.monotonic() + timeout
    while not all(farm.drained() for farm in farms):
        if time.monotonic() > deadline:
            return False
        display.update("winding down: waiting for the cloud's receipts")
        time.sleep(0.1)
    display.update("drained: every batch receipted")
    return True


def run_demo(options: DemoOptions | None = None, console: Console | None = None) -> Account:
    """Run the whole path and return the account of this run.  Raises DemoError when it cannot start."""
    options = options or DemoOptions()
    console = console or Console()
    plans = farm_plans(options.farms)
    data_dir = (options.data_dir or default_data_dir()).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    since = datetime.now(UTC)
    t0 = time.monotonic()
    console.print(f"[bold]FieldTrust demo[/bold]: {len(plans)} farm(s), data in {data_dir} (log: demo.log)")
    with _log_to(data_dir / "demo.log"), StopSignals() as stop, ExitStack() as cleanup:
        stack = CloudStack(data_dir, options.broker, options.api_port)
        cleanup.callback(stack.stop)
        with console.status("starting the database, broker, ingest workers and API"):
            identities = stack.start(plans)
        with db.connect(stack.settings.database_url, application="fieldtrust-demo") as conn:
            readings_before = tenant_readings(conn, TENANT_ID)
        farm_broker = choose_kind(options.broker)
        farms: list[VirtualFarm] = []
        for plan in plans:
            identity = identities[plan.farm_id]
            farm = VirtualFarm(plan, identity, data_dir / plan.farm_id, TENANT_ID,
                               stack.uplink_broker(identity, plan.gateway_id), farm_broker)
            cleanup.callback(farm.stop)
            farms.append(farm.start())
        startup_s = time.monotonic() - t0
        report.print_where(console, stack, farms, startup_s, readings_before)

        producing_since = time.monotonic()
        with _Display(console, stack, farms, producing_since) as display:
            _produce(stop, options.duration_s, display)
            seconds = time.monotonic() - producing_since
            for farm in farms:
                farm.stop_producers()
            drained = _drain(farms, display, DRAIN_TIMEOUT_S)
        for farm in farms:
            farm.stop()
        worker_ids = stack.worker_ids()
        stack.stop_services()  # the workers save their final counters
        with db.connect(stack.settings.database_url, application="fieldtrust-demo") as conn:
            account = count_run(
                conn, TENANT_ID, since, worker_ids, produced_gateway=sum(f.produced_gateway for f in farms),
                produced_nodes=sum(f.produced_nodes for f in farms), readings_before=readings_before,
                seconds=seconds, startup_s=startup_s, drained=drained)
    report.print_account(console, account, queued_nodes=sum(f.queued_nodes for f in farms),
                         dropped_nodes=sum(f.dropped_nodes for f in farms))
    return account
