"""Calibrations measured where the cloud could not be reached, kept on the laptop until ``fieldtrust node sync``.

A calibration is measured at the probe, in the field, often without a connection; the numbers must not
be lost because the cloud was out of reach.  ``node calibrate`` then queues them here, one JSON file per
node (``<data dir>/pending/<tenant>/<device>.json``, written atomically, mode 0600); a newer calibration
of the same node replaces the queued one (the probe was measured again).  ``node sync`` stores each in
the node's desired config (:func:`provisioning.node_config.store_calibration`) after the registrations
waiting in the vault, since a node provisioned offline must exist before its config can, and removes
the file once the cloud has it.  Nothing here is secret (the device key never leaves the vault).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from provisioning.cloud_client import CloudClient
from provisioning.errors import CloudUnreachable, ProvisioningError
from provisioning.journal import now
from provisioning.node_config import store_calibration
from provisioning.vault import write_private

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class PendingCalibration:
    tenant: str
    device_id: str
    calibration: dict[str, list[float]]
    """``metric -> [gain, offset]``, as the API takes it"""
    measured: dict[str, Any]
    """what it was computed from (``air_mv``, ``water_mv``, samples), for the technician's record"""
    queued_at: str


@dataclass(frozen=True)
class SentConfig:
    device_id: str
    tenant: str
    stored: bool
    message: str


class PendingConfigs:
    """The queued calibrations under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, tenant: str, device_id: str) -> Path:
        for what, name in (("tenant", tenant), ("device id", device_id)):
            if not _NAME.match(name):
                raise ValueError(f"{what} must be 1-64 of A-Z a-z 0-9 . _ -; got {name!r}")
        return self.directory / tenant / f"{device_id}.json"

    def queue(self, tenant: str, device_id: str, calibration: dict[str, tuple[float, float]],
              measured: dict[str, Any]) -> PendingCalibration:
        item = PendingCalibration(tenant, device_id, {m: [g, o] for m, (g, o) in calibration.items()}, measured,
                                  now())
        path = self.path(tenant, device_id)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, json.dumps(asdict(item), indent=1).encode())
        return item

    def all(self) -> list[PendingCalibration]:
        if not self.directory.is_dir():
            return []
        return [PendingCalibration(**json.loads(p.read_text())) for p in sorted(self.directory.glob("*/*.json"))]

    def done(self, item: PendingCalibration) -> None:
        self.path(item.tenant, item.device_id).unlink(missing_ok=True)


def send_pending(cloud: CloudClient, queue: PendingConfigs) -> list[SentConfig]:
    """Store every queued calibration; stops at the first CloudUnreachable (the rest waits for the next sync).
    One the cloud refuses (node unknown, no gateway yet) is reported and kept."""
    results = []
    for item in queue.all():
        calibration = {metric: (float(v[0]), float(v[1])) for metric, v in item.calibration.items()}
        try:
            stored = store_calibration(cloud, item.tenant, item.device_id, calibration)
        except CloudUnreachable:
            raise
        except ProvisioningError as exc:
            results.append(SentConfig(item.device_id, item.tenant, False, f"calibration kept here: {exc} ({exc.todo})"))
            continue
        queue.done(item)
        results.append(SentConfig(item.device_id, item.tenant, True,
                                  f"calibration (measured {item.queued_at}) stored as config version "
                                  f"{stored.get('version')}"))
    return results
