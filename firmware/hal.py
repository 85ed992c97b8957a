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

The network side (Wi-Fi, TCP sockets, NTP, OTA file fetch) is ``Esp32Network``, the ``net`` of
``firmware/cycle.py``.
"""

import time

from firmware.flash import FileFlash

DS18B20_CONVERT_T = 0x44
DS18B20_READ_SCRATCHPAD = 0xBE
DS18B20_CONVERSION_MS = 750  # 12-bit resolution, datasheet maximum
FLASH_FILE = "/ft_flash.bin"
FLASH_SIZE = 64 * 1024


class Esp32Board:
    """The board interface on an ESP32 running MicroPython (1.22 or later: Unix-epoch ``time``)."""

    def __init__(self, i2c_scl=22, i2c_sda=21, i2c_freq=100000, flash_path=FLASH_FILE, flash_size=FLASH_SIZE):
        import machine  # only here: the module must import on CPython for the simulated board's users

        self._machine = machine
        self._i2c = machine.I2C(0, scl=machine.Pin(i2c_scl), sda=machine.Pin(i2c_sda), freq=i2c_freq)
        self._rtc = machine.RTC()
        self._adcs = {}
        self._wires = {}
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

    def watchdog(self, timeout_ms):
        """Start the hardware watchdog (it cannot be stopped; deep sleep resets it): the cycle's ``feed()``."""
        return self._machine.WDT(timeout=timeout_ms)

    def mark_app_valid(self):
        """A/B app partitions: confirm the running image so the bootloader does not roll it back."""
        import esp32

        if hasattr(esp32.Partition, "mark_app_valid_cancel_rollback"):
            esp32.Partition.mark_app_valid_cancel_rollback()


class Esp32Network:
    """The cycle's ``net`` on a board: Wi-Fi station, TCP sockets, NTP, OTA files from the gateway over HTTP."""

    def __init__(self, ssid, password, ota_host=None, ota_port=8080, ota_prefix="/ota/"):
        self.ssid = ssid
        self.password = password
        self.ota = (ota_host, ota_port, ota_prefix)

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
        import ntptime

        ntptime.settime()

    def fetch(self, path, offset, n):
        """``n`` bytes of an OTA file from ``offset``: an HTTP/1.0 range request to the gateway."""
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
