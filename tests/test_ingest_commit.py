"""Message handling and the commit, without a broker: verification, the duplicate rule, dead letters, checks."""

from __future__ import annotations

import json
import threading

import pytest
from support.app_db import app_connect
from support.ingest import (
    KEK,
    Site,
    batch_frame,
    dead_letters,
    node_frame,
    now_ms,
    register_site,
    scalar,
    soil_body,
    wait_until,
)

from cloud.ingest.commit import Outcome, commit_units
from cloud.ingest.directory import Directory
from cloud.ingest.handler import Handler, Prepared
from cloud.store import db, partitions
from contract import topics
from contract.telemetry import Q_COMM_ERROR, Q_OUT_OF_RANGE, record


@pytest.fixture
def site(fresh_db: str) -> Site:
    return register_site(fresh_db)


class Ingest:
    """Handler and commit over real connections, as the worker's two threads use them."""

    def __init__(self, url: str) -> None:
        self.read = app_connect(url, autocommit=True)
        self.write = app_connect(url, autocommit=True)
        self.handler = Handler(Directory(self.read, KEK), max_past_days=30, max_future_s=600)

    def prepare(self, site: Site, *frames: bytes, topic: str | None = None) -> list[Prepared]:
        return [self.handler.prepare(topic or topics.gateway(site.tenant, site.gw, "up"), f) for f in frames]

    def __call__(self, site: Site, *frames: bytes, topic: str | None = None) -> Outcome:
        units = self.prepare(site, *frames, topic=topic)
        partitions.ensure_ahead(self.write, 1)
        with self.write.transaction():
            return commit_units(self.write, units)

    def close(self) -> None:
        self.read.close()
        self.write.close()


@pytest.fixture
def ingest(fresh_db: str):
    it = Ingest(fresh_db)
    yield it
    it.close()


def rows(url: str, dev: str) -> list[tuple]:
    with db.connect(url) as conn:
        return conn.execute(
            "SELECT m.name, r.value, r.value_text, r.quality, r.trust, r.epoch, r.seq FROM ft.readings r"
            " JOIN ft.metrics m ON m.id = r.metric_id WHERE r.device_id = %s ORDER BY r.seq, r.ts, m.name", (dev,)
        ).fetchall()


def test_a_batch_is_stored_with_trust_levels_and_receipted(site: Site, ingest: Ingest) -> None:
    dev = site.bus[0]
    frame = batch_frame(site, [soil_body(dev, 0, moisture=23.5), soil_body(dev, 1, moisture=120.0)],
                        [node_frame(site, 7)])
    out = ingest(site, frame)
    assert rows(site.url, dev) == [
        ("soil_moisture", 23.5, None, 0, 2, 1, 0), ("soil_temperature", 18.25, None, 0, 2, 1, 0),
        ("soil_moisture", 120.0, None, Q_OUT_OF_RANGE, 2, 1, 1),  # outside the spec's [0, 100]: kept, flagged
        ("soil_temperature", 18.25, None, 0, 2, 1, 1),
    ]
    assert rows(site.url, site.node) == [("soil_moisture", 31.5, None, 0, 1, 1, 7),
                                         ("soil_moisture_mv", 1650.0, None, 0, 1, 1, 7)]
    assert out.counts["readings"] == 6 and out.counts["node_signed"] == 2 and out.counts["gateway_attested"] == 4
    assert out.receipts == {(site.tenant, site.gw): (site.gw_key, [f"{site.gw}:1:0"])}
    assert scalar(site.url, "SELECT readings FROM ft.batches WHERE batch_id = %s", f"{site.gw}:1:0") == 6
    assert scalar(site.url, "SELECT count(*) FROM ft.messages WHERE frame IS NOT NULL") == 1  # the node's frame kept
    assert dead_letters(site.url) == []


def test_the_same_batch_three_times_is_stored_once_and_counted_twice(site: Site, ingest: Ingest) -> None:
    frame = batch_frame(site, [soil_body(site.bus[0], s) for s in range(3)], [node_frame(site, 1)])
    first = ingest(site, frame, frame)  # twice in one transaction
    again = ingest(site, frame)  # and once more later
    assert scalar(site.url, "SELECT count(*) FROM ft.readings") == 8
    assert first.counts["duplicates"] + again.counts["duplicates"] == 2
    assert first.counts["batches_redelivered"] == 1 and again.counts["batches_redelivered"] == 1
    assert again.receipts[(site.tenant, site.gw)][1] == [f"{site.gw}:1:0"]  # receipted again, nothing re-written
    assert scalar(site.url, "SELECT count(*) FROM ft.batches") == 1 and dead_letters(site.url) == []


def test_a_message_resent_in_another_batch_is_a_duplicate(site: Site, ingest: Ingest) -> None:
    body, frame = soil_body(site.bus[0], 0), node_frame(site, 3)
    ingest(site, batch_frame(site, [body], [frame]))
    out = ingest(site, batch_frame(site, [body, soil_body(site.bus[0], 1)], [frame]))
    assert out.counts["duplicates"] == 2 and out.counts["readings"] == 2
    assert scalar(site.url, "SELECT count(*) FROM ft.readings") == 6


def test_same_identity_different_bytes_is_a_conflict_with_both_digests(site: Site, ingest: Ingest) -> None:
    dev = site.bus[0]
    ingest(site, batch_frame(site, [soil_body(dev, 5, moisture=10.0)], [node_frame(site, 2, moisture=10.0)]))
    out = ingest(site, batch_frame(site, [soil_body(dev, 5, moisture=99.0)], [node_frame(site, 2, moisture=99.0)]))
    assert out.counts["conflicts"] == 2 and out.counts["readings"] == 0
    letters = dead_letters(site.url)
    assert [(r, d) for r, _, d in letters] == [("conflict", dev), ("conflict", site.node)]
    assert all("stored digest" in detail and "this one" in detail for _, detail, _ in letters)
    assert {v for _, v, *_ in rows(site.url, dev) if v != 18.25} == {10.0}  # the first stored version stays
    # a batch id re-used with other bytes is a conflict too, and is not receipted
    again = ingest(site, batch_frame(site, [soil_body(dev, 6)], seq=0))
    assert again.counts["conflicts"] == 1 and again.receipts == {}


def test_arrival_order_does_not_matter(site: Site, ingest: Ingest) -> None:
    frames = [batch_frame(site, [soil_body(site.bus[0], s)]) for s in range(6)]
    ingest(site, *reversed(frames[3:]))
    ingest(site, *frames[:4])
    assert [r[6] for r in rows(site.url, site.bus[0])][::2] == list(range(6))


def in_two_transactions_at_once(site: Site, ingest: Ingest, first_frame: bytes,
                                second_frame: bytes) -> tuple[Outcome, Outcome]:
    """The second transaction starts while the first holds its rows, as two commit threads (or workers) do."""
    first_units, second_units = ingest.prepare(site, first_frame), ingest.prepare(site, second_frame)
    partitions.ensure_ahead(ingest.write, 1)
    second: list[Outcome] = []

    def commit_second() -> None:
        with app_connect(site.url, autocommit=True) as conn, conn.transaction():
            second.append(commit_units(conn, second_units))

    thread = threading.Thread(target=commit_second)
    with ingest.write.transaction():
        first = commit_units(ingest.write, first_units)
        thread.start()
        waiting = ("SELECT count(*) FROM pg_stat_activity"
                   " WHERE wait_event_type = 'Lock' AND datname = current_database()")
        assert wait_until(lambda: scalar(site.url, waiting) == 1)  # on the first one's ledger rows
    thread.join(15)
    return first, second[0]


def test_one_batch_in_two_transactions_at_once_is_stored_once_and_counted_as_redelivered(site: Site,
                                                                                         ingest: Ingest) -> None:
    frame = batch_frame(site, [soil_body(site.bus[0], s) for s in range(3)])
    first, second = in_two_transactions_at_once(site, ingest, frame, frame)
    assert first.counts["readings"] == 6 and second.counts["readings"] == 0
    assert second.counts["batches_redelivered"] == 1 and second.counts["duplicates"] == 1
    assert second.receipts == first.receipts  # receipted again
    assert scalar(site.url, "SELECT count(*) FROM ft.readings") == 6 and dead_letters(site.url) == []


def test_a_batch_id_reused_with_other_bytes_at_the_same_time_is_a_conflict_that_claims_nothing(
        site: Site, ingest: Ingest) -> None:
    dev = site.bus[0]
    first, second = in_two_transactions_at_once(
        site, ingest, batch_frame(site, [soil_body(dev, 5, moisture=10.0)], seq=0),
        batch_frame(site, [soil_body(dev, 5, moisture=99.0), soil_body(dev, 6)], seq=0))
    assert first.counts["readings"] == 2 and second.counts["readings"] == 0 and second.receipts == {}
    assert second.counts["conflicts"] == 1 and [r for r, _, _ in dead_letters(site.url)] == ["conflict"]
    assert "stored frame sha256" in dead_letters(site.url)[0][1]  # the batch's, not its message's
    assert scalar(site.url, "SELECT count(*) FROM ft.messages") == 1  # seq 6 was not claimed either


def test_rows_encoded_in_one_thread_and_written_by_another_are_the_rows_themselves(site: Site) -> None:
    from datetime import UTC, datetime, timedelta

    from cloud.store import writes

    when = datetime.now(UTC).replace(microsecond=123000)
    with app_connect(site.url, autocommit=True) as reader, app_connect(site.url) as writer:
        partitions.ensure_partitions(writer, when, when + timedelta(seconds=1))
        mid = writes.metric_ids(writer, [("soil_moisture", "%")])[("soil_moisture", "%")]
        at = writes.pg_time(int(when.timestamp() * 1000))
        values = [(21.5, None, 0), (None, "caf\u00e9", 4), (None, None, Q_COMM_ERROR), (-0.0, "", 2**16 - 1)]
        rows = [(site.tenant, dev, mid, at + seq * 1000, *value, 2, 1, seq)
                for dev in site.bus for seq, value in enumerate(values)]
        encoded = writes.encode_readings(reader, rows[:4]), writes.encode_readings(reader, rows[4:])
        assert [e.count for e in encoded] == [4, 4]
        assert writes.write_readings(writer, writes.EncodedReadings.join(encoded)) == 8
        assert writes.write_readings(writer, writes.EncodedReadings.join(encoded), "merge") == 0  # stored already
        writer.commit()
        stored = writer.execute("SELECT tenant_id, device_id, metric_id, ts, value, value_text, quality, trust,"
                                " epoch, seq FROM ft.readings ORDER BY device_id, seq").fetchall()
    assert stored == [(*r[:3], when + timedelta(milliseconds=r[9]), *r[4:]) for r in rows]


def test_forged_and_misaddressed_messages_are_dead_lettered_with_their_reason(site: Site, ingest: Ingest) -> None:
    other = register_site(site.url, bus_devices=1)
    up = topics.gateway(site.tenant, site.gw, "up")
    cases = {
        "bad_signature": (batch_frame(site, [soil_body(site.bus[0], 0)], key=bytes(32)), up),
        "unknown_gateway": (batch_frame(site, [], gw="gw-nobody"), topics.gateway(site.tenant, "gw-nobody", "up")),
        "gateway_mismatch": (batch_frame(other, [soil_body(other.bus[0], 0)]), up),
        "tenant_mismatch": (batch_frame(site, [], tenant=other.tenant), topics.gateway(other.tenant, site.gw, "up")),
        "unknown_key": (batch_frame(site, [], ep=9), up),
        "bad_frame": (b'{"mac":"nope"}' + b" " * 80, up),
        "bad_json": (batch_frame(site, [b"{oops"]), up),
        "bad_topic": (batch_frame(site, []), topics.gateway(site.tenant, site.gw, "health")),
    }
    for reason, (frame, topic) in cases.items():
        out = ingest(site, frame, topic=topic)
        assert out.rejected == {reason: 1}, (reason, out.rejected)
        assert out.receipts == {}
    assert [r for r, _, _ in dead_letters(site.url)] == list(cases)
    assert scalar(site.url, "SELECT count(*) FROM ft.dead_letters WHERE payload = %s", cases["bad_frame"][0]) == 1
    assert scalar(site.url, "SELECT count(*) FROM ft.readings") == 0


def test_a_revoked_key_is_refused(site: Site, ingest: Ingest) -> None:
    from cloud.store import registry

    with db.connect(site.url) as conn:
        registry.revoke_key(conn, site.tenant, "device", site.node, 1)
        conn.commit()
    out = ingest(site, batch_frame(site, [soil_body(site.bus[0], 0)], [node_frame(site, 0)]))
    assert out.rejected == {"revoked_key": 1} and out.counts["readings"] == 2  # the rest of the batch is stored
    with db.connect(site.url) as conn:
        registry.revoke_key(conn, site.tenant, "gateway", site.gw, 1)
        conn.commit()
    assert Ingest(site.url)(site, batch_frame(site, [soil_body(site.bus[0], 1)])).rejected == {"revoked_key": 1}


def test_bad_telemetry_and_devices_cost_only_themselves(site: Site, ingest: Ingest) -> None:
    other = register_site(site.url, bus_devices=1)
    good = soil_body(site.bus[0], 0)
    frame = batch_frame(site, [
        good,
        soil_body("soil-unregistered", 0),
        soil_body(other.bus[0], 0),  # another gateway's device
        soil_body(site.node, 0),  # a node's readings cannot be attested by the gateway
        b'{"v":1,"k":"tel","dev":"x y","ep":1,"seq":0,"fw":"f","bt":1,"sync":0,"r":[]}',
    ], [node_frame(site, 0, key=bytes(32)), b"not a frame"])
    out = ingest(site, frame)
    assert out.rejected == {"unknown_device": 2, "not_attestable": 1, "bad_telemetry": 1, "bad_signature": 1,
                            "bad_frame": 1}
    assert out.counts["readings"] == 2 and out.receipts  # the batch is accounted for and receipted


def test_bad_rows_are_dead_lettered_one_by_one(site: Site, ingest: Ingest) -> None:
    dev = site.bus[0]
    body = soil_body(dev, 0, bt_ms=now_ms(), records=[
        record("soil_moisture", "%", 20.0),
        record("soil_moisture", "%", 22.0, 2 * 86_400_000),  # two days ahead
        record("soil_moisture", "%", 22.5, 2**41),  # an offset the contract does not allow
        record("soil_temperature", "degF", 70.0, 1),  # the spec says Cel
        record("soil_ph", "pH", "acid", 2),  # text where the spec gives a number
        record("soil_ec", "uS/cm", None, 3),  # a failed read: no value, kept and flagged
        record("soil_nitrogen", "mg/kg", 12, 3),
        record("wind_speed", "m/s", 3.0, 4),  # not a metric of this device
    ])
    nan_body = soil_body(dev, 1).decode().replace('"v":23.5', '"v":NaN').replace('"v":18.25', '"v":"18.25"')
    y1970 = soil_body(dev, 2, bt_ms=5000, records=[record("soil_moisture", "%", 1.0)])
    y2099 = soil_body(dev, 3, bt_ms=4_070_908_800_000, records=[record("soil_moisture", "%", 2.0)])
    out = ingest(site, batch_frame(site, [body, nan_body.encode(), y1970, y2099]))
    assert out.rejected == {"row_time_out_of_range": 3, "row_unit_mismatch": 1, "row_unknown_metric": 1,
                            "row_not_a_number": 3, "row_invalid": 1}
    assert [(r[0], r[1], r[2], r[3]) for r in rows(site.url, dev)] == [
        ("soil_moisture", 20.0, None, 0), ("soil_ec", None, None, Q_COMM_ERROR), ("soil_nitrogen", 12.0, None, 0)]
    with db.connect(site.url) as conn:
        payload = conn.execute("SELECT payload FROM ft.dead_letters WHERE reason = 'row_unit_mismatch'").fetchone()[0]
    context = json.loads(payload)
    assert context["dev"] == dev and context["seq"] == 0 and context["record"]["u"] == "degF"
    assert context["batch"] == f"{site.gw}:1:0"


def test_reading_times_as_microseconds_or_as_datetimes_are_the_same_instant(site: Site) -> None:
    from datetime import UTC, datetime

    from cloud.store import writes

    when = datetime(2026, 11, 29, 12, 30, 15, 123000, tzinfo=UTC)
    with app_connect(site.url) as conn:
        partitions.ensure_partitions(conn, when, when)
        mid = writes.metric_ids(conn, [("soil_moisture", "%")])[("soil_moisture", "%")]
        row = (site.tenant, site.bus[0], mid, writes.pg_time(int(when.timestamp() * 1000)), 1.0, None, 0, 2, 1, 0)
        assert writes.write_readings(conn, [row]) == 1
        assert writes.write_readings(conn, [(site.tenant, site.bus[1], mid, when, *row[4:])]) == 1
        assert writes.write_readings(conn, [row], "merge") == 0  # already there: skipped, not an error
        conn.commit()
        stored = conn.execute("SELECT DISTINCT ts FROM ft.readings").fetchall()
    assert stored == [(when,)]
