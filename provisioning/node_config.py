"""A node's desired config as the technician's tools change it: one part changed, the rest kept.

The downlink API takes a node's *whole* desired config (``PUT …/devices/{id}/config``, ``ConfigUpdate`` in
cloud/downlink/requests.py): a field left out falls back to the node's default, it is not kept from the
version before.  So a calibration is stored by reading the desired config (``GET …/config``), changing
the one metric's calibration and sending everything back.  The two directions differ in one place, the
calibration: the API takes ``[gain, offset]`` per metric and answers with the node's own format,
``{"scale": gain, "offset": offset}`` (what is signed for the node); :func:`as_update` turns the second
into the first.

The read and the write are two requests: a change made by someone else in between is overwritten (the
API has no version check on PUT); the answer names the version stored.
"""

from __future__ import annotations

from typing import Any

from provisioning.cloud_client import CloudClient

#: ConfigUpdate's fields besides the calibration, taken over as they are
_PLAIN_FIELDS = ("interval_s", "heartbeat_s", "samples", "deltas")


def desired_config(state: dict[str, Any] | None) -> dict[str, Any]:
    """The ``cfg`` of the newest version in a ``GET …/config`` answer (empty when none was ever set)."""
    desired = (state or {}).get("desired")
    return dict(desired.get("config") or {}) if isinstance(desired, dict) else {}


def calibration_of(cfg: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """``metric -> (gain, offset)`` of a node-format config (an entry without ``scale`` is a pure offset)."""
    found = cfg.get("calibration") or {}
    return {metric: (float(entry.get("scale", 1)), float(entry.get("offset", 0))) for metric, entry in found.items()}


def as_update(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``PUT`` body that stores ``cfg`` (node format) again unchanged."""
    body = {name: cfg[name] for name in _PLAIN_FIELDS if name in cfg}
    calibration = calibration_of(cfg)
    if calibration:
        body["calibration"] = {metric: [gain, offset] for metric, (gain, offset) in calibration.items()}
    return body


def with_calibration(cfg: dict[str, Any], calibration: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """The ``PUT`` body of ``cfg`` with ``calibration``'s metrics set (other metrics' entries kept)."""
    body = as_update(cfg)
    merged = dict(body.get("calibration") or {})
    merged.update({metric: [gain, offset] for metric, (gain, offset) in calibration.items()})
    return body | {"calibration": merged}


def store_calibration(cloud: CloudClient, tenant: str, device_id: str,
                      calibration: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """Merge ``calibration`` into the node's desired config and store it: ``{device, version, status}``."""
    current = desired_config(cloud.config(tenant, device_id))
    return cloud.put_config(tenant, device_id, with_calibration(current, calibration))
