"""The fused work on one block of training rows, and the running sum over a segment.

Pure numpy plus one HDF5 read per block, done one block ahead in a helper thread: read -> repair
(clip flux, fix error) -> SNR from the noise-free flux -> bin index -> noise -> per-bin products.
No dask here; ``graph`` maps these functions over the segments.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .blocks import Block
from .errors import InputError
from .io import RowReader
from .noise import add_noise
from .repair import RepairCounts, repair_block
from .snr import Bins, compute_snr
from .stats import BinStats


@dataclass(frozen=True)
class PassSpec:
    """Everything a block task needs besides its rows: small, picklable, hashable into cache keys."""

    bins: Bins  # the partition: names and assign(snr); column partitions pass bin_idx per row instead
    snr_method: str  # norm | median | column
    level: float  # noise level
    seed: int  # training noise seed
    c: np.ndarray  # (D,) shift of the products, close to the column means
    y0: float  # shift of the target
    clip_flux: bool = True
    precision: str = "float32"  # dtype of the block products; accumulation is always float64
    noise_mode: str = "sample"  # sample: draw noise; expected: add its expectation to the statistics
    features: bool = False  # also keep the gate's quality features of every row


@dataclass
class PassResult:
    """Sums over some training rows: per-bin statistics, repair counts, and per-row values
    (SNR and, when asked for, the gate's quality features) of every row, in row order."""

    stats: BinStats
    repairs: RepairCounts = field(default_factory=RepairCounts)
    snr: list[np.ndarray] = field(default_factory=list)  # (rows,) per block
    features: list[np.ndarray] = field(default_factory=list)  # (rows, F) per block; empty when not asked for

    def __iadd__(self, other: "PassResult") -> "PassResult":
        self.stats += other.stats
        self.repairs = self.repairs + other.repairs
        self.snr.extend(other.snr)
        self.features.extend(other.features)
        return self

    @property
    def snr_values(self) -> np.ndarray:
        """(N,) SNR of every row summed so far, in training order."""
        return np.concatenate(self.snr) if self.snr else np.empty(0)

    @property
    def feature_values(self) -> np.ndarray | None:
        """(N, F) quality features of every row summed so far, or None when none were computed."""
        return np.concatenate(self.features) if self.features else None


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


def _sorted_rows(result: PassResult, block: Block, loaded: tuple[np.ndarray, np.ndarray, RepairCounts],
                 y: np.ndarray, table_snr: np.ndarray | None, spec: PassSpec, bin_idx: np.ndarray | None,
                 out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Everything of one loaded block before its products: SNR, bins, the gate's features, noise (or
    its expected effect on the sums), and the rows sorted by bin into ``out`` (a new array if None).

    Returns (rows (B, D) float32, y (B,), bins (B,)), sorted by bin; the block's flux and error are
    not needed after this, so the next block may be read into their buffers.
    """
    flux, error, counts = loaded
    snr = compute_snr(spec.snr_method, flux, error, spec.level, table_snr)
    if bin_idx is None:
        bin_idx = spec.bins.assign(snr)
    if spec.features:
        from .gate import quality_features

        result.features.append(quality_features(error))
    if spec.noise_mode == "expected":
        result.stats.add_noise_variance(error, bin_idx, spec.level)
    else:
        add_noise(flux, error, spec.level, seed=spec.seed, shard=block.shard, row0=block.start, out=flux)
    result.repairs = result.repairs + counts
    result.snr.append(np.asarray(snr, dtype=np.float64))
    order = np.argsort(bin_idx, kind="stable")
    rows = np.take(flux, order, axis=0, out=None if out is None else out[:len(order)], mode="clip")
    return rows, y[order], np.asarray(bin_idx)[order]


def add_block(result: PassResult, block: Block, y: np.ndarray, table_snr: np.ndarray | None,
              spec: PassSpec, bin_idx: np.ndarray | None = None) -> None:
    """Fold one block into ``result`` in place. y, table_snr, bin_idx: (rows,) for the block's rows.

    bin_idx is given when the partition is by table columns; otherwise the rows are binned by SNR.
    Only the upper triangle of the Gram sums is updated: :func:`segment_pass` mirrors once at the end.
    """
    rows, y, bins = _sorted_rows(result, block, load_block(block, spec.clip_flux), y, table_snr, spec, bin_idx, None)
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
            x, yb, bins = _sorted_rows(result, block, pending.result(), y[rows],
                                       None if table_snr is None else table_snr[rows], spec,
                                       None if bin_idx is None else bin_idx[rows], out)
            if i + 1 < len(blocks):
                pending = pool.submit(load_block, blocks[i + 1], spec.clip_flux, reader)
            result.stats.add_block(x, yb, bins, dtype=np.dtype(spec.precision), mirror=False, overwrite_x=True)
    result.stats.mirror()
    return result
