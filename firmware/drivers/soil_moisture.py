"""Capacitive soil moisture probe (v1.2 / SEN0193 design) on an ADC pin, two-point calibrated.

The probe's output voltage falls as the soil gets wetter.  A per-probe calibration in dry air
(``air_mv``) and in water (``water_mv``) maps it linearly to 0-100 % (device spec
``capacitive-soil-moisture-v1-2``: scale = 100 / (W - A), offset = -100 * A / (W - A)).

A reading outside what a working probe can give is refused rather than calibrated into a value:
an unpowered, unplugged or broken probe leaves the pin near 0 V (its 1 MOhm bleed resistor pulls
the output down), which the calibration would turn into a confident "150 % moisture".  Below
``NO_PROBE_BELOW_MV`` the driver raises ``DriverError("no_probe")``: no probe in water reads that
low (about 1270 mV at 5 V supply, about 1000 mV at 3.3 V).  At or above ``OUT_OF_RANGE_FROM_MV``
it raises ``DriverError("out_of_range")``: the probe's output never exceeds 3.0 V, so the pin is
shorted to the supply or the ADC is saturated (the ESP32's 11 dB range ends at about 3.1 V).
"""

from firmware.drivers.errors import DriverError

DEFAULT_AIR_MV = 2540
DEFAULT_WATER_MV = 1270
#: a probe's output is never this low, even in water: below it the probe is unpowered or not there
NO_PROBE_BELOW_MV = 500
#: nor this high, even in dry air (the probe gives at most 3.0 V): from it on, a short or a saturated ADC
OUT_OF_RANGE_FROM_MV = 3100


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


def check_mv(mv, low=NO_PROBE_BELOW_MV, high=OUT_OF_RANGE_FROM_MV):
    """``mv`` when a working probe can output it; DriverError ``no_probe`` below ``low``, ``out_of_range`` from
    ``high`` on."""
    if mv < low:
        raise DriverError("no_probe", "%.0f mV: the probe is unpowered or not connected" % (mv,))
    if mv >= high:
        raise DriverError("out_of_range", "%.0f mV: above any probe's output (short to the supply?)" % (mv,))
    return mv


def read_mv(board, pin):
    """One probe reading in millivolts, checked by :func:`check_mv`."""
    try:
        uv = board.adc_read_uv(pin)
    except OSError as exc:
        raise DriverError("no_adc", str(exc)) from None
    return check_mv(uv / 1000)
