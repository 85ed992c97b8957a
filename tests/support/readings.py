"""Readings and node frames for edge tests, built with the contract like the agent and nodes do."""

from __future__ import annotations

import time

from contract.telemetry import encode_body, record, sign, telemetry
from edge_agent.outbox import Outbox

SW = "edge/test"


def capture_reading(box: Outbox, dev: str, value: float, ep: int = 1) -> int:
    """Capture one gateway-attested soil moisture reading; returns its sequence number."""
    bt = int(time.time() * 1000)
    return box.capture_attested(
        dev, ep, lambda seq: encode_body(telemetry(dev, ep, seq, bt, [record("soil_moisture", "%", value)], SW, 0))
    )


def node_frame(key: bytes, node: str, seq: int, value: float = 21.5, ep: int = 1) -> bytes:
    """A node's signed telemetry frame."""
    recs = [record("soil_moisture", "%", value)]
    body = encode_body(telemetry(node, ep, seq, 1764480000000 + seq * 1000, recs, "fw/test", 35))
    return sign(key, body)
