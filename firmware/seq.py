"""Message sequence numbers that never repeat: across deep sleep, reboots and power loss.

The cloud treats (device, epoch, seq) with different bytes as a conflict, so a number may be
skipped but never reused.  The counter lives in RTC memory (kept in deep sleep, cheap to write
at every message); flash holds a *reservation*: a limit above every number issued so far,
written before the first number of each block of ``reserve`` numbers is used.  After a power
loss (RTC memory gone) counting resumes at the reserved limit, skipping at most one block.

Flash layout: two erase blocks used in turn, each an append-only log of 16-byte slots
``b"SR" + limit (u32) + CRC32 + 0xFF padding``.  A torn slot fails its CRC and is ignored; when
the active block is full the other one is erased and continues the log, so a valid slot with
the highest limit always survives a cut during an erase or a write.
"""

import struct

from firmware.crc import crc32

SLOT = 16
_SLOT_MAGIC = b"SR"
_RTC_MAGIC = b"SQ"
RTC_BYTES = 14  # magic, next, limit, CRC32


def _slot(limit):
    body = _SLOT_MAGIC + struct.pack(">I", limit)
    return body + struct.pack(">I", crc32(body)) + b"\xff" * (SLOT - 10)


class SequenceCounter:
    """Issues 0, 1, 2, ... for one device key epoch; ``region`` needs two erase blocks."""

    def __init__(self, board, region, reserve=64, rtc_offset=0):
        if region.size < 2 * region.block_size:
            raise ValueError("the sequence store needs two erase blocks")
        self.board = board
        self.region = region
        self.reserve = reserve
        self.rtc_offset = rtc_offset
        state = self._read_rtc()
        if state is None:
            limit = self._read_flash()[0]
            state = (limit, limit)  # resume at the reservation: numbers below it may have been used
        self._next, self._limit = state

    def next(self):
        """The next unused number; reserves a new block on flash first when the current one is used up."""
        if self._next >= self._limit:
            self._reserve(self._next + self.reserve)
        value = self._next
        self._next += 1
        self._write_rtc()
        return value

    # -- RTC memory ------------------------------------------------------------------------------

    def _read_rtc(self):
        blob = self.board.rtc_read()
        raw = blob[self.rtc_offset : self.rtc_offset + RTC_BYTES]
        if len(raw) != RTC_BYTES or raw[:2] != _RTC_MAGIC or struct.unpack(">I", raw[10:])[0] != crc32(raw[:10]):
            return None
        nxt, limit = struct.unpack(">II", raw[2:10])
        return nxt, limit

    def _write_rtc(self):
        body = _RTC_MAGIC + struct.pack(">II", self._next, self._limit)
        blob = bytearray(self.board.rtc_read())
        end = self.rtc_offset + RTC_BYTES
        if len(blob) < end:
            blob.extend(bytes(end - len(blob)))
        blob[self.rtc_offset : end] = body + struct.pack(">I", crc32(body))
        self.board.rtc_write(blob)  # the board copies it

    # -- flash -----------------------------------------------------------------------------------

    def _scan_block(self, block):
        """``(highest valid limit or -1, index of the first slot after the last written one)``."""
        data = self.region.read(block * self.region.block_size, self.region.block_size)
        best = -1
        end = 0
        for i in range(self.region.block_size // SLOT):
            raw = data[i * SLOT : (i + 1) * SLOT]
            if raw == b"\xff" * SLOT:
                continue
            end = i + 1
            if raw[:2] == _SLOT_MAGIC and struct.unpack(">I", raw[6:10])[0] == crc32(raw[:6]):
                best = max(best, struct.unpack(">I", raw[2:6])[0])
        return best, end

    def _read_flash(self):
        """``(reserved limit, active block, next free slot in it)``; limit 0 on an erased store."""
        scans = [self._scan_block(0), self._scan_block(1)]
        active = 0 if scans[0][0] >= scans[1][0] else 1
        return max(scans[active][0], 0), active, scans[active][1]

    def _reserve(self, limit):
        _, active, free = self._read_flash()
        block_size = self.region.block_size
        if free >= block_size // SLOT:
            active = 1 - active
            self.region.erase(active * block_size, block_size)
            free = 0
        self.region.write(active * block_size + free * SLOT, _slot(limit))
        self._limit = limit
