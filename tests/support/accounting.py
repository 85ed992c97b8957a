"""The one account every fault scenario ends with: each reading produced is stored exactly once, or counted.

Producers say what they made (device -> sequence numbers, and how many readings each message carries);
the database says what it holds (``ft.messages`` by device and sequence, ``ft.readings`` by device and
sequence); the gateway's outbox and the ingest's dead letters say what was dropped or refused on purpose.
:func:`account` puts the three side by side and :meth:`Account.check` fails with the difference:

* nothing stored that nobody produced, no message whose readings are missing or doubled;
* every produced message stored, or covered by a deliberate drop (the outbox's drop-oldest counter) or
  a dead letter with a reason — and the number missing equals the number so counted, exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import psycopg


@dataclass(frozen=True)
class Account:
    produced: int  # messages the producers made
    stored: int  # of those, stored (once: the ledger's key)
    missing: list[tuple[str, int]]  # produced, not stored
    unexpected: list[tuple[str, int]]  # stored, never produced
    wrong_readings: dict[tuple[str, int], int]  # (device, seq) -> readings stored, where not the expected count
    dropped: int  # deliberately dropped by a policy (counted by whoever dropped)
    dead_lettered: int  # refused with a reason (ft.dead_letters of these devices)
    notes: list[str] = field(default_factory=list)

    def check(self) -> None:
        """AssertionError naming what does not add up."""
        problems = []
        if self.unexpected:
            problems.append(f"{len(self.unexpected)} stored messages nobody produced: {self.unexpected[:5]}")
        if self.wrong_readings:
            problems.append(f"messages with missing or extra readings: {dict(list(self.wrong_readings.items())[:5])}")
        if len(self.missing) != self.dropped + self.dead_lettered:
            problems.append(f"{len(self.missing)} produced messages not stored, but {self.dropped} counted as dropped "
                            f"and {self.dead_lettered} dead-lettered: {self.missing[:5]}")
        assert not problems, f"{self}\n" + "\n".join(problems)

    def __str__(self) -> str:
        return (f"produced {self.produced}, stored {self.stored}, missing {len(self.missing)}, dropped {self.dropped}, "
                f"dead-lettered {self.dead_lettered}, unexpected {len(self.unexpected)}")


def account(url: str, produced: Mapping[str, Iterable[int]], *, readings_per_message: int, dropped: int = 0,
            refused_reasons: Iterable[str] = ()) -> Account:
    """Compare what was ``produced`` (device -> seqs) with the database at ``url`` (the owner's URL).

    ``dropped``: messages a policy dropped on purpose (the outbox's ``dropped`` counter, summed over
    gateways).  ``refused_reasons``: reasons of whole-message dead letters of these devices that count as
    deliberate refusals.  A refused *record* (``row_…`` dead letters, whose payload names device and seq)
    stands for its reading: a stored message's readings plus its refused records make ``readings_per_message``.
    """
    wanted = {(dev, seq) for dev, seqs in produced.items() for seq in seqs}
    devices = sorted(produced)
    with psycopg.connect(url) as conn:
        messages = {(d, s) for d, s in conn.execute(
            "SELECT device_id, seq FROM ft.messages WHERE device_id = ANY(%s)", (devices,))}
        readings = {(d, s): n for d, s, n in conn.execute(
            "SELECT device_id, seq, count(*) FROM ft.readings WHERE device_id = ANY(%s) GROUP BY 1, 2", (devices,))}
        row_letters = {(d, int(s)): n for d, s, n in conn.execute(
            "SELECT device_id, convert_from(payload, 'UTF8')::jsonb ->> 'seq', count(*) FROM ft.dead_letters "
            "WHERE device_id = ANY(%s) AND reason LIKE 'row\\_%%' GROUP BY 1, 2", (devices,))}
        refused = conn.execute(
            "SELECT count(*) FROM ft.dead_letters WHERE device_id = ANY(%s) AND reason = ANY(%s)",
            (devices, [r for r in refused_reasons if not r.startswith("row_")])).fetchone()[0]
    stored = messages & wanted
    wrong = {key: readings.get(key, 0) for key in stored
             if readings.get(key, 0) + row_letters.get(key, 0) != readings_per_message}
    wrong.update({key: n for key, n in readings.items() if key not in messages})
    notes = [f"{sum(row_letters.values())} records refused with a reason"] if row_letters else []
    return Account(len(wanted), len(stored), sorted(wanted - messages), sorted(messages - wanted), wrong, dropped,
                   refused, notes)
