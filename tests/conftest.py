"""Shared fixtures: the machine's real broker, and checks that tests leave nothing running."""

from __future__ import annotations

import os
import socket

import pytest

SHARED_MQTT_HOST = os.environ.get("FIELDTRUST_TEST_MQTT_HOST", "127.0.0.1")
SHARED_MQTT_PORT = int(os.environ.get("FIELDTRUST_TEST_MQTT_PORT", "1883"))


@pytest.fixture(scope="session")
def shared_broker() -> tuple[str, int]:
    """The machine's shared Mosquitto (never stopped or reconfigured by a test)."""
    try:
        with socket.create_connection((SHARED_MQTT_HOST, SHARED_MQTT_PORT), timeout=2):
            pass
    except OSError as exc:
        pytest.fail(f"the shared MQTT broker {SHARED_MQTT_HOST}:{SHARED_MQTT_PORT} is not running: {exc}")
    return SHARED_MQTT_HOST, SHARED_MQTT_PORT
