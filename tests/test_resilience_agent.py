"""Resilience of the gateway to ``kill -9`` in the middle of an outbox write.

A gateway process (the agent's outbox and uplink, capturing soil readings as fast as its disk
allows while the uplink seals, sends and confirms batches against a real ingest) is killed with
SIGKILL at random moments, several times, and started again on the same outbox file.  It prints
each sequence number once its capture has committed: that is "reported as captured".  After each
kill the file must pass SQLite's ``integrity_check`` and hold every reported reading (pending, in
a batch, or already receipted by the cloud); sequence numbers never repeat across restarts; and at
the end, once the outbox has drained, the shared account holds: every reading stored exactly once.
"""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from support.accounting import account
from support.ingest import Site, make_uplink, register_site, running_worker, scalar, wait_until
from test_resilience_bus import produced_by

from contract.telemetry import BODY_OFFSET, FRAME_SUFFIX
from edge_agent.outbox import Outbox
from fieldtrust import processes

REPO = Path(__file__).resolve().parents[1]
#: the gateway process: uplink running, capture in a tight loop; prints "dev seq" after each commit
GATEWAY = """
import sys
from pathlib import Path
sys.path.insert(0, str(Path(sys.argv[1]) / "tests"))
from support.ingest import Site, make_uplink, soil_body
from contract.telemetry import BODY_OFFSET, FRAME_SUFFIX
from edge_agent.outbox import Outbox
outbox, host, port, gw, tenant, key, devices = sys.argv[2:9]
site = Site("", tenant, "", gw, bytes.fromhex(key), devices.split(","), "", b"")
box = Outbox(Path(outbox), 64 << 20)
up = make_uplink(site, box, host, int(port), batch_max_items=10, max_in_flight=10, receipt_timeout_s=1.0)
up.start()
print("ready", flush=True)
i = 0
while True:
    dev = site.bus[i % len(site.bus)]
    seq = box.capture_attested(dev, 1, lambda seq, dev=dev: soil_body(dev, seq))
    print(dev, seq, flush=True)
    i += 1
"""


def start_gateway(site: Site, outbox: Path, broker: tuple[str, int]) -> subprocess.Popen:
    proc = processes.spawn([sys.executable, "-c", GATEWAY, str(REPO), str(outbox), broker[0], str(broker[1]),
                            site.gw, site.tenant, site.gw_key.hex(), ",".join(site.bus)],
                           stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def reported(proc: subprocess.Popen) -> list[tuple[str, int]]:
    """What the killed process said it had captured (every complete line; a torn last line said nothing)."""
    assert proc.stdout is not None
    out = []
    for line in proc.stdout.read().splitlines(keepends=True):
        words = line.split()
        if line.endswith("\n") and len(words) == 2:
            out.append((words[0], int(words[1])))
    return out


def held(outbox: Path, url: str, devices: list[str]) -> set[tuple[str, int]]:
    """(device, seq) the outbox file still holds (pending or batched) or the cloud has stored."""
    with contextlib.closing(sqlite3.connect(outbox)) as db:
        items = [json.loads(d) for (d,) in db.execute("SELECT data FROM item")]
        frames = [f for (f,) in db.execute("SELECT frame FROM batch")]
    out = {(b["dev"], b["seq"]) for b in items}
    for frame in frames:
        out |= {(t["dev"], t["seq"]) for t in json.loads(frame[BODY_OFFSET:-len(FRAME_SUFFIX)])["tel"]}
    with psycopg.connect(url) as conn:
        out |= set(conn.execute("SELECT device_id, seq FROM ft.messages WHERE device_id = ANY(%s)", (devices,)))
    return out


def test_kill_9_during_outbox_writes_at_random_moments_loses_nothing_reported(shared_broker, fresh_db, tmp_path):
    site = register_site(fresh_db)
    path = tmp_path / "outbox.db"
    rng = random.Random(8)
    said: list[tuple[str, int]] = []
    with running_worker(site.url, f"mqtt://{shared_broker[0]}:{shared_broker[1]}"):
        for _ in range(4):
            proc = start_gateway(site, path, shared_broker)
            time.sleep(rng.uniform(0.3, 1.0))  # capturing hundreds a second, batches going out and coming back
            processes.kill9(proc)
            now_said = reported(proc)
            processes.stop(proc)
            assert now_said, "the gateway captured nothing before the kill"
            said += now_said
            box = Outbox(path, 64 << 20)
            try:
                assert box.integrity_check() == "ok"
                missing = set(now_said) - held(path, site.url, site.bus)
                assert not missing, f"reported as captured, then lost: {sorted(missing)[:5]}"
            finally:
                box.close()
        assert len(said) == len(set(said)), "a sequence number was used twice"
        box = Outbox(path, 64 << 20)
        up = make_uplink(site, box, *shared_broker, batch_max_items=50)
        up.start()
        try:
            assert wait_until(lambda: box.stats().depth == 0, 30), box.stats()
            stats = box.stats()
        finally:
            up.stop()
            box.close()
    # a capture may commit and be killed before it says so: the outbox's persisted counters are the full list
    produced = produced_by(str(path), site.bus)
    assert all(seq in produced[dev] for dev, seq in said)
    assert stats.dropped == 0 and stats.captured == sum(map(len, produced.values()))
    assert scalar(site.url, "SELECT count(*) FROM ft.dead_letters WHERE gateway_id = %s", site.gw) == 0
    account(site.url, produced, readings_per_message=2).check()
