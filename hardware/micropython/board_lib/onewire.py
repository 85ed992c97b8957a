"""``onewire`` on the virtual ESP32: the API of MicroPython's frozen module, over the simulated bus.

The devices on a pin are those the host's environment lists under ``onewire`` for that pin
(``_chips.OneWireBus``); ``scan`` runs the real ROM search, bit by bit, against them.
"""

import time

import _chips
import machine

_buses = {}  # pin number -> OneWireBus, for the life of the interpreter


class OneWireError(Exception):
    pass


class OneWire:
    SEARCH_ROM = 0xF0
    MATCH_ROM = 0x55
    SKIP_ROM = 0xCC

    def __init__(self, pin):
        self.pin = pin
        self.pin.init(pin.OPEN_DRAIN, pin.PULL_UP)
        pid = machine._pin_id(pin)
        bus = _buses.get(pid)
        if bus is None:
            bus = _buses[pid] = _chips.OneWireBus()
        self._bus = bus
        self._pid = pid

    def reset(self, required=False):
        if machine._powered("onewire", self._pid):
            self._bus.wire(machine._environment().get("onewire", {}).get(str(self._pid), []))
        else:  # no supply: nothing answers, and each chip starts again at its power-on value
            self._bus.devices = {}
            self._bus.wire([])
        present = self._bus.reset()
        if required and not present:
            raise OneWireError
        return present

    def readbit(self):
        return self._bus.read_bit(time.ticks_ms())

    def readbyte(self):
        return self._bus.read_byte(time.ticks_ms())

    def readinto(self, buf):
        for i in range(len(buf)):
            buf[i] = self.readbyte()

    def writebit(self, value):
        self._bus.write_bit(1 if value else 0)

    def writebyte(self, value):
        self._bus.write_byte(value & 0xFF, time.ticks_ms())

    def write(self, buf):
        for byte in buf:
            self.writebyte(byte)

    def select_rom(self, rom):
        self.reset()
        self.writebyte(self.MATCH_ROM)
        self.write(rom)

    def scan(self):
        devices = []
        diff = 65
        rom = False
        for _ in range(0xFF):
            rom, diff = self._search_rom(rom, diff)
            if rom:
                devices.append(rom)
            if diff == 0:
                break
        return devices

    def _search_rom(self, l_rom, diff):
        """One pass of the ROM search: the next ROM after ``l_rom`` and the last discrepancy."""
        if not self.reset():
            return None, 0
        self.writebyte(self.SEARCH_ROM)
        if not diff:
            diff = 65
        rom = bytearray(8)
        next_diff = 0
        i = 64
        for byte in range(8):
            r_b = 0
            for bit in range(8):
                b = self.readbit()
                if self.readbit():
                    if b:  # no device answered
                        return None, 0
                elif not b and (diff > i or ((l_rom[byte] & (1 << bit)) and diff != i)):
                    b = 1  # a discrepancy (devices differ at this bit): take the 1 branch this pass
                    next_diff = i
                self.writebit(b)
                if b:
                    r_b |= 1 << bit
                i -= 1
            rom[byte] = r_b
        return rom, next_diff

    def crc8(self, data):
        return _chips.crc8_maxim(data)
