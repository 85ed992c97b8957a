"""The provisioning journal: per board, which steps are done, so a re-run continues where it stopped.

A board is known by its unique id (``machine.unique_id()``), not by its port: unplugged halfway and
plugged into another USB socket, it is still the same board and the same journal.  The journal holds
what a re-run must reuse to never create a second device or key: the device id, the options it was
started with, the vault entry of its key, the id of its ``provisioned`` event.  It never holds a key.

One JSON file per board, ``<dir>/<uid>.json``, replaced atomically (write, fsync, rename) after each
step, so a crash leaves the previous state, never half a file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_UID = re.compile(r"^[0-9a-f]{2,64}$")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Journal:
    """One board's provisioning; :meth:`JournalStore.save` after every change."""

    uid: str
    device_id: str
    tenant: str
    options: dict[str, Any]
    """what the provisioning was started with (farm, specs, gateway, Wi-Fi name, broker ...); no secrets"""
    started_at: str = field(default_factory=now)
    steps: dict[str, str] = field(default_factory=dict)
    """step name -> when it was done"""
    offline: bool = False
    """registration is waiting for ``fieldtrust node sync``"""
    event_id: str | None = None
    completed_at: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    """what steps found out (firmware version copied, DS18B20 ROM, ...)"""

    def done(self, step: str) -> bool:
        return step in self.steps

    def mark(self, step: str) -> None:
        self.steps[step] = now()

    def forget(self, step: str) -> None:
        self.steps.pop(step, None)


class JournalStore:
    """The journals in one folder (the technician's data dir)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, uid: str) -> Path:
        if not _UID.match(uid):
            raise ValueError(f"board id must be lowercase hex; got {uid!r}")
        return self.directory / f"{uid}.json"

    def load(self, uid: str) -> Journal | None:
        path = self.path(uid)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable provisioning journal ({exc}); move it away to start over") from None
        return Journal(**data)

    def save(self, journal: Journal) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(journal.uid)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(asdict(journal), f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def discard(self, uid: str) -> None:
        self.path(uid).unlink(missing_ok=True)

    def all(self) -> list[Journal]:
        if not self.directory.is_dir():
            return []
        return [j for p in sorted(self.directory.glob("*.json")) if (j := self.load(p.stem)) is not None]

    def by_device(self, device_id: str) -> Journal | None:
        return next((j for j in self.all() if j.device_id == device_id), None)
