"""Battery voltage through a resistor divider on an ADC pin (the ADC tops out near 3.1 V)."""

from firmware.drivers.errors import DriverError


def battery_mv(adc_mv, r_top_ohm, r_bottom_ohm):
    """Battery millivolts from the divider's midpoint voltage: V_bat = V_adc * (R_top + R_bottom) / R_bottom."""
    if r_top_ohm < 0 or r_bottom_ohm <= 0:
        raise DriverError("bad_divider", "resistors %r / %r ohm" % (r_top_ohm, r_bottom_ohm))
    return adc_mv * (r_top_ohm + r_bottom_ohm) / r_bottom_ohm


def read_mv(board, pin, r_top_ohm=100000, r_bottom_ohm=100000):
    """Battery voltage in millivolts (default: a 100k/100k divider, as on most ESP32 boards)."""
    try:
        uv = board.adc_read_uv(pin)
    except OSError as exc:
        raise DriverError("no_adc", str(exc)) from None
    return battery_mv(uv / 1000, r_top_ohm, r_bottom_ohm)
