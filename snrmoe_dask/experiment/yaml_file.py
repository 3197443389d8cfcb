"""The hardened YAML reader of config files and ``--set`` values.

PyYAML's SafeLoader, made stricter: a repeated key is an error (PyYAML keeps the last one), ``1e5``
reads as a number (YAML 1.2's reading, not 1.1's string), and a document nested too deeply or
expanding, through aliases, to too many values is refused before it can exhaust the stack or memory.
Every problem becomes one ``ConfigError`` line naming the file; the schema is ``experiment.config``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a repeated key (PyYAML would silently keep the last one)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (line {line})")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)
# YAML 1.1 (PyYAML) reads 1e5 and 2e-2, floats without a dot, as strings; YAML 1.2 and every user read
# them as numbers. With strict numbers a string is refused, so they must load as floats.
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                                       list("-+0123456789"))


# Far beyond any config (routing.bins of a grid is 4 levels, a config a few hundred values); PyYAML's
# parser recurses per level, and aliases can make a small file expand to billions of values.
MAX_DEPTH = 32
MAX_VALUES = 100_000


class _TooLarge(yaml.YAMLError):
    pass


def load_yaml_text(text: str) -> Any:
    """YAML text -> data; _TooLarge (a YAMLError) when nested more than MAX_DEPTH levels or, with
    aliases expanded, more than MAX_VALUES values."""
    too_deep = f"nested too deeply (more than {MAX_DEPTH} levels of lists or mappings)"
    try:
        value = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise _TooLarge(too_deep) from None
    sizes: dict[int, int] = {}  # expanded size of every list/mapping, by id: an alias is counted each time

    def size(node: Any, depth: int) -> int:  # recursion bounded by MAX_DEPTH
        if not isinstance(node, (dict, list)):
            return 1
        if depth > MAX_DEPTH:
            raise _TooLarge(too_deep)
        if id(node) not in sizes:
            children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
            sizes[id(node)] = 1 + sum(size(child, depth + 1) for child in children)
        return sizes[id(node)]

    try:
        values = size(value, 1)
    except RecursionError:  # a self-referencing alias
        raise _TooLarge(too_deep) from None
    if values > MAX_VALUES:
        raise _TooLarge(f"expands to {values:,} values (through aliases); expected a config of at most "
                        f"{MAX_VALUES:,}")
    return value


def yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's problem on one line, with its line and column when it has them."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return " ".join(f"{problem}{at}".split())


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of the YAML file ``path``; ConfigError (one line naming the file) when it is
    missing, not a regular file, unreadable, not valid YAML, too large, empty or not a mapping."""
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a YAML config file")
    if not path.is_file():  # a FIFO or device: reading it could wait forever
        raise ConfigError(f"{path}: is not a regular file, expected a YAML config file")
    try:
        raw = load_yaml_text(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    if raw is None:
        raise ConfigError(f"{path}: file is empty, expected a mapping of sections (experiment, data, snr, ...)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    return raw
