"""Per-spectrum SNR (from the noise-free flux) and the SNR bins that route spectra to experts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..errors import ConfigError, InputError
from .noise import check_level
from .params import check_number

SNR_METHODS = ("norm", "median", "column")
# Rows per chunk of the median method: bounds its float64 temporaries to ~32 MiB at D = 4096.
_MEDIAN_CHUNK_ROWS = 1024


def _check_pair(flux, error) -> tuple[np.ndarray, np.ndarray]:
    flux, error = np.asarray(flux), np.asarray(error)
    if flux.ndim != 2 or error.shape != flux.shape:
        raise InputError(f"SNR: flux {flux.shape} and error {error.shape} must be 2-D of the same shape (B, D)")
    return flux, error


def _row_norm(a: np.ndarray) -> np.ndarray:
    # float64 accumulation: a float32 sum of 4096 squares would move SNRs near a bin edge.
    return np.sqrt(np.einsum("ij,ij->i", a, a, dtype=np.float64))


def snr_norm(flux: np.ndarray, error: np.ndarray, level: float = 1.0) -> np.ndarray:
    """(B,) float64 ``||flux|| / (||error|| * level)``, L2 norms over the pixels of each row (B, D)."""
    flux, error = _check_pair(flux, error)
    level = check_level(level)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _row_norm(flux) / (_row_norm(error) * level)


def snr_median(flux: np.ndarray, error: np.ndarray, level: float = 1.0) -> np.ndarray:
    """(B,) float64 ``median(flux / error) / level`` over the pixels of each row (B, D)."""
    flux, error = _check_pair(flux, error)
    level = check_level(level)
    out = np.empty(flux.shape[0], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(0, flux.shape[0], _MEDIAN_CHUNK_ROWS):
            rows = slice(i, i + _MEDIAN_CHUNK_ROWS)
            ratio = np.divide(flux[rows], error[rows], dtype=np.float64)
            out[rows] = np.median(ratio, axis=1)
    return out / level


def snr_column(table_snr: np.ndarray, level: float = 1.0) -> np.ndarray:
    """(B,) float64 the params table's ``snr`` (SNR at noise level 1) divided by the level."""
    table_snr = np.asarray(table_snr, dtype=np.float64)
    if table_snr.ndim != 1:
        raise InputError(f"SNR: the table's snr column must be 1-D, got shape {table_snr.shape}")
    return table_snr / check_level(level)


def compute_snr(method: str, flux: np.ndarray, error: np.ndarray, level: float,
                table_snr: np.ndarray | None = None) -> np.ndarray:
    """(B,) float64 SNR of each row by ``method``: norm | median | column (the table's snr / level)."""
    if method == "norm":
        return snr_norm(flux, error, level)
    if method == "median":
        return snr_median(flux, error, level)
    if method == "column":
        if table_snr is None:
            raise ConfigError("snr.method: 'column' needs the params table's 'snr' column, which is missing")
        snr = snr_column(table_snr, level)
        if flux is not None and len(snr) != len(flux):
            raise InputError(f"SNR: the snr column has {len(snr)} rows but the flux has {len(flux)}")
        return snr
    raise ConfigError(f"snr.method: unknown method {method!r}; expected one of {', '.join(SNR_METHODS)}")


# ----------------------------------------------------------------------------- bins
_INF_SPELLINGS = ("inf", ".inf", "infinity")
# Names that share a namespace with the bin names in the results: metrics.nc's bin coordinate
# ("overall"), models.h5's groups and the alpha curves ("global"), the models of results.json.
RESERVED_NAMES = ("overall", "global", "oracle", "deployed", "noisy_snr_routed")


def check_bin_name(name: object, key: str) -> str:
    """``name`` when it can name a bin in every output; else ConfigError naming ``key``.

    Refused: a non-string or empty name, a reserved name (case-insensitive), and names that are
    not valid HDF5 group names or one-line text: "/" (a path separator), "." or "..", control
    characters.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{key}: bin names must be non-empty strings, got {name!r}")
    if name.lower() in RESERVED_NAMES:
        raise ConfigError(f"{key}: bin name {name!r} is reserved (the results name their aggregates and models "
                          f"{', '.join(RESERVED_NAMES)}); choose another name")
    if "/" in name or name in (".", "..") or not name.isprintable():
        raise ConfigError(f"{key}: bin name {name!r} cannot name an HDF5 group or a line of text; "
                          "expected printable characters without '/' (and not '.' or '..')")
    return name


def _edge(key: str, name: str, value, *, upper: bool) -> float:
    # None is an open end: +inf as a high edge, -inf as a low edge
    if value is None:
        return math.inf if upper else -math.inf
    if isinstance(value, str):
        text = value.strip().lower()
        if text.lstrip("+") in _INF_SPELLINGS:
            return math.inf
        if text.startswith("-") and text[1:] in _INF_SPELLINGS:
            return -math.inf
    return check_number(f"{key}: bin {name!r} edge", value, "a number or 'inf'", test=lambda v: not math.isnan(v))


def _fmt(low: float, high: float) -> str:
    return f"[{low:g}, {high:g})"


@dataclass(frozen=True, eq=False)
class Bins:
    """Named half-open intervals [low, high) with no gap and no overlap, in the user's order.

    SNR bins tile [0, inf); bins on another column (``half_line=False``) may cover any contiguous
    range, e.g. [-inf, 0.5) for [M/H]. names: (K,) bin names; low, high: (K,) float64 edges
    (low may be -inf, high may be inf).
    """

    names: tuple[str, ...]
    low: np.ndarray
    high: np.ndarray

    def __post_init__(self):
        for field in ("low", "high"):
            edges = np.array(getattr(self, field), dtype=np.float64)
            edges.setflags(write=False)
            object.__setattr__(self, field, edges)
        object.__setattr__(self, "names", tuple(self.names))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Sequence[float]] | Sequence[tuple[str, Sequence[float]]],
                     key: str = "snr.bins", *, half_line: bool = True) -> "Bins":
        """Bins from ``{name: [low, high]}`` (or a sequence of (name, [low, high]) pairs).

        high may be inf, "inf", ".inf" or None. The bins must have no gap and no overlap, in any
        listed order; with ``half_line`` (SNR) they must also tile [0, inf) exactly, without it
        they may cover any contiguous range and low may be -inf ("-inf", "-.inf", None).
        Otherwise a ConfigError names ``key`` and the offending bins.
        """
        items = list(mapping.items()) if isinstance(mapping, Mapping) else list(mapping)
        if not items:
            raise ConfigError(f"{key}: no bins given; expected e.g. {{X: [0, 2], L: [2, inf]}}")
        names, lows, highs = [], [], []
        for item in items:
            try:
                name, edges = item
            except (TypeError, ValueError):
                raise ConfigError(f"{key}: expected name: [low, high] entries, got {item!r}") from None
            check_bin_name(name, key)
            if name in names:
                raise ConfigError(f"{key}: duplicate bin name {name!r}")
            if isinstance(edges, np.ndarray):
                edges = edges.tolist()
            if isinstance(edges, (str, bytes)) or not isinstance(edges, Sequence) or len(edges) != 2:
                raise ConfigError(f"{key}: bin {name!r} must be [low, high], got {edges!r}")
            low, high = _edge(key, name, edges[0], upper=False), _edge(key, name, edges[1], upper=True)
            if half_line and not math.isfinite(low):
                raise ConfigError(f"{key}: bin {name!r} has low edge {low}; expected a finite number")
            if not low < high:
                raise ConfigError(f"{key}: bin {name!r} {_fmt(low, high)}: low must be < high")
            names.append(name)
            lows.append(low)
            highs.append(high)
        order = np.argsort(lows, kind="stable")
        first, last = order[0], order[-1]
        if half_line and lows[first] != 0:
            raise ConfigError(f"{key}: the bins must start at 0; the lowest is {names[first]!r} "
                              f"{_fmt(lows[first], highs[first])}")
        for a, b in zip(order[:-1], order[1:]):
            if highs[a] < lows[b]:
                raise ConfigError(f"{key}: gap between bin {names[a]!r} {_fmt(lows[a], highs[a])} "
                                  f"and bin {names[b]!r} {_fmt(lows[b], highs[b])}")
            if highs[a] > lows[b]:
                raise ConfigError(f"{key}: bin {names[a]!r} {_fmt(lows[a], highs[a])} overlaps "
                                  f"bin {names[b]!r} {_fmt(lows[b], highs[b])}")
        if half_line and highs[last] != math.inf:
            raise ConfigError(f"{key}: the bins must reach inf; the highest is {names[last]!r} "
                              f"{_fmt(lows[last], highs[last])}")
        return cls(tuple(names), np.array(lows, dtype=np.float64), np.array(highs, dtype=np.float64))

    @property
    def n_bins(self) -> int:
        return len(self.names)

    def assign(self, values: np.ndarray) -> np.ndarray:
        """(B,) index into ``names`` of the bin [low, high) holding each SNR value (B,).

        +inf goes to the top bin. NaN or negative SNRs raise InputError (never silently binned).
        """
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 1:
            raise InputError(f"SNR bins: expected a 1-D array of SNR values, got shape {values.shape}")
        n_nan = int(np.count_nonzero(np.isnan(values)))
        if n_nan:
            raise InputError(f"SNR bins: {n_nan} of {len(values)} SNR values are NaN (check the error arrays)")
        n_neg = int(np.count_nonzero(values < 0))
        if n_neg:
            raise InputError(f"SNR bins: {n_neg} of {len(values)} SNR values are negative; expected SNR >= 0")
        order = np.argsort(self.low, kind="stable")
        rank = np.searchsorted(self.low[order], values, side="right") - 1
        dtype = np.int8 if self.n_bins <= np.iinfo(np.int8).max else np.int16
        return order.astype(dtype)[rank]

    def to_dict(self) -> dict[str, list[float | None]]:
        """``{name: [low, high]}`` in the user's order, None for an infinite edge (YAML/JSON friendly)."""
        return {name: [None if math.isinf(lo) else float(lo), None if math.isinf(hi) else float(hi)]
                for name, lo, hi in zip(self.names, self.low, self.high)}

    def __eq__(self, other) -> bool:
        if not isinstance(other, Bins):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple((name, lo, hi) for name, (lo, hi) in self.to_dict().items()))

    def __repr__(self) -> str:
        return "Bins(" + ", ".join(f"{n}={_fmt(lo, hi)}" for n, lo, hi in zip(self.names, self.low, self.high)) + ")"
