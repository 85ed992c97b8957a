"""Attacks on the telemetry path, against the machine's real broker and a real ingest worker: each refused and logged.

Every refusal leaves a dead letter with its reason (``ft.dead_letters``) and a worker counter; a replay is
counted as a duplicate and stores nothing twice.  What the broker's ACL refuses (a gateway publishing on
another's topics, revoked broker credentials) is shown on a private Mosquitto with the project's generated
ACL in ``tests/test_broker_acl.py``; the API's attacks (tenant isolation, SQL injection in filters and
sorts, expired tokens) in ``tests/test_api_isolation.py`` and ``tests/test_api_fuzz.py``.
"""

from __future__ import annotations

import os

import psycopg
import pytest
from support.accounting import account
from support.ingest import (
    KEK,
    GatewayLink,
    Site,
    batch_frame,
    node_frame,
    register_site,
    running_worker,
    scalar,
    soil_body,
    wait_until,
)

from cloud.store import db, registry
from contract import topics
from contract.telemetry import MAX_BATCH_FRAME_BYTES, MAX_NODE_FRAME_BYTES, record


@pytest.fixture
def site(module_app_db) -> Site:
    return register_site(module_app_db.owner_url)


def letters(site: Site) -> list[tuple[str, str]]:
    """(reason, detail) of the dead letters of this test's gateway, oldest first."""
    with psycopg.connect(site.url) as conn:
        return conn.execute("SELECT reason, detail FROM ft.dead_letters WHERE gateway_id = %s ORDER BY id",
                            (site.gw,)).fetchall()


def attack(site: Site, broker: tuple[str, int], frames: list[bytes], expect_letters: int, topic: str | None = None):
    """Publish ``frames`` as the site's gateway (on ``topic``) and wait for the dead letters; the counters and link."""
    with running_worker(site.url) as worker:
        link = GatewayLink(site, *broker)
        try:
            link.publish(*frames, topic=topic)
            assert wait_until(lambda: len(letters(site)) >= expect_letters), (letters(site), worker.counters.snapshot())
            # a good batch after the attack: the worker carries on (and every earlier message was handled)
            link.publish(batch_frame(site, [soil_body(site.bus[0], 900)]))
            assert wait_until(lambda: f"{site.gw}:1:{site.seq - 1}" in link.receipted), worker.counters.snapshot()
        finally:
            link.close()
    return worker.counters, link


def test_a_forged_batch_signature_is_refused(shared_broker, site):
    forged = batch_frame(site, [soil_body(site.bus[0], 0)], key=os.urandom(32))
    counters, link = attack(site, shared_broker, [forged], 1)
    assert [r for r, _ in letters(site)] == ["bad_signature"] and counters.rejected("bad_signature") == 1
    assert f"{site.gw}:1:0" not in link.receipted  # nobody can make the gateway forget a batch with a forged one


def test_a_replayed_batch_and_a_replayed_node_frame_store_nothing_twice(shared_broker, site):
    frame = node_frame(site, 5)
    first = batch_frame(site, [soil_body(site.bus[0], 0)], [frame])
    again = batch_frame(site, [soil_body(site.bus[0], 0)], [frame])  # the same messages in a new batch
    with running_worker(site.url) as worker:
        link = GatewayLink(site, *shared_broker)
        try:
            link.publish(first, first, again)
            both = {f"{site.gw}:1:0", f"{site.gw}:1:1"}
            assert wait_until(lambda: worker.counters.get("messages_acked") == 3 and set(link.receipted) == both), \
                worker.counters.snapshot()
        finally:
            link.close()
    account(site.url, {site.bus[0]: [0], site.node: [5]}, readings_per_message=2).check()
    assert worker.counters.get("duplicates") == 3 and worker.counters.get("conflicts") == 0  # counted, not stored


def test_a_node_frame_signed_with_another_nodes_key_is_refused(shared_broker, site, module_app_db):
    other = register_site(module_app_db.owner_url)  # a node of another farm, whose key the attacker holds
    as_ours = node_frame(site, 0, key=other.node_key)  # claims to be site.node
    attack(site, shared_broker, [batch_frame(site, nodes=[as_ours])], 1)
    assert [r for r, _ in letters(site)] == ["bad_signature"]
    assert scalar(site.url, "SELECT count(*) FROM ft.messages WHERE device_id = %s", site.node) == 0


def test_a_gateway_cannot_attest_for_a_device_it_does_not_serve_nor_for_a_node(shared_broker, site, module_app_db):
    other = register_site(module_app_db.owner_url)
    with db.connect(site.url) as conn:  # a bus device of site's tenant, but on another gateway
        registry.register_gateway(conn, site.tenant, f"{site.gw}-b", site.farm, os.urandom(32), KEK, None, None)
        registry.register_device(conn, site.tenant, f"{site.bus[0]}-b", "bus", None, f"{site.gw}-b",
                                 "jxct-soil-7in1", None, KEK)
        conn.commit()
    bodies = [soil_body(f"{site.bus[0]}-b", 0),  # another gateway's device
              soil_body(other.bus[0], 0),  # another tenant's device
              soil_body(site.node, 0, records=[record("soil_moisture", "%", 99.0)])]  # a node: it signs for itself
    attack(site, shared_broker, [batch_frame(site, bodies)], 3)
    assert sorted(r for r, _ in letters(site)) == ["not_attestable", "unknown_device", "wrong_gateway"]


def test_a_batch_for_another_tenant_or_on_another_gateways_topic_is_refused(shared_broker, site, module_app_db):
    other = register_site(module_app_db.owner_url)
    body = [soil_body(site.bus[0], 0)]
    frames = [batch_frame(site, body, tenant=other.tenant),  # the body claims another tenant
              batch_frame(site, body, gw=other.gw)]  # the body claims another gateway
    attack(site, shared_broker, frames, 2)
    assert sorted(r for r, _ in letters(site)) == ["gateway_mismatch", "tenant_mismatch"]


def test_oversized_payloads_are_refused_before_parsing(shared_broker, site):
    big_node = b'{"mac":"' + b"0" * 64 + b'","body":' + b" " * MAX_NODE_FRAME_BYTES + b"}"
    huge = b'{"mac":"' + b"0" * 64 + b'","body":{' + b" " * MAX_BATCH_FRAME_BYTES + b"}}"
    attack(site, shared_broker, [batch_frame(site, nodes=[big_node]), huge], 2)
    assert [r for r, _ in letters(site)] == ["oversized", "oversized"]


@pytest.mark.parametrize("ident", ["+", "#", "a/b", "gw/../x", "", "x" * 65, "t\x00", "gw\n"])
def test_ids_that_would_inject_topic_levels_or_wildcards_are_refused_by_the_contract(ident):
    for build in (lambda: topics.gateway(ident, "gw-1", "up"), lambda: topics.gateway("t-1", ident, "up"),
                  lambda: topics.node(ident, "up")):
        with pytest.raises(ValueError, match="invalid identifier"):
            build()


def test_a_batch_on_a_topic_that_is_not_an_uplink_is_refused(site):
    """The worker subscribes to up topics only; its handler refuses any other topic on its own as well."""
    from cloud.ingest.directory import Directory
    from cloud.ingest.handler import Handler

    worker_topic = topics.gateway(site.tenant, site.gw, "health")
    with db.connect(site.url) as conn:
        handler = Handler(Directory(conn, KEK), max_past_days=30, max_future_s=600)
        prepared = handler.prepare(worker_topic, batch_frame(site, [soil_body(site.bus[0], 0)]))
        bad = handler.prepare("ft/v1/gw/+/x/up", b"{}")
    assert prepared.batch is None and [d.reason for d in prepared.dead_letters] == ["bad_topic"]
    assert [d.reason for d in bad.dead_letters] == ["bad_topic"]


def test_a_revoked_gateway_key_and_a_revoked_node_key_are_refused(shared_broker, site):
    with db.connect(site.url) as conn:
        registry.revoke_key(conn, site.tenant, "device", site.node, 1)
        conn.commit()
    frames = [batch_frame(site, [soil_body(site.bus[0], 0)], [node_frame(site, 0)])]
    attack(site, shared_broker, frames, 1)
    assert [r for r, _ in letters(site)] == ["revoked_key"]  # the node's frame; the gateway's reading is stored
    with db.connect(site.url) as conn:
        registry.revoke_key(conn, site.tenant, "gateway", site.gw, 1)
        conn.commit()
    with running_worker(site.url) as worker:
        link = GatewayLink(site, *shared_broker)
        try:
            link.publish(batch_frame(site, [soil_body(site.bus[0], 1)]))
            assert wait_until(lambda: len(letters(site)) == 2), worker.counters.snapshot()
        finally:
            link.close()
    assert [r for r, _ in letters(site)][1] == "revoked_key" and worker.counters.rejected("revoked_key") == 1
