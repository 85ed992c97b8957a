"""Find the exact bytes of each telemetry body in a gateway batch (and split a batch that is not well-formed).

The duplicate rule compares *bytes* (``contract.telemetry.classify`` over SHA-256 digests), and a
gateway splices each captured telemetry body into its batch verbatim, so the bytes of one
``tel`` element are that message's identity.  Re-serialising a parsed body would call two
different encodings of the same values a duplicate instead of a conflict; this scanner walks the
top-level object with the standard library's C scanner and records where each ``tel`` element
starts and ends, at about the cost of one ``json.loads``.

:func:`tel_spans` is the fast path for batches that passed the contract's rules (whole, in
:mod:`cloud.ingest.plain_models`) and that are laid out the way the gateway agent lays them out:
it finds the same bytes with a substring search.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from contract.telemetry import ContractError

_DECODER = json.JSONDecoder()
#: how every telemetry body the contract's encoder writes begins (``encode_body`` keeps the key order)
TEL_MARKER = b'{"v":1,"k":"tel",'
_WS = re.compile(r"[ \t\n\r]*")


@dataclass(slots=True)
class ScannedBatch:
    header: dict[str, Any]  # every top-level member except "tel"
    tel: list[tuple[Any, bytes]]  # each element of "tel": (parsed value, exact bytes)


def _skip(text: str, idx: int) -> int:
    return _WS.match(text, idx).end()  # type: ignore[union-attr]  # the pattern matches the empty string


def _value(text: str, idx: int) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(text, idx)
    except json.JSONDecodeError as exc:
        raise ContractError("bad_json", str(exc)) from None
    except RecursionError:  # ``[[[[…`` a few thousand deep: the stdlib decoder recurses
        raise ContractError("bad_json", "nested too deeply") from None


def _expect(text: str, idx: int, chars: str) -> str:
    found = text[idx : idx + 1]
    if not found or found not in chars:
        raise ContractError("bad_json", f"expected {' or '.join(repr(c) for c in chars)} at character {idx}")
    return found


def _array(text: str, body: bytes | None, idx: int) -> tuple[list[tuple[Any, bytes]], int]:
    """Elements of the array starting at ``text[idx] == '['`` with their bytes; returns the index after it.

    ``body`` is the text's bytes when they are ASCII (character and byte offsets agree), else None.
    """
    items: list[tuple[Any, bytes]] = []
    idx = _skip(text, idx + 1)
    if text[idx : idx + 1] == "]":
        return items, idx + 1
    while True:
        value, end = _value(text, idx)
        items.append((value, body[idx:end] if body is not None else text[idx:end].encode()))
        idx = _skip(text, end)
        if _expect(text, idx, ",]") == "]":
            return items, idx + 1
        idx = _skip(text, idx + 1)


def scan_batch(body: bytes) -> ScannedBatch:
    """Parse a batch body; raises ContractError (``bad_json``, ``bad_header``) when it is not one JSON object."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError("bad_json", f"not UTF-8: {exc}") from None
    ascii_body = body if text.isascii() else None
    idx = _skip(text, 0)
    if text[idx : idx + 1] != "{":
        raise ContractError("bad_header", "body is not a JSON object")
    header: dict[str, Any] = {}
    tel: list[tuple[Any, bytes]] | None = None
    idx = _skip(text, idx + 1)
    if text[idx : idx + 1] != "}":
        while True:
            _expect(text, idx, '"')
            key, idx = _value(text, idx)
            if key in header or (key == "tel" and tel is not None):
                raise ContractError("bad_json", f"duplicate key {key!r}")
            idx = _skip(text, idx)
            _expect(text, idx, ":")
            idx = _skip(text, idx + 1)
            if key == "tel" and text[idx : idx + 1] == "[":
                tel, idx = _array(text, ascii_body, idx)
            else:
                header[key], idx = _value(text, idx)
            idx = _skip(text, idx)
            if _expect(text, idx, ",}") == "}":
                break
            idx = _skip(text, idx + 1)
    if _skip(text, idx + 1) != len(text):
        raise ContractError("bad_json", f"extra data after the object at character {idx + 1}")
    return ScannedBatch(header, tel if tel is not None else [])


def tel_spans(body: bytes, count: int) -> list[bytes] | None:
    """The bytes of the ``count`` telemetry bodies of a batch body *the contract's rules accepted*, or None.

    In such a body the marker ``{"v":1,"k":"tel",`` can only begin a ``tel`` element: quotes inside
    strings are escaped, records may not have a ``k`` key and the batch's own header says
    ``"k":"batch"``.  So when the marker occurs exactly ``count`` times, element *i* runs from its
    marker to the last ``}`` before the next one (the last element is parsed to find its end).
    Otherwise — another key order, spaces, duplicate keys — None: use :func:`scan_batch`.
    """
    starts = []
    at = body.find(TEL_MARKER)
    while at != -1:
        starts.append(at)
        at = body.find(TEL_MARKER, at + len(TEL_MARKER))
    if len(starts) != count:
        return None
    if not starts:
        return []
    spans = [body[a : body.rindex(b"}", a, b) + 1] for a, b in zip(starts, starts[1:], strict=False)]
    tail = body[starts[-1] :]
    if not tail.isascii():
        return None
    try:
        _value, end = _DECODER.raw_decode(tail.decode("ascii"))
    except json.JSONDecodeError:
        return None
    spans.append(tail[:end])
    return spans
