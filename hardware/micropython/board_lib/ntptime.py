"""``ntptime`` on the virtual ESP32: MicroPython's SNTP query over the board's UDP socket.

Like the stock module it sends one mode-3 request to ``host`` port 123 and takes the transmit
time of the answer; ``host`` must be a name or address the board can reach (the host's loopback
or a name the environment lists).
"""

import socket
import struct
import time as _time

import machine

host = "pool.ntp.org"
timeout = 1
_NTP_DELTA = 2208988800  # 1900-01-01 to 1970-01-01


def time():
    """Seconds since 1970-01-01 UTC from the server's transmit time."""
    query = bytearray(48)
    query[0] = 0x1B
    addr = socket.getaddrinfo(host, 123)[0][-1]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        sock.sendto(query, addr)
        reply = sock.recv(48)
    finally:
        sock.close()
    seconds = struct.unpack("!I", reply[40:44])[0]
    return seconds - _NTP_DELTA


def settime():
    tm = _time.gmtime(time())
    machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))
