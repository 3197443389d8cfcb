"""The report's words, one module per language with the same names: ``zh`` (the card's body language)
and ``en`` (``--lang en``). Each turns the statements of ``report.rules`` into sentences of its
language and holds the headings and labels of the template."""

from __future__ import annotations

from types import ModuleType

from ...errors import ConfigError
from . import en, zh

LANGS = ("zh", "en")


def prose(lang: str) -> ModuleType:
    """The words of ``lang`` ("zh" or "en"); a ConfigError naming ``lang`` otherwise."""
    if lang not in LANGS:
        raise ConfigError(f"lang={lang!r}: expected one of {', '.join(map(repr, LANGS))}")
    return zh if lang == "zh" else en
