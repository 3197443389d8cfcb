"""A pass through the statistics cache: which of a pass's results are loaded from a
:class:`~snrmoe_dask.io.cache.ShardCache` instead of computed, and the tasks that load, compute and save them.

Every part of a pass (a shard, or a sub-shard) has an entry keyed on its file, rows and pass settings,
and a pass over several parts has a *merged* entry for their sum in the pass's order. The entries are
looked up when the graph is built (:class:`CachedPass`): a part whose entry the cache holds, or holds
with finer SNR bins that merge into the pass's bins, becomes a load task; any other a pass followed by
a save task (when the result is worth an entry: ``ShardCache.worth_storing``). A held merged entry
replaces the whole pass with one load. Entries are read and written only when the graph runs; an entry
that turns out damaged then is recomputed in its task, in the graph's order, so the numbers are the same
(docs/cache.md).
"""

from __future__ import annotations

import hashlib
import logging
import operator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dask import delayed

from ..core.block_pass import PassResult, PassSpec
from ..core.sum_order import tree_sum
from .graph import ShardRows, SmallShards, apply_after, part_graph, sum_part

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Entry:
    """A result's place in the cache: its key, what its file records, and an entry to load instead
    of a pass (``found``, with its bins merged into ``groups`` when they are finer) or None."""

    key: str
    meta: dict
    content: Any  # io.cache.Content
    store: bool  # worth caching (cache.worth_storing)
    found: str | None = None
    groups: dict[str, list[str]] | None = None
    rows: ShardRows | SmallShards | None = None  # a part's rows (None for the merged entry)


class CachedPass:
    """The cache entries of a pass over shard files: one per part (``entries``, in the pass's order)
    and, for more than one part, one of their sum (``merged``), looked up in ``cache`` when made.

    The entries the pass finds or will write are marked in use, so this run never evicts them.
    """

    def __init__(self, cache, parts: list[ShardRows], paths: list[Path], spec: PassSpec, target: str,
                 block_rows: int, segment_rows: int):
        self.cache, self.spec, self.block_rows, self.segment_rows = cache, spec, block_rows, segment_rows
        self.paths = paths
        self.entries = [(_shard_entry if isinstance(rows, ShardRows) else _small_shards_entry)(
            cache, rows, path, spec, target, block_rows, segment_rows) for rows, path in zip(parts, paths)]
        self.merged = _merged_entry(cache, self.entries, paths, spec) if len(self.entries) > 1 else None

    def load_total(self, name: str, label: str):
        """A task loading the sum of the parts from the merged entry, when the cache holds it (or finer
        bins of it); else None."""
        merged, entries = self.merged, self.entries
        if merged is None or not merged.found:
            return None
        self.cache.mark_in_use(merged.key, merged.found, *(e.key for e in entries), *(e.found for e in entries))
        log.info("%s pass: %d shard(s) from the cache in one merged entry%s, 0 to compute", label, len(entries),
                 " (merged bins)" if merged.groups else "")
        return delayed(_load_total, pure=False)(self.cache, merged, entries, self.spec, self.block_rows,
                                                self.segment_rows, dask_key_name=f"{name}-cached-{merged.key}")

    def part_graphs(self, name: str, label: str) -> list:
        """The delayed result of every part: a load, or a pass followed by its save when worth it; task
        names start with ``name``."""
        parts, cached, computed = [], [], []
        for e, path in zip(self.entries, self.paths):
            part = _part_name(e.rows, path)
            if e.found:
                load = delayed(_load_or_pass, pure=False)
                parts.append(load(self.cache, e, self.spec, self.block_rows, self.segment_rows,
                                  dask_key_name=f"{name}-cached-{e.key}"))
                cached.append(part + (" (merged bins)" if e.groups else ""))
                continue
            graph = part_graph(e.rows, self.spec, self.block_rows, self.segment_rows, name)
            parts.append(apply_after(_save, graph, self.cache, e, name=f"{name}-save-{e.key}") if e.store else graph)
            computed.append(part + ("" if e.store else " (too small to cache)"))
        log.info("%s pass: %d shard(s) from the cache %s, %d to compute %s", label, len(cached), cached,
                 len(computed), computed)
        return parts

    def save_total(self, total, name: str):
        """``total`` followed by a task saving it as the merged entry of the parts, when worth it."""
        merged = self.merged
        if merged is None or not merged.store:
            return total
        return apply_after(_save, total, self.cache, merged, name=f"{name}-save-{merged.key}")


def _part_name(rows: ShardRows | SmallShards, path: Path | tuple[Path, ...]) -> str:
    if isinstance(rows, SmallShards):
        return f"{len(path)} shards {path[0].parent.name}..{path[-1].parent.name}"
    return path.parent.name + (f" part {rows.split[0] + 1}/{rows.split[1]}" if rows.split else "")


def _merged_entry(cache, entries: list[_Entry], paths: list[Path], spec: PassSpec) -> _Entry:
    """The entry of the sum of ``entries`` in list order; ``found`` set when the cache holds it (or
    finer bins of it)."""
    from ..io.cache import Content, merged_key

    sources: list[str] = []
    blocks: list[tuple[int, int, int]] = []
    for e in entries:  # the files of a run of small shards one by one
        blocks += [(len(sources) + int(i), int(row0), int(n)) for i, row0, n in e.content.blocks]
        sources += e.content.files
    rows = sum(e.rows.n for e in entries)
    meta = {"source": f"{sources[0]} + {len(sources) - 1} more", "rows": rows, "sources": sources,
            "parts": [e.key for e in entries], "base_key": merged_key([e.meta["base_key"] for e in entries]),
            "names": list(spec.bins.names), "edges": _edges(spec)}
    merged = _Entry(merged_key([e.key for e in entries]), meta, Content(tuple(sources), blocks),
                    cache.worth_storing(rows, len(spec.c), spec.bins.n_cells))
    if merged.store:
        _find(cache, merged, spec)
    return merged


def _keys(rows: ShardRows, path: Path, spec: PassSpec, target: str, block_rows: int,
          segment_rows: int) -> tuple[str, str, dict]:
    """(key, base key (the key without the bins), the facts the key is made of) of a shard's result."""
    from ..io.cache import key_facts, key_of

    values = (rows.target, rows.table_snr, rows.bins)
    facts = key_facts(path, spec, target, block_rows, segment_rows, rows.index, values)
    base = key_of(key_facts(path, replace(spec, bins=None), target, block_rows, segment_rows, rows.index, values))
    return _split_key(key_of(facts), rows.split), _split_key(base, rows.split), facts


def _small_shards_entry(cache, run: SmallShards, paths: tuple[Path, ...], spec: PassSpec, target: str,
                        block_rows: int, segment_rows: int) -> _Entry:
    """A run of small shards: never stored nor looked up on its own (each shard is far smaller than
    an entry); its key, from its shards' keys, names it inside a merged entry."""
    from ..io.cache import Content, merged_key

    keys = [_keys(m, p, spec, target, block_rows, segment_rows) for m, p in zip(run.members, paths)]
    meta = {"source": f"{paths[0]} + {len(paths) - 1} more", "rows": run.n,
            "base_key": merged_key([base for _, base, _ in keys])}
    content = Content(tuple(map(str, paths)), [(i, m.blocks[0].row0, m.n) for i, m in enumerate(run.members)])
    return _Entry(merged_key([key for key, _, _ in keys]), meta, content, store=False, rows=run)


def _shard_entry(cache, rows: ShardRows, path: Path, spec: PassSpec, target: str, block_rows: int,
                 segment_rows: int) -> _Entry:
    """One shard's entry; ``found`` set when the cache holds it (or finer bins of it). A shard too
    small for the cache (``cache.worth_storing``) neither loads nor stores: its pass costs about a load."""
    from ..io.cache import Content

    key, base, facts = _keys(rows, path, spec, target, block_rows, segment_rows)
    meta = {"source": str(path), "rows": rows.n, "base_key": base, "names": list(spec.bins.names),
            "edges": _edges(spec), "facts": facts}
    if rows.split:
        meta.update(split=list(rows.split))
    entry = _Entry(key, meta,
                   Content((str(path),), [(0, b.row0, b.rows) for b in rows.blocks]),
                   cache.worth_storing(rows.n, len(spec.c), spec.bins.n_cells), rows=rows)
    if entry.store:
        _find(cache, entry, spec)
        if entry.found is None:
            why = cache.why_missed(facts)
            if why:
                log.info("%s: recomputing its statistics: %s", path, why)
    return entry


def _split_key(key: str, split: tuple[int, int] | None) -> str:
    """The cache key of sub-shard (j, parts) of the shard whose key is ``key`` (the blocks of each
    part follow from the shard's rows, the block size and ``parts``, all in the key)."""
    return key if split is None else hashlib.sha256(f"{key} part {split[0]} of {split[1]}".encode()).hexdigest()


def _find(cache, entry: _Entry, spec: PassSpec) -> None:
    """Set ``entry.found`` (and ``groups``) to the entry itself when cached, else to a finer one."""
    if cache.path(entry.key).is_file():
        entry.found = entry.key
    else:
        entry.found, entry.groups = _finer_entry(cache, entry.meta["base_key"], spec)
    cache.mark_in_use(entry.key, entry.found)


def _save(result: PassResult, cache, entry: _Entry) -> PassResult:
    """Cache ``result``; a failed write (read-only folder, full disk...) costs the cache, not the run."""
    try:
        cache.save(entry.key, result, entry.meta, entry.content)
    except OSError as exc:
        log.warning("%s: statistics of %s not cached (the run goes on): %s", cache.root, entry.meta["source"], exc)
    return result


def _edges(spec: PassSpec) -> list[list[float]] | None:
    """[[low, high], ...] of an SNR partition in bin order (None for column partitions)."""
    if not spec.bins.is_snr:
        return None
    axis = spec.bins.axes[0]
    return [[float(lo), float(hi)] for lo, hi in zip(axis.low, axis.high)]


def _finer_entry(cache, base: str, spec: PassSpec) -> tuple[str | None, dict[str, list[str]] | None]:
    """A cached result of the same shard(s) and pass whose SNR bins merge into ``spec``'s bins.

    Each new bin must be the union of whole cached bins; the statistics then add up exactly
    (BinStats.merge), so merging bins needs no pass. Returns (key, {new bin: [cached bins]}).
    """
    edges = _edges(spec)
    if edges is None:
        return None, None
    for key, meta in cache.metas():
        if meta.get("base_key") != base or not meta.get("edges"):
            continue
        old = list(zip(meta["names"], meta["edges"]))
        groups = {}
        for name, (lo, hi) in zip(spec.bins.names, edges):
            inside = [(n, a, b) for n, (a, b) in old if lo <= a and b <= hi]
            # the cached bins tile [0, inf) without gaps, so whole bins cover [lo, hi) iff the ends match
            if not inside or min(a for _, a, _ in inside) != lo or max(b for _, _, b in inside) != hi:
                break
            groups[name] = [n for n, _, _ in inside]
        else:
            return key, groups
    return None, None


def _loaded(cache, entry: _Entry, spec: PassSpec) -> PassResult | None:
    """The entry's cached result, its bins merged into ``entry.groups`` when given; None when the
    file turned out damaged (the cache logged and dropped it) or went away."""
    result = cache.load(entry.found) if entry.found else None
    if result is not None:
        if entry.groups is not None:
            result.stats = result.stats.merge(entry.groups)
        result.spec = spec
    return result


def _load_or_pass(cache, entry: _Entry, spec: PassSpec, block_rows: int, segment_rows: int) -> PassResult:
    """A shard's cached result; if it cannot be loaded, the shard summed here in the graph's order
    (and cached when worth it)."""
    result = _loaded(cache, entry, spec)
    if result is None:
        result = sum_part(entry.rows, spec, block_rows, segment_rows)
        if entry.store:
            _save(result, cache, entry)
    return result


def _load_total(cache, merged: _Entry, entries: list[_Entry], spec: PassSpec, block_rows: int,
                segment_rows: int) -> PassResult:
    """The merged entry; if it cannot be loaded, the shards' results summed here in the graph's fixed
    tree (each loaded or passed as :func:`_load_or_pass`), and cached again."""
    result = _loaded(cache, merged, spec)
    if result is None:
        # every part is this task's own: the partial sums are added into in place
        result = tree_sum((_load_or_pass(cache, entry, spec, block_rows, segment_rows) for entry in entries),
                          operator.iadd)
        _save(result, cache, merged)
    return result
