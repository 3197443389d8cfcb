"""The work of one task: a segment of consecutive blocks of one shard, read and folded in order.

Each block is read (O_DIRECT where possible) and repaired one block ahead in a helper thread,
then handed to the numpy fold of ``core.fold``. No dask here; ``graph`` maps these functions
over the segments.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from ..core.fold import PassResult, PassSpec, sorted_rows
from ..core.repair import RepairCounts, repair_block
from ..core.stats import BinStats, ProductOverflow
from ..errors import ConfigError, InputError, SnrmoeError
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


def explain_overflow(block: Block, clip_flux: bool, level: float, precision: str, rows: int | None = None) -> SnrmoeError:
    """The error to raise when the products of ``block`` overflowed ``precision``: it names the row with
    the largest flux, or the largest noise (error x ``noise.level``), whichever is larger.

    rows: how many rows one product sums (default: the block's), for the bound quoted in the message.
    Reads the block again: this runs only on the way to an error.
    """
    flux, error, _ = load_block(block, clip_flux)
    flux_peak = np.abs(flux).max(axis=1, initial=0).astype(np.float64)  # (rows,)
    error_peak = error.max(axis=1, initial=0).astype(np.float64)
    with np.errstate(over="ignore"):
        noise_peak = error_peak * level
    f, e = int(flux_peak.argmax()), int(noise_peak.argmax())
    # a product sums rows x value^2: the largest magnitude that cannot overflow
    limit = float(np.sqrt(np.finfo(precision).max / max(rows or block.rows, 1)))
    fix = f"expected magnitudes below ~{limit:.0e} for {precision} products"
    if flux_peak[f] >= noise_peak[e]:
        return InputError(f"{block.path}: row {block.start + f}: flux value {flux_peak[f]:.3g} is too large: its "
                          f"{precision} products overflow; {fix}")
    where = f"{block.path} row {block.start + e}"
    if level > 1:
        return ConfigError(f"noise.level: {level:g} is too large: the noise (error x level, up to {noise_peak[e]:.3g} "
                           f"at {where}) overflows the {precision} products; {fix}")
    return InputError(f"{block.path}: row {block.start + e}: error value {error_peak[e]:.3g} is too large: the noise "
                      f"it scales overflows the {precision} products; {fix}")


def check_rows_fit(x: np.ndarray, block: Block, clip_flux: bool, level: float, precision: str) -> None:
    """Raise :func:`explain_overflow`'s error when a row of the noisy rows x (rows, D) of ``block`` has
    a squared norm outside ``precision``'s range (the test set, scored in memory)."""
    with np.errstate(over="ignore", invalid="ignore"):
        squares = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    if not (squares <= np.finfo(precision).max).all():  # NaN fails too
        raise explain_overflow(block, clip_flux, level, precision, rows=1)


@contextmanager
def _overflow_named(block: Block, spec: PassSpec) -> Iterator[None]:
    try:
        yield
    except ProductOverflow:
        raise explain_overflow(block, spec.clip_flux, spec.level, spec.precision) from None


def add_block(result: PassResult, block: Block, y: np.ndarray, table_snr: np.ndarray | None,
              spec: PassSpec, bin_idx: np.ndarray | None = None) -> None:
    """Fold one block into ``result`` in place. y, table_snr, bin_idx: (rows,) for the block's rows.

    bin_idx is given when the partition is by table columns; otherwise the rows are binned by SNR.
    Only the upper triangle of the Gram sums is updated: :func:`segment_pass` mirrors once at the end.
    """
    with _overflow_named(block, spec):
        rows, y, bins = sorted_rows(result, block.shard, block.start, load_block(block, spec.clip_flux), y, table_snr,
                                    spec, bin_idx, None)
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
            with _overflow_named(block, spec):
                x, yb, bins = sorted_rows(result, block.shard, block.start, pending.result(), y[rows],
                                           None if table_snr is None else table_snr[rows], spec,
                                           None if bin_idx is None else bin_idx[rows], out)
                if i + 1 < len(blocks):
                    pending = pool.submit(load_block, blocks[i + 1], spec.clip_flux, reader)
                result.stats.add_block(x, yb, bins, dtype=np.dtype(spec.precision), mirror=False, overwrite_x=True)
    result.stats.mirror()
    return result
