"""Loading spec files: one spec per YAML file, errors naming the file, the point and the key."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from device_specs.schema import DeviceSpec, FieldIssue, LineProtocol, Point, SerialDefaults, Source, Timing

MODELS_DIR = Path(__file__).parent / "models"
MAX_SPEC_BYTES = 256 * 1024

#: which model a location (without list indices) points into, to list its keys when one is unknown
_MODEL_AT: dict[tuple[str, ...], type[BaseModel]] = {
    (): DeviceSpec, ("points",): Point, ("serial",): SerialDefaults,
    ("timing",): Timing, ("source",): Source, ("line",): LineProtocol,
}


class SpecError(ValueError):
    """A spec file is unreadable or invalid.  The message names file, point and key."""


class UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate keys (YAML would silently keep the last one).

    Shared by every declarative YAML file of the project (specs, reference hardware builds).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool | None):
                continue  # unhashable or exotic keys: SafeLoader's own check reports them
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _describe(spec_data: object, loc: tuple[int | str, ...]) -> str:
    """Turn a location such as ('points', 3, 'type') into 'points[3] (soil_ph).type'."""
    out = ""
    node = spec_data
    for item in loc:
        if isinstance(item, int):
            name = ""
            if isinstance(node, list) and 0 <= item < len(node):
                node = node[item]
                if isinstance(node, dict) and isinstance(node.get("metric"), str):
                    name = f" ({node['metric']})"
            else:
                node = None
            out += f"[{item}]{name}"
        else:
            node = node.get(item) if isinstance(node, dict) else None
            out += f".{item}" if out else str(item)
    return out


def _message(err: dict, loc: tuple[int | str, ...]) -> str:
    """A pydantic error in words a spec author acts on."""
    if err["type"] == "extra_forbidden":
        model = _MODEL_AT.get(tuple(x for x in loc[:-1] if isinstance(x, str)))
        if model is None:
            return "unknown key"
        allowed = sorted(f.alias or name for name, f in model.model_fields.items())
        return f"unknown key (allowed: {', '.join(allowed)})"
    if err["type"] == "missing":
        return "required key is missing"
    return str(err["msg"]).removeprefix("Value error, ")


def _errors(exc: ValidationError, data: dict, origin: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        issue = (err.get("ctx") or {}).get("error")
        msg = _message(err, loc)
        if isinstance(issue, FieldIssue):  # a validator's own check: extend the location it ran at
            loc, msg = loc + issue.loc, issue.message
        lines.append(f"{origin}: {_describe(data, loc) or 'spec'}: {msg}")
    return "\n".join(lines)


def yaml_where(exc: yaml.YAMLError) -> str:
    """' at line 3, column 5: expected ...' from a YAML error, one line instead of pyyaml's block."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = "; ".join(x for x in (exc.problem, exc.context) if x)
        return f" at line {mark.line + 1}, column {mark.column + 1}: {what}"
    return f": {exc}"


def parse_spec(text: str, origin: str = "<spec>") -> DeviceSpec:
    """Parse YAML text into a validated spec, or raise SpecError naming ``origin``."""
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise SpecError(f"{origin}: larger than {MAX_SPEC_BYTES} bytes")
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        raise SpecError(f"{origin}: not valid YAML{yaml_where(exc)}") from None
    except RecursionError:  # PyYAML's composer recurses once per level of ``[[[[…``
        raise SpecError(f"{origin}: not valid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: a spec must be a YAML mapping, got {type(data).__name__}")
    try:
        return DeviceSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_errors(exc, data, origin)) from None


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
