"""How the training rows are cut into blocks (one task each) and segments (one running sum each).

A *block* is the unit of work: one fused task reads, repairs, noises, bins and multiplies it.
A *segment* is a fixed run of consecutive rows of one shard whose blocks are summed in order
into one accumulator; segments are then summed in a fixed order. The cut depends only on the
shard sizes, ``block_rows`` and ``segment_rows``, never on the scheduler or the worker count,
so the floating-point sum order, and hence every number, is the same on any scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Block:
    """Rows ``start:stop`` of the shard at position ``shard`` of the training list."""

    path: str
    shard: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def plan_segments(shard_paths: list[str], shard_rows: list[int], block_rows: int,
                  segment_rows: int) -> list[list[Block]]:
    """Segments (lists of consecutive blocks) covering every row of every shard, in order.

    Block edges fall on multiples of ``block_rows``. Each shard's blocks are dealt into
    ceil(blocks / (segment_rows // block_rows)) segments of nearly equal length, so that the
    segments of a run keep the workers equally busy to the end.
    """
    if block_rows <= 0 or segment_rows <= 0:
        raise ValueError(f"block_rows={block_rows} and segment_rows={segment_rows} must be positive")
    per_segment = max(1, segment_rows // block_rows)
    segments: list[list[Block]] = []
    for shard, (path, n) in enumerate(zip(shard_paths, shard_rows)):
        blocks = [Block(str(path), shard, s, min(n, s + block_rows)) for s in range(0, n, block_rows)]
        count = -(-len(blocks) // per_segment)
        segments.extend(blocks[j * len(blocks) // count:(j + 1) * len(blocks) // count] for j in range(count))
    return segments
