"""FieldTrust sensor-node firmware (MicroPython on ESP32-class boards; the same code runs under CPython)."""
