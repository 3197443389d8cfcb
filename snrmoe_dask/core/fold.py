"""The fused numpy work on one block of training rows, folded into running per-bin sums.

SNR from the noise-free flux -> bin index -> the gate's quality features (when asked for) ->
noise (or its expected effect on the sums) -> rows sorted by bin -> per-bin products. Pure numpy:
reading the block and walking a segment of blocks is the engine's job (``engine.segment``).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from ..errors import InputError
from .noise import NoiseSpec, add_noise
from .partition import Partition
from .repair import RepairCounts
from .snr import compute_snr
from .stats import BinStats

T = TypeVar("T")


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


def sorted_rows(result: PassResult, shard: int, row0: int, loaded: tuple[np.ndarray, np.ndarray, RepairCounts],
                 y: np.ndarray, table_snr: np.ndarray | None, spec: PassSpec, bin_idx: np.ndarray | None,
                 out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Everything of one loaded block before its products: SNR, bins, the gate's features, noise (or
    its expected effect on the sums), and the rows sorted by bin into ``out`` (a new array if None).

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
        add_noise(flux, error, spec.noise.level, seed=spec.noise.seed, shard=shard, row0=row0, out=flux)
    result.repairs = result.repairs + counts
    result.snr.append(np.asarray(snr, dtype=np.float64))
    order = np.argsort(bin_idx, kind="stable")
    rows = np.take(flux, order, axis=0, out=None if out is None else out[:len(order)], mode="clip")
    return rows, y[order], np.asarray(bin_idx)[order]


# Parts are added left to right in groups of this many, then the groups in a binary tree: up to CHAIN
# parts (the usual number of shards) hold one running sum, as a plain left-to-right sum would, while
# many parts still reduce in parallel, in about log2(parts / CHAIN) + CHAIN add rounds.
CHAIN = 8


def tree_split(n: int) -> int:
    """Where the binary tree cuts n >= 2 groups: before group m, m the largest power of two < n."""
    return 1 << ((n - 1).bit_length() - 1)


def tree_sum(parts: Iterable[T], add: Callable[[T, T], T] = operator.add) -> T:
    """``parts`` added in the pass's fixed order: each run of :data:`CHAIN` consecutive parts left to right
    (a group), then the groups in a binary tree, the sum of groups[:m] plus the sum of groups[m:],
    m = tree_split(number of groups).

    The shape depends only on the number of parts, so every scheduler adds the same numbers in the same
    order (bit-identical sums), while groups and halves can be added at the same time. The parts are taken
    one at a time and at most log2(groups) + 2 partial sums are held. ``add`` may add into its left
    operand when every part is the caller's own.
    """
    total = None
    for _, total in prefix_sums(parts, add, at=lambda k, last: last):
        pass
    if total is None:
        raise InputError("no results to add up")
    return total


def prefix_sums(parts: Iterable[T], add: Callable[[T, T], T] = operator.add,
                at: Callable[[int, bool], bool] | None = None) -> Iterator[tuple[int, T]]:
    """(k, ``tree_sum(parts[:k])``) for k = 1, 2, ..., n, or the k where ``at(k, k == n)`` holds: each the
    same bits as a pass over the first k parts. The sums of first parts reuse the groups and tree blocks
    of the whole sum (the tree's nodes are the aligned blocks of a binary counter over the groups), with
    at most log2(k) adds of their own on the right edge. ``add`` must not change its right operand, nor
    its left one when prefixes other than the last are asked for."""
    stack: list[tuple[int, T]] = []  # complete groups' blocks: (groups summed, their sum), largest first
    partial, count = None, 0  # the current group's running sum
    parts = iter(parts)
    part = next(parts, _END)
    k = 0
    while part is not _END:
        following = next(parts, _END)
        k += 1
        partial = part if partial is None else add(partial, part)
        count += 1
        if count == CHAIN:
            size, value = 1, partial
            while stack and stack[-1][0] == size:
                below, left = stack.pop()
                size, value = size + below, add(left, value)
            stack.append((size, value))
            partial, count = None, 0
        if at is None or at(k, following is _END):
            yield k, fold_blocks([value for _, value in stack] + ([partial] if partial is not None else []), add)
        part = following


_END = object()


def fold_blocks(blocks: Sequence[T], add: Callable[[T, T], T] = operator.add) -> T:
    """The sum of the first parts from the partial sums that hold it (complete blocks of the tree, then the
    running group), added right to left: b1 + (b2 + (... + bj)). A single block is returned as it is."""
    total = blocks[-1]
    for left in reversed(blocks[:-1]):
        total = add(left, total)
    return total


def sum_results(parts: Sequence[PassResult]) -> PassResult:
    """The sum of per-shard results (``bin_statistics(..., per_shard=True)``) in the pass's own order:
    bit-identical to ``bin_statistics`` without ``per_shard``. ``sum(parts)`` adds left to right and
    agrees with it to rounding. The parts do not change."""
    return tree_sum(list(parts))
