"""Resilience of the cloud ingest: a worker killed while others keep running; readings far off in time.

The gateway side is the edge agent's own outbox and uplink (it re-sends what no receipt confirmed), the
workers are real ``fieldtrust cloud ingest`` processes on one shared subscription of the machine's broker,
and each scenario ends with the shared account (tests/support/accounting.py).
"""

from __future__ import annotations

import uuid

from support.accounting import account
from support.ingest import (
    GatewayLink,
    batch_frame,
    fill_outbox,
    make_uplink,
    node_frame,
    now_ms,
    register_site,
    running_worker,
    scalar,
    soil_body,
    wait_until,
)
from test_ingest_faults import spawn_worker, subscribed

from edge_agent.outbox import Outbox
from fieldtrust import processes


def test_one_of_two_workers_killed_the_other_carries_on_with_no_loss_and_no_duplicate(shared_broker, fresh_db,
                                                                                      tmp_path):
    site = register_site(fresh_db)
    host, port = shared_broker
    box = Outbox(tmp_path / "outbox.db", 64 << 20)
    fill_outbox(box, site, 600)
    produced = {dev: range(300) for dev in site.bus}  # round-robin over two devices: seqs 0..299 each
    group = f"ingest-{uuid.uuid4().hex[:8]}"
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    workers = [spawn_worker(site.url, f"mqtt://{host}:{port}", f"ingest-{name}-{site.gw}", group, log)
               for name, log in zip("ab", logs, strict=True)]
    up = make_uplink(site, box, host, port, batch_max_items=5, max_in_flight=20, receipt_timeout_s=1.5)
    try:
        assert wait_until(lambda: all(subscribed(log, 1) for log in logs), 30), [log.read_text() for log in logs]
        up.start()
        assert wait_until(lambda: scalar(site.url, "SELECT count(*) FROM ft.readings") >= 200, 30, step=0.01)
        processes.kill9(workers[0])  # mid-stream, holding messages it has not committed
        assert scalar(site.url, "SELECT count(*) FROM ft.readings") < 1200, "done before the kill"
        assert wait_until(lambda: box.stats().depth == 0, 60), (box.stats(), logs[1].read_text()[-2000:])
    finally:
        up.stop()
        for worker in workers:
            processes.stop(worker)
        box.close()
    assert processes.stop(workers[1]) == 0  # the survivor stopped cleanly: it never died
    account(site.url, produced, readings_per_message=2).check()
    assert scalar(site.url, "SELECT count(*) FROM ft.batches") == 120
    assert scalar(site.url, "SELECT count(*) FROM ft.dead_letters WHERE gateway_id = %s", site.gw) == 0


def test_a_node_clock_far_off_is_dead_lettered_with_its_reason_and_counted(shared_broker, fresh_db):
    site = register_site(fresh_db)
    now = now_ms()
    far = {3: 5_000, 4: 4_070_908_800_000}  # a node that reads 1970, and one that reads 2099
    frames = [node_frame(site, seq, bt_ms=far.get(seq, now - 60_000 + seq)) for seq in range(8)]
    bus = [soil_body(site.bus[0], seq, bt_ms=now + 86_400_000 * 3 if seq == 1 else now - 1000 + seq)
           for seq in range(3)]
    with running_worker(site.url) as worker:
        link = GatewayLink(site, *shared_broker)
        try:
            link.publish(batch_frame(site, bus, frames))
            assert wait_until(lambda: link.receipted == [f"{site.gw}:1:0"]), worker.counters.snapshot()
        finally:
            link.close()
    result = account(site.url, {site.node: range(8), site.bus[0]: range(3)}, readings_per_message=2)
    result.check()  # the far-off records are refused with a reason, the rest stored once
    assert worker.counters.rejected("row_time_out_of_range") == 6  # 2 records each of node 3, node 4, bus 1
    assert scalar(site.url, "SELECT count(*) FROM ft.dead_letters WHERE reason = 'row_time_out_of_range' "
                            "AND device_id = %s", site.node) == 4
