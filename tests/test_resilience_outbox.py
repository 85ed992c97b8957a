"""Resilience of the gateway's outbox: a full disk costs the oldest readings, counted, never a crash.

The disk fills without privileges: SQLite's ``max_page_count`` caps the outbox file the way a full
partition would (SQLite answers SQLITE_FULL either way).  Afterwards the cap is lifted ("space
returns"), the uplink drains to the real ingest, and the shared account says every reading captured
is stored exactly once or was counted as dropped by the drop-oldest policy.
"""

from __future__ import annotations

import pytest
from support.accounting import account
from support.ingest import make_uplink, register_site, running_worker, soil_body, wait_until

from edge_agent.outbox import Outbox, OutboxFull


def capture(box: Outbox, devices: list[str], n: int, produced: dict[str, list[int]]) -> None:
    """``n`` soil bodies round-robin over ``devices``; what was captured goes into ``produced``."""
    for i in range(n):
        dev = devices[i % len(devices)]
        seq = box.capture_attested(dev, 1, lambda seq, dev=dev: soil_body(dev, seq))
        produced.setdefault(dev, []).append(seq)


def cap_file(box: Outbox, spare_pages: int) -> None:
    """Let the outbox file grow by ``spare_pages`` pages only: a disk about to fill."""
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count={pages + spare_pages}")


def test_a_full_disk_drops_the_oldest_counted_then_recovers_and_drains(shared_broker, fresh_db, tmp_path):
    site = register_site(fresh_db)
    box = Outbox(tmp_path / "outbox.db", 64 << 20)  # the byte bound is far away: only the disk limits
    produced: dict[str, list[int]] = {}
    try:
        cap_file(box, 6)
        capture(box, site.bus, 400, produced)  # ~330 bytes each: far more than 6 pages hold; no exception
        full = box.stats()
        assert full.captured == 400 and full.dropped > 0 and full.depth + full.dropped == 400
        newest = max(produced[site.bus[1]])
        assert box.integrity_check() == "ok"
        cap_file(box, 100_000)  # space returns
        capture(box, site.bus, 60, produced)
        assert box.stats().dropped == full.dropped  # nothing more dropped once there is room
        up = make_uplink(site, box, *shared_broker, batch_max_items=20)
        with running_worker(site.url, f"mqtt://{shared_broker[0]}:{shared_broker[1]}"):
            up.start()
            try:
                assert wait_until(lambda: box.stats().depth == 0, 40), box.stats()
            finally:
                up.stop()
        dropped = box.stats().dropped
    finally:
        box.close()
    result = account(site.url, produced, readings_per_message=2, dropped=dropped)
    result.check()
    assert result.stored == 460 - dropped and (site.bus[1], newest) not in result.missing  # the newest kept


def test_a_disk_with_nothing_left_to_drop_is_a_clear_error(tmp_path):
    box = Outbox(tmp_path / "outbox.db", 64 << 20)
    try:
        cap_file(box, 0)
        with pytest.raises(OutboxFull, match="disk is full and there is nothing left to drop"):
            box.capture_frame(b"x" * 20_000)  # overflow pages that the full disk cannot give; the outbox is empty
        stats = box.stats()
        assert stats.captured == 0 and stats.depth == 0 and box.integrity_check() == "ok"  # counters not corrupted
        cap_file(box, 100)
        box.capture_frame(b"x" * 20_000)  # and it works again once there is room
        assert box.stats().captured == 1
    finally:
        box.close()
