"""Simulators and reference builds of field hardware, so everything is testable without a field.

Product code never imports this package; tests, benchmarks and the demo do.
"""
