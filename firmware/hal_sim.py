"""A simulated board with the interface of ``firmware/hal.py``, for CPython and MicroPython alike.

Sensors answer in the bytes the real chips send (SHT3x words with their CRC, a DS18B20
scratchpad with its CRC, ADC microvolts), so the drivers above are exercised exactly as on the
node.  ``power_cycle`` models a brown-out: RTC memory and ticks are lost, flash is kept.
"""

from firmware.crc import crc8_dallas, crc8_sensirion
from firmware.flash import RamFlash

RTC_MEMORY_BYTES = 2048  # ESP32 RTC slow memory available to MicroPython's RTC.memory()
SHT3X_MEASURE_HIGH = b"\x24\x00"


class SimSht3x:
    """An SHT3x on the I2C bus: answers a single-shot measurement with two CRC-protected words."""

    def __init__(self, temperature_c, humidity_pct):
        self.temperature_c = temperature_c
        self.humidity_pct = humidity_pct
        self.corrupt_crc = False  # when True, the humidity CRC byte is wrong (a noisy bus)
        self._pending = b""

    def write(self, data):
        if bytes(data) != SHT3X_MEASURE_HIGH:
            raise OSError(19, "SHT3x NACK for command %r" % (bytes(data),))
        t_raw = round((self.temperature_c + 45) * 65535 / 175)
        rh_raw = round(self.humidity_pct * 65535 / 100)
        words = b""
        for raw in (t_raw, rh_raw):
            word = bytes([raw >> 8, raw & 0xFF])
            words += word + bytes([crc8_sensirion(word)])
        if self.corrupt_crc:
            words = words[:5] + bytes([words[5] ^ 0xFF])
        self._pending = words

    def read(self, n):
        data, self._pending = self._pending[:n], b""
        if len(data) < n:
            raise OSError(19, "SHT3x NACK: no measurement pending")
        return data


def ds18b20_scratchpad(temperature_c, config=0x7F):
    """The 9 bytes a DS18B20 returns for ``temperature_c`` (12-bit unless ``config`` says otherwise)."""
    raw = round(temperature_c * 16) & 0xFFFF
    head = bytes([raw & 0xFF, raw >> 8, 0x4B, 0x46, config, 0xFF, 0x0C, 0x10])
    return head + bytes([crc8_dallas(head)])


class SimBoard:
    """Board interface backed by Python values; the tests set sensors and advance time."""

    def __init__(self, flash=None, time_ms=1764480000000):
        self.flash = flash if flash is not None else RamFlash(64 * 1024)
        self.adc_uv = {}  # pin -> list of microvolt readings returned in turn (the last one repeats)
        self.onewire = {}  # (pin, rom bytes) -> scratchpad bytes
        self.i2c = {}  # address -> device with write(data) / read(n)
        self._rtc = b""
        self._time_ms = time_ms
        self._ticks_ms = 0
        self.boots = 1

    def adc_read_uv(self, pin):
        values = self.adc_uv.get(pin)
        if not values:
            raise OSError(19, "no ADC input on pin %d" % pin)
        return values.pop(0) if len(values) > 1 else values[0]

    def onewire_scratchpad(self, pin, rom):
        pad = self.onewire.get((pin, bytes(rom)))
        if pad is None:
            raise OSError(19, "no 1-Wire presence pulse on pin %d" % pin)
        return pad

    def _device(self, addr):
        device = self.i2c.get(addr)
        if device is None:
            raise OSError(19, "I2C address 0x%02x does not acknowledge" % addr)
        return device

    def i2c_write(self, addr, data):
        self._device(addr).write(data)

    def i2c_read(self, addr, n):
        return self._device(addr).read(n)

    def rtc_read(self):
        return self._rtc

    def rtc_write(self, data):
        if len(data) > RTC_MEMORY_BYTES:
            raise ValueError("RTC memory holds %d bytes, got %d" % (RTC_MEMORY_BYTES, len(data)))
        self._rtc = bytes(data)

    def ticks_ms(self):
        return self._ticks_ms

    def time_ms(self):
        return self._time_ms

    def sleep_ms(self, ms):
        self._ticks_ms += ms
        self._time_ms += ms

    def deep_sleep(self, ms):
        """Sleep and wake with a fresh boot: RTC memory and wall clock are kept, ticks restart."""
        self._time_ms += ms
        self._ticks_ms = 0
        self.boots += 1

    def power_cycle(self):
        """Supply lost and back: RTC memory is gone, flash (and the sensors) stay."""
        self._rtc = b""
        self._ticks_ms = 0
        self.boots += 1
