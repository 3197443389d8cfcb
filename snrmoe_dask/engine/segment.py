"""The work of one task: a segment of consecutive blocks of one shard, read and folded in order.

Each block is read (O_DIRECT where possible) and repaired one block ahead in a helper thread,
then handed to the numpy fold of ``core.fold``. No dask here; ``graph`` maps these functions
over the segments.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..core.fold import PassResult, PassSpec, sorted_rows
from ..core.repair import RepairCounts, repair_block
from ..core.stats import BinStats
from ..errors import InputError
from ..io.shards import RowReader
from .blocks import Block


def load_block(block: Block, clip_flux: bool = True,
               reader: RowReader | None = None) -> tuple[np.ndarray, np.ndarray, RepairCounts]:
    """Read and repair one block: flux, error (rows, D) float32, and the repair counts.

    With a ``reader`` the arrays live in its buffers, valid until its next read.
    """
    try:
        flux, error = (reader or RowReader(reuse=False)).read(block.path, block.start, block.stop)
    except OSError as exc:
        raise InputError(f"{block.path}: cannot read rows {block.start}:{block.stop}: {exc}") from None
    try:
        counts = repair_block(flux, error, clip_flux=clip_flux)
    except ValueError as exc:
        row, _, why = str(exc).partition(": ")
        where = int(row.split()[1]) + block.start if row.startswith("row ") else block.start
        raise InputError(f"{block.path}: row {where}: {why or exc}") from None
    return flux, error, counts


def add_block(result: PassResult, block: Block, y: np.ndarray, table_snr: np.ndarray | None,
              spec: PassSpec, bin_idx: np.ndarray | None = None) -> None:
    """Fold one block into ``result`` in place. y, table_snr, bin_idx: (rows,) for the block's rows.

    bin_idx is given when the partition is by table columns; otherwise the rows are binned by SNR.
    Only the upper triangle of the Gram sums is updated: :func:`segment_pass` mirrors once at the end.
    """
    rows, y, bins = sorted_rows(result, block.shard, block.start, load_block(block, spec.clip_flux), y, table_snr, spec, bin_idx, None)
    result.stats.add_block(rows, y, bins, dtype=np.dtype(spec.precision), mirror=False, overwrite_x=True)


def segment_pass(blocks: list[Block], y: np.ndarray, table_snr: np.ndarray | None, bin_idx: np.ndarray | None,
                 spec: PassSpec) -> PassResult:
    """Sum a segment's blocks in order. y, table_snr, bin_idx: (rows of the segment,).

    A helper thread reads (O_DIRECT) and repairs the next block while this one is multiplied; the
    two share one reader, whose buffers are free again once a block's rows are sorted out of them.
    """
    result = PassResult(BinStats.zeros(spec.bins.names, spec.c, spec.y0))
    offset, reader = blocks[0].start, RowReader()
    out = np.empty((max(b.rows for b in blocks), len(spec.c)), dtype=np.float32)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="snrmoe-read") as pool:
        pending = pool.submit(load_block, blocks[0], spec.clip_flux, reader)
        for i, block in enumerate(blocks):
            rows = slice(block.start - offset, block.stop - offset)
            x, yb, bins = sorted_rows(result, block.shard, block.start, pending.result(), y[rows],
                                       None if table_snr is None else table_snr[rows], spec,
                                       None if bin_idx is None else bin_idx[rows], out)
            if i + 1 < len(blocks):
                pending = pool.submit(load_block, blocks[i + 1], spec.clip_flux, reader)
            result.stats.add_block(x, yb, bins, dtype=np.dtype(spec.precision), mirror=False, overwrite_x=True)
    result.stats.mirror()
    return result
