"""Flash as the firmware sees it: erase blocks to 0xFF, writes that can only clear bits.

NOR flash can only turn 1 bits into 0 bits; only an erase (a whole block) turns them back.  Both
implementations here keep that rule, so the sequence store and the outbox are written the way
they must be on a chip: append into erased space, never rewrite in place.

* ``RamFlash`` holds the bytes in a bytearray and can simulate a power cut after a given number
  of bytes (mid-write or mid-erase), which is how the power-loss tests tear records.
* ``FileFlash`` keeps them in a fixed-size file on the board's filesystem (LittleFS on ESP32).
* ``Region`` gives one user (sequence store, outbox) its own window of a flash.
"""

ERASED = 0xFF


class PowerLoss(Exception):
    """Raised by RamFlash when its simulated supply is cut; what was written so far stays."""


class FlashError(ValueError):
    """An access outside the flash, or an erase not aligned to the erase block."""


class _FlashBase:
    """Bounds, alignment and the 1 -> 0 rule, on top of ``_load``/``_store`` of raw bytes."""

    def __init__(self, size, block_size):
        if size <= 0 or block_size <= 0 or size % block_size:
            raise FlashError("size %d is not a positive multiple of block size %d" % (size, block_size))
        self.size = size
        self.block_size = block_size

    def _check(self, offset, length):
        if offset < 0 or length < 0 or offset + length > self.size:
            raise FlashError("access %d+%d outside flash of %d bytes" % (offset, length, self.size))

    def _load(self, offset, length):  # each storage provides these three
        raise NotImplementedError

    def _load_into(self, offset, buf):
        raise NotImplementedError

    def _store(self, offset, data):
        raise NotImplementedError

    def read(self, offset, length):
        self._check(offset, length)
        return self._load(offset, length)

    def readinto(self, offset, buf):
        """Fill ``buf`` (a bytearray) from ``offset``: scans reuse one buffer instead of a new bytes per read."""
        self._check(offset, len(buf))
        self._load_into(offset, buf)

    def write(self, offset, data):
        """Program ``data`` at ``offset``: each stored byte becomes old AND new, as on NOR flash."""
        self._check(offset, len(data))
        cells = bytearray(len(data))
        self._load_into(offset, cells)
        for i in range(len(data)):  # in place: a list of ints would cost a frame's size in heap several times
            cells[i] &= data[i]
        self._store(offset, cells)

    def erase(self, offset, length):
        """Set whole blocks back to 0xFF."""
        self._check(offset, length)
        if offset % self.block_size or length % self.block_size:
            raise FlashError("erase %d+%d is not block aligned (%d)" % (offset, length, self.block_size))
        self._store(offset, bytes([ERASED]) * length)


class RamFlash(_FlashBase):
    """Flash in RAM, erased at creation, with a simulated power cut for the tests."""

    def __init__(self, size, block_size=4096):
        super().__init__(size, block_size)
        self.data = bytearray(bytes([ERASED]) * size)
        self._view = memoryview(self.data)  # slices of it copy nothing
        self._budget = -1  # bytes that may still reach the cells before the cut; -1: no cut armed

    def cut_power_after(self, nbytes):
        """Arm a power cut: the next writes/erases store ``nbytes`` bytes in total, then PowerLoss."""
        self._budget = nbytes

    def _load(self, offset, length):
        return bytes(self._view[offset : offset + length])  # one copy, not two

    def _load_into(self, offset, buf):
        buf[:] = self._view[offset : offset + len(buf)]

    def _store(self, offset, data):
        if self._budget >= 0 and len(data) > self._budget:
            kept = self._budget
            self.data[offset : offset + kept] = data[:kept]
            self._budget = -1
            raise PowerLoss("power cut after %d of %d bytes at offset %d" % (kept, len(data), offset))
        if self._budget >= 0:
            self._budget -= len(data)
        self.data[offset : offset + len(data)] = data


class FileFlash(_FlashBase):
    """Flash kept in a file of fixed size; created erased when missing or of the wrong size."""

    def __init__(self, path, size, block_size=4096):
        super().__init__(size, block_size)
        self.path = path
        try:
            with open(path, "rb") as f:
                current = len(f.read())
        except OSError:
            current = -1
        if current != size:
            with open(path, "wb") as f:
                chunk = bytes([ERASED]) * block_size
                for _ in range(size // block_size):
                    f.write(chunk)

    def _load(self, offset, length):
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def _load_into(self, offset, buf):
        with open(self.path, "rb") as f:
            f.seek(offset)
            if f.readinto(buf) != len(buf):
                raise FlashError("flash file %s shorter than %d" % (self.path, offset + len(buf)))

    def _store(self, offset, data):
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(data)


class Region:
    """A window ``[start, start + size)`` of a flash, addressed from 0, block aligned."""

    def __init__(self, flash, start, size):
        if start % flash.block_size or size % flash.block_size or size <= 0 or start + size > flash.size:
            raise FlashError("region %d+%d is not block aligned inside flash of %d" % (start, size, flash.size))
        self.flash = flash
        self.start = start
        self.size = size
        self.block_size = flash.block_size

    def _check(self, offset, length):
        if offset < 0 or length < 0 or offset + length > self.size:
            raise FlashError("access %d+%d outside region of %d bytes" % (offset, length, self.size))

    def read(self, offset, length):
        self._check(offset, length)
        return self.flash.read(self.start + offset, length)

    def readinto(self, offset, buf):
        self._check(offset, len(buf))
        self.flash.readinto(self.start + offset, buf)

    def write(self, offset, data):
        self._check(offset, len(data))
        self.flash.write(self.start + offset, data)

    def erase(self, offset, length):
        self._check(offset, length)
        self.flash.erase(self.start + offset, length)
