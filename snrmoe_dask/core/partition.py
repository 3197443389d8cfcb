"""Which expert serves a spectrum: a partition of one or two label columns into named cells.

``routing.by: snr`` keeps the SNR bins of ``snr.bins`` (tiling [0, inf)). Any other column of the
params table (``T_eff``, ``M_H``, ``mag``, ...) is cut by ``routing.bins`` into half-open,
contiguous bins that may start anywhere (-inf included). Two columns make a grid: one set of
bins per column, and the experts are the product cells ``"<name1>|<name2>"`` in row-major order
(the first column's bins outer, the second's inner, each in the user's order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, InputError
from .snr import Bins, _fmt

if TYPE_CHECKING:
    import pandas as pd

SNR = "snr"
CELL_SEPARATOR = "|"


def _edge_or_none(value: float) -> float | None:
    # JSON has no inf: an open end is written as null, as results.json does for the top SNR bin
    return None if math.isinf(value) else float(value)


def _index_dtype(k: int) -> type:
    return np.int8 if k <= np.iinfo(np.int8).max else np.int32


def _assign_axis(bins: Bins, column: str, values: np.ndarray, key: str = "routing.bins") -> np.ndarray:
    """(N,) index into ``bins.names`` of the bin [low, high) holding each value (N,) of ``column``.

    The bins are contiguous, so a value is covered iff it lies in [lowest low, highest high);
    +inf goes to a top bin that reaches inf (as for SNR). NaN and values outside raise InputError
    naming the column and the first offending value.
    """
    order = np.argsort(bins.low, kind="stable")
    lows, highs = bins.low[order], bins.high[order]
    bottom, top = lows[0], highs[-1]
    inside = (values >= bottom) & ((values < top) | ((values == math.inf) & (top == math.inf)))
    if not inside.all():
        bad = np.flatnonzero(~inside)
        raise InputError(
            f"routing by {column!r}: value {float(values[bad[0]])!r} (row {bad[0]}) lies outside every bin of "
            f"{key}, which cover {_fmt(bottom, top)}; {len(bad)} of {len(values)} values are outside"
        )
    rank = np.searchsorted(lows, values, side="right") - 1
    return order.astype(_index_dtype(bins.n_bins))[rank]


@dataclass(frozen=True, eq=False)
class Partition:
    """Named cells over one or two label columns.

    axes: one ``Bins`` per column; columns: the label columns, ("snr",) for SNR routing (the
    computed SNR of ``snr.method``, not a table column); names: (K,) cell names, K the product of
    the axes' bin counts, row-major.
    """

    axes: tuple[Bins, ...]
    columns: tuple[str, ...]

    def __post_init__(self):
        if len(self.axes) != len(self.columns) or len(self.axes) not in (1, 2):
            raise ConfigError(f"routing.by: a partition needs 1 or 2 columns, got {list(self.columns)}")

    @property
    def is_snr(self) -> bool:
        """True for SNR routing on ``snr.bins`` (SNR checks: NaN or negative SNR refused)."""
        return self.columns == (SNR,)

    @property
    def names(self) -> tuple[str, ...]:
        """(K,) cell names: the bin names for one column, ``"<a>|<b>"`` row-major for a grid."""
        if len(self.axes) == 1:
            return self.axes[0].names
        first, second = self.axes
        return tuple(f"{a}{CELL_SEPARATOR}{b}" for a in first.names for b in second.names)

    @property
    def n_cells(self) -> int:
        return len(self.names)

    def _check_labels(self, labels: Any) -> np.ndarray:
        labels = np.asarray(labels, dtype=np.float64)
        expected = "(N,)" if len(self.columns) == 1 else f"(N, {len(self.columns)})"
        ok = labels.ndim == 1 if len(self.columns) == 1 else labels.ndim == 2 and labels.shape[1] == len(self.columns)
        if not ok:
            raise InputError(f"routing by {list(self.columns)}: labels have shape {labels.shape}; expected {expected}")
        return labels

    def assign(self, labels: Any) -> np.ndarray:
        """(N,) cell index into ``names`` for labels (N,) (one column) or (N, 2) (grid, column order).

        Raises InputError naming the column and the first value outside every bin.
        """
        labels = self._check_labels(labels)
        if self.is_snr:
            return self.axes[0].assign(labels)  # keeps the SNR messages (NaN / negative SNR)
        if len(self.axes) == 1:
            return _assign_axis(self.axes[0], self.columns[0], labels)
        first, second = self.columns
        rows = _assign_axis(self.axes[0], first, labels[:, 0], f"routing.bins.{first}").astype(np.int64)
        cols = _assign_axis(self.axes[1], second, labels[:, 1], f"routing.bins.{second}").astype(np.int64)
        return (rows * self.axes[1].n_bins + cols).astype(_index_dtype(self.n_cells))

    def labels(self, params: "pd.DataFrame", snr: np.ndarray | None = None) -> np.ndarray:
        """(N,) or (N, 2) float64 labels from a params table (N rows); ``snr`` (N,) fills column "snr"."""
        out = []
        for column in self.columns:
            if column == SNR and snr is not None:
                out.append(np.asarray(snr, dtype=np.float64))
            elif column in params.columns:
                out.append(params[column].to_numpy(np.float64))
            else:
                raise InputError(f"routing.by: column {column!r} is not in the params table "
                                 f"(columns: {', '.join(map(str, params.columns))})")
        return out[0] if len(out) == 1 else np.column_stack(out)

    def _cell_edges(self, k: int) -> list[tuple[float, float]]:
        if not 0 <= k < self.n_cells:
            raise ConfigError(f"cell {k}: expected a position 0..{self.n_cells - 1}")
        index = [k] if len(self.axes) == 1 else list(divmod(k, self.axes[1].n_bins))
        return [(float(axis.low[i]), float(axis.high[i])) for axis, i in zip(self.axes, index)]

    def describe(self, k: int) -> dict[str, Any]:
        """The edges of cell k for results.json, infinite edges as None.

        One column: ``{"by": col, "low": lo, "high": hi}`` (the same low/high as the SNR bins);
        grid: ``{"by": [c1, c2], "low": {c1: lo1, c2: lo2}, "high": {c1: hi1, c2: hi2}}``.
        """
        edges = self._cell_edges(k)
        if len(self.columns) == 1:
            (low, high), = edges
            return {"by": self.columns[0], "low": _edge_or_none(low), "high": _edge_or_none(high)}
        return {"by": list(self.columns),
                "low": {c: _edge_or_none(lo) for c, (lo, _) in zip(self.columns, edges)},
                "high": {c: _edge_or_none(hi) for c, (_, hi) in zip(self.columns, edges)}}

    def __eq__(self, other) -> bool:
        if not isinstance(other, Partition):
            return NotImplemented
        return self.columns == other.columns and self.axes == other.axes

    def __hash__(self) -> int:
        return hash((self.columns, self.axes))

    def __repr__(self) -> str:
        return f"Partition(by={list(self.columns)}, cells={list(self.names)})"


# ----------------------------------------------------------------------------- construction
def _column_bins(mapping: Any, key: str) -> Bins:
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{key}: expected a mapping name: [low, high], got {mapping!r}")
    return Bins.from_mapping(mapping, key=key, half_line=False)


def _grid_axes(columns: Sequence[str], bins: Any) -> tuple[Bins, ...]:
    if not isinstance(bins, Mapping) or set(bins) != set(columns):
        given = list(bins) if isinstance(bins, Mapping) else bins
        raise ConfigError(f"routing.bins: a grid on {list(columns)} needs one mapping per column, "
                          f"{{{columns[0]}: {{name: [low, high], ...}}, {columns[1]}: {{...}}}}, got {given!r}")
    axes = tuple(_column_bins(bins[c], f"routing.bins.{c}") for c in columns)
    for column, axis in zip(columns, axes):
        bad = [name for name in axis.names if CELL_SEPARATOR in name]
        if bad:
            # the separator joins the cell names; it must not appear inside one
            raise ConfigError(f"routing.bins.{column}: bin names must not contain {CELL_SEPARATOR!r}, got {bad}")
    return axes


def make_partition(by: str | Sequence[str], bins: Any, snr_bins: Mapping[str, Any] | None = None) -> Partition:
    """A partition from ``routing.by`` and ``routing.bins`` (``snr_bins`` = ``snr.bins`` for by: snr).

    Raises ConfigError (one line naming the key) when the keys do not fit together.
    """
    if isinstance(by, str):
        if by == SNR:
            if bins:
                raise ConfigError("routing.bins: must be left out when routing.by is 'snr' "
                                  "(the SNR bins are snr.bins)")
            return Partition((Bins.from_mapping(snr_bins or {}, key="snr.bins"),), (SNR,))
        if not bins:
            raise ConfigError(f"routing.bins: required when routing.by is {by!r}; give name: [low, high] "
                              "bins of that column, e.g. {cool: [-.inf, 5000], hot: [5000, .inf]}")
        return Partition((_column_bins(bins, "routing.bins"),), (by,))
    columns = tuple(by)
    if len(columns) != 2 or len(set(columns)) != 2:
        raise ConfigError(f"routing.by: a grid needs exactly 2 distinct columns, got {list(columns)}")
    return Partition(_grid_axes(columns, bins), columns)

