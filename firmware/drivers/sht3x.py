"""Sensirion SHT3x air temperature and humidity over I2C (datasheet SHT3x-DIS).

Single shot, high repeatability, no clock stretching: command 0x2400, wait at least 15.5 ms,
read six bytes: temperature word, CRC8, humidity word, CRC8.  T = -45 + 175 * S / 65535 degC,
RH = 100 * S / 65535 %.
"""

from firmware.crc import crc8_sensirion
from firmware.drivers.errors import DriverError

ADDRESS = 0x44
MEASURE_HIGH_REPEATABILITY = b"\x24\x00"
MEASURE_MS = 16


def temperature_c(raw):
    return -45 + 175 * raw / 65535


def humidity_pct(raw):
    return 100 * raw / 65535


def parse_measurement(data):
    """``(degC, %RH)`` from the six bytes of a measurement; DriverError when a CRC fails."""
    if len(data) != 6:
        raise DriverError("bad_length", "measurement is %d bytes, expected 6" % len(data))
    words = []
    for i in (0, 3):
        if crc8_sensirion(data[i : i + 2]) != data[i + 2]:
            raise DriverError("bad_crc", "word at byte %d: CRC 0x%02x" % (i, data[i + 2]))
        words.append((data[i] << 8) | data[i + 1])
    return temperature_c(words[0]), humidity_pct(words[1])


def measure(board, address=ADDRESS):
    """Trigger one measurement and read it."""
    try:
        board.i2c_write(address, MEASURE_HIGH_REPEATABILITY)
        board.sleep_ms(MEASURE_MS)
        data = board.i2c_read(address, 6)
    except OSError as exc:
        raise DriverError("no_device", str(exc)) from None
    return parse_measurement(bytes(data))
