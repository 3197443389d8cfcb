"""Per-bin sufficient statistics of Ridge + StandardScaler: sums that add up exactly.

For the spectra i of bin k, with a fixed shift c (D,) and a fixed scalar y0 (docs/design.md):

    n_k = count                  s_k = sum (x_i - c)              S_k = sum (x_i - c)(x_i - c)^T
    t_k = sum (y_i - y0)         u_k = sum (x_i - c)(y_i - y0)    q_k = sum (y_i - y0)^2

Choose c close to the column means (e.g. the mean of the first block): then x - c is small
and centred, so the float32 block products lose nothing to cancellation between a large mean
and a small variance, and a constant column maps to exactly 0. c is rounded to float32 when
the statistics are created, so the float32 and float64 paths subtract exactly the same c.
Block products are computed in float32 (or float64) and always accumulated in float64.

One module, though over 500 lines: the sums, their tiles and the moments derived from them share
one centring and one storage layout, which a split would spread over modules that must change together.
"""

from __future__ import annotations

import functools
import math
import numbers
import threading
from typing import Iterator, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, InputError
from . import small_pages
from .buffers import owned_buffer
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


@functools.lru_cache(maxsize=8)
def gram_tiles(d: int) -> tuple[tuple[int, int, int, int], ...]:
    """The tiles (i0, i1, j0, j1) of a D x D Gram's upper triangle, halved recursively.

    numpy's ``x.T @ x`` does call BLAS syrk (half the flops) but then fills the lower triangle with
    a slow strided loop. Here the upper triangle is halved recursively: each off-diagonal square is
    one large matmul (few re-reads of x, at most _GRAM_TILE wide), and only the small diagonal blocks
    (_GRAM_LEAF wide, multiplied whole) compute a wasted lower half: ~52 % of the full product's flops
    at D = 4096. The tiles are disjoint and cover the upper triangle.
    """
    tiles: list[tuple[int, int, int, int]] = []

    def triangle(lo: int, hi: int) -> None:
        if hi - lo <= _GRAM_LEAF:
            tiles.append((lo, hi, lo, hi))
            return
        mid = (lo + hi) // 2
        triangle(lo, mid)
        triangle(mid, hi)
        for i in range(lo, mid, _GRAM_TILE):
            for j in range(mid, hi, _GRAM_TILE):
                tiles.append((i, min(i + _GRAM_TILE, mid), j, min(j + _GRAM_TILE, hi)))

    triangle(0, d)
    return tuple(tiles)


@functools.lru_cache(maxsize=8)
def _tile_offsets(d: int) -> np.ndarray:
    """Where each tile of :func:`gram_tiles` starts in the flat tiles of one bin, then their total."""
    return np.concatenate([[0], np.cumsum([(i1 - i0) * (j1 - j0) for i0, i1, j0, j1 in gram_tiles(d)])])


def packed_start(d: int, row: int) -> int:
    """Where row ``row`` of a D x D upper triangle starts in its packed form: the rows one after
    the other, row i holding columns i..D-1 (D (D + 1) / 2 values in all)."""
    return row * d - row * (row - 1) // 2


def _packed_runs(d: int, i0: int, i1: int, j0: int, j1: int, r0: int = 0, r1: int | None = None):
    """(row, first column, packed position) of each tile row in rows [r0, r1) that lies in the
    upper triangle: a diagonal tile's row starts on the diagonal."""
    for row in range(max(i0, r0), min(i1, d if r1 is None else r1)):
        first = max(j0, row)
        yield row, first, packed_start(d, row) + first - row


_scratch = threading.local()


def _scratch_tile(size: int, dtype: np.dtype) -> np.ndarray:
    """A flat scratch buffer of at least ``size`` values, kept per thread: a fresh one per block would
    cost the kernel a page fault and a page clear for every page of it."""
    key = f"tile_{np.dtype(dtype).name}"
    buf = getattr(_scratch, key, None)
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=dtype)
        setattr(_scratch, key, buf)
    return buf


def _add_tile_products(xb: np.ndarray, targets: Sequence[np.ndarray]) -> bool:
    """targets[t] += the tile t of :func:`gram_tiles` of xb.T @ xb (xb (rows, D)), computed in xb's
    precision through a per-thread scratch; False when a product overflowed (a non-finite diagonal:
    |S_ij| <= max(S_ii, S_jj))."""
    d = xb.shape[1]
    scratch = _scratch_tile(min(d, _GRAM_TILE) ** 2, xb.dtype)
    finite = True
    for (i0, i1, j0, j1), target in zip(gram_tiles(d), targets):
        product = scratch[:(i1 - i0) * (j1 - j0)].reshape(i1 - i0, j1 - j0)
        np.matmul(xb[:, i0:i1].T, xb[:, j0:j1], out=product)
        if i0 == j0:
            finite = finite and bool(np.isfinite(np.diagonal(product)).all())
        np.add(target, product, out=target)
    return finite


class GramTiles:
    """The Gram sums S_k of K bins while a pass accumulates them: only the upper triangle, as the
    contiguous float64 tiles of :func:`gram_tiles` (about half of K x D x D), so that each block's
    product is added to contiguous memory and partial sums add up tile by tile. :meth:`dense` gives
    the symmetric (K, D, D) matrices.
    """

    def __init__(self, k: int, d: int, data: np.ndarray | None = None, *, zero: bool = True) -> None:
        """The sums of k bins and d pixels in ``data`` (k, tile values), or in an accumulator of its own
        (see :mod:`~snrmoe_dask.core.buffers`), zeroed unless ``zero`` is False."""
        self.k, self.d, self.tiles, self.offsets = k, d, gram_tiles(d), _tile_offsets(d)
        self.data = owned_buffer(self, (k, int(self.offsets[-1])), zero) if data is None else data

    @classmethod
    def empty(cls, k: int, d: int) -> "GramTiles":
        """Tiles to be overwritten whole (a solve's problem, a loaded entry), in ordinary pages (see
        :mod:`~snrmoe_dask.core.small_pages`), not taken from the pass's pool of accumulators."""
        return cls(k, d, small_pages.empty((k, int(_tile_offsets(d)[-1]))))

    def tile(self, k: int, t: int) -> np.ndarray:
        i0, i1, j0, j1 = self.tiles[t]
        return self.data[k, self.offsets[t]:self.offsets[t + 1]].reshape(i1 - i0, j1 - j0)

    def add_products(self, k: int, xb: np.ndarray) -> bool:
        """S_k += xb.T @ xb on the tiles, for the rows xb (rows, D) of bin k, in xb's precision.

        Returns False when a product overflowed."""
        return _add_tile_products(xb, [self.tile(k, t) for t in range(len(self.tiles))])

    def add_diagonal(self, k: int, values: np.ndarray) -> None:
        """S_k += diag(values (D,))."""
        for t, (i0, i1, j0, _) in enumerate(self.tiles):
            if i0 == j0:
                tile = self.tile(k, t)
                tile[np.diag_indices(i1 - i0)] += values[i0:i1]

    def __iadd__(self, other: "GramTiles") -> "GramTiles":
        np.add(self.data, other.data, out=self.data)
        return self

    def __add__(self, other: "GramTiles") -> "GramTiles":
        """The sum in a new accumulator; neither operand changes."""
        out = GramTiles(self.k, self.d, zero=False)
        np.add(self.data, other.data, out=out.data)
        return out

    def copy(self) -> "GramTiles":
        return GramTiles(self.k, self.d, self.data.copy())

    @classmethod
    def from_packed(cls, packed: np.ndarray, d: int) -> "GramTiles":
        """The tiles of the packed upper triangles (K, D (D + 1) / 2) (:meth:`BinStats.packed_upper`),
        each diagonal tile's lower half mirrored from its upper one, as a pass leaves it."""
        tiles = cls.empty(packed.shape[0], d)
        for k in range(tiles.k):
            for t, (i0, i1, j0, j1) in enumerate(tiles.tiles):
                tile = tiles.tile(k, t)
                for row, first, at in _packed_runs(d, i0, i1, j0, j1):
                    tile[row - i0, first - j0:] = packed[k, at:at + j1 - first]
                if i0 == j0:
                    lower = _strict_lower_mask(i1 - i0)
                    tile[lower] = tile.T[lower]
        return tiles

    def dense(self) -> np.ndarray:
        """(K, D, D) the symmetric S_k: the tiles in place, their upper triangle mirrored below."""
        out = small_pages.zeros((self.k, self.d, self.d))
        for k in range(self.k):
            for t, (i0, i1, j0, j1) in enumerate(self.tiles):
                out[k, i0:i1, j0:j1] = self.tile(k, t)
            _mirror_upper(out[k])
        return out


def _float32_exact(c: np.ndarray) -> np.ndarray:
    return c.astype(np.float32).astype(np.float64)


class BinStats:
    """Sums over the spectra of K bins; see the module docstring.

    names (K,); c (D,) float64; y0 float; n (K,) int64; s (K, D); S (K, D, D); t (K,); u (K, D);
    q (K,), all float64. ``a + b`` adds two sets of statistics exactly (same names, c, y0) into new
    ones; ``+=`` adds into the left operand (for sums that nobody else holds). While a pass
    accumulates them (from :meth:`zeros`), S is held as :class:`GramTiles` (the upper triangle only);
    ``S`` gives the (K, D, D) symmetric matrices as a new array, and :meth:`upper_tiles` the held
    tiles without a copy.
    """

    def __init__(self, names: Sequence[str], c: np.ndarray, y0: float, n: np.ndarray, s: np.ndarray,
                 S: np.ndarray | GramTiles, t: np.ndarray, u: np.ndarray, q: np.ndarray) -> None:
        self.names = tuple(str(name) for name in names)
        self.c = np.asarray(c, dtype=np.float64)
        self.y0 = float(y0)
        self.n = np.asarray(n, dtype=np.int64)
        self.s, self.t, self.u, self.q = (np.asarray(a, dtype=np.float64) for a in (s, t, u, q))
        self._S = S if isinstance(S, GramTiles) else np.asarray(S, dtype=np.float64)
        k, d = len(self.names), self.c.shape[0] if self.c.ndim == 1 else -1
        expected = {"c": (d,), "n": (k,), "s": (k, d), "S": (k, d, d), "t": (k,), "u": (k, d), "q": (k,)}
        for field, shape in expected.items():
            value = self._S if field == "S" else getattr(self, field)
            got = (value.k, value.d, value.d) if isinstance(value, GramTiles) else value.shape
            if got != shape:
                raise InputError(f"BinStats: {field} has shape {got}; expected {shape} for {k} bins and {d} pixels")

    @property
    def S(self) -> np.ndarray:
        """(K, D, D) the Gram sums, symmetric: made from the held tiles on each read (the statistics
        themselves never change when read), or the dense array they hold."""
        return self._S.dense() if isinstance(self._S, GramTiles) else self._S

    def quadratic(self, bin: str | int, w: np.ndarray) -> float:
        """w^T S_k w for w (D,), from the upper tiles (no dense S): each off-diagonal tile counts twice."""
        total = 0.0
        for i0, i1, j0, j1, tile in self.upper_tiles(bin):
            value = float(w[i0:i1] @ tile @ w[j0:j1])
            total += value if i0 == j0 else 2.0 * value
        return total

    def upper_tiles(self, bin: str | int) -> Iterator[tuple[int, int, int, int, np.ndarray]]:
        """(i0, i1, j0, j1, S_k[i0:i1, j0:j1]) for the tiles of :func:`gram_tiles`, which cover S_k's
        upper triangle: views of the held tiles, or of the dense S. What a solver reads, without
        mirroring held tiles."""
        k = self.index(bin)
        tiled = isinstance(self._S, GramTiles)
        for t, (i0, i1, j0, j1) in enumerate(gram_tiles(self.d)):
            yield i0, i1, j0, j1, self._S.tile(k, t) if tiled else self._S[k, i0:i1, j0:j1]

    def gram_diagonal(self, bin: str | int) -> np.ndarray:
        """(D,) the diagonal of S_k."""
        out = np.empty(self.d)
        for i0, i1, j0, _, tile in self.upper_tiles(bin):
            if i0 == j0:
                out[i0:i1] = np.diagonal(tile)
        return out

    def packed_upper(self, bin: str | int, rows: int = 256) -> Iterator[tuple[int, np.ndarray]]:
        """(start, values): S_k's upper triangle in its packed form (:func:`packed_start`), ``rows``
        rows at a time, read from the held tiles or the dense S (never made dense). ``values`` is a
        scratch buffer, overwritten by the next piece."""
        d = self.d
        tiles = list(self.upper_tiles(bin))
        buffer = np.empty(rows * d)
        for r0 in range(0, d, rows):
            r1 = min(r0 + rows, d)
            start = packed_start(d, r0)
            for i0, i1, j0, j1, tile in tiles:
                for row, first, at in _packed_runs(d, i0, i1, j0, j1, r0, r1):
                    buffer[at - start:at - start + j1 - first] = tile[row - i0, first - j0:]
            yield start, buffer[:packed_start(d, r1) - start]

    def __repr__(self) -> str:
        return f"BinStats(names={self.names}, d={self.d}, n={self.n.tolist()})"

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
                   GramTiles(k, d), np.zeros(k), np.zeros((k, d)), np.zeros(k))

    def copy(self) -> "BinStats":
        return BinStats(self.names, self.c.copy(), self.y0, self.n.copy(), self.s.copy(), self._S.copy(),
                        self.t.copy(), self.u.copy(), self.q.copy())

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
        copy so that each bin's Gram is a few BLAS calls on contiguous rows (see :func:`gram_tiles`).
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
        for k, (a, b) in enumerate(zip(starts, stops)):
            if b == a:
                continue
            self.n[k] += b - a
            self.t[k] += e[a:b].sum()
            self.q[k] += e[a:b] @ e[a:b]
            self.s[k] += sums[k][:, 0]
            self.u[k] += sums[k][:, 1]
            with np.errstate(over="ignore", invalid="ignore"):
                finite = self._add_products(k, xs[a:b])
            if not finite:
                raise ProductOverflow(f"BinStats: the {dtype} products of bin {self.names[k]!r} overflow")
        if mirror:
            self.mirror()

    def _add_products(self, k: int, xb: np.ndarray) -> bool:
        """S_k += xb.T @ xb, upper triangle only (see :func:`gram_tiles`), in xb's precision; False when
        a product overflowed."""
        if isinstance(self._S, GramTiles):
            return self._S.add_products(k, xb)
        return _add_tile_products(xb, [self._S[k, i0:i1, j0:j1] for i0, i1, j0, j1 in gram_tiles(self.d)])

    def mirror(self) -> None:
        """Copy the upper triangle of every S_k onto its lower triangle, in place (held tiles need not:
        reading ``S`` mirrors them)."""
        if isinstance(self._S, GramTiles):
            return
        for k in range(self.n_bins):
            _mirror_upper(self._S[k])

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
            if isinstance(self._S, GramTiles):
                self._S.add_diagonal(k, added)
            else:
                self._S[k, diagonal, diagonal] += added

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
        for field in ("n", "s", "t", "u", "q"):
            np.add(getattr(self, field), getattr(other, field), out=getattr(self, field))
        if isinstance(self._S, GramTiles) and isinstance(other._S, GramTiles):
            self._S += other._S  # both upper triangles: tile by tile, half the values
        else:
            self._S = np.add(self.S, other.S, out=None if isinstance(self._S, GramTiles) else self._S)
        return self

    def __add__(self, other: "BinStats") -> "BinStats":
        """The sum in new statistics (the same numbers as ``+=``); neither operand changes."""
        self._check_compatible(other)
        if isinstance(self._S, GramTiles) and isinstance(other._S, GramTiles):
            S = self._S + other._S
        else:
            S = self.S + other.S
        return BinStats(self.names, self.c.copy(), self.y0, self.n + other.n, self.s + other.s, S,
                        self.t + other.t, self.u + other.u, self.q + other.q)

    def _combine(self, names: Sequence[str], members: Sequence[Sequence[int]]) -> "BinStats":
        def pick(a: np.ndarray) -> np.ndarray:
            # adds in member order, one bin at a time: no (members x D x D) temporary
            out = small_pages.empty((len(members), *a.shape[1:]), dtype=a.dtype)
            for i, m in enumerate(members):
                out[i] = a[m[0]]
                for j in m[1:]:
                    out[i] += a[j]
            return out

        # held tiles combine as tiles (half the values); S is then mirrored once, for the new bins only
        S = (GramTiles(len(members), self.d, pick(self._S.data)) if isinstance(self._S, GramTiles)
             else pick(self._S))
        return BinStats(tuple(names), self.c.copy(), self.y0, pick(self.n), pick(self.s), S, pick(self.t),
                        pick(self.u), pick(self.q))

    def total(self, name: str = "global") -> "BinStats":
        """One bin named ``name`` holding the sum over all bins: the global model's statistics."""
        return self._combine([name], [range(self.n_bins)])

    def total_tiles(self, name: str = "global") -> "SummedBins":
        """:meth:`total` as a solver reads it, each tile of S summed when it is read: the same values, bit
        for bit, without the summed copy of S (D x D / 2 float64)."""
        return SummedBins(self, name)

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


def _in_order(a: np.ndarray) -> np.ndarray:
    """(1, ...) the sum of ``a``'s rows added first to last, as :meth:`BinStats.total` adds them."""
    out = a[:1].copy()
    for row in a[1:]:
        out[0] += row
    return out


class SummedBins:
    """The sum over the bins of a BinStats, with what ``ScaledRidge.from_stats`` reads of one bin (n, s,
    t, u, c, y0, d, names, index, upper_tiles, gram_diagonal): the values of ``stats.total()``, bit for
    bit, each tile's rows summed as a solver reads them (:class:`RowSums`), never a summed copy of S."""

    def __init__(self, stats: BinStats, name: str) -> None:
        self._stats, self.names, self.c, self.y0, self.d = stats, (name,), stats.c, stats.y0, stats.d
        self.n, self.s, self.t, self.u = (_in_order(a) for a in (stats.n, stats.s, stats.t, stats.u))

    def index(self, bin: str | int) -> int:
        if bin not in (0, self.names[0]):
            raise ConfigError(f"unknown bin {bin!r}; expected {self.names[0]!r}")
        return 0

    def upper_tiles(self, bin: str | int) -> Iterator[tuple[int, int, int, int, "RowSums"]]:
        self.index(bin)
        for parts in zip(*(self._stats.upper_tiles(k) for k in range(self._stats.n_bins))):
            yield (*parts[0][:4], RowSums([tile for *_, tile in parts]))

    def gram_diagonal(self, bin: str | int) -> np.ndarray:
        self.index(bin)
        return _in_order(np.stack([self._stats.gram_diagonal(k) for k in range(self._stats.n_bins)]))[0]


class RowSums:
    """A tile of :class:`SummedBins`: ``tile[r0:r1]`` is rows r0:r1 of the bins' tiles added first to
    last, in a buffer that the next such read reuses."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        self._parts, self.shape, self._buffer = parts, parts[0].shape, None

    def __getitem__(self, rows: slice) -> np.ndarray:
        first = self._parts[0][rows]
        if self._buffer is None or self._buffer.size < first.size:
            self._buffer = np.empty(first.size, first.dtype)
        out = self._buffer[:first.size].reshape(first.shape)
        out[...] = first
        for part in self._parts[1:]:
            out += part[rows]
        return out
