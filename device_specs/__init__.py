"""Declarative specs of sensor models: a sensor model is a spec file, never code.

``schema`` (pydantic models), ``codec`` (registers <-> values), ``registry`` (loading files),
``models/`` (the shipped specs, one YAML file per model).
"""
