"""The sensor chips on the virtual ESP32's buses, answering with the bytes the real chips send.

Physical values come from the host's environment file (``machine._environment()``); what a chip
does with them follows its datasheet: an SHT3x (Sensirion SHT3x-DIS) measures on command and
NACKs a read before the measurement is done; a DS18B20 (Maxim 19-7487) latches the temperature at
the end of a conversion, holds +85 degC until the first one, and answers the 1-Wire ROM search bit
by bit.  Checksums are computed here, independently of the firmware's own, so a driver that gets
them wrong fails against this board as it would against the chips.
"""

import binascii

ENODEV = 19  # what an ESP32 raises when an I2C address does not acknowledge


def crc8_sensirion(data):
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def crc8_maxim(data):
    crc = 0
    for byte in data:
        for _ in range(8):
            mix = (crc ^ byte) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            byte >>= 1
    return crc


class Sht3x:
    """Single-shot measurements (with and without clock stretching), status, soft reset."""

    # command -> measurement time in ms (0: clock stretching, the read waits for the result)
    MEASURE = {0x2400: 16, 0x240B: 7, 0x2416: 5, 0x2C06: 0, 0x2C0D: 0, 0x2C10: 0}
    SOFT_RESET = 0x30A2
    READ_STATUS = 0xF32D
    CLEAR_STATUS = 0x3041

    def __init__(self):
        self.pending = b""
        self.ready_at = 0
        self.status = 0x8010  # alert pending and reset detected, as after power-up

    def write(self, data, now_ms, values):
        if len(data) == 0:
            return  # an address-only write (a bus scan): acknowledged
        if len(data) != 2:
            raise OSError(ENODEV)
        command = (data[0] << 8) | data[1]
        if command in self.MEASURE:
            t_raw = _clamp16(round((values.get("temperature_c", 20.0) + 45) * 65535 / 175))
            rh_raw = _clamp16(round(values.get("humidity_pct", 50.0) * 65535 / 100))
            self.pending = _word(t_raw) + _word(rh_raw)
            self.ready_at = now_ms + self.MEASURE[command]
        elif command == self.READ_STATUS:
            self.pending = _word(self.status)
            self.ready_at = now_ms
        elif command == self.CLEAR_STATUS:
            self.status &= ~0x8010 & 0xFFFF
        elif command == self.SOFT_RESET:
            self.pending = b""
        else:
            raise OSError(ENODEV)  # the chip NACKs a command it does not know

    def read(self, n, now_ms):
        if not self.pending or now_ms < self.ready_at:
            raise OSError(ENODEV)  # no stretching: a read before the result is NACKed
        data, self.pending = self.pending[:n], b""
        return data + b"\xff" * (n - len(data))


def _clamp16(raw):
    return max(0, min(0xFFFF, raw))


def _word(raw):
    pair = bytes([raw >> 8, raw & 0xFF])
    return pair + bytes([crc8_sensirion(pair)])


I2C_CHIPS = {"sht3x": Sht3x}


class Ds18b20:
    """One DS18B20: ROM ``28 <serial, 6 bytes LSB first> <CRC>``, scratchpad and conversions."""

    CONVERSION_MS = (94, 188, 375, 750)  # 9, 10, 11, 12-bit resolution

    def __init__(self, serial):
        head = b"\x28" + bytes(reversed(serial))
        self.rom = head + bytes([crc8_maxim(head)])
        self.temperature_raw = 0x0550  # +85 degC: the power-on value
        self.user = bytearray(b"\x4b\x46\x7f")  # TH, TL, configuration (12-bit)
        self.converting_until = 0
        self.pending_raw = None

    def convert(self, now_ms, temperature_c):
        self.pending_raw = round(temperature_c * 16) & 0xFFFF
        self.converting_until = now_ms + self.CONVERSION_MS[(self.user[2] >> 5) & 3]

    def settle(self, now_ms):
        if self.pending_raw is not None and now_ms >= self.converting_until:
            self.temperature_raw = self.pending_raw
            self.pending_raw = None

    def busy(self, now_ms):
        self.settle(now_ms)
        return self.pending_raw is not None

    def scratchpad(self, now_ms):
        self.settle(now_ms)
        raw = self.temperature_raw
        head = bytes([raw & 0xFF, raw >> 8]) + bytes(self.user) + b"\xff\x0c\x10"
        return head + bytes([crc8_maxim(head)])


class OneWireBus:
    """The devices on one 1-Wire pin, driven by reset pulses, bytes and (for the ROM search) bits.

    Several devices answering at once pull the line low together: what the master reads is the
    AND of their bits (an idle line reads 1).
    """

    MATCH_ROM, SKIP_ROM, READ_ROM, SEARCH_ROM = 0x55, 0xCC, 0x33, 0xF0
    CONVERT_T, READ_SCRATCHPAD, WRITE_SCRATCHPAD, READ_POWER = 0x44, 0xBE, 0x4E, 0xB4

    def __init__(self):
        self.devices = {}  # serial hex -> Ds18b20
        self.present = []
        self.mode = "idle"
        self.selected = []
        self.collected = bytearray()
        self.out = bytearray()
        self.search_bit = 0
        self.search_step = 0

    def wire(self, wired):
        """Attach the devices the environment lists on this pin: ``[{"serial": hex, "temperature_c": x}]``."""
        self.present = []
        for entry in wired:
            device = self.devices.get(entry["serial"])
            if device is None:
                device = Ds18b20(binascii.unhexlify(entry["serial"]))
                self.devices[entry["serial"]] = device
            device.temperature_c = entry.get("temperature_c", 20.0)
            self.present.append(device)

    def reset(self):
        self.mode = "rom"
        self.selected = []
        self.collected = bytearray()
        self.out = bytearray()
        return bool(self.present)

    def write_byte(self, byte, now_ms):
        mode = self.mode
        if mode == "rom":
            if byte == self.MATCH_ROM:
                self.mode = "match"
            elif byte == self.SKIP_ROM:
                self.selected = list(self.present)
                self.mode = "function"
            elif byte == self.READ_ROM:
                self.out = self._wired_and([d.rom for d in self.present])
                self.selected = list(self.present)
                self.mode = "function"
            elif byte == self.SEARCH_ROM:
                self.selected = list(self.present)
                self.search_bit, self.search_step = 0, 0
                self.mode = "search"
            else:
                self.mode = "idle"
        elif mode == "match":
            self.collected.append(byte)
            if len(self.collected) == 8:
                self.selected = [d for d in self.present if d.rom == bytes(self.collected)]
                self.mode = "function"
        elif mode == "function":
            self._function(byte, now_ms)
        elif mode == "write":
            self.collected.append(byte)
            if len(self.collected) == 3:
                for device in self.selected:
                    device.user[:] = self.collected
                self.mode = "idle"

    def _function(self, byte, now_ms):
        if byte == self.CONVERT_T:
            for device in self.selected:
                device.convert(now_ms, device.temperature_c)
            self.mode = "converting"
        elif byte == self.READ_SCRATCHPAD:
            self.out = self._wired_and([d.scratchpad(now_ms) for d in self.selected])
            self.mode = "idle"
        elif byte == self.WRITE_SCRATCHPAD:
            self.collected = bytearray()
            self.mode = "write"
        elif byte == self.READ_POWER:
            self.mode = "idle"  # externally powered: read slots return 1
        else:
            self.mode = "idle"

    @staticmethod
    def _wired_and(blobs):
        if not blobs:
            return bytearray()
        out = bytearray(blobs[0])
        for blob in blobs[1:]:
            for i in range(len(out)):
                out[i] &= blob[i]
        return out

    def read_byte(self, now_ms):
        if self.mode == "converting":
            return 0xFF if not any(d.busy(now_ms) for d in self.selected) else 0x00
        if self.out:
            byte = self.out[0]
            self.out = self.out[1:]
            return byte
        return 0xFF

    def read_bit(self, now_ms):
        if self.mode == "search":
            return self._search_read()
        if self.mode == "converting":
            return 0 if any(d.busy(now_ms) for d in self.selected) else 1
        return (self.read_byte(now_ms) >> 7) & 1 if self.out else 1

    def _search_read(self):
        """Search triplet: each device sends its ROM bit, then its complement (wired AND of both)."""
        bit_index = self.search_bit
        bits = [(d.rom[bit_index // 8] >> (bit_index % 8)) & 1 for d in self.selected]
        if not bits:
            value = 1
        elif self.search_step == 0:
            value = 0 if 0 in bits else 1
        else:
            value = 0 if 1 in bits else 1
        self.search_step = 1 - self.search_step
        return value

    def write_bit(self, value):
        if self.mode != "search":
            return
        bit_index = self.search_bit
        self.selected = [d for d in self.selected if (d.rom[bit_index // 8] >> (bit_index % 8)) & 1 == value]
        self.search_bit += 1
        self.search_step = 0
        if self.search_bit == 64:
            self.mode = "function"
