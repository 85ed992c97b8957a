"""The FieldTrust message contract, shared by firmware, edge agent and cloud.

* ``contract.telemetry`` — wire level: bodies, HMAC frames, duplicate rule (MicroPython-safe).
* ``contract.topics`` — the MQTT topic scheme (MicroPython-safe).
* ``contract.models`` — strict pydantic models of every message kind (CPython only).
"""
