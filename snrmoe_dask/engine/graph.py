"""The dask graph of a pass: one task per segment, summed in a fixed order.

Graph for shards k = 0..K-1 with segments j:

    segment(k, 0), segment(k, 1), ... --added left to right--> shard(k) [--save to cache--]
    a run of small shards (one block each) --one task, one accumulator--> shards(a-b)
    the parts (shards, sub-shards, runs of small shards) or their loads from the cache
        --added in the fixed order of core.sum_order.tree_sum--> total
    (groups of 8 parts left to right, the groups in a binary tree)

The order of every floating-point sum is part of the graph, so the numbers are identical on the
threaded, process and distributed schedulers, and whether a shard comes from the cache or from the
data. Only sources (a path, or lazy arrays), row ranges and small per-row vectors (target, table SNR,
bin index) travel with the tasks; each task reads its rows itself.

A task's value must never change once computed: other tasks, other graphs and clients may hold it.
The partial sums of one graph are the exception that keeps a pass's memory at one accumulator per
running sum: every task of a graph is named after the graph's output and inputs (``name``), so no
other graph (an identical one aside, which runs the same tasks) can reach them; each is read by
exactly one task, which adds the next part into it in place. The graph's outputs (a total, or the
per-shard results) are never changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from dask import delayed

from ..core.block_pass import PassResult, PassSpec
from ..core.sum_order import CHAIN
from .blocks import Block, plan_segments
from .segment import add_into, segment_pass, small_shards_pass
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


@dataclass(frozen=True, eq=False)
class SmallShards:
    """Consecutive small shards (one block each, at most a block's rows together) summed as one part of
    a pass, in one task and one accumulator: a result per shard would cost a (K, D, D) sum and an add
    each, more than a few hundred spectra's products (see :func:`gather_small_shards`)."""

    members: tuple[ShardRows, ...]

    @property
    def n(self) -> int:
        return sum(m.n for m in self.members)

    @property
    def label(self) -> str:
        return f"{self.members[0].label}-{self.members[-1].label}"


def gather_small_shards(parts: Sequence[ShardRows], block_rows: int) -> list[ShardRows | SmallShards]:
    """``parts`` with each run of consecutive small shards (a whole shard in one block of fewer than
    ``block_rows`` rows) gathered into :class:`SmallShards` of at most ``block_rows`` rows, left to right
    (a run of one stays a shard). The runs of a list's first shards are those of the whole list cut
    there, so a pass over the shards of its first k parts has the same parts."""
    out: list[ShardRows | SmallShards] = []
    run: list[ShardRows] = []

    def close() -> None:
        if run:
            out.append(run[0] if len(run) == 1 else SmallShards(tuple(run)))
            run.clear()

    for part in parts:
        if part.split is not None or len(part.blocks) != 1 or part.n >= block_rows:
            close()
            out.append(part)
            continue
        if sum(m.n for m in run) + part.n > block_rows:
            close()
        run.append(part)
    close()
    return out


def _member_inputs(member: ShardRows) -> tuple:
    return (member.source, member.blocks[0], member.target, member.table_snr, member.bins)


def _chain(parts: list, name: str):
    """Add delayed parts left to right, into the first: ((p0 + p1) + p2) + ... (parts of this graph only)."""
    total = parts[0]
    for i, part in enumerate(parts[1:], start=1):
        total = delayed(add_into, pure=True)(total, part, dask_key_name=f"{name}-add-{i}")
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


class _Arguments:
    """A task's arguments, opaque to dask: ``delayed`` would otherwise walk every field of every task's
    spec, blocks and source while the graph is built, milliseconds a task (they hold no dask object)."""

    __slots__ = ("args", "kwargs")

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


def _apply(fn: Callable, arguments: _Arguments):
    return fn(*arguments.args, **arguments.kwargs)


_task = delayed(_apply, pure=True)


def shard_graph(shard: ShardRows, spec: PassSpec, block_rows: int, segment_rows: int, name: str):
    """A delayed :class:`PassResult` of one shard: its segments summed in row order; task names start
    with ``name`` (the graph's output and token)."""
    parts = [_task(segment_pass, _Arguments(*inputs, spec=spec), dask_key_name=f"{name}-segment-{shard.label}-{i}")
             for i, inputs in enumerate(_segment_inputs(shard, block_rows, segment_rows))]
    return _chain(parts, f"{name}-shard-{shard.label}")


def part_graph(part: ShardRows | SmallShards, spec: PassSpec, block_rows: int, segment_rows: int, name: str):
    """A delayed :class:`PassResult` of one part of a pass: a shard's (:func:`shard_graph`) or a run of
    small shards', one task (``{name}-shards-{label}``)."""
    if isinstance(part, ShardRows):
        return shard_graph(part, spec, block_rows, segment_rows, name)
    return _task(small_shards_pass, _Arguments([_member_inputs(m) for m in part.members], spec=spec),
                 dask_key_name=f"{name}-shards-{part.label}")


def sum_part(part: ShardRows | SmallShards, spec: PassSpec, block_rows: int, segment_rows: int) -> PassResult:
    """The same sum as :func:`part_graph`, in the same order, computed here in one task (the running
    sum is this task's own, so it is added into in place)."""
    if isinstance(part, SmallShards):
        return small_shards_pass([_member_inputs(m) for m in part.members], spec=spec)
    total = None
    for inputs in _segment_inputs(part, block_rows, segment_rows):
        part = segment_pass(*inputs, spec=spec)
        if total is None:
            total = part
        else:
            total += part
    return total


def apply_after(fn: Callable, part, *args, name: str):
    """A task named ``name`` that applies ``fn(result, *args) -> result`` to ``part``'s result once it is
    computed (e.g. writing it to the cache)."""
    return delayed(fn, pure=False)(part, *args, dask_key_name=name)


def reduce_graph(parts: Sequence, name: str,
                 readers: Mapping[int, Callable[[list], Any]] | None = None) -> tuple[Any, dict[int, Any]]:
    """The delayed sum of ``parts`` (partial sums of this graph only: each is added into) in the order of
    :func:`~snrmoe_dask.core.sum_order.tree_sum`: groups of CHAIN parts left to right (``{name}-group-{g}-add-{i}``),
    then the groups in the binary tree (the node adding groups lo..hi-1 is ``{name}-{lo}-{hi}``).

    readers: {k: fn(blocks) -> delayed} for prefixes k of the parts: ``blocks`` are the delayed partial
    sums whose sum right to left (:func:`~snrmoe_dask.core.sum_order.fold_blocks`) is the sum of the first k
    parts, bit for bit; fn's task must not change them, and every add that would change one waits for it.
    Returns (the total, {k: the reader's delayed value}).
    """
    readers = readers or {}
    waiting: dict[str, list] = {}  # key of a partial sum -> the reader tasks that must run before it changes

    def add(left, right, key: str):
        return delayed(add_into, pure=True)(left, right, *waiting.pop(left.key, []), dask_key_name=key)

    stack: list[tuple[int, int, Any]] = []  # complete groups' blocks: (first group, groups, partial sum)
    partial, group, read = None, 0, {}
    for k, part in enumerate(parts, start=1):
        i = (k - 1) % CHAIN
        partial = part if i == 0 else add(partial, part, f"{name}-group-{group}-add-{i}")
        if i == CHAIN - 1:  # a complete group: merge it with the equal blocks before it
            block, size, partial = partial, 1, None
            while stack and stack[-1][1] == size:
                lo, below, left = stack.pop()
                block, size = add(left, block, f"{name}-{lo}-{group + 1}"), size + below
            stack.append((group + 1 - size, size, block))
            group += 1
        if k in readers:
            blocks = [b for _, _, b in stack] + ([partial] if partial is not None else [])
            read[k] = readers[k](blocks)
            for b in blocks:
                waiting.setdefault(b.key, []).append(read[k])
    blocks = [(lo, b) for lo, _, b in stack] + ([(group, partial)] if partial is not None else [])
    end = group + (partial is not None)  # the groups summed
    total = blocks[-1][1]
    for lo, left in reversed(blocks[:-1]):
        total = add(left, total, f"{name}-{lo}-{end}")
    return total, read


def tree_graph(parts: Sequence, name: str):
    """The delayed sum of ``parts`` in the pass's fixed order (:func:`reduce_graph` without readers)."""
    return reduce_graph(parts, name)[0]
