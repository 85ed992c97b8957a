"""Capacitive soil moisture probe (v1.2 / SEN0193 design) on an ADC pin, two-point calibrated.

The probe's output voltage falls as the soil gets wetter.  A per-probe calibration in dry air
(``air_mv``) and in water (``water_mv``) maps it linearly to 0-100 % (device spec
``capacitive-soil-moisture-v1-2``: scale = 100 / (W - A), offset = -100 * A / (W - A)).
"""

from firmware.drivers.errors import DriverError

DEFAULT_AIR_MV = 2540
DEFAULT_WATER_MV = 1270


def two_point(air_mv, water_mv):
    """``(scale, offset)`` that map millivolts to percent from an air and a water reading."""
    if air_mv == water_mv:
        raise DriverError("bad_calibration", "air and water readings are equal (%r mV)" % (air_mv,))
    span = water_mv - air_mv
    return 100 / span, -100 * air_mv / span


def moisture_percent(mv, air_mv=DEFAULT_AIR_MV, water_mv=DEFAULT_WATER_MV):
    """Relative moisture for a probe voltage; outside 0-100 % when wetter than water or drier than air."""
    scale, offset = two_point(air_mv, water_mv)
    return mv * scale + offset


def read_mv(board, pin):
    """One probe reading in millivolts."""
    try:
        uv = board.adc_read_uv(pin)
    except OSError as exc:
        raise DriverError("no_adc", str(exc)) from None
    return uv / 1000
