"""A simulated board with the interface of ``firmware/hal.py``, for CPython and MicroPython alike.

Sensors answer in the bytes the real chips send (SHT3x words with their CRC, a DS18B20
scratchpad with its CRC, ADC microvolts), so the drivers above are exercised exactly as on the
node.  ``power_cycle`` models a brown-out: RTC memory and ticks are lost, flash is kept.

A board may have the sensors on a switched rail (``SimBoard.switched_rail``, as the reference build's
GPIO26 load switch): then they answer only while the firmware drives the rail's pin to its active
level and the settle time has passed since; every reset releases the pins (the rail goes off).
"""

import struct

from firmware.crc import crc8_dallas, crc8_sensirion, crc16_modbus
from firmware.flash import RamFlash
from firmware.hal import uart_char_us

POWER_ON_CLOCK_MS = 946684800000  # 2000-01-01 00:00 UTC: what time.time() says on an ESP32 at power-on
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


def rtu_frame(pdu_with_slave):
    """An RTU frame: slave, PDU, then its CRC-16/MODBUS low byte first."""
    crc = crc16_modbus(pdu_with_slave)
    return bytes(pdu_with_slave) + bytes([crc & 0xFF, crc >> 8])


class SimModbusDevice:
    """A Modbus RTU slave answering reads (functions 3 and 4) from ``registers``: (function, address) -> value.

    Use it as a board's RS485 responder.  A frame with a bad CRC or for another slave gets silence, as
    on a real line; an unmapped register an ``illegal data address`` exception, another function
    ``illegal function``.
    """

    def __init__(self, slave, registers):
        self.slave = slave
        self.registers = registers
        self.requests = 0

    def __call__(self, request):
        if len(request) < 4 or crc16_modbus(request[:-2]) != request[-2] | request[-1] << 8:
            return None
        if request[0] != self.slave:
            return None
        self.requests += 1
        function = request[1]
        if function not in (3, 4) or len(request) != 8:
            return rtu_frame(bytes([self.slave, function | 0x80, 1]))
        address, count = struct.unpack(">HH", request[2:6])
        data = bytearray()
        for a in range(address, address + count):
            value = self.registers.get((function, a))
            if value is None:
                return rtu_frame(bytes([self.slave, function | 0x80, 2]))
            data += struct.pack(">H", value)
        return rtu_frame(bytes([self.slave, function, len(data)]) + data)


class SimRs485:
    """The board's RS485 port: a request goes to the responder attached to its UART, the reply waits to be read.

    Line time passes on the board's clock (each character ``char_us``; silence costs the whole
    timeout), and ``de`` records ``(ticks_ms, level)`` of the DE/RE pin.
    """

    def __init__(self, board, uart_id, char_us):
        self.board = board
        self.uart_id = uart_id
        self.char_us = char_us
        self.sent = []  # request frames, in order
        self.de = []
        self._pending = b""

    def _line_time(self, chars):
        self.board.sleep_ms((chars * self.char_us + 999) // 1000)

    def send(self, frame):
        self.de.append((self.board.ticks_ms(), 1))
        self.sent.append(bytes(frame))
        self._line_time(len(frame))  # DE/RE drops only once the last bit is out
        self.de.append((self.board.ticks_ms(), 0))
        responder = self.board.rs485_responders.get(self.uart_id) if self.board.powered() else None
        self._pending = (responder(bytes(frame)) if responder is not None else None) or b""

    def recv(self, n, timeout_ms):
        if not self._pending:
            self.board.sleep_ms(timeout_ms)
            return b""
        data, self._pending = self._pending[:n], self._pending[n:]
        self._line_time(len(data))
        return data

    def discard(self):
        self._pending = b""


class SimBoard:
    """Board interface backed by Python values; the tests set sensors and advance time."""

    def __init__(self, flash=None, time_ms=1764480000000):
        self.flash = flash if flash is not None else RamFlash(64 * 1024)
        self.adc_uv = {}  # pin -> list of microvolt readings returned in turn (the last one repeats)
        self.onewire = {}  # (pin, rom bytes) -> scratchpad bytes
        self.i2c = {}  # address -> device with write(data) / read(n)
        self.rs485_responders = {}  # UART id -> callable(request bytes) -> reply bytes, or None for silence
        self._rtc = b""
        self._time_ms = time_ms
        self._ticks_ms = 0
        self.boots = 1
        self.pins = {}  # GPIO driven as an output -> (level, ticks_ms since when)
        self.pin_log = []  # (ticks_ms, GPIO, level) of every pin_write
        self.rail = None  # (pin, active level, settle ms, ADC pins it feeds); None: the sensors are always powered

    def switched_rail(self, pin, active, settle_ms, adc_pins=()):
        """Put the sensors (I2C, 1-Wire, RS485 and the ADC pins ``adc_pins``) on a rail switched by ``pin``."""
        self.rail = (pin, active, settle_ms, tuple(adc_pins))

    def pin_write(self, pin, level):
        level = 1 if level else 0
        self.pin_log.append((self._ticks_ms, pin, level))
        if self.pins.get(pin, (None,))[0] != level:
            self.pins[pin] = (level, self._ticks_ms)

    def powered(self, adc_pin=None):
        """Whether the sensors (or the input on ``adc_pin``) have power now."""
        if self.rail is None:
            return True
        pin, active, settle_ms, adc_pins = self.rail
        if adc_pin is not None and adc_pin not in adc_pins:
            return True  # not on the rail (the battery divider)
        level, since = self.pins.get(pin, (None, 0))
        return level == active and self._ticks_ms - since >= settle_ms

    def adc_read_uv(self, pin):
        if not self.powered(pin):
            return 0  # the probe's output is pulled down while it has no supply
        values = self.adc_uv.get(pin)
        if not values:
            raise OSError(19, "no ADC input on pin %d" % pin)
        return values.pop(0) if len(values) > 1 else values[0]

    def onewire_scratchpad(self, pin, rom):
        pad = self.onewire.get((pin, bytes(rom))) if self.powered() else None
        if pad is None:
            raise OSError(19, "no 1-Wire presence pulse on pin %d" % pin)
        return pad

    def _device(self, addr):
        device = self.i2c.get(addr) if self.powered() else None
        if device is None:
            raise OSError(19, "I2C address 0x%02x does not acknowledge" % addr)
        return device

    def i2c_write(self, addr, data):
        self._device(addr).write(data)

    def i2c_read(self, addr, n):
        return self._device(addr).read(n)

    def attach_rs485(self, uart_id, responder):
        """Wire a simulated device (or line) to UART ``uart_id``: ``responder(request) -> reply or None``."""
        self.rs485_responders[uart_id] = responder

    def rs485(self, uart_id, tx, rx, de, baud=9600, bits=8, parity="N", stop=1):
        return SimRs485(self, uart_id, uart_char_us(baud, bits, parity, stop))

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
        self.pins = {}  # a reset releases the GPIOs

    def power_cycle(self):
        """Supply lost and back: RTC memory is gone and the clock restarts at 2000-01-01 (an ESP32's RTC
        counts from zero, MicroPython's epoch) until a sync sets it; flash (and the sensors) stay."""
        self._time_ms = POWER_ON_CLOCK_MS
        self._rtc = b""
        self._ticks_ms = 0
        self.boots += 1
        self.pins = {}
