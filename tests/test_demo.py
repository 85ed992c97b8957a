"""`fieldtrust demo`: the whole path on the embedded defaults, accounted for from the database.

Embedded PostgreSQL and a private broker on free ports (FIELDTRUST_DATABASE_URL and
FIELDTRUST_MQTT_URL unset), the demo's data in the test's folder (FIELDTRUST_DEMO_DIR).  One run
uses the test server's PostgreSQL instead, which outlives the run, to read the node frames stored:
they come from the node firmware itself (its version, its clock-sync field, its sequence numbers).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
from rich.console import Console

from contract import telemetry
from fieldtrust import processes
from fieldtrust.demo import DEMO_DIR_ENV, Account, DemoOptions, run_demo
from fieldtrust.demo.farm import LEGACY_SEQUENCES, legacy_sequence_floors
from fieldtrust.demo.plan import NODE_WAKE_S, FarmPlan
from fieldtrust.demo.report import print_account
from firmware.main import FW

#: settings that would send the demo elsewhere than its embedded defaults
FOREIGN_SETTINGS = ("FIELDTRUST_DATABASE_URL", "FIELDTRUST_MQTT_URL", "FIELDTRUST_KEK", "FIELDTRUST_KEK_FILE",
                    "FIELDTRUST_ADMIN_TOKEN", "FIELDTRUST_DEV_MODE", "FIELDTRUST_BROKER", DEMO_DIR_ENV)
TOTAL_ROW = re.compile(r"total\s*│\s*(\d+)\s*│\s*(\d+)")


def embedded_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_SETTINGS}
    return env | {DEMO_DIR_ENV: str(data_dir), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


@pytest.fixture
def embedded(monkeypatch):
    for name in FOREIGN_SETTINGS:
        monkeypatch.delenv(name, raising=False)


def processes_using(path: Path) -> list[psutil.Process]:
    """Processes whose command line names ``path`` (the demo's database and brokers do)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(path) in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


@dataclass
class FirstRun:
    data_dir: Path
    output: str
    exit_code: int
    api_ready: int
    devices_listed: list[str]


class Lines:
    """A child's stdout, line by line, with a timeout."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def until(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"no line matching {pattern!r}; output so far:\n{''.join(self.seen)}")
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match

    def rest(self) -> str:
        while (line := self._queue.get(timeout=30)) is not None:
            self.seen.append(line)
        return "".join(self.seen)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> FirstRun:
    """`fieldtrust demo` as a child process, on a new folder, until SIGTERM: the API asked while it runs."""
    data_dir = tmp_path_factory.mktemp("demo")
    proc = processes.spawn([sys.executable, "-m", "fieldtrust.cli.main", "demo", "--farms", "1"],
                           env=embedded_env(data_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = Lines(proc)
        api = lines.until(r"API\s+(http://127\.0\.0\.1:\d+)", timeout=60)[1]
        token = lines.until(r"admin token.*: (\S+)", timeout=5)[1]
        lines.until(r"stack up in", timeout=5)
        auth = {"Authorization": f"Bearer {token}"}
        ready = httpx.get(f"{api}/api/v1/health/ready", timeout=5).status_code
        time.sleep(4)  # readings flow
        devices = httpx.get(f"{api}/api/v1/tenants/demo-coop/devices", headers=auth, timeout=5).json()
        proc.send_signal(signal.SIGTERM)  # as Ctrl-C would: wind down, account, exit
        code = proc.wait(60)
        output = lines.rest()
    finally:
        processes.stop(proc)
    return FirstRun(data_dir, output, code, ready, [d["id"] for d in devices])


def test_demo_runs_the_whole_path_and_stores_every_reading_once(first_run):
    out = first_run.output
    assert first_run.exit_code == 0, out
    assert "embedded PostgreSQL" in out and f"data in {first_run.data_dir / 'pg'}" in out
    assert first_run.api_ready == 200
    assert {"f1-soil-north", "f1-pump-meter", "f1-node-1"} <= set(first_run.devices_listed)
    assert f"3 sensor nodes running the firmware ({FW}" in out
    produced, stored = map(int, TOTAL_ROW.search(out).groups())  # type: ignore[union-attr]
    assert stored == produced > 0, out
    assert "conflicts: 0" in out and "nothing lost" in out
    assert not processes_using(first_run.data_dir)  # database and brokers stopped with the demo


def test_a_second_run_resumes_on_the_same_data(first_run, embedded):
    _, first_stored = map(int, TOTAL_ROW.search(first_run.output).groups())  # type: ignore[union-attr]
    console = Console(record=True, width=200)
    account = run_demo(DemoOptions(farms=1, duration_s=3, data_dir=first_run.data_dir), console)
    assert account.readings_before == first_stored  # the same database, found again
    assert account.stored == account.produced > 0 and account.conflicts == 0
    assert account.produced_nodes > 0  # node sequence numbers carried on: no conflict with the first run's
    assert account.total_readings == first_stored + account.stored
    assert f"{first_stored} readings stored by earlier runs" in console.export_text()
    assert not processes_using(first_run.data_dir)


def test_the_demo_on_amqtt_one_worker_without_shared_subscriptions(tmp_path, embedded, monkeypatch):
    monkeypatch.setenv("FIELDTRUST_BROKER", "amqtt")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    threads_before = set(threading.enumerate())
    console = Console(record=True, width=200)
    account = run_demo(DemoOptions(farms=1, duration_s=3, data_dir=tmp_path), console)
    text = console.export_text()
    assert "private amqtt (MQTT 3.1.1)" in text and "1 worker(s): demo-ingest-1" in text
    assert account.ok and account.produced_gateway > 0 and account.produced_nodes > 0
    assert account.stored_gateway == account.produced_gateway and account.stored_nodes == account.produced_nodes
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before  # database, brokers: all ended
    deadline = time.monotonic() + 5
    while (left := [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]) and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, left


def test_node_readings_come_from_the_firmware_nodes(fresh_db, embedded, monkeypatch, tmp_path):
    monkeypatch.setenv("FIELDTRUST_DATABASE_URL", fresh_db)  # outlives the run: its node frames can be read after
    account = run_demo(DemoOptions(farms=1, duration_s=NODE_WAKE_S + 3, data_dir=tmp_path), Console(width=200))
    assert account.ok and account.produced_nodes > 0
    with psycopg.connect(fresh_db) as conn:
        frames = conn.execute("SELECT device_id, frame FROM ft.messages WHERE trust = 1 ORDER BY device_id, seq"
                              ).fetchall()
        row = conn.execute("SELECT count(*) FROM ft.readings WHERE trust = 1").fetchone()
    bodies: dict[str, list[dict]] = {}
    for device, frame in frames:
        bodies.setdefault(device, []).append(telemetry.peek(bytes(frame))[0])
    assert set(bodies) == set(FarmPlan(1).node_ids)
    for device, sent in bodies.items():
        assert len(sent) >= 2, (device, sent)  # woken more than once
        assert {b["fw"] for b in sent} == {FW}
        assert [b["seq"] for b in sent] == list(range(len(sent)))
        assert all(b["sync"] >= 0 for b in sent)  # the clock is set before the first sampling after power-on
    readings = sum(len(b["r"]) for sent in bodies.values() for b in sent)
    assert row is not None and readings == row[0] == account.stored_nodes == account.produced_nodes


def test_the_account_tells_readings_left_on_the_nodes_from_unknown_ones():
    account = Account(produced_gateway=10, produced_nodes=9, stored_gateway=10, stored_nodes=5)
    console = Console(record=True, width=200)
    print_account(console, account, queued_nodes=4)
    assert "not stored in this run: 4, every one accounted for: 4 still in the nodes' outboxes" in console.export_text()
    console = Console(record=True, width=200)
    print_account(console, account, queued_nodes=3)
    assert "readings unaccounted for: 1 (produced 19, stored 15; 3 still in the nodes' outboxes" in \
        console.export_text()


def test_sequence_floors_from_the_old_node_publisher(tmp_path):
    assert legacy_sequence_floors(tmp_path) == {}
    (tmp_path / LEGACY_SEQUENCES).write_text('{"f1-node-1": 2000}')
    assert legacy_sequence_floors(tmp_path) == {"f1-node-1": 2000}
    (tmp_path / LEGACY_SEQUENCES).write_text('{"f1-node-1": "x"}')
    with pytest.raises(ValueError, match=LEGACY_SEQUENCES):
        legacy_sequence_floors(tmp_path)
