"""One pass over the training blocks, in numpy: what it is asked (``PassSpec``), what it sums
(``PassResult``), and the fused work on one block before its products (``sorted_rows``).

SNR from the noise-free flux -> bin index -> the gate's quality features (when asked for) ->
noise (or its expected effect on the sums) -> rows sorted by bin -> per-bin products. Pure numpy:
reading the block and walking a segment of blocks is the engine's job (``engine.segment``); the fixed
order in which partial results are added is ``core.sum_order``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Sequence

import numpy as np

from ..errors import InputError
from .noise import NoiseSpec, add_noise
from .partition import Partition
from .repair import RepairCounts
from .snr import compute_snr
from .stats import BinStats
from .sum_order import tree_sum


@dataclass(frozen=True)
class PassSpec:
    """Everything a block task needs besides its rows: small, picklable, hashable into cache keys."""

    bins: Partition  # the experts' cells; column partitions pass bin_idx per row, SNR ones assign(snr)
    snr_method: str  # norm | median | column
    noise: NoiseSpec  # level, seed and mode of the training noise
    c: np.ndarray  # (D,) shift of the products, close to the column means
    y0: float  # shift of the target
    clip_flux: bool = True
    precision: str = "float32"  # dtype of the block products; accumulation is always float64
    features: bool = False  # also keep the gate's quality features of every row

    def mismatch(self, other: "PassSpec") -> str | None:
        """The first field in which two passes differ (their sums must not be added), or None."""
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            same = np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
            if not same:
                return f.name
        return None


@dataclass
class PassResult:
    """Sums over some spectra: per-bin statistics, repair counts, and per-row values (SNR and, when
    asked for, the gate's quality features) of every row, in the order of the pass.

    spec: the pass that made them (None for sums built by hand); it tells a model fitted on them how
    to bin, noise and measure the SNR of other spectra the same way.
    digests: a digest of the raw flux and error of every block read (``io.digest.block_digest``), in
    the order of the pass; the statistics cache stores them to tell later whether a shard changed.
    """

    stats: BinStats
    repairs: RepairCounts = field(default_factory=RepairCounts)
    snr: list[np.ndarray] = field(default_factory=list)  # (rows,) per block
    features: list[np.ndarray] = field(default_factory=list)  # (rows, F) per block; empty when not asked for
    spec: PassSpec | None = None
    digests: list[bytes] = field(default_factory=list)  # per block read, in order: its content digest

    def _spec_of_sum(self, other: "PassResult") -> PassSpec | None:
        if not isinstance(other, PassResult):
            raise TypeError(f"cannot add PassResult and {type(other).__name__}")
        if self.spec is not None and other.spec is not None:
            field_name = self.spec.mismatch(other.spec)
            if field_name is not None:
                raise InputError(f"cannot add the results of two different passes: their {field_name!r} differs "
                                 "(results to be added must come from one bin_statistics specification and shift)")
        return self.spec if self.spec is not None else other.spec

    def __add__(self, other: "PassResult") -> "PassResult":
        """Statistics over the rows of both, in new objects (``self``'s rows first); neither operand
        changes. Both must come from the same pass specification (bins, noise, SNR, shift, ...)."""
        spec = self._spec_of_sum(other)
        return PassResult(self.stats + other.stats, self.repairs + other.repairs, self.snr + other.snr,
                          self.features + other.features, spec, self.digests + other.digests)

    def __radd__(self, other: "PassResult | int") -> "PassResult":
        # sum(results) starts from 0
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    def __iadd__(self, other: "PassResult") -> "PassResult":
        """Add ``other`` into these statistics (for a running sum that nobody else holds)."""
        self.spec = self._spec_of_sum(other)
        self.stats += other.stats
        self.repairs = self.repairs + other.repairs
        self.snr = self.snr + other.snr
        self.features = self.features + other.features
        self.digests = self.digests + other.digests
        return self

    @property
    def snr_values(self) -> np.ndarray:
        """(N,) SNR of every row summed so far, in training order."""
        return np.concatenate(self.snr) if self.snr else np.empty(0)

    @property
    def feature_values(self) -> np.ndarray | None:
        """(N, F) quality features of every row summed so far, or None when none were computed."""
        return np.concatenate(self.features) if self.features else None


def sorted_rows(result: PassResult, pieces: Sequence[tuple[int, int, int]],
                loaded: tuple[np.ndarray, np.ndarray, RepairCounts], y: np.ndarray, table_snr: np.ndarray | None,
                spec: PassSpec, bin_idx: np.ndarray | None,
                out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Everything of one loaded block before its products: SNR, bins, the gate's features, noise (or
    its expected effect on the sums), and the rows sorted by bin into ``out`` (a new array if None).

    ``pieces``: where the block's rows come from, one after another, as (shard, first row, rows): one
    piece for a block of one shard, several for a run of small shards. Each piece's noise is drawn from
    its own shard and rows.

    Returns (rows (B, D) float32, y (B,), bins (B,)), sorted by bin; the block's flux and error are
    not needed after this, so the next block may be read into their buffers.
    """
    flux, error, counts = loaded
    snr = compute_snr(spec.snr_method, flux, error, spec.noise.level, table_snr)
    if bin_idx is None:
        bin_idx = spec.bins.assign(snr)
    if spec.features:
        from .gate import quality_features

        result.features.append(quality_features(error))
    if spec.noise.mode == "expected":
        result.stats.add_noise_variance(error, bin_idx, spec.noise.level)
    elif spec.noise.mode == "sample":
        at = 0
        for shard, first, rows in pieces:
            part = slice(at, at + rows)
            add_noise(flux[part], error[part], spec.noise.level, seed=spec.noise.seed, shard=shard, row0=first,
                      out=flux[part])
            at += rows
    result.repairs = result.repairs + counts
    result.snr.append(np.asarray(snr, dtype=np.float64))
    order = np.argsort(bin_idx, kind="stable")
    rows = np.take(flux, order, axis=0, out=None if out is None else out[:len(order)], mode="clip")
    return rows, y[order], np.asarray(bin_idx)[order]


def sum_results(parts: Sequence[PassResult]) -> PassResult:
    """The sum of per-shard results (``bin_statistics(..., per_shard=True)``) in the pass's own order:
    bit-identical to ``bin_statistics`` without ``per_shard`` when no shard is smaller than a block (runs
    of smaller ones are summed together there; equal to rounding). ``sum(parts)`` adds left to right and
    agrees with it to rounding. The parts do not change."""
    return tree_sum(list(parts))
