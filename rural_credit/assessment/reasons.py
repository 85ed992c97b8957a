"""Plain-language reasons in English and Chinese, from one catalogue (``data/reasons.yaml``).

A decision carries reasons as keys with parameters (:class:`Reason`), never as finished sentences,
so the same decision renders in either language and the texts live in one file a translator can
edit.  Scorecard reasons are keyed by the characteristic's *name*: a reason code such as ``RC03`` is
only a position in one model, the name means the same in every model.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from device_specs.registry import UniqueKeyLoader

CATALOGUE_PATH = Path(__file__).parent / "data" / "reasons.yaml"
LANGUAGES = ("en", "zh-CN")
SECTIONS = ("characteristics", "decisions", "notice")


class CatalogueError(ValueError):
    """The reason catalogue is malformed, or a key or language is not in it."""


@dataclass(frozen=True)
class Reason:
    """One reason of a decision: a catalogue key, its parameters, and for a scorecard reason its code."""

    key: str
    params: dict[str, Any] = field(default_factory=dict)
    kind: str = "decision"  # decision or characteristic
    code: str | None = None  # the model's reason code (characteristic reasons)
    points_lost: int | None = None

    def text(self, language: str = "en") -> str:
        if self.kind == "characteristic":
            return characteristic_text(self.key, language)
        return text("decisions", self.key, language, **self.params)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "kind": self.kind, "params": self.params,
                               "text": {lang: self.text(lang) for lang in LANGUAGES}}
        if self.code is not None:
            out["code"], out["points_lost"] = self.code, self.points_lost
        return out


@lru_cache(maxsize=1)
def catalogue() -> dict[str, dict[str, dict[str, str]]]:
    """The catalogue, checked: every entry in every language, with the same placeholders in each."""
    data = yaml.load(CATALOGUE_PATH.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)
    if not isinstance(data, dict) or sorted(data) != sorted(SECTIONS):
        raise CatalogueError(f"{CATALOGUE_PATH}: sections must be {', '.join(SECTIONS)}")
    for section, entries in data.items():
        for key, texts in entries.items():
            if not isinstance(texts, dict) or sorted(texts) != sorted(LANGUAGES):
                raise CatalogueError(f"{CATALOGUE_PATH}: {section}.{key} needs exactly {', '.join(LANGUAGES)}")
            fields = {lang: placeholders(texts[lang]) for lang in LANGUAGES}
            if len({frozenset(f) for f in fields.values()}) != 1:
                raise CatalogueError(f"{CATALOGUE_PATH}: {section}.{key} uses different placeholders per language: "
                                     f"{fields}")
    return data


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def text(section: str, key: str, language: str = "en", **params: Any) -> str:
    """The catalogue text ``section.key`` in ``language`` with ``params`` filled in."""
    if language not in LANGUAGES:
        raise CatalogueError(f"language must be one of {', '.join(LANGUAGES)}; got {language!r}")
    entries = catalogue()[section]
    if key not in entries:
        raise CatalogueError(f"no {section} reason {key!r} in {CATALOGUE_PATH.name}")
    template = entries[key][language]
    missing = placeholders(template) - set(params)
    if missing:
        raise CatalogueError(f"{section}.{key} needs {', '.join(sorted(missing))}")
    return template.format(**{k: _shown(v) for k, v in params.items()})


def characteristic_text(name: str, language: str = "en") -> str:
    """What a scorecard characteristic losing points means, in plain words (generic when not catalogued)."""
    if name in catalogue()["characteristics"] and name != "generic":
        return text("characteristics", name, language)
    return text("characteristics", "generic", language, name=re.sub(r"[_\s]+", " ", name).strip())


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return str(value)
