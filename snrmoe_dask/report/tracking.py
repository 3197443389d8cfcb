"""The roadmap's and the hub's tracking blocks: the key numbers and the verdict of a run with the
premises it rests on, between the markers ``<!-- snrmoe:{id}:begin -->`` and ``<!-- snrmoe:{id}:end -->``
of a markdown file, in the report's language."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError
from ..io.atomic import write_text
from . import rules
from .prose import prose
from .facts import build_facts
from .formatting import format_ci, format_count, format_delta, format_r2, pct, table

DEFAULT_MVP = "MVP-1.0 (Gate-2)"


def _premise_lines(f, p) -> list[str]:
    return [f"- {p.premise(s, f)}" for s in rules.premises(f)]


def roadmap_block(results: Any, lang: str = "zh") -> str:
    """Key numbers for the roadmap's MVP-1.0 entry (markdown), with the premises, in ``lang``."""
    p = prose(lang)
    w = p.TRACK
    f = build_facts(results)
    r = f.results
    head = (f"**{r.experiment}** ({r.date or 'n/a'}) · {r.mvp or DEFAULT_MVP} · {p.VERDICT[f.decision]} → "
            f"{p.NEXT_STEP[f.decision]}")
    delta = format_delta(f.delta) + (f" {format_ci(f.delta_ci)}" if f.delta_ci else "")
    row = [format_r2(f.global_.r2), format_r2(f.oracle.r2), delta, f"{f.threshold:g}", pct(f.coverage),
           f"{format_count(f.n_train)} / {format_count(f.n_test)}"]
    lines = [head, "", *table(["Global R²", "Oracle R²", "ΔR²", w["threshold"], w["coverage"], "N_train / N_test"],
                              [row]), "", *_premise_lines(f, p)]
    if f.per_bin:
        per_bin = " · ".join(f"{b.name} " + (w["no_expert"] if b.skipped else format_delta(b.delta)) for b in f.bins)
        lines += ["", p.per_bin_delta(per_bin)]
    return "\n".join(lines)


def hub_block(results: Any, lang: str = "zh") -> str:
    """The hypothesis verdict (H1 / Q1) for the hub (markdown), with the premises, in ``lang``."""
    p = prose(lang)
    w = p.TRACK
    f = build_facts(results)
    thr = f"{f.threshold:g}"
    source = f"`{f.results.experiment}` ({f.results.date or 'n/a'})"
    delta = format_delta(f.delta) + (f" {format_ci(f.delta_ci)}" if f.delta_ci else "")
    row = [f"{w['h1']}: ΔR² ≥ {thr}", f"≥ {thr}", delta, p.VERDICT[f.decision], source]
    answer_line = p.q1_answer(f.decision == "PASS", bool(rules.caveats(f)), format_delta(f.delta),
                              p.NEXT_STEP[f.decision])
    header = [p.LABELS["hypothesis"], p.LABELS["expected"], p.LABELS["actual"], p.LABELS["verdict"], w["source"]]
    return "\n".join([*table(header, [row]), "", answer_line, "", *_premise_lines(f, p)])


# ----------------------------------------------------------------------------- the markdown file
def _markers(experiment_id: str) -> tuple[str, str]:
    experiment_id = str(experiment_id)
    if not experiment_id.strip() or any(s in experiment_id for s in ("-->", "\n", "\r", ":")):
        raise ConfigError(f"experiment_id={experiment_id!r}: expected a non-empty id without ':', '-->' or newlines")
    return f"<!-- snrmoe:{experiment_id}:begin -->", f"<!-- snrmoe:{experiment_id}:end -->"


def _read_tracking(path: Path, begin: str, end: str) -> tuple[str, tuple[int, int] | None]:
    """(the file's text, the span of its block or None). A missing file reads as "" (it will be
    created, but not its folder); the text keeps a BOM and every line ending as they are."""
    if path.exists() and not path.is_file():
        raise InputError(f"{path}: is not a regular file; expected a markdown file to update (or none, to create)")
    if not path.exists():
        if not path.parent.is_dir():
            raise InputError(f"{path}: folder {path.parent} does not exist; the tracking file is created, not its folder")
        return "", None
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the tracking file: {exc.strerror}") from None
    starts, stops = text.count(begin), text.count(end)
    if (starts, stops) == (0, 0):
        return text, None
    start, stop = text.find(begin), text.find(end)
    if (starts, stops) != (1, 1) or stop < start:
        line = text.count("\n", 0, min(p for p in (start, stop) if p >= 0)) + 1
        raise InputError(f"{path}: found {starts} {begin} and {stops} {end} (the first at line {line}); "
                         "expected one pair, begin before end, or none")
    return text, (start, stop + len(end))


def check_tracking_file(path: str | os.PathLike, experiment_id: str) -> None:
    """Raise what :func:`update_tracking_block` would raise for ``path``, before a run writes anything."""
    begin, end = _markers(experiment_id)
    _read_tracking(Path(path).resolve(), begin, end)


def update_tracking_block(path: str | os.PathLike, experiment_id: str, body: str) -> None:
    """Insert or replace the block ``<!-- snrmoe:{id}:begin -->`` ... ``<!-- snrmoe:{id}:end -->`` in ``path``.

    Idempotent: the same body gives the same file. A missing file is created (its folder must
    exist); a new block is appended after the existing text. Every byte outside the block is kept
    (a BOM, CRLF line endings, a missing final newline); the block's lines end like the file's.
    A link is followed: the file it points to is updated. Written atomically, mode kept.
    """
    begin, end = _markers(experiment_id)
    path = Path(path).resolve()
    text, span = _read_tracking(path, begin, end)
    nl = "\r\n" if "\r\n" in text else "\n"
    block = nl.join([begin, *body.strip("\n").split("\n"), end])
    if span:
        new = text[:span[0]] + block + text[span[1]:]
    else:
        newlines = text[len(text.rstrip("\r\n")):].count("\n")  # a blank line before the block
        new = text + nl * (max(0, 2 - newlines) if text else 0) + block + nl
    if new != text:
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
        write_text(path, new, mode)
