"""Per-bin sufficient statistics of Ridge + StandardScaler: sums that add up exactly.

For the spectra i of bin k, with a fixed shift c (D,) and a fixed scalar y0 (DESIGN.md):

    n_k = count                  s_k = sum (x_i - c)              S_k = sum (x_i - c)(x_i - c)^T
    t_k = sum (y_i - y0)         u_k = sum (x_i - c)(y_i - y0)    q_k = sum (y_i - y0)^2

Choose c close to the column means (e.g. the mean of the first block): then x - c is small
and centred, so the float32 block products lose nothing to cancellation between a large mean
and a small variance, and a constant column maps to exactly 0. c is rounded to float32 when
the statistics are created, so the float32 and float64 paths subtract exactly the same c.
Block products are computed in float32 (or float64) and always accumulated in float64.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..errors import ConfigError, InputError
from .noise import check_level

ARRAYS = ("c", "n", "s", "S", "t", "u", "q")  # the stored fields, in order
# Tile edge of the upper -> lower triangle copy: small tiles keep the transposed reads in cache.
_MIRROR_TILE = 64
# Diagonal blocks of the Gram up to this many columns are multiplied whole (their lower halves are
# the only wasted flops: 1/32 at D = 4096); larger triangles are split in two. 128 beat 256 and 512
# by 3-5 % with OpenBLAS's AVX-512 kernels and tied with its AVX2 ones (2 threads, ~1200 rows a bin).
_GRAM_LEAF = 128
# The largest product tile, which bounds the float32 scratch buffer (16 MiB) for any D.
_GRAM_TILE = 2048


class ProductOverflow(InputError):
    """The block's values are too large for its products in their precision: a sum came out NaN or
    inf. The engine, which knows the file and rows, re-raises it naming the cause."""


@functools.lru_cache(maxsize=4)
def _strict_lower_mask(size: int) -> np.ndarray:
    return np.tri(size, k=-1, dtype=bool)


def _mirror_upper(g: np.ndarray) -> None:
    """Copy the upper triangle of the square C-contiguous g onto its lower triangle, in place."""
    d = g.shape[0]
    for i in range(0, d, _MIRROR_TILE):
        i1 = min(i + _MIRROR_TILE, d)
        diag = g[i:i1, i:i1]
        np.copyto(diag, diag.T, where=_strict_lower_mask(i1 - i))
        for j in range(i1, d, _MIRROR_TILE):
            j1 = min(j + _MIRROR_TILE, d)
            np.copyto(g[j:j1, i:i1], g[i:i1, j:j1].T)


def _add_gram_upper(xb: np.ndarray, acc: np.ndarray, buf: np.ndarray) -> None:
    """acc (D, D) float64 += xb.T @ xb for xb (rows, D), on and above the diagonal only.

    numpy's ``xb.T @ xb`` does call BLAS syrk (half the flops) but then fills the lower triangle
    with a slow strided loop, and a full D x D product would be added to the float64 sum on every
    block. Here the upper triangle is halved recursively: each off-diagonal square is one large
    GIL-free matmul (few re-reads of xb), and only the small diagonal blocks compute a wasted lower
    half (~52 % of the gemm flops at D = 4096). The lower triangle of ``acc`` is left stale: see
    :meth:`BinStats.mirror`. buf: flat scratch of xb's dtype, min(D, _GRAM_TILE)**2 elements at least.
    """
    _add_triangle(xb, acc, buf, 0, xb.shape[1])


def _add_triangle(xb: np.ndarray, acc: np.ndarray, buf: np.ndarray, lo: int, hi: int) -> None:
    if hi - lo <= _GRAM_LEAF:
        _add_product(xb, acc, buf, lo, hi, lo, hi)
        return
    mid = (lo + hi) // 2
    _add_triangle(xb, acc, buf, lo, mid)
    _add_triangle(xb, acc, buf, mid, hi)
    for i in range(lo, mid, _GRAM_TILE):
        for j in range(mid, hi, _GRAM_TILE):
            _add_product(xb, acc, buf, i, min(i + _GRAM_TILE, mid), j, min(j + _GRAM_TILE, hi))


def _add_product(xb: np.ndarray, acc: np.ndarray, buf: np.ndarray, i0: int, i1: int, j0: int, j1: int) -> None:
    """acc[i0:i1, j0:j1] += xb[:, i0:i1].T @ xb[:, j0:j1], through a contiguous tile of buf."""
    tile = buf[:(i1 - i0) * (j1 - j0)].reshape(i1 - i0, j1 - j0)
    np.matmul(xb[:, i0:i1].T, xb[:, j0:j1], out=tile)
    target = acc[i0:i1, j0:j1]
    np.add(target, tile, out=target)


def _float32_exact(c: np.ndarray) -> np.ndarray:
    return c.astype(np.float32).astype(np.float64)


@dataclass(eq=False)
class BinStats:
    """Sums over the spectra of K bins; see the module docstring.

    names (K,); c (D,) float64; y0 float; n (K,) int64; s (K, D); S (K, D, D); t (K,); u (K, D);
    q (K,), all float64. ``+`` and ``+=`` add two sets of statistics exactly (same names, c, y0).
    """

    names: tuple[str, ...]
    c: np.ndarray
    y0: float
    n: np.ndarray
    s: np.ndarray
    S: np.ndarray
    t: np.ndarray
    u: np.ndarray
    q: np.ndarray

    def __post_init__(self):
        self.names = tuple(str(name) for name in self.names)
        self.c = np.asarray(self.c, dtype=np.float64)
        self.y0 = float(self.y0)
        self.n = np.asarray(self.n, dtype=np.int64)
        for field in ("s", "S", "t", "u", "q"):
            setattr(self, field, np.asarray(getattr(self, field), dtype=np.float64))
        k, d = len(self.names), self.c.shape[0] if self.c.ndim == 1 else -1
        expected = {"c": (d,), "n": (k,), "s": (k, d), "S": (k, d, d), "t": (k,), "u": (k, d), "q": (k,)}
        for field, shape in expected.items():
            if getattr(self, field).shape != shape:
                raise InputError(f"BinStats: {field} has shape {getattr(self, field).shape}; expected {shape} "
                                 f"for {k} bins and {d} pixels")

    # ------------------------------------------------------------------------- construction
    @classmethod
    def zeros(cls, names: Sequence[str], c: np.ndarray, y0: float) -> "BinStats":
        """Empty statistics for bins ``names`` with shift c (D,) (rounded to float32) and y0."""
        names = tuple(names)
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"BinStats: expected distinct bin names, got {names!r}")
        c = np.asarray(c, dtype=np.float64)
        if c.ndim != 1 or not np.isfinite(c).all():
            raise InputError(f"BinStats: the shift c must be a finite 1-D array (D,), got shape {c.shape}")
        if not math.isfinite(y0):
            raise InputError(f"BinStats: y0 must be finite, got {y0!r}")
        k, d = len(names), c.shape[0]
        return cls(names, _float32_exact(c), float(y0), np.zeros(k, np.int64), np.zeros((k, d)),
                   np.zeros((k, d, d)), np.zeros(k), np.zeros((k, d)), np.zeros(k))

    def copy(self) -> "BinStats":
        return BinStats(self.names, self.c.copy(), self.y0, *(getattr(self, f).copy() for f in ARRAYS[1:]))

    @property
    def n_bins(self) -> int:
        return len(self.names)

    @property
    def d(self) -> int:
        return self.c.shape[0]

    def index(self, bin: str | int) -> int:
        """Position of a bin given by name or position."""
        if isinstance(bin, str):
            if bin not in self.names:
                raise ConfigError(f"unknown bin {bin!r}; expected one of {', '.join(self.names)}")
            return self.names.index(bin)
        if isinstance(bin, numbers.Integral) and not isinstance(bin, bool) and 0 <= bin < self.n_bins:
            return int(bin)
        raise ConfigError(f"bin {bin!r}: expected a name in {self.names} or a position 0..{self.n_bins - 1}")

    # ------------------------------------------------------------------------- accumulation
    def _check_rows(self, x: np.ndarray, bin_idx: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float32)
        if x.ndim != 2 or x.shape[1] != self.d:
            raise InputError(f"BinStats: {what} has shape {x.shape}; expected (B, {self.d})")
        bin_idx = np.asarray(bin_idx)
        if bin_idx.shape != (x.shape[0],) or not np.issubdtype(bin_idx.dtype, np.integer):
            raise InputError(f"BinStats: bin_idx must be integers of shape ({x.shape[0]},), "
                             f"got {bin_idx.dtype} {bin_idx.shape}")
        if len(bin_idx) and (bin_idx.min() < 0 or bin_idx.max() >= self.n_bins):
            raise InputError(f"BinStats: bin_idx must lie in 0..{self.n_bins - 1}, "
                             f"got {bin_idx.min()}..{bin_idx.max()}")
        return x, bin_idx.astype(np.intp, copy=False)

    def add_block(self, x: np.ndarray, y: np.ndarray, bin_idx: np.ndarray, dtype=np.float32,
                  mirror: bool = True, overwrite_x: bool = False) -> None:
        """Add the rows of x (B, D) (noisy flux), y (B,) and their bins bin_idx (B,) in place.

        The products (x - c) and (x - c)^T (x - c) are computed in ``dtype`` (float32 or float64)
        and added to the float64 sums. Rows not already sorted by bin are sorted into one (B, D)
        copy so that each bin's Gram is a few BLAS calls on contiguous rows (see ``_add_gram_upper``).
        ``overwrite_x=True`` lets rows that are already sorted, and of ``dtype``, be shifted in place.

        With ``mirror=False`` only the upper triangle of S is updated; call :meth:`mirror` once
        after the last block (the running sum over a segment does this, to add each product once).
        """
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ConfigError(f"compute.precision: expected float32 or float64, got {dtype}")
        x, bin_idx = self._check_rows(x, bin_idx, "x")
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (x.shape[0],):
            raise InputError(f"BinStats: y has shape {y.shape}; expected ({x.shape[0]},)")
        if not np.isfinite(y).all():
            raise InputError(f"BinStats: {np.count_nonzero(~np.isfinite(y))} target values are NaN or inf")
        if x.shape[0] == 0:
            return
        counts = np.bincount(bin_idx, minlength=self.n_bins)
        c = self.c.astype(dtype)
        if np.all(bin_idx[1:] >= bin_idx[:-1]):
            in_place = overwrite_x and x.dtype == dtype and x.flags.writeable
            xs = np.subtract(x, c, out=x) if in_place else np.subtract(x, c, dtype=dtype)
            e = y - self.y0
        else:
            order = np.argsort(bin_idx, kind="stable")
            xs = x[order]
            if xs.dtype == dtype:
                np.subtract(xs, c, out=xs)
            else:
                xs = np.subtract(xs, c, dtype=dtype)
            e = y[order] - self.y0
        # Column sums and x-y products of every bin first, so NaN/inf in x fails before any change.
        ones_e = np.empty((len(e), 2), dtype=dtype)
        ones_e[:, 0] = 1
        ones_e[:, 1] = e
        stops = np.cumsum(counts)
        starts = stops - counts
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked and explained below
            sums = [xs[a:b].T @ ones_e[a:b] if b > a else None for a, b in zip(starts, stops)]
        if not all(r is None or np.isfinite(r).all() for r in sums):
            raise ProductOverflow("BinStats: x holds NaN or inf values (non-finite rows, or sums that overflow "
                                  f"{dtype})")
        buf = np.empty(min(self.d, _GRAM_TILE) ** 2, dtype=dtype)
        for k, (a, b) in enumerate(zip(starts, stops)):
            if b == a:
                continue
            self.n[k] += b - a
            self.t[k] += e[a:b].sum()
            self.q[k] += e[a:b] @ e[a:b]
            self.s[k] += sums[k][:, 0]
            self.u[k] += sums[k][:, 1]
            with np.errstate(over="ignore", invalid="ignore"):
                _add_gram_upper(xs[a:b], self.S[k], buf)
            # |S_ij| <= max(S_ii, S_jj): a finite diagonal means no product of the block overflowed
            if not np.isfinite(np.diagonal(self.S[k])).all():
                raise ProductOverflow(f"BinStats: the {dtype} products of bin {self.names[k]!r} overflow")
        if mirror:
            self.mirror()

    def mirror(self) -> None:
        """Copy the upper triangle of every S_k onto its lower triangle, in place."""
        for k in range(self.n_bins):
            _mirror_upper(self.S[k])

    def add_noise_variance(self, error: np.ndarray, bin_idx: np.ndarray, level: float) -> None:
        """Add the expected effect of noise ``z * error * level`` on the sums, in place.

        With z ~ N(0, 1) independent of everything, only S changes in expectation:
        S_k += diag(level^2 * sum_i error_i^2) over the rows of bin k. error: (B, D), bin_idx (B,).
        """
        error, bin_idx = self._check_rows(error, bin_idx, "error")
        level = check_level(level)
        for k in np.unique(bin_idx):
            rows = error[bin_idx == k]
            variance = np.einsum("ij,ij->j", rows, rows, dtype=np.float64)
            diagonal = np.arange(self.d)
            with np.errstate(over="ignore", invalid="ignore"):
                added = np.float64(level) ** 2 * variance
            if not np.isfinite(added).all():
                raise ProductOverflow(f"BinStats: the expected noise variance (level {level:g}) overflows float64")
            self.S[k, diagonal, diagonal] += added

    # ------------------------------------------------------------------------- algebra
    def _check_compatible(self, other) -> None:
        if not isinstance(other, BinStats):
            raise TypeError(f"cannot add BinStats and {type(other).__name__}")
        if other.names != self.names:
            raise InputError(f"BinStats: cannot add statistics of bins {other.names} to bins {self.names}")
        if other.d != self.d:
            raise InputError(f"BinStats: cannot add statistics of {other.d} pixels to {self.d} pixels")
        if other.y0 != self.y0 or not np.array_equal(other.c, self.c):
            raise InputError("BinStats: cannot add statistics with different shifts c or y0")

    def __iadd__(self, other: "BinStats") -> "BinStats":
        self._check_compatible(other)
        for field in ARRAYS[1:]:
            np.add(getattr(self, field), getattr(other, field), out=getattr(self, field))
        return self

    def __add__(self, other: "BinStats") -> "BinStats":
        self._check_compatible(other)
        out = self.copy()
        out += other
        return out

    def _combine(self, names: Sequence[str], members: Sequence[Sequence[int]]) -> "BinStats":
        def pick(a: np.ndarray) -> np.ndarray:
            return np.stack([a[list(m)].sum(axis=0) for m in members])

        return BinStats(tuple(names), self.c.copy(), self.y0, *(pick(getattr(self, f)) for f in ARRAYS[1:]))

    def total(self, name: str = "global") -> "BinStats":
        """One bin named ``name`` holding the sum over all bins: the global model's statistics."""
        return self._combine([name], [range(self.n_bins)])

    def select(self, names: Sequence[str]) -> "BinStats":
        """The bins ``names``, in that order."""
        names = list(names)
        if len(set(names)) != len(names):
            raise ConfigError(f"bins {names}: a bin is listed twice")
        return self._combine(names, [[self.index(name)] for name in names])

    def merge(self, groups: Mapping[str, Sequence[str]]) -> "BinStats":
        """New bins, each the sum of a group of bins, e.g. ``{"HM": ["H", "M"], "L": ["L"]}``."""
        members, seen = [], {}
        for new, group in groups.items():
            if isinstance(group, str) or not group:
                raise ConfigError(f"merge {new!r}: expected a non-empty list of bin names, got {group!r}")
            idx = [self.index(name) for name in group]
            for name in group:
                if name in seen:
                    raise ConfigError(f"merge: bin {name!r} is in both {seen[name]!r} and {new!r}")
                seen[name] = new
            members.append(idx)
        return self._combine(list(groups), members)
