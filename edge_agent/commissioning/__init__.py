"""Commissioning a bus: find the devices on it (scan), hold one to its spec (certify), test a config (check)."""
