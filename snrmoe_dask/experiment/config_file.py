"""Reading a config file: ``load_config(path, overrides)``.

Reads the YAML file (``experiment.yaml_file``), applies ``key.path=VALUE`` overrides (``--set``) and
validates against the schema (``experiment.config``). Every mistake (unknown key, wrong type, bad
value, bins that do not tile [0, inf)) becomes one ``ConfigError`` line naming the file and the dotted
key, e.g. ``config/demo.yaml: model.alpha: must be >= 0, got -1``, and the override that set it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from .config import QUOTED_NUMBER_HINT, ExperimentConfig, short_repr
from .yaml_file import load_yaml_text, read_yaml_mapping, yaml_problem


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read a YAML config, apply ``key.path=VALUE`` overrides (VALUE parsed as YAML), validate.

    Raises ConfigError (one line naming the file and the dotted key) on any problem.
    """
    where = str(path)
    raw = read_yaml_mapping(Path(path))
    overridden: list[tuple[str, str]] = []
    for item in overrides:
        dotted, value = _parse_override(where, item)
        _set_path(where, raw, dotted, value, item)
        overridden.append((dotted, item))
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_describe(exc, overridden)}") from None
    except ConfigError as exc:  # raised by a validator outside pydantic's error types
        raise ConfigError(f"{where}: {exc}") from None
    cfg._source = where
    return cfg


# ----------------------------------------------------------------------------- overrides
def _parse_override(where: str, item: str) -> tuple[str, Any]:
    dotted, sep, text = str(item).partition("=")
    dotted = dotted.strip()
    if not sep or not dotted:
        raise ConfigError(f"{where}: override {short_repr(item)}: expected KEY.PATH=VALUE, e.g. model.alpha=1e3")
    if any(not part for part in dotted.split(".")):
        raise ConfigError(f"{where}: override {short_repr(item)}: {dotted!r} is not a dotted key such as model.alpha")
    try:
        value = load_yaml_text(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: override {short_repr(item)}: value is not valid YAML: {yaml_problem(exc)}") from None
    return dotted, value


def _set_path(where: str, raw: dict[str, Any], dotted: str, value: Any, item: str) -> None:
    """Set ``raw[a][b][c] = value`` for ``a.b.c``, refusing keys the models do not define."""
    parts = dotted.split(".")
    model: type[BaseModel] | None = ExperimentConfig
    node = raw
    for depth, part in enumerate(parts):
        if model is not None:
            if part not in model.model_fields:
                prefix = ".".join(parts[:depth])
                allowed = ", ".join(model.model_fields)
                scope = f" in {prefix}" if prefix else ""
                raise ConfigError(
                    f"{where}: override {short_repr(item)}: unknown key {dotted}{scope} (expected one of: {allowed})"
                )
            annotation = model.model_fields[part].annotation
            model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
            if model is None and depth < len(parts) - 1 and not _is_mapping_field(parts[: depth + 1]):
                raise ConfigError(
                    f"{where}: override {short_repr(item)}: {'.'.join(parts[: depth + 1])} is not a section, "
                    f"so {dotted} is not a key"
                )
        if depth == len(parts) - 1:
            node[part] = value
            return
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(
                f"{where}: override {short_repr(item)}: {'.'.join(parts[: depth + 1])} is not a mapping in the file"
            )
        node = child


def _is_mapping_field(parts: list[str]) -> bool:
    model: Any = ExperimentConfig
    for part in parts:
        model = model.model_fields[part].annotation
    return getattr(model, "__origin__", None) is dict


# ----------------------------------------------------------------------------- error lines
_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "literal_error": "must be one of {expected}",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "tuple_type": "must be a list of two numbers [low, high]",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping of keys",
    "model_attributes_type": "must be a mapping of keys",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
}


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_keys(loc: tuple[Any, ...]) -> str:
    model: Any = ExperimentConfig
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return ""
        model = fields[part].annotation
    fields = getattr(model, "model_fields", None)
    return f" (expected one of: {', '.join(fields)})" if fields else ""


def _describe_one(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    key = _dotted(loc)
    if kind == "extra_forbidden":
        return f"{key}: unknown key{_allowed_keys(loc[:-1])}"
    if kind == "missing":
        return f"{key}: is required"
    if kind == "value_error":
        message = str(err["msg"]).removeprefix("Value error, ")
        return f"{key}: {message}" if key else message
    template = _MESSAGES.get(kind)
    message = template.format(**err.get("ctx", {})) if template else str(err["msg"])
    quoted = QUOTED_NUMBER_HINT if kind in ("float_type", "int_type") and isinstance(err.get("input"), str) else ""
    return f"{key}: {message}, got {short_repr(err.get('input'))}{quoted}"


def _describe(exc: ValidationError, overridden: list[tuple[str, str]]) -> str:
    lines = []
    for err in exc.errors():
        line = _describe_one(err)
        # a cross-field rule has no loc; its message starts with the key it is about
        key = _dotted(tuple(err["loc"])) or line.partition(":")[0]
        for dotted, item in reversed(overridden):  # the last override of a key is the one that holds
            # the key itself, a key inside it, or (a mapping's own rule, e.g. snr.bins) a key it holds
            if key == dotted or key.startswith((dotted + ".", dotted + "[")) or dotted.startswith(key + "."):
                line += f" (set by override {short_repr(item)})"
                break
        lines.append(line)
    return "; ".join(lines)
