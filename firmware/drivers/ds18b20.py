"""DS18B20 1-Wire thermometer: temperature from the 9-byte scratchpad (datasheet 19-7487).

Bytes 0-1 are the temperature, a signed 16-bit value in 1/16 degC, least significant byte
first; byte 4 is the configuration register (bits 6-5: resolution 9-12 bits; the low bits of
the temperature are undefined below 12 bits and are masked); byte 8 is the Dallas CRC8 of
bytes 0-7.  The register holds +85 degC (0x0550) at power-up, before any conversion.
"""

from firmware.crc import crc8_dallas
from firmware.drivers.errors import DriverError

POWER_ON_RAW = 0x0550
_UNDEFINED_BITS = (0x7, 0x3, 0x1, 0x0)  # 9, 10, 11, 12-bit resolution


def parse_scratchpad(pad):
    """Temperature in degC from a scratchpad; DriverError for a missing device, bad CRC or power-on value."""
    if len(pad) != 9:
        raise DriverError("bad_length", "scratchpad is %d bytes, expected 9" % len(pad))
    if pad == b"\xff" * 9:
        raise DriverError("no_device", "scratchpad reads all 0xFF")
    if crc8_dallas(pad[:8]) != pad[8]:
        raise DriverError("bad_crc", "scratchpad CRC 0x%02x, computed 0x%02x" % (pad[8], crc8_dallas(pad[:8])))
    raw = pad[0] | (pad[1] << 8)
    if raw == POWER_ON_RAW:
        raise DriverError("not_converted", "power-on value 85 degC: the conversion did not run")
    raw &= ~_UNDEFINED_BITS[(pad[4] >> 5) & 3] & 0xFFFF
    if raw & 0x8000:
        raw -= 0x10000
    return raw / 16


def read_c(board, pin, rom):
    """Convert and read one probe by its 8-byte ROM code."""
    try:
        pad = board.onewire_scratchpad(pin, rom)
    except OSError as exc:
        raise DriverError("no_device", str(exc)) from None
    return parse_scratchpad(bytes(pad))
