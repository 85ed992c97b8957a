"""The durable outbox: one transaction per capture, sequence numbers, batches, drop-oldest, kill -9."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from edge_agent.outbox import Item, Outbox, OutboxError
from fieldtrust import processes


def body_for(dev: str):
    return lambda seq: f'{{"dev":"{dev}","seq":{seq}}}'.encode()


def take_all(seq: int, items: list[Item]) -> tuple[bytes, int]:
    return b"batch-%d:" % seq + b"|".join(i.data for i in items), len(items)


def test_capture_seal_confirm_round_trip(tmp_path):
    box = Outbox(tmp_path / "o.db", 1 << 20)
    assert [box.capture_attested("dev-a", 1, body_for("dev-a")) for _ in range(3)] == [0, 1, 2]
    assert box.capture_attested("dev-b", 1, body_for("dev-b")) == 0  # per device
    box.capture_frame(b"node-frame", "node")
    assert (box.pending, box.in_flight) == (5, 0)

    sealed = box.seal_batch(1, 10, newest_first=False, build=take_all)
    assert sealed is not None and (sealed.seq, sealed.n_items) == (0, 5)
    assert sealed.frame.startswith(b"batch-0:" + b'{"dev":"dev-a","seq":0}')
    assert (box.pending, box.in_flight, box.stats().depth) == (0, 1, 5)
    assert box.batch(1, 0) == sealed

    assert box.confirm([(1, 0), (1, 99)]) == (1, 5)  # an unknown key is skipped
    stats = box.stats()
    assert (stats.depth, stats.bytes, stats.captured, stats.confirmed, stats.dropped) == (0, 0, 5, 5, 0)
    assert box.batch(1, 0) is None


def test_sequences_and_counters_survive_reopen(tmp_path):
    path = tmp_path / "o.db"
    box = Outbox(path, 1 << 20)
    for _ in range(4):
        box.capture_attested("dev-a", 7, body_for("dev-a"))
    box.seal_batch(7, 2, newest_first=False, build=take_all)
    box.close()

    box = Outbox(path, 1 << 20)
    assert box.capture_attested("dev-a", 7, body_for("dev-a")) == 4
    assert box.capture_attested("dev-a", 8, body_for("dev-a")) == 0  # a new key epoch starts again
    assert (box.pending, box.in_flight, box.batch_keys()) == (4, 1, [(7, 0)])
    assert box.seal_batch(7, 100, newest_first=False, build=take_all).seq == 1
    assert box.stats().captured == 6


def test_builder_takes_a_prefix_and_newest_first(tmp_path):
    box = Outbox(tmp_path / "o.db", 1 << 20)
    for i in range(6):
        box.capture_frame(b"f%d" % i)
    sealed = box.seal_batch(1, 4, newest_first=True, build=lambda seq, items: (b"x", 2))
    assert sealed is not None and sealed.n_items == 2
    rest = box.seal_batch(1, 100, newest_first=False, build=take_all)
    assert rest.frame == b"batch-1:f0|f1|f2|f3"  # f5 and f4 went first, newest first


def test_failed_transaction_changes_nothing(tmp_path):
    box = Outbox(tmp_path / "o.db", 1 << 20)
    box.capture_frame(b"keep")

    def broken(_seq: int) -> bytes:
        raise ValueError("bad sample")

    with pytest.raises(ValueError):
        box.capture_attested("dev-a", 1, broken)
    with pytest.raises(ValueError):
        box.seal_batch(1, 10, newest_first=False, build=lambda s, i: (b"", 0))
    assert (box.pending, box.in_flight, box.stats().captured) == (1, 0, 1)
    assert box.capture_attested("dev-a", 1, body_for("dev-a")) == 0  # no sequence number was burnt
    assert box.seal_batch(1, 10, newest_first=False, build=take_all).seq == 0


def test_full_outbox_drops_the_oldest_and_counts_it(tmp_path):
    limit = 64 * 1024
    box = Outbox(tmp_path / "o.db", limit)
    for i in range(100):
        box.capture_frame(b"%04d" % i + b"x" * 1020)  # 1 KiB each
    stats = box.stats()
    assert stats.bytes <= limit
    assert stats.dropped == 100 - stats.depth and stats.dropped >= 36
    assert stats.captured == 100
    sealed = box.seal_batch(1, 1000, newest_first=False, build=take_all)
    kept = sealed.frame[len(b"batch-0:") :].split(b"|")
    assert kept[-1].startswith(b"0099") and kept[0].startswith(b"%04d" % stats.dropped)  # newest kept
    box.close()
    assert Outbox(tmp_path / "o.db", limit).stats().dropped == stats.dropped  # persisted


def test_overflow_drops_an_old_unreceipted_batch_before_newer_items(tmp_path):
    clock = [1000.0]
    box = Outbox(tmp_path / "o.db", 64 * 1024, time_fn=lambda: clock[0])
    for _ in range(10):
        box.capture_frame(b"o" * 1024)
    box.seal_batch(1, 10, newest_first=False, build=take_all)
    clock[0] += 60
    for _ in range(60):
        box.capture_frame(b"n" * 1024)
    stats = box.stats()
    assert box.in_flight == 0 and stats.dropped == 10  # the whole old batch went, counted per item
    assert stats.depth == 60 and stats.bytes <= 64 * 1024


def test_oversized_single_item_is_kept_not_dropped(tmp_path):
    box = Outbox(tmp_path / "o.db", 64 * 1024)
    box.capture_frame(b"a" * 1000)
    box.capture_frame(b"b" * 70_000)
    stats = box.stats()
    assert (stats.depth, stats.dropped) == (1, 1)


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from edge_agent.outbox import Outbox
    box = Outbox(Path(sys.argv[1]), 1 << 30)
    n = 0
    while True:
        box.capture_attested("dev-k", 1, lambda seq: b'{"seq":%d,"pad":"%s"}' % (seq, b"p" * 200))
        n += 1
        if n % 50 == 0:
            box.seal_batch(1, 25, newest_first=False, build=lambda s, items: (b"|".join(i.data for i in items), 25))
        print(n, flush=True)
    """
)


def test_kill_9_during_writes_loses_nothing_committed(tmp_path):
    path = tmp_path / "o.db"
    proc = processes.spawn([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        reported = 0
        deadline = time.monotonic() + 20
        while reported < 300 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "the writer died"
            reported = int(line)
        processes.kill9(proc)
    finally:
        processes.stop(proc)
    assert reported >= 300

    box = Outbox(path, 1 << 30)
    assert box.integrity_check() == "ok"
    stats = box.stats()
    # every capture reported as committed is there (one more may have committed unreported)
    assert reported <= stats.captured <= reported + 1
    assert stats.depth == stats.captured
    # the per-device sequence carries on after the last committed one: none repeats
    assert box.capture_attested("dev-k", 1, lambda seq: b"%d" % seq) == stats.captured


def test_one_process_per_outbox_and_garbage_files_are_refused(tmp_path):
    box = Outbox(tmp_path / "o.db", 1 << 20)
    with pytest.raises(OutboxError, match="in use"):
        Outbox(tmp_path / "o.db", 1 << 20)
    box.close()
    Outbox(tmp_path / "o.db", 1 << 20).close()  # free again once closed
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match="not a usable outbox"):
        Outbox(tmp_path / "junk.db", 1 << 20)
