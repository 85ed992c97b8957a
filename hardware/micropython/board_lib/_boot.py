"""Run by the virtual board before boot.py at every boot: what makes the WebAssembly port an ESP32.

* ``time``: the wall clock is the board's RTC (from 2000-01-01 at power-on, set by NTP or
  ``machine.RTC``), in whole seconds as on an ESP32, UTC (no time zones); sleeps block the
  interpreter without spinning the host's CPU.
* ``os``: the flash is the root; the WebAssembly file system's own /dev is not listed, and
  ``ilistdir`` gives file sizes as LittleFS does (``mpremote fs ls`` shows them); ``urandom``
  draws from the host's random source, as an ESP32's draws from its hardware RNG.
"""

import binascii
import os
import time

import _board

_gmtime = time.gmtime


def _time():
    return int(_board.clock_ms()) // 1000


def _time_ns():
    return int(_board.clock_ms()) * 1000000


def _gm(secs=None):
    return _gmtime(_time() if secs is None else int(secs))


def _sleep(seconds):
    _board.sleep_ms(seconds * 1000)


def _sleep_us(us):
    _board.sleep_ms(us / 1000)


time.time = _time
time.time_ns = _time_ns
time.gmtime = _gm
time.localtime = _gm
time.sleep = _sleep
time.sleep_ms = _board.sleep_ms
time.sleep_us = _sleep_us

_HIDDEN = ("dev",)
_plain_ilistdir = os.ilistdir
_plain_listdir = os.listdir


def _root(path):
    return path in ("/", "") or (path == "." and os.getcwd() == "/")


def _ilistdir(path="."):
    root = _root(path)
    for entry in _plain_ilistdir(path):
        if root and entry[0] in _HIDDEN:
            continue
        size = os.stat(path.rstrip("/") + "/" + entry[0])[6] if entry[1] == 0x8000 else 0
        yield (entry[0], entry[1], entry[2], size)


def _listdir(path="."):
    return [name for name in _plain_listdir(path) if not (_root(path) and name in _HIDDEN)]


def _urandom(n):
    return binascii.unhexlify(_board.random(n))


os.ilistdir = _ilistdir
os.listdir = _listdir
os.urandom = _urandom
