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
_DELIVERED_BYTE = bytes([DELIVERED])
_PAYLOAD = 9  # ack, magic, number, length: where the payload starts in a slot


def _all_erased(buf):
    # all() over a generator allocates, and comparing with a record-sized constant costs the constant
    for i in range(len(buf)):  # noqa: SIM110
        if buf[i] != 0xFF:
            return False
    return True


def _starts_with(buf, magic):
    for i in range(len(magic)):  # noqa: SIM110 - no generator: no allocation
        if buf[i] != magic[i]:
            return False
    return True


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
        # every read and write goes through these buffers: a boot scans every slot, and a bytes object
        # per read cost more heap than the rest of a wake
        self._buf = bytearray(record_size)
        self._view = memoryview(self._buf)
        self._head = bytearray(len(_DELIVERED_HEAD))
        self._small = bytearray(16)  # segment header, drop note
        self._small_view = memoryview(self._small)
        self.dropped = 0
        self.torn = 0
        self._pending = []  # (segment, slot, number) in order
        self._gen = [None] * self.segments  # type: list[int | None]
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
        buf, end, n = self._buf, self.record_size - 4, len(payload)
        buf[1 : 1 + len(_REC_MAGIC)] = _REC_MAGIC
        struct.pack_into(">IH", buf, 3, self._number, n)
        buf[_PAYLOAD : _PAYLOAD + n] = payload
        for i in range(_PAYLOAD + n, end):
            buf[i] = 0xFF
        struct.pack_into(">I", buf, end, crc32(self._view[1:end]))
        slot, number = self._slot, self._number
        self._slot += 1  # a cut inside the write leaves a torn slot: never write it again
        self._number += 1
        self.region.write(self._offset(self._current, slot) + 1, self._view[1:])  # the ack byte stays erased
        self._pending.append((self._current, slot, number))

    def oldest(self):
        """``(ref, payload)`` of the oldest pending record, or None when everything was delivered."""
        while self._pending:
            ref = self._pending[0]
            record = self._read_record(ref[0], ref[1])
            if record is not None and record != "empty" and record[0] == PENDING:
                return ref, bytes(self._view[_PAYLOAD : _PAYLOAD + record[2]])
            self._pending.pop(0)  # corrupted since it was written, or delivered: skip
            if record is None:
                self.torn += 1
        return None

    def ack(self, ref):
        """Mark a record delivered (``ref`` from ``oldest``)."""
        self.region.write(self._offset(ref[0], ref[1]), _DELIVERED_BYTE)
        if ref in self._pending:
            self._pending.remove(ref)

    # -- layout ----------------------------------------------------------------------------------

    def _offset(self, segment, slot):
        return segment * self.segment_size + HEADER + slot * self.record_size

    def _read_header(self, segment):
        raw = self._small
        self.region.readinto(segment * self.segment_size, raw)
        if not _starts_with(raw, _SEG_MAGIC) or struct.unpack_from(">I", raw, 12)[0] != crc32(self._small_view[:12]):
            return None
        return struct.unpack_from(">II", raw, 4)

    def _read_note(self, segment):
        """The dropped total noted in ``segment`` before it opened its successor, or -1."""
        raw = self._small
        self.region.readinto(segment * self.segment_size + 16, raw)
        if not _starts_with(raw, _NOTE_MAGIC) or struct.unpack_from(">I", raw, 6)[0] != crc32(self._small_view[:6]):
            return -1
        return struct.unpack_from(">I", raw, 2)[0]

    def _read_record(self, segment, slot):
        """``(ack byte, number, payload length)`` with the slot in ``self._buf``, ``"empty"`` for an erased
        slot, or None when torn."""
        buf, end = self._buf, self.record_size - 4
        self.region.readinto(self._offset(segment, slot), buf)
        if _all_erased(buf):
            return "empty"
        if buf[1] != _REC_MAGIC[0] or buf[2] != _REC_MAGIC[1]:
            return None
        if struct.unpack_from(">I", buf, end)[0] != crc32(self._view[1:end]):
            return None
        number, length = struct.unpack_from(">IH", buf, 3)
        if length > self.capacity:
            return None
        return buf[0], number, length

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
                self.region.readinto(self._offset(seg, slot), self._head)
                if self._head == _DELIVERED_HEAD:
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
