"""The work of one task: a segment of consecutive blocks of one shard, read and folded in order.

Each block is read and repaired one block ahead in a helper thread, then handed to the numpy fold of
``core.block_pass``. No dask here; ``graph`` maps these functions over the segments.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import threadpoolctl

from ..core.block_pass import PassResult, PassSpec, sorted_rows
from ..core.buffers import pass_running
from ..core.repair import Absurd, RepairCounts, repair_block
from ..core.stats import BinStats, ProductOverflow
from ..errors import ConfigError, InputError, SnrmoeError
from ..io.digest import block_digest
from ..io.shards import RowReader, prefetch
from .blocks import Block
from .sources import RowSource, ShardFile

log = logging.getLogger(__name__)


def load_block(source: RowSource, block: Block, clip_flux: bool = True, reader: RowReader | None = None,
               digests: list[bytes] | None = None, warn: bool = True) -> tuple[np.ndarray, np.ndarray, RepairCounts]:
    """Read and repair one block: flux, error (rows, D) float32, and the repair counts.

    With a ``reader`` the arrays may live in its buffers, valid until its next read. With
    ``digests``, the digest of the block's values as read (before the repairs) is appended to it.
    ``warn=False``: no warning for absurd values (for a read of rows that the pass reads again and names).
    """
    try:
        flux, error = source.read(block, reader)
    except OSError as exc:
        raise InputError(f"{source.name}: cannot read rows {block.row0}:{block.row0 + block.rows}: {exc}") from None
    if digests is not None:
        digests.append(block_digest(flux, error))
    found: list[Absurd] = []
    try:
        counts = repair_block(flux, error, clip_flux=clip_flux, found=found)
    except ValueError as exc:
        row, _, why = str(exc).partition(": ")
        where = int(row.split()[1]) + block.row0 if row.startswith("row ") else block.row0
        raise InputError(f"{source.name}: row {where}: {why or exc}") from None
    for first in found if warn else ():  # the counts reach results.json; the log names where
        n = counts.flux_absurd if first.kind == "flux" else counts.error_absurd
        log.warning("%s: row %d, pixel %d: %s value %.3g is %.2g times its row's typical %.3g: replaced by its "
                    "nearest pixel's (%d such %s values in rows %d:%d; repairs.%s_absurd)", source.name,
                    block.row0 + first.row, first.pixel, first.kind, first.value, abs(first.value) / first.typical,
                    first.typical, n, first.kind, block.row0, block.row0 + block.rows, first.kind)
    return flux, error, counts


def overflow_error(where: Callable[[int], str], flux: np.ndarray, error: np.ndarray, level: float, precision: str,
                   rows: int) -> SnrmoeError:
    """The error to raise when the products of the rows flux, error (B, D) overflowed ``precision``: it
    names the row with the largest flux, or the largest noise (error x ``noise.level``), whichever is
    larger. where(i): "<file>: row r" of row i; rows: how many rows one product sums (for the bound
    quoted in the message)."""
    flux_peak = np.abs(flux).max(axis=1, initial=0).astype(np.float64)  # (B,)
    error_peak = error.max(axis=1, initial=0).astype(np.float64)
    with np.errstate(over="ignore"):
        noise_peak = error_peak * level
    f, e = int(flux_peak.argmax()), int(noise_peak.argmax())
    # a product sums rows x value^2: the largest magnitude that cannot overflow
    limit = float(np.sqrt(np.finfo(precision).max / max(rows, 1)))
    fix = f"expected magnitudes below ~{limit:.0e} for {precision} products"
    if flux_peak[f] >= noise_peak[e]:
        return InputError(f"{where(f)}: flux value {flux_peak[f]:.3g} is too large: its {precision} products "
                          f"overflow; {fix}")
    if level > 1:
        return ConfigError(f"noise.level: {level:g} is too large: the noise (error x level, up to {noise_peak[e]:.3g} "
                           f"at {where(e)}) overflows the {precision} products; {fix}")
    return InputError(f"{where(e)}: error value {error_peak[e]:.3g} is too large: the noise it scales overflows "
                      f"the {precision} products; {fix}")


def check_rows_fit(flux: np.ndarray, error: np.ndarray, where: Callable[[int], str], level: float,
                   precision: str) -> None:
    """Raise :func:`overflow_error` when a row of the noisy flux (N, D) has a squared norm outside
    ``precision``'s range (a test set, scored in memory). error: (N, D), where(i) names row i."""
    with np.errstate(over="ignore", invalid="ignore"):
        squares = np.einsum("ij,ij->i", flux, flux, dtype=np.float64)
    if not (squares <= np.finfo(precision).max).all():  # NaN fails too
        raise overflow_error(where, flux, error, level, precision, rows=1)


@contextmanager
def _overflow_named(source: RowSource, block: Block, spec: PassSpec) -> Iterator[None]:
    """Turn a ProductOverflow of ``block`` into :func:`overflow_error`'s line (reads the block again)."""
    try:
        yield
    except ProductOverflow:
        flux, error, _ = load_block(source, block, spec.clip_flux)
        raise overflow_error(lambda i: f"{source.name}: row {block.row0 + i}", flux, error, spec.noise.level,
                             spec.precision, block.rows) from None


# A block whose centred values x - c span too wide a range for float32 products is multiplied in
# float64 whatever compute.precision says: float32 loses the small terms of a sum beside a huge one
# (relative error ~ 1e-7 x (range / spread)^2), and the card's verdict could then differ from
# float64's. Too wide: a value more than WIDE_PEAK times the typical |x - c| (the median of a 64 x 64
# sample), or a column whose mean lies more than WIDE_OFFSET times it from c (a shift c itself
# lifted by a few huge values). The demo's blocks: peaks 100 to 134, offsets 0.4 to 0.7 times it;
# one value of 1e5 times its row's flux, below the absurd-value repair, makes about 5e5 and 500.
WIDE_PEAK = 1e3
WIDE_OFFSET = 30.0
_SAMPLE = 64  # rows and pixels of the sample that gives a block's typical |x - c|


def products_dtype(x: np.ndarray, c: np.ndarray, dtype: np.dtype) -> np.dtype:
    """``dtype`` for the products of rows x (B, D) shifted by c (D,), or float64 when their range is too
    wide for it (see :data:`WIDE_PEAK`, :data:`WIDE_OFFSET`)."""
    if dtype == np.float64 or not len(x):
        return dtype
    rows, pixels = max(1, len(x) // _SAMPLE), max(1, x.shape[1] // _SAMPLE)
    typical = float(np.median(np.abs(x[::rows, ::pixels] - c[::pixels])))
    peak = max(float((x.max(axis=0) - c).max()), float((c - x.min(axis=0)).max()))
    if peak > WIDE_PEAK * typical or float(np.abs(x.mean(axis=0) - c).max()) > WIDE_OFFSET * typical:
        return np.dtype(np.float64)
    return dtype


def segment_pass(source: RowSource, blocks: list[Block], y: np.ndarray, table_snr: np.ndarray | None,
                 bin_idx: np.ndarray | None, spec: PassSpec) -> PassResult:
    """Sum a segment's blocks in order. y, table_snr, bin_idx: (rows of the segment,), the blocks' rows
    one after the other; bin_idx is given when the partition is by table columns, else rows are binned
    by their SNR. Only the upper triangles of the Gram sums are added per block, mirrored once at the end.

    A helper thread reads and repairs the next block while this one is multiplied; the two share one
    reader, whose buffers are free again once a block's rows are sorted out of them. The result's
    ``digests`` hold each block's content digest, in block order (one read is in flight at a time).
    """
    with one_blas_thread(), pass_running():
        return _fold_segment(source, blocks, y, table_snr, bin_idx, spec)


def small_shards_pass(members: list[tuple[RowSource, Block, np.ndarray, np.ndarray | None, np.ndarray | None]],
                      spec: PassSpec) -> PassResult:
    """Sum a run of small shards (engine.graph.SmallShards), each one block (source, block, y, table_snr,
    bin_idx as in :func:`segment_pass`): each block read and repaired in turn, then the run's rows as one
    block (SNR, bins, each shard's own noise) and the products of all its rows at once (``add_block``
    sorts them by bin, each bin's rows in shard order: one product per bin, not one per shard)."""
    # The files are small: the kernel reads them all at once, and the reads below come from memory, where
    # O_DIRECT would wait on the disk file after file. A file much larger than its rows (other content)
    # is fetched at its ends only.
    longest = max(block.rows for _, block, *_ in members)
    prefetch([source.name for source, *_ in members if isinstance(source, ShardFile)],
             whole_up_to=2 * longest * len(spec.c) * 8 + (1 << 20))
    reader = _buffered_reader()
    rows = sum(block.rows for _, block, *_ in members)
    with one_blas_thread(), pass_running():
        result = PassResult(BinStats.zeros(spec.bins.names, spec.c, spec.y0), spec=spec, digests=[])
        flux, error = (np.empty((rows, len(spec.c)), np.float32) for _ in range(2))
        repairs, at = RepairCounts(), 0
        for source, block, *_ in members:  # the reader's buffers hold one block: each is copied out
            f, e, counts = load_block(source, block, spec.clip_flux, reader, result.digests)
            flux[at:at + block.rows], error[at:at + block.rows] = f, e
            repairs, at = repairs + counts, at + block.rows
        x, y, bins = sorted_rows(result, [(block.shard, block.row0, block.rows) for _, block, *_ in members],
                                 (flux, error, repairs), _joined(members, 2), _joined(members, 3), spec,
                                 _joined(members, 4), None)
        del flux, error
        try:
            result.stats.add_block(x, y, bins, mirror=False,
                                   dtype=products_dtype(x, spec.c, np.dtype(spec.precision)))
        except ProductOverflow:
            raise _small_shards_overflow(members, spec) from None
        result.stats.mirror()
    return result


def _joined(members: list[tuple], i: int) -> np.ndarray | None:
    """Item ``i`` (y, table_snr or bin_idx) of a run's members, one after another; None if they have none."""
    return None if members[0][i] is None else np.concatenate([m[i] for m in members])


def _small_shards_overflow(members: list[tuple], spec: PassSpec) -> SnrmoeError:
    """:func:`overflow_error` for a run of small shards whose products overflowed, naming the file and row."""
    loaded = [load_block(source, block, spec.clip_flux)[:2] for source, block, *_ in members]
    where = [f"{source.name}: row {block.row0 + i}" for source, block, *_ in members for i in range(block.rows)]
    flux, error = (np.concatenate([part[j] for part in loaded]) for j in (0, 1))
    return overflow_error(where.__getitem__, flux, error, spec.noise.level, spec.precision, len(where))


def add_into(total: PassResult, part: PassResult, *after) -> PassResult:
    """``total += part``, a task of the pass: ``total`` is a partial sum that only this task changes (see
    ``engine.graph``; ``after``: the tasks that read it first); ``part`` does not change, and its buffer is
    reused once nobody holds it."""
    with pass_running():
        total += part
        return total


def _fold_segment(source: RowSource, blocks: list[Block], y: np.ndarray, table_snr: np.ndarray | None,
                  bin_idx: np.ndarray | None, spec: PassSpec) -> PassResult:
    reader, out = _buffers(max(b.rows for b in blocks), len(spec.c))
    dtype = np.dtype(spec.precision)
    digests: list[bytes] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="snrmoe-read") as pool:
        pending = pool.submit(load_block, source, blocks[0], spec.clip_flux, reader, digests)
        # the sums are zeroed while the first block is read: a fresh buffer's page faults overlap the read
        result = PassResult(BinStats.zeros(spec.bins.names, spec.c, spec.y0), spec=spec, digests=digests)
        at = 0
        for i, block in enumerate(blocks):
            rows = slice(at, at + block.rows)
            at += block.rows
            with _overflow_named(source, block, spec):
                x, yb, bins = sorted_rows(result, [(block.shard, block.row0, block.rows)], pending.result(), y[rows],
                                          None if table_snr is None else table_snr[rows], spec,
                                          None if bin_idx is None else bin_idx[rows], out)
                if i + 1 < len(blocks):
                    pending = pool.submit(load_block, source, blocks[i + 1], spec.clip_flux, reader,
                                          result.digests)
                result.stats.add_block(x, yb, bins, dtype=products_dtype(x, spec.c, dtype), mirror=False,
                                       overwrite_x=True)
    result.stats.mirror()
    return result


_local = threading.local()


def _buffers(rows: int, d: int) -> tuple[RowReader, np.ndarray]:
    """This thread's reader and sorted-rows buffer ((rows, D) float32), kept from one segment to the
    next: fresh buffers per segment would cost page faults on a few hundred MB each time."""
    reader, out = getattr(_local, "reader", None), getattr(_local, "out", None)
    if reader is None:
        reader = _local.reader = RowReader()
    if out is None or out.shape[1] != d or out.shape[0] < rows:
        out = _local.out = np.empty((rows, d), dtype=np.float32)
    return reader, out


def _buffered_reader() -> RowReader:
    """This thread's reader through the page cache (see :func:`small_shards_pass`)."""
    reader = getattr(_local, "buffered", None)
    if reader is None:
        reader = _local.buffered = RowReader(direct=False)
    return reader


_blas_lock = threading.Lock()
_blas_tasks = 0
_blas_limit = None  # threadpoolctl's limiter while pass tasks run
_blas_controller: threadpoolctl.ThreadpoolController | None = None


def _controller() -> threadpoolctl.ThreadpoolController:
    # found once per process: scanning the loaded libraries costs milliseconds, a small shard's whole
    # task; numpy's BLAS, the one a pass multiplies with, is loaded with numpy, before any task runs
    global _blas_controller
    if _blas_controller is None:
        _blas_controller = threadpoolctl.ThreadpoolController()
    return _blas_controller


def _take_blas_control() -> None:
    # threadpoolctl lets one thread at a time set OpenBLAS's process-wide pool (>= 3.6, non-OpenMP
    # builds) and silently ignores the others; tasks run in any thread, so the one holding the lock
    # below takes control for the change and gives it back right after.
    clear = getattr(getattr(threadpoolctl, "OpenBLASController", None), "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """One BLAS thread while any task of the pass runs in this process, whoever runs it (threads,
    processes, a cluster worker or a user's own ``compute``): a product's bits can depend on how many
    threads BLAS splits it over, and the numbers must not depend on the scheduler or the worker count.
    The BLAS thread count is process-wide, so concurrent tasks share one limit, set by the first to
    start and lifted when the last one ends."""
    global _blas_tasks, _blas_limit
    with _blas_lock:
        if _blas_tasks == 0:
            _take_blas_control()
            _blas_limit = _controller().limit(limits=1, user_api="blas")
            _take_blas_control()
        _blas_tasks += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_tasks -= 1
            if _blas_tasks == 0:
                _take_blas_control()
                _blas_limit.restore_original_limits()
                _take_blas_control()
                _blas_limit = None
