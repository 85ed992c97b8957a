"""Sensor drivers: bytes and millivolts from the hardware layer in, physical values out."""
