"""``machine`` on the virtual ESP32: the calls MicroPython's ESP32 port offers, with its limits.

Pins are the ESP32's (GPIO 34-39 input only, no GPIO 20/24/28-31); the ADC reads the voltage the
host's environment file puts on a pin, through the attenuation's range; the I2C buses carry the
chips the environment wires to their SDA/SCL pins (``_chips``); RTC memory, the RTC clock, the
watchdog and the reset cause live in the board process (``board_hw.mjs``) and survive resets as on
the chip.  ``deepsleep`` and ``reset`` end the running program: the board starts again from boot.py.

A switched sensor rail (``rail`` in the environment: the GPIO of its load switch, the level that
turns it on, the sensors' settle time and which ADC pins, 1-Wire pins, I2C and UART pin pairs it
feeds) is on only while a ``Pin`` drives that GPIO to that level; what it feeds answers only once
the settle time has passed since (an ADC input reads 0 V, I2C chips NACK, 1-Wire has no presence
pulse, the RS485 transceiver passes nothing).  Every reset releases the pins: the rail is off.
"""

import binascii
import json
import time

import _board
import _chips

PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
PIN_WAKE, EXT0_WAKE, EXT1_WAKE, TIMER_WAKE, TOUCHPAD_WAKE, ULP_WAKE = 2, 2, 3, 4, 5, 6
_FREQS = (20000000, 40000000, 80000000, 160000000, 240000000)
_state = {"freq": 160000000, "env_version": -1, "env": {}}
_GPIOS = tuple(range(0, 20)) + (21, 22, 23, 25, 26, 27) + tuple(range(32, 40))
_INPUT_ONLY = (34, 35, 36, 37, 38, 39)
_ADC_PINS = (0, 2, 4, 12, 13, 14, 15, 25, 26, 27, 32, 33, 34, 35, 36, 37, 38, 39)
_I2C_DEFAULT_PINS = {0: (18, 19), 1: (25, 26)}  # id -> (scl, sda)
_driven = {}  # GPIO driven as an output -> (level, ticks_ms since when); empty again at every reset


def _environment():
    """The host's view of the world around the board (sensor values, networks), re-read when it changes."""
    version = _board.env_version()
    if version != _state["env_version"]:
        _state["env"] = json.loads(_board.env())
        _state["env_version"] = version
    return _state["env"]


def _powered(kind, key):
    """Whether what sits on ``key`` (an ADC pin, a 1-Wire pin, an [scl, sda] or [tx, rx] pair) has power now."""
    rail = _environment().get("rail")
    if not rail or key not in rail.get(kind, ()):
        return True  # not on the switched rail
    state = _driven.get(rail["pin"])
    if state is None or state[0] != rail["active"]:
        return False
    return time.ticks_diff(time.ticks_ms(), state[1]) >= rail.get("settle_ms", 0)


def unique_id():
    """The chip's 6-byte base MAC (eFuse): stable for this board, different on every other."""
    return binascii.unhexlify(_board.uid())


def freq(hz=None):
    if hz is None:
        return _state["freq"]
    if hz not in _FREQS:
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _state["freq"] = hz


def reset():
    _board.hard_reset(SOFT_RESET, 0)  # esp_restart(): reported as SOFT_RESET, as on the chip


def soft_reset():
    _board.soft_reset()
    raise SystemExit


def deepsleep(time_ms=0):
    """Sleep, then wake through a reset (RTC memory and clock kept); 0 sleeps until a reset."""
    _board.hard_reset(DEEPSLEEP_RESET, time_ms if time_ms > 0 else -1)


def lightsleep(time_ms=None):
    time.sleep_ms(time_ms if time_ms is not None else 0)


def reset_cause():
    return _board.reset_cause()


def wake_reason():
    return TIMER_WAKE if _board.reset_cause() == DEEPSLEEP_RESET else 0


def idle():
    pass


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


class Pin:
    IN, OUT, OPEN_DRAIN = 1, 3, 7
    PULL_UP, PULL_DOWN = 2, 1
    IRQ_RISING, IRQ_FALLING = 1, 2
    WAKE_LOW, WAKE_HIGH = 4, 5
    DRIVE_0, DRIVE_1, DRIVE_2, DRIVE_3 = 0, 1, 2, 3

    def __init__(self, id, mode=-1, pull=-1, value=None, **kwargs):
        if isinstance(id, Pin):
            id = id.id
        if id not in _GPIOS:
            raise ValueError("invalid pin")
        self.id = id
        self._mode = None
        self._value = 0
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None, **kwargs):
        if mode in (Pin.OUT, Pin.OPEN_DRAIN) and self.id in _INPUT_ONLY:
            raise ValueError("pin can only be input")
        if mode != -1:
            self._mode = mode
        if value is not None:
            self._value = 1 if value else 0
        self._drive()

    def _drive(self):
        """Note the level this pin drives (an input drives nothing: a pull-up or -down decides)."""
        if self._mode in (Pin.OUT, Pin.OPEN_DRAIN):
            if _driven.get(self.id, (None,))[0] != self._value:
                _driven[self.id] = (self._value, time.ticks_ms())
        else:
            _driven.pop(self.id, None)

    def value(self, x=None):
        if x is None:
            return self._value
        self._value = 1 if x else 0
        self._drive()

    def __call__(self, x=None):
        return self.value(x)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=3, wake=None):
        return None

    def __repr__(self):
        return "Pin(" + str(self.id) + ")"


def _pin_id(pin):
    return pin.id if isinstance(pin, Pin) else Pin(pin).id


class ADC:
    """SAR ADC: ``read_uv`` is the calibrated voltage, clipped to what the attenuation can measure."""

    ATTN_0DB, ATTN_2_5DB, ATTN_6DB, ATTN_11DB = 0, 1, 2, 3
    WIDTH_9BIT, WIDTH_10BIT, WIDTH_11BIT, WIDTH_12BIT = 9, 10, 11, 12
    _FULL_SCALE_MV = (950, 1250, 1750, 3100)

    def __init__(self, pin, atten=0, **kwargs):
        pid = _pin_id(pin)
        if pid not in _ADC_PINS:
            raise ValueError("invalid pin")
        self._pin = pid
        self._atten = atten
        self._width = 12

    def atten(self, atten):
        self._atten = atten

    def width(self, width):
        self._width = width

    def init(self, atten=None, **kwargs):
        if atten is not None:
            self._atten = atten

    def _mv(self):
        if not _powered("adc", self._pin):
            return 0.0  # the sensor has no supply: its output is pulled down
        mv = _environment().get("adc_mv", {}).get(str(self._pin), 0.0)
        return max(0.0, min(float(mv), self._FULL_SCALE_MV[self._atten]))

    def read_uv(self):
        return int(round(self._mv() * 1000))

    def read_u16(self):
        raw12 = int(self._mv() * 4095 / self._FULL_SCALE_MV[self._atten] + 0.5)
        return (raw12 << 4) | (raw12 >> 8)

    def read(self):
        return self.read_u16() >> (16 - self._width)


class _I2CBase:
    """An I2C master on two pins; the devices are those the environment wires to the same two pins."""

    _attached = {}  # (scl, sda, address) -> chip, kept for the life of the interpreter

    def _bind(self, scl, sda, freq):
        self._scl = _pin_id(scl)
        self._sda = _pin_id(sda)
        self._freq = freq

    def _device(self, addr):
        if not _powered("i2c", [self._scl, self._sda]):
            for key in [k for k in self._attached if k[:2] == (self._scl, self._sda)]:
                del self._attached[key]  # the chips lose their state with their supply
            return None, None
        for entry in _environment().get("i2c", []):
            if (entry.get("scl"), entry.get("sda"), entry.get("address")) == (self._scl, self._sda, addr):
                key = (self._scl, self._sda, addr)
                chip = self._attached.get(key)
                if chip is None:
                    maker = _chips.I2C_CHIPS.get(entry.get("chip"))
                    if maker is None:
                        return None, None
                    chip = self._attached[key] = maker()
                return chip, entry
        return None, None

    def scan(self):
        found = []
        for addr in range(0x08, 0x78):
            if self._device(addr)[0] is not None:
                found.append(addr)
        return found

    def writeto(self, addr, buf, stop=True):
        chip, values = self._device(addr)
        if chip is None:
            raise OSError(_chips.ENODEV)
        chip.write(bytes(buf), time.ticks_ms(), values)
        return len(buf) + 1

    def writevto(self, addr, vector, stop=True):
        return self.writeto(addr, b"".join(bytes(b) for b in vector), stop)

    def readfrom(self, addr, nbytes, stop=True):
        chip, _values = self._device(addr)
        if chip is None:
            raise OSError(_chips.ENODEV)
        return chip.read(nbytes, time.ticks_ms())

    def readfrom_into(self, addr, buf, stop=True):
        data = self.readfrom(addr, len(buf), stop)
        buf[: len(data)] = data

    def _mem(self, memaddr, addrsize):
        return memaddr.to_bytes(addrsize // 8, "big")

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        self.writeto(addr, self._mem(memaddr, addrsize), False)
        return self.readfrom(addr, nbytes)

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        self.writeto(addr, self._mem(memaddr, addrsize), False)
        self.readfrom_into(addr, buf)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        self.writeto(addr, self._mem(memaddr, addrsize) + bytes(buf))


class I2C(_I2CBase):
    def __init__(self, id=0, scl=None, sda=None, freq=400000, timeout=50000):
        if id not in _I2C_DEFAULT_PINS:
            raise ValueError("I2C(" + str(id) + ") doesn't exist")
        default_scl, default_sda = _I2C_DEFAULT_PINS[id]
        self._bind(scl if scl is not None else default_scl, sda if sda is not None else default_sda, freq)


class SoftI2C(_I2CBase):
    def __init__(self, scl, sda, freq=400000, timeout=50000):
        self._bind(scl, sda, freq)


class RTC:
    """The RTC: the wall clock (kept in deep sleep and resets) and 2 KB of slow memory."""

    def __init__(self, id=0):
        pass

    def datetime(self, datetimetuple=None):
        if datetimetuple is None:
            ms = int(_board.clock_ms())
            year, month, day, hour, minute, second, weekday, _yday = time.gmtime(ms // 1000)
            return (year, month, day, weekday, hour, minute, second, (ms % 1000) * 1000)
        year, month, day, _weekday, hour, minute, second = datetimetuple[:7]
        micro = datetimetuple[7] if len(datetimetuple) > 7 else 0
        secs = time.mktime((year, month, day, hour, minute, second, 0, 0))
        _board.set_clock_ms(str(secs * 1000 + micro // 1000))

    def init(self, datetimetuple):
        self.datetime(datetimetuple)

    def memory(self, data=None):
        if data is None:
            return binascii.unhexlify(_board.rtc_read())
        if len(data) > 2048:
            raise ValueError("buffer too long")
        _board.rtc_write(binascii.hexlify(bytes(data)).decode())


class WDT:
    """The watchdog: resets the board unless fed within ``timeout`` ms; it cannot be stopped."""

    def __init__(self, id=0, timeout=5000):
        if timeout < 1:
            raise ValueError("WDT timeout too short")
        _board.wdt_start(timeout)

    def feed(self):
        _board.wdt_feed()


class UART:
    """A UART; its TX/RX pins reach whatever host serial device the environment wires to them (e.g. the pty
    of a simulated RS485 Modbus bus): bytes pass unchanged, the line's timing is the device's business."""

    INV_TX, INV_RX, INV_RTS, INV_CTS = 1, 2, 4, 8
    RTS, CTS = 1, 2
    _DEFAULT_PINS = {1: (10, 9), 2: (17, 16)}  # id -> (tx, rx)

    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, **kwargs):
        if id not in self._DEFAULT_PINS:
            raise ValueError("UART(" + str(id) + ") does not exist (UART(0) is the REPL)")
        self._id = id
        self._tx, self._rx = self._DEFAULT_PINS[id]
        self._slot = -1
        self._settings = {"baudrate": 115200, "bits": 8, "parity": None, "stop": 1, "timeout": 0, "timeout_char": 0}
        self._tx_done_at = 0
        self.init(baudrate, bits, parity, stop, **kwargs)

    def init(self, baudrate=None, bits=None, parity=-1, stop=None, *, tx=None, rx=None, timeout=None,
             timeout_char=None, **kwargs):
        for name, value in (("baudrate", baudrate), ("bits", bits), ("stop", stop), ("timeout", timeout),
                            ("timeout_char", timeout_char)):
            if value is not None:
                self._settings[name] = value
        if parity != -1:
            if parity not in (None, 0, 1):
                raise ValueError("invalid parity")
            self._settings["parity"] = parity
        if self._settings["bits"] not in (5, 6, 7, 8) or self._settings["stop"] not in (1, 1.5, 2):
            raise ValueError("invalid bits or stop")
        pins = (_pin_id(tx) if tx is not None else self._tx, _pin_id(rx) if rx is not None else self._rx)
        if pins != (self._tx, self._rx) or self._slot < 0:
            self.deinit()
            self._tx, self._rx = pins
            self._slot = _board.uart_open(self._tx, self._rx)

    def deinit(self):
        if self._slot >= 0:
            _board.uart_close(self._slot)
        self._slot = -1

    def _char_us(self):
        s = self._settings
        return (1 + s["bits"] + (0 if s["parity"] is None else 1) + s["stop"]) * 1000000 // s["baudrate"]

    def write(self, buf):
        data = bytes(buf)
        now = time.ticks_ms()
        start = now if time.ticks_diff(self._tx_done_at, now) < 0 else self._tx_done_at
        self._tx_done_at = time.ticks_add(start, (len(data) * self._char_us() + 999) // 1000)
        if self._slot < 0 or not self._powered():
            return len(data)  # nothing wired (or the transceiver unpowered): the bytes go nowhere
        written = _board.uart_write(self._slot, binascii.hexlify(data).decode())
        if written < 0:
            raise OSError(-written)
        return written

    def flush(self):
        """Return once the last byte written has left the line."""
        left = time.ticks_diff(self._tx_done_at, time.ticks_ms())
        if left > 0:
            time.sleep_ms(left)

    def txdone(self):
        return time.ticks_diff(self._tx_done_at, time.ticks_ms()) <= 0

    def _powered(self):
        return _powered("uart", [self._tx, self._rx])

    def any(self):
        return _board.uart_any(self._slot) if self._slot >= 0 and self._powered() else 0

    def read(self, nbytes=None):
        """Up to ``nbytes`` (all waiting when None), waiting at most ``timeout`` ms; None when nothing came."""
        timeout = self._settings["timeout"]
        if self._slot < 0 or not self._powered():
            if timeout:
                time.sleep_ms(timeout)
            return None
        if nbytes is None:
            nbytes = max(1, self.any())
        data = _board.uart_read(self._slot, nbytes, timeout)
        return None if data is None else binascii.unhexlify(data)

    def readinto(self, buf, nbytes=None):
        data = self.read(len(buf) if nbytes is None else nbytes)
        if data is None:
            return None
        buf[: len(data)] = data
        return len(data)

    def readline(self):
        line = b""
        while not line.endswith(b"\n"):
            byte = self.read(1)
            if not byte:
                break
            line += byte
        return line or None

    def sendbreak(self):
        pass
