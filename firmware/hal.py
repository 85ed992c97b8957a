"""The hardware layer on an ESP32: the only module that touches ``machine``, ``onewire`` or ``esp32``.

Everything above it (drivers, sampling, sequence numbers, outbox, messages) calls a *board*
object with the methods below, so the same code runs on the node, under CPython with the
simulated board of ``firmware/hal_sim.py``, and under MicroPython's WebAssembly port in the tests.

Board interface (duck-typed; MicroPython has no ``typing.Protocol``)::

    adc_read_uv(pin) -> int                  ADC input in microvolts (calibrated by the chip)
    (every bus failure is raised as OSError; the drivers turn it into DriverError)
    onewire_scratchpad(pin, rom) -> bytes    convert T and read the 9-byte DS18B20 scratchpad
    i2c_write(addr, data) / i2c_read(addr, n)
    rtc_read() -> bytes / rtc_write(data)    RTC slow memory: survives deep sleep, not power loss
    flash                                    erase-before-write storage (firmware/flash.py)
    ticks_ms() -> int                        monotonic, restarts at every boot
    time_ms() -> int                         wall clock, ms since the Unix epoch (kept in deep sleep)
    sleep_ms(ms) / deep_sleep(ms)
    watchdog(timeout_ms) -> object with feed() / mark_app_valid()   (ESP32 only: the cycle takes both as hooks)
    pin_write(pin, level)                    drive a GPIO as an output (0 or 1); released at every reset
    rs485(uart_id, tx, rx, de, baud, bits, parity, stop) -> port     half-duplex line, DE/RE on pin ``de``
        port.send(frame) / port.recv(n, timeout_ms) / port.discard() / port.char_us
        (see firmware/drivers/modbus_rtu.py; parity "N", "E" or "O")

``SensorRail`` switches the sensors' supply through ``pin_write``: on (and settled) before sampling,
off after, so between wakes the sensors draw nothing.

The network side (Wi-Fi, TCP sockets, NTP, OTA file fetch) is ``Esp32Network``, the ``net`` of
``firmware/cycle.py``.  Time and OTA files come from the node's gateway (``edge_agent/time_server.py``,
``edge_agent/ota_server.py``), which nodes reach even when the farm has no internet.
"""

import time

from firmware.flash import FileFlash

DS18B20_CONVERT_T = 0x44
DS18B20_READ_SCRATCHPAD = 0xBE
DS18B20_CONVERSION_MS = 750  # 12-bit resolution, datasheet maximum
FLASH_FILE = "/ft_flash.bin"
FLASH_SIZE = 64 * 1024


def uart_char_us(baud, bits=8, parity="N", stop=1):
    """Microseconds one character occupies a serial line: start bit, data bits, parity bit, stop bits."""
    if parity not in ("N", "E", "O"):
        raise ValueError("parity %r: N, E or O" % (parity,))
    return (1 + bits + (0 if parity == "N" else 1) + stop) * 1000000 // baud + 1


class Esp32Rs485:
    """A UART wired to an RS485 transceiver whose DE and /RE pins are driven together by one GPIO.

    ``recv`` rounds its wait up to whole FreeRTOS ticks plus one: MicroPython's ESP32 builds tick
    at 100 Hz and ``pdMS_TO_TICKS`` rounds down, so a 4 ms wait would not wait at all.
    """

    TICK_MS = 10

    def __init__(self, uart, de_pin, char_us):
        self._uart = uart
        self._de = de_pin
        self.char_us = char_us
        self._timeout = None
        de_pin.value(0)  # receiving until we talk

    def send(self, frame):
        self._de.value(1)
        try:
            if hasattr(self._uart, "flush"):
                self._uart.write(frame)
                self._uart.flush()  # returns once the last stop bit has left (ESP-IDF uart_wait_tx_done)
            else:  # write() returns once the bytes are queued: wait for the line time from the start
                start = time.ticks_us()
                self._uart.write(frame)
                left = len(frame) * self.char_us - time.ticks_diff(time.ticks_us(), start)
                if left > 0:
                    time.sleep_us(left)
        finally:
            self._de.value(0)  # release the line to the device's answer, even after a failed write

    def recv(self, n, timeout_ms):
        wait = ((timeout_ms + self.TICK_MS - 1) // self.TICK_MS + 1) * self.TICK_MS
        if wait != self._timeout:
            self._uart.init(timeout=wait)  # only the timeout changes; line settings stay
            self._timeout = wait
        return self._uart.read(n) or b""  # None when nothing came

    def discard(self):
        waiting = self._uart.any()
        if waiting:
            self._uart.read(waiting)


class Esp32Board:
    """The board interface on an ESP32 running MicroPython (1.22 or later: Unix-epoch ``time``)."""

    def __init__(self, i2c_scl=22, i2c_sda=21, i2c_freq=100000, flash_path=FLASH_FILE, flash_size=FLASH_SIZE):
        import machine  # only here: the module must import on CPython for the simulated board's users

        self._machine = machine
        self._i2c = machine.I2C(0, scl=machine.Pin(i2c_scl), sda=machine.Pin(i2c_sda), freq=i2c_freq)
        self._rtc = machine.RTC()
        self._adcs = {}
        self._wires = {}
        self._outputs = {}
        self.flash = FileFlash(flash_path, flash_size)

    def adc_read_uv(self, pin):
        adc = self._adcs.get(pin)
        if adc is None:
            adc = self._machine.ADC(self._machine.Pin(pin), atten=self._machine.ADC.ATTN_11DB)  # 0-3.1 V
            self._adcs[pin] = adc
        return adc.read_uv()

    def onewire_scratchpad(self, pin, rom):
        import onewire

        wire = self._wires.get(pin)
        if wire is None:
            wire = onewire.OneWire(self._machine.Pin(pin))
            self._wires[pin] = wire
        self._presence(wire, pin)
        wire.select_rom(rom)
        wire.writebyte(DS18B20_CONVERT_T)
        time.sleep_ms(DS18B20_CONVERSION_MS)
        self._presence(wire, pin)
        wire.select_rom(rom)
        wire.writebyte(DS18B20_READ_SCRATCHPAD)
        buf = bytearray(9)
        wire.readinto(buf)
        return bytes(buf)

    @staticmethod
    def _presence(wire, pin):
        """Bus reset; OSError as for every other bus when no device answers (onewire's own error is not one)."""
        if not wire.reset():
            raise OSError(19, "no 1-Wire presence pulse on pin %d" % pin)

    def i2c_write(self, addr, data):
        self._i2c.writeto(addr, data)

    def i2c_read(self, addr, n):
        return self._i2c.readfrom(addr, n)

    def rtc_read(self):
        return bytes(self._rtc.memory())

    def rtc_write(self, data):
        self._rtc.memory(data)

    def ticks_ms(self):
        return time.ticks_ms()

    def time_ms(self):
        return time.time_ns() // 1000000

    def sleep_ms(self, ms):
        time.sleep_ms(ms)

    def deep_sleep(self, ms):
        self._machine.deepsleep(ms)

    def pin_write(self, pin, level):
        out = self._outputs.get(pin)
        if out is None:  # the level is given with the mode: no glitch to the other level on the way
            self._outputs[pin] = self._machine.Pin(pin, self._machine.Pin.OUT, value=level)
        else:
            out.value(level)

    def watchdog(self, timeout_ms):
        """Start the hardware watchdog (it cannot be stopped; deep sleep resets it): the cycle's ``feed()``."""
        return self._machine.WDT(timeout=timeout_ms)

    def mark_app_valid(self):
        """A/B app partitions: confirm the running image so the bootloader does not roll it back."""
        import esp32

        if hasattr(esp32.Partition, "mark_app_valid_cancel_rollback"):
            esp32.Partition.mark_app_valid_cancel_rollback()

    def rs485(self, uart_id, tx, rx, de, baud=9600, bits=8, parity="N", stop=1):
        """An RS485 port on UART ``uart_id`` (pins ``tx``/``rx``), transceiver DE and /RE tied to pin ``de``."""
        char_us = uart_char_us(baud, bits, parity, stop)
        machine = self._machine
        uart = machine.UART(
            uart_id, baudrate=baud, bits=bits, parity={"N": None, "E": 0, "O": 1}[parity], stop=stop, tx=tx, rx=rx
        )
        return Esp32Rs485(uart, machine.Pin(de, machine.Pin.OUT), char_us)


class SensorRail:
    """The sensors' switched supply: a load switch whose gate is one GPIO (``power`` in ``/ft_node.json``).

    ``active`` is the pin level that turns the rail on: 0 on the reference build, whose P-MOSFET's
    gate is pulled up, so the rail stays off while the pin floats (at reset, in deep sleep) and a
    board that never drives the pin reads no sensor at all.  ``on()`` waits ``settle_ms`` before
    anything is read (the capacitive probe's output needs about 150 ms to settle after power-up);
    ``off()`` always drives the pin, so calling it on a crash path is safe.
    """

    def __init__(self, board, pin, active=0, settle_ms=0):
        if active not in (0, 1) or isinstance(active, bool):
            raise ValueError("power: active must be the pin level that turns the rail on, 0 or 1; got %r" % (active,))
        if not isinstance(settle_ms, int) or isinstance(settle_ms, bool) or not 0 <= settle_ms <= 10000:
            raise ValueError("power: settle_ms must be whole milliseconds, 0 to 10000; got %r" % (settle_ms,))
        if not isinstance(pin, int) or isinstance(pin, bool) or pin < 0:
            raise ValueError("power: pin must be a GPIO number; got %r" % (pin,))
        self.board = board
        self.pin = pin
        self.active = active
        self.settle_ms = settle_ms
        self.is_on = False

    def on(self):
        if self.is_on:
            return
        self.board.pin_write(self.pin, self.active)
        self.is_on = True
        if self.settle_ms:
            self.board.sleep_ms(self.settle_ms)

    def off(self):
        self.board.pin_write(self.pin, 1 - self.active)
        self.is_on = False


NTP_DELTA = 2208988800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)
_NTP_ERA1_BELOW = 3913056000  # 2024-01-01 in NTP era 0: smaller stamps are past the 2036 wrap


def sntp_time_ms(host, port=123, timeout_s=2):
    """Unix time in ms from an SNTP server (RFC 4330); OSError when none answers or the answer is not to be trusted.

    MicroPython's ``ntptime`` asks port 123 only and takes the transmit time of any datagram, even
    from a server that says its own clock is unsynchronised (leap 3, stratum 0 or 16: a gateway
    booted without network).  Here the reply must be a server reply (mode 4) echoing this request's
    random transmit stamp, from a synchronised server (leap 0-2, stratum 1-15).
    """
    import os
    import socket
    import struct

    nonce = os.urandom(8)
    request = bytearray(48)
    request[0] = 0x23  # leap 0, version 4, mode 3 (client), as ntptime sends
    request[40:48] = nonce
    addr = socket.getaddrinfo(host, port)[0][-1]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout_s)
        sock.sendto(request, addr)
        reply = sock.recv(48)
    finally:
        sock.close()
    if len(reply) < 48 or reply[0] & 0x7 != 4 or reply[24:32] != nonce:
        raise OSError(5, "not an SNTP answer to this request")
    if reply[0] >> 6 == 3 or not 1 <= reply[1] <= 15:
        raise OSError(11, "time server unsynchronised (leap %d, stratum %d)" % (reply[0] >> 6, reply[1]))
    seconds, fraction = struct.unpack(">II", reply[40:48])
    if seconds < _NTP_ERA1_BELOW:
        seconds += 0x100000000
    return (seconds - NTP_DELTA) * 1000 + (fraction * 1000 >> 32)


class Esp32Network:
    """The cycle's ``net`` on a board: Wi-Fi station, TCP sockets, NTP, OTA files from the gateway over HTTP.

    ``ntp_host`` defaults to ``ota_host`` (the gateway); ``ntp_port`` is 123 unless the gateway
    serves time elsewhere.
    """

    def __init__(self, ssid, password, ota_host=None, ota_port=8080, ota_prefix="/ota/", ntp_host=None, ntp_port=123):
        self.ssid = ssid
        self.password = password
        self.ota = (ota_host, ota_port, ota_prefix)
        self.ntp = (ntp_host or ota_host, ntp_port)

    def up(self, timeout_ms):
        import network

        wlan = network.WLAN(network.STA_IF)
        wlan.active(True)
        if not wlan.isconnected():
            wlan.connect(self.ssid, self.password)
        start = time.ticks_ms()
        while not wlan.isconnected():
            if time.ticks_diff(time.ticks_ms(), start) > timeout_ms:
                raise OSError(118, "Wi-Fi %r not joined in %d ms" % (self.ssid, timeout_ms))
            time.sleep_ms(100)

    def rssi(self):
        """dBm of the joined network, or None when not joined (the driver then raises OSError)."""
        import network

        try:
            return network.WLAN(network.STA_IF).status("rssi")
        except OSError:
            return None

    def tcp_connect(self, host, port, timeout_ms):
        import socket

        sock = socket.socket()
        sock.settimeout(timeout_ms / 1000)
        try:
            sock.connect(socket.getaddrinfo(host, port)[0][-1])
        except OSError:
            sock.close()
            raise
        return sock

    def ntp_sync(self):
        """Set the RTC from the gateway's SNTP server; OSError (clock untouched) when it cannot be trusted."""
        import machine

        ms = sntp_time_ms(self.ntp[0], self.ntp[1])
        tm = time.gmtime(ms // 1000)
        machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], (ms % 1000) * 1000))

    def fetch(self, path, offset, n):
        """``n`` bytes of an OTA file from ``offset``: an HTTP/1.0 range request to the gateway.

        ``path`` is the file's SHA-256 (``firmware/ota.py`` fetches by content): ``GET /ota/<sha256>``.
        """
        host, port, prefix = self.ota
        sock = self.tcp_connect(host, port, 5000)
        try:
            request = "GET %s%s HTTP/1.0\r\nHost: %s\r\nRange: bytes=%d-%d\r\n\r\n" % (
                prefix,
                path,
                host,
                offset,
                offset + n - 1,
            )
            sock.send(request.encode())
            data = b""
            while len(data) < n + 1024:
                chunk = sock.recv(n + 1024 - len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status = head[9:12] if head.startswith(b"HTTP/1.") else b""
        if status != b"206" and not (status == b"200" and offset == 0):  # 200 at an offset: Range ignored
            raise OSError(5, "OTA fetch of %s: %r" % (path, head[:40]))
        return body[:n]
