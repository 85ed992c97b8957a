"""Benchmarks: each prints figures and ratios measured in the same run (``python -m bench.<name>``)."""
