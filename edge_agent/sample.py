"""What a bus scheduler hands to the rest of the agent: one device's values from one read cycle."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Sample:
    """Values of one device, stamped when read (never re-stamped afterwards).

    ``records`` are ``contract.telemetry.record()`` dicts whose ``t`` is the millisecond offset
    from ``bt_ms``, the wall-clock time at which the first response arrived.  ``quality`` holds
    header flags (for instance ``Q_CLOCK_UNSYNCED``).
    """

    device_id: str
    bt_ms: int
    records: list[dict] = field(default_factory=list)
    quality: int = 0
