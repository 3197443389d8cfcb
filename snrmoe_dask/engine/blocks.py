"""How the rows of a Dataset are cut into blocks (the unit of work) and segments (one task each).

A *block* is a run of consecutive samples of one shard whose noise rows are consecutive too; one
block is read, repaired, noised, binned and multiplied at a time. Block edges fall on multiples of
``block_rows`` in the shard's own row numbers (its ``row`` coordinate), so the same spectra are cut
the same way whatever file, store or array holds them, and whatever subset of a shard is given.
A *segment* is a fixed run of consecutive blocks of one shard, summed in order into one accumulator
by one task; segments are then summed in a fixed order. The cut depends only on the rows, the block
size and the segment size, never on the scheduler or the worker count, so the floating-point sum
order, and hence every number, is the same on any scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Block:
    """Samples ``start:stop`` of a Dataset: rows ``row0:row0 + (stop - start)`` of shard ``shard``."""

    shard: int
    row0: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def plan_blocks(shard: np.ndarray, row: np.ndarray, block_rows: int) -> dict[int, list[Block]]:
    """{shard: its blocks in sample order}, shards in the order they first appear.

    shard, row: (N,) integers, the noise identity of every sample. Consecutive samples of one shard
    with consecutive rows form a run; runs are cut at multiples of ``block_rows`` of the row number.
    A (shard, row) pair that appears twice would get the same noise twice: that is refused.
    """
    if block_rows <= 0:
        raise InputError(f"block_rows={block_rows}: expected a positive number of rows")
    shard, row = np.asarray(shard, dtype=np.int64), np.asarray(row, dtype=np.int64)
    n = len(shard)
    if n == 0:
        raise InputError("the Dataset has no samples")
    if row.min() < 0 or shard.min() < 0:
        raise InputError("the shard and row coordinates must be integers >= 0")
    breaks = np.flatnonzero((shard[1:] != shard[:-1]) | (row[1:] != row[:-1] + 1)) + 1
    plan: dict[int, list[Block]] = {}
    covered: dict[int, list[tuple[int, int]]] = {}
    for a, b in zip(np.r_[0, breaks], np.r_[breaks, n]):
        k, r0 = int(shard[a]), int(row[a])
        covered.setdefault(k, []).append((r0, r0 + int(b - a)))
        edges = list(range((r0 // block_rows + 1) * block_rows, r0 + int(b - a), block_rows))
        starts = [r0, *edges]
        stops = [*edges, r0 + int(b - a)]
        plan.setdefault(k, []).extend(Block(k, lo, int(a) + lo - r0, int(a) + hi - r0) for lo, hi in zip(starts, stops))
    for k, spans in covered.items():
        spans.sort()
        for (lo1, hi1), (lo2, _) in zip(spans, spans[1:]):
            if lo2 < hi1:
                raise InputError(f"shard {k}: row {lo2} appears twice in the Dataset (it would get the same "
                                 "noise twice); give each spectrum a distinct (shard, row)")
    return plan


def plan_segments(blocks: list[Block], block_rows: int, segment_rows: int) -> list[list[Block]]:
    """The blocks of one shard dealt into segments of nearly equal length, in order, so that the
    segments of a run keep the workers equally busy to the end: ceil(len / (segment_rows //
    block_rows)) segments, and at least two when the shard has two blocks or more. Without the
    second rule a run of a few small shards (the demo's 5 x 20,000 rows: one segment each) leaves a
    worker idle for a whole shard at its end."""
    if segment_rows <= 0:
        raise ValueError(f"segment_rows={segment_rows} must be positive")
    per_segment = max(1, min(segment_rows // block_rows, -(-len(blocks) // 2)))
    count = -(-len(blocks) // per_segment)
    return [blocks[j * len(blocks) // count:(j + 1) * len(blocks) // count] for j in range(count)]


def split_blocks(blocks: list[Block], parts: int, shard: str = "a shard") -> list[list[Block]]:
    """The blocks of one shard cut into ``parts`` runs of consecutive blocks holding nearly equal rows.

    The cuts fall on block edges (so every block, and hence the noise of every row, is unchanged):
    cut j is the block edge nearest j/parts of the shard's rows, each run keeping one block at least.
    ``shard`` names the shard in the error raised when it has fewer blocks than ``parts``.
    """
    if parts == 1:
        return [list(blocks)]
    if len(blocks) < parts:
        raise InputError(f"{shard}: {len(blocks)} block(s) of rows cannot be split into {parts} parts; "
                         "lower the number of splits or the block size (block_rows)")
    edges = np.cumsum([b.rows for b in blocks])  # rows before the edge after block i
    cuts = [0]
    for j in range(1, parts):
        # a cut leaves at least one block to each run before and after it
        lo, hi = cuts[-1] + 1, len(blocks) - (parts - j)
        nearest = lo + int(np.argmin(np.abs(edges[lo - 1:hi] - j * edges[-1] / parts)))
        cuts.append(nearest)
    cuts.append(len(blocks))
    return [list(blocks[a:b]) for a, b in zip(cuts, cuts[1:])]
