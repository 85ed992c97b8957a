"""Data trust: per-reading checks and a farm-season trust score with its parts, coverage and provenance.

``frames`` says which tables come in; ``checks``, ``cross_sensor`` and ``duplicates`` flag readings;
``score.assess`` turns the flags into a trust in [0, 1] per farm.
"""
