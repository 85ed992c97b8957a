"""The node's outbox on flash: signed frames wait here until the gateway acknowledges them.

Frames are stored as signed (same bytes on every resend, so the cloud's duplicate rule
recognises a resend).  The outbox is a ring of segments, one erase block each::

    segment: header (16 bytes: b"FTOS", generation u32, dropped total u32, CRC32),
             drop note (16 bytes: b"DN", dropped total u32, CRC32, padding), then slots
    slot:    ack byte (0xFF pending, 0x00 delivered), b"FR", number u32, length u16, payload,
             0xFF padding, CRC32 of everything after the ack byte (last 4 bytes)

* Power loss mid-write leaves a slot whose CRC fails: it is counted in ``torn`` and skipped, and
  writing continues after it (flash cannot be rewritten without an erase).
* Delivery clears the ack byte in place (1 -> 0 bits need no erase).
* Bounded: when every segment is in use the oldest one is erased; the undelivered records it
  held are counted in ``dropped``.  The new total goes into the current segment's drop note
  *before* the erase and into the new segment's header after it, so a power cut at any point
  keeps the count.
"""

import struct

from firmware.crc import crc32

HEADER = 32  # segment header + drop note
_SEG_MAGIC = b"FTOS"
_NOTE_MAGIC = b"DN"
_REC_MAGIC = b"FR"
_REC_OVERHEAD = 13  # ack, magic, number, length, CRC32
PENDING = 0xFF
DELIVERED = 0x00
_DELIVERED_HEAD = bytes([DELIVERED]) + _REC_MAGIC


class OutboxError(ValueError):
    """A payload that cannot be stored (too large for a slot)."""


class Outbox:
    """Fixed-size records in rotating flash segments; oldest pending record first."""

    def __init__(self, region, record_size=512):
        self.region = region
        self.record_size = record_size
        self.segment_size = region.block_size
        self.segments = region.size // region.block_size
        self.slots = (self.segment_size - HEADER) // record_size
        if self.segments < 2 or self.slots < 1:
            raise OutboxError("the outbox needs two segments of at least one %d-byte record" % record_size)
        self.capacity = record_size - _REC_OVERHEAD
        self._erased = b"\xff" * record_size  # compared with every slot read: built once, not per read
        self.dropped = 0
        self.torn = 0
        self._pending = []  # (segment, slot, number) in order
        self._gen = [None] * self.segments
        self._scan()

    # -- public ----------------------------------------------------------------------------------

    def __len__(self):
        return len(self._pending)

    def append(self, payload):
        """Store one frame; drops the oldest segment when the outbox is full."""
        if len(payload) > self.capacity:
            raise OutboxError("payload of %d bytes > record capacity %d" % (len(payload), self.capacity))
        if self._slot >= self.slots:
            self._open_next_segment()
        body = _REC_MAGIC + struct.pack(">IH", self._number, len(payload)) + payload
        body += b"\xff" * (self.record_size - 5 - len(body))
        slot, number = self._slot, self._number
        self._slot += 1  # a cut inside the write leaves a torn slot: never write it again
        self._number += 1
        self.region.write(self._offset(self._current, slot) + 1, body + struct.pack(">I", crc32(body)))
        self._pending.append((self._current, slot, number))

    def oldest(self):
        """``(ref, payload)`` of the oldest pending record, or None when everything was delivered."""
        while self._pending:
            ref = self._pending[0]
            record = self._read_record(ref[0], ref[1])
            if record is not None and record[0] == PENDING:
                return ref, record[2]
            self._pending.pop(0)  # corrupted since it was written, or delivered: skip
            if record is None:
                self.torn += 1
        return None

    def ack(self, ref):
        """Mark a record delivered (``ref`` from ``oldest``)."""
        self.region.write(self._offset(ref[0], ref[1]), bytes([DELIVERED]))
        if ref in self._pending:
            self._pending.remove(ref)

    # -- layout ----------------------------------------------------------------------------------

    def _offset(self, segment, slot):
        return segment * self.segment_size + HEADER + slot * self.record_size

    def _read_header(self, segment):
        raw = self.region.read(segment * self.segment_size, 16)
        if raw[:4] != _SEG_MAGIC or struct.unpack(">I", raw[12:])[0] != crc32(raw[:12]):
            return None
        return struct.unpack(">II", raw[4:12])

    def _read_note(self, segment):
        """The dropped total noted in ``segment`` before it opened its successor, or -1."""
        raw = self.region.read(segment * self.segment_size + 16, 10)
        if raw[:2] != _NOTE_MAGIC or struct.unpack(">I", raw[6:])[0] != crc32(raw[:6]):
            return -1
        return struct.unpack(">I", raw[2:6])[0]

    def _read_record(self, segment, slot):
        """``(ack byte, number, payload)``, ``"empty"`` for an erased slot, or None when torn."""
        raw = self.region.read(self._offset(segment, slot), self.record_size)
        if raw == self._erased:
            return "empty"
        body = raw[1:-4]
        if body[:2] != _REC_MAGIC or struct.unpack(">I", raw[-4:])[0] != crc32(body):
            return None
        number, length = struct.unpack(">IH", body[2:8])
        if length > self.capacity:
            return None
        return raw[0], number, body[8 : 8 + length]

    def _scan(self):
        """Rebuild the pending list, the write position and the counters from flash (at boot)."""
        order = []
        for seg in range(self.segments):
            header = self._read_header(seg)
            if header is not None:
                self._gen[seg] = header[0]
                order.append((header[0], seg, header[1]))
        order.sort()
        self._number = 0
        if not order:
            self._current, self._slot = self.segments - 1, self.slots  # first append formats segment 0
            return
        self.dropped = max(max(entry[2], self._read_note(entry[1])) for entry in order)
        for _gen, seg, _dropped in order:
            last = 0
            for slot in range(self.slots):
                if self.region.read(self._offset(seg, slot), 3) == _DELIVERED_HEAD:
                    last = slot + 1  # checked when it was sent; reading it whole at every boot costs heap
                    continue
                record = self._read_record(seg, slot)
                if record == "empty":
                    continue
                last = slot + 1
                if record is None:
                    self.torn += 1
                    continue
                self._number = max(self._number, record[1] + 1)
                if record[0] == PENDING:
                    self._pending.append((seg, slot, record[1]))
            self._current, self._slot = seg, last
        self._pending.sort(key=lambda ref: ref[2])

    def _open_next_segment(self):
        seg = (self._current + 1) % self.segments
        lost = [ref for ref in self._pending if ref[0] == seg]
        for ref in lost:
            self._pending.remove(ref)
        self.dropped += len(lost)
        gens = [g for g in self._gen if g is not None]
        gen = max(gens) + 1 if gens else 1
        if self._gen[self._current] is not None:  # note the new total where the erase cannot reach it
            note = _NOTE_MAGIC + struct.pack(">I", self.dropped)
            self.region.write(self._current * self.segment_size + 16, note + struct.pack(">I", crc32(note)))
        self._gen[seg] = None
        self.region.erase(seg * self.segment_size, self.segment_size)
        header = _SEG_MAGIC + struct.pack(">II", gen, self.dropped)
        self.region.write(seg * self.segment_size, header + struct.pack(">I", crc32(header)))
        self._gen[seg] = gen
        self._current, self._slot = seg, 0
