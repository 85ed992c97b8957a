"""Checksums the sensors and the flash records use, in plain Python that MicroPython runs too.

The sensors each use an 8-bit CRC with their own parameters (Dallas/Maxim 1-Wire, Sensirion);
Modbus RTU frames end in CRC-16/MODBUS; flash records use CRC-32 (``binascii.crc32`` on both
interpreters).
"""

import binascii


def crc8_dallas(data):
    """Maxim/Dallas 1-Wire CRC8 (x^8 + x^5 + x^4 + 1, reflected, init 0): DS18B20 ROM and scratchpad."""
    crc = 0
    for byte in data:
        for _ in range(8):
            mix = (crc ^ byte) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            byte >>= 1
    return crc


def crc8_sensirion(data):
    """Sensirion CRC8 (polynomial 0x31, init 0xFF, not reflected): every SHT3x data word."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def crc16_modbus(data):
    """CRC-16/MODBUS (polynomial 0xA001 reflected, init 0xFFFF); an RTU frame sends it low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def crc32(data):
    """CRC-32 (IEEE 802.3, as zlib) of bytes (or any buffer: a memoryview slice copies nothing)."""
    return binascii.crc32(data)  # unsigned on both interpreters; a mask would cost a big int per call
