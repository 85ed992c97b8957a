"""Loading spec files: one spec per YAML file, errors naming the file, the point and the key."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from device_specs.schema import DeviceSpec

MODELS_DIR = Path(__file__).parent / "models"
MAX_SPEC_BYTES = 256 * 1024


class SpecError(ValueError):
    """A spec file is unreadable or invalid.  The message names file, point and key."""


def _describe(spec_data: object, loc: tuple[int | str, ...]) -> str:
    """Turn a pydantic location such as ('points', 3, 'type') into 'points[3] (soil_ph).type'."""
    parts: list[str] = []
    node = spec_data
    for item in loc:
        if isinstance(item, int):
            name = ""
            if isinstance(node, list) and 0 <= item < len(node):
                node = node[item]
                if isinstance(node, dict) and isinstance(node.get("metric"), str):
                    name = f" ({node['metric']})"
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]{name}"]
        else:
            node = node.get(item) if isinstance(node, dict) else None
            parts.append(str(item))
    return ".".join(parts)


def parse_spec(text: str, origin: str = "<spec>") -> DeviceSpec:
    """Parse YAML text into a validated spec, or raise SpecError naming ``origin``."""
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise SpecError(f"{origin}: larger than {MAX_SPEC_BYTES} bytes")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{origin}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: a spec must be a YAML mapping, got {type(data).__name__}")
    try:
        return DeviceSpec.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = _describe(data, tuple(err["loc"])) or "spec"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{origin}: {where}: {msg}")
        raise SpecError("\n".join(lines)) from None


def load_spec_file(path: Path) -> DeviceSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read: {exc}") from None
    spec = parse_spec(text, str(path))
    if path.stem != spec.model:
        raise SpecError(f"{path}: model: {spec.model!r} must match the file name {path.stem!r}")
    return spec


@lru_cache(maxsize=1)
def builtin_specs() -> dict[str, DeviceSpec]:
    """Every spec shipped in device_specs/models, by model id."""
    return {s.model: s for s in (load_spec_file(p) for p in sorted(MODELS_DIR.glob("*.yaml")))}


def get_spec(name: str) -> DeviceSpec:
    """A spec by model id, ``model@version`` or path to a YAML file."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return load_spec_file(Path(name))
    model, _, version = name.partition("@")
    specs = builtin_specs()
    if model not in specs:
        raise SpecError(f"unknown sensor model {model!r}; known: {', '.join(sorted(specs))}")
    spec = specs[model]
    if version and spec.version != version:
        raise SpecError(f"{model}: version {version} requested, {spec.version} installed")
    return spec
