"""The contract's telemetry and batch models as TypedDicts: the same rules, validated into plain dicts.

``contract.models`` builds a model instance for every record and runs a Python validator on each
(at most one value, a finite number): for a gateway batch of 1,000 readings that is about 2.7 µs a
reading, the largest single cost of the ingest (bench/ingest.py).  The same field annotations,
constraints and configuration over TypedDicts validate in pydantic-core alone, into dicts, at a
third of that.  Nothing is written twice: each TypedDict is derived here from the model's own
``model_fields``, and :func:`records_hold` is the model validator's rule, checked by the caller
on the records it walks anyway.

Dicts hold only the keys the body has; read optional fields with :data:`RECORD_DEFAULTS` and
:data:`TELEMETRY_Q_DEFAULT`.  ``tests/test_ingest_plain.py`` shows on generated bodies, valid and
not, that a body passes here (and :func:`records_hold`) exactly when it passes the models, with
the same values.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, NotRequired

from pydantic import BaseModel, TypeAdapter
from typing_extensions import TypedDict

from contract import models


def _typed_dict(model: type[BaseModel], name: str, replace: dict[str, Any]) -> Any:
    """A TypedDict with ``model``'s fields, constraints and configuration; ``replace`` swaps nested models."""
    fields: dict[str, Any] = {}
    for key, info in model.model_fields.items():
        kind = replace.get(key, info.annotation)
        if info.metadata:
            kind = Annotated[(kind, *info.metadata)]
        fields[key] = kind if info.is_required() else NotRequired[kind]
    typed = TypedDict(name, fields)  # type: ignore[operator]  # a functional TypedDict from computed fields
    typed.__pydantic_config__ = dict(model.model_config)
    return typed


_Record = _typed_dict(models.Record, "Record", {})
_Telemetry = _typed_dict(models.Telemetry, "Telemetry", {"r": list[_Record]})  # type: ignore[valid-type]
_Batch = _typed_dict(models.Batch, "Batch", {"tel": list[_Telemetry]})  # type: ignore[valid-type]

#: JSON bytes -> a batch as dicts (ValidationError when ``contract.models.Batch`` would refuse its fields)
BATCH = TypeAdapter(_Batch)
#: JSON bytes -> a telemetry body as dicts
TELEMETRY = TypeAdapter(_Telemetry)
#: a record's value for each field it may leave out
RECORD_DEFAULTS: dict[str, Any] = {k: f.default for k, f in models.Record.model_fields.items() if not f.is_required()}
TELEMETRY_Q_DEFAULT: int = models.Telemetry.model_fields["q"].default

_INF = math.inf


def records_hold(records: list[dict[str, Any]]) -> bool:
    """``models.Record``'s own validator over records that passed :data:`BATCH` or :data:`TELEMETRY`:
    at most one of ``v``, ``vs``, ``vb``, and ``v`` a finite number."""
    for rec in records:
        v = rec.get("v")
        if v is not None:
            if "vs" in rec and rec["vs"] is not None or "vb" in rec and rec["vb"] is not None:
                return False
            if isinstance(v, float) and (v != v or v == _INF or v == -_INF):
                return False
        elif rec.get("vs") is not None and rec.get("vb") is not None:
            return False
    return True
