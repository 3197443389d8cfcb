"""The dask graph of a pass: one task per segment, summed in a fixed order.

Graph for shards k = 0..K-1 with segments j:

    segment(k, j) --add--> shard(k) [--save to cache--] --add--> total
    load(k) from cache ------------------------------------^

Every ``add`` is a fixed left-to-right fold, so the order of the floating-point sums is part of
the graph and the numbers are identical on the threaded, process and distributed schedulers, and
whether a shard comes from the cache or from the data. Only sources (a path, or lazy arrays), row
ranges and small per-row vectors (target, table SNR, bin index) travel with the tasks; each task
reads its rows itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from dask import delayed
from dask.base import tokenize

from ..core.fold import PassResult, PassSpec
from .blocks import Block, plan_segments
from .segment import recycle, segment_pass
from .sources import RowSource


@dataclass(frozen=True, eq=False)
class ShardRows:
    """One shard of a pass: where its rows are read, its blocks, and their per-row vectors (rows,),
    the blocks' rows one after the other."""

    index: int  # the shard's noise identity (see core.noise.add_noise's ``shard``)
    source: RowSource
    blocks: tuple[Block, ...]
    target: np.ndarray
    table_snr: np.ndarray | None = None  # only read by snr method "column"
    bins: np.ndarray | None = None  # bin of every row when the partition is by table columns
    split: tuple[int, int] | None = None  # (j, parts): sub-shard j of the shard cut in parts, or None

    @property
    def n(self) -> int:
        return len(self.target)

    @property
    def label(self) -> str:
        """The shard's number, and its part for a sub-shard ('3', '3.1of2'), for task names."""
        return f"{self.index}" if self.split is None else f"{self.index}.{self.split[0] + 1}of{self.split[1]}"


def _add(total: PassResult, other: PassResult) -> PassResult:
    # In place: each partial sum feeds exactly one later task, so nobody else sees the mutation,
    # and the running sum never needs a second D x D accumulator per bin; nor is ``other`` read
    # again, so its buffer can serve the next segment.
    total += other
    recycle(other)
    return total


def _chain(parts: list, name: str):
    """Fold delayed parts left to right: ((p0 + p1) + p2) + ..."""
    total = parts[0]
    for i, part in enumerate(parts[1:], start=1):
        total = delayed(_add, pure=True)(total, part, dask_key_name=f"{name}-add-{i}")
    return total


def _segment_inputs(shard: ShardRows, block_rows: int, segment_rows: int):
    """Per segment of the shard: (source, blocks, target, table SNR or None, bins or None), in row order."""
    at = 0
    for blocks in plan_segments(list(shard.blocks), block_rows, segment_rows):
        rows = slice(at, at + sum(b.rows for b in blocks))
        at = rows.stop
        source = shard.source.part(min(b.start for b in blocks), max(b.stop for b in blocks))
        yield (source, blocks, shard.target[rows], None if shard.table_snr is None else shard.table_snr[rows],
               None if shard.bins is None else shard.bins[rows])


def shard_graph(shard: ShardRows, spec: PassSpec, block_rows: int, segment_rows: int, token: str):
    """A delayed :class:`PassResult` of one shard: its segments summed in row order."""
    parts = [delayed(segment_pass, pure=True)(*inputs, spec=spec, dask_key_name=f"segment-{shard.label}-{i}-{token}")
             for i, inputs in enumerate(_segment_inputs(shard, block_rows, segment_rows))]
    return _chain(parts, f"shard-{shard.label}-{token}")


def sum_shard(shard: ShardRows, spec: PassSpec, block_rows: int, segment_rows: int) -> PassResult:
    """The same sum as :func:`shard_graph`, in the same order, computed here in one task."""
    total = None
    for inputs in _segment_inputs(shard, block_rows, segment_rows):
        part = segment_pass(*inputs, spec=spec)
        total = part if total is None else _add(total, part)
    return total


def then(fn: Callable, part, *args, name: str):
    """A task applying ``fn(result, *args) -> result`` after ``part`` (e.g. writing it to the cache)."""
    return delayed(fn, pure=False)(part, *args, dask_key_name=name)


def total_graph(parts: list, name: str = "total"):
    """The sum over shards, in shard order (a delayed :class:`PassResult`)."""
    return _chain(parts, f"{name}-{tokenize(*[p.key for p in parts])}")
