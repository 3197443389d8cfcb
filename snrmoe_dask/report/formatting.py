"""How numbers, intervals, ranges and tables are written in the report and on the figures (one place,
so that a number reads the same everywhere)."""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Sequence

from ..errors import InputError


def as_float(value: Any) -> float:
    """``None`` -> NaN; numbers -> float; anything else is an InputError."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"results: value {value!r} is not a number") from None


def format_r2(value: Any) -> str:
    """R² (or MAE, RMSE) with 4 decimals; missing -> 'n/a'."""
    v = as_float(value)
    return f"{v:.4f}" if math.isfinite(v) else "n/a"


def format_delta(value: Any) -> str:
    """Signed difference with 4 decimals (``+0.0500``); missing -> 'n/a'."""
    v = as_float(value)
    return f"{v:+.4f}" if math.isfinite(v) else "n/a"


def format_count(value: Any) -> str:
    """Integer count with thousands separators (``1,000,000``)."""
    return f"{int(value):,}"


def format_number(value: Any) -> str:
    """Alpha-like numbers: '100,000' for integers, '%g' otherwise; missing -> 'n/a'."""
    v = as_float(value)
    if not math.isfinite(v):
        return "n/a"
    return f"{int(v):,}" if v == int(v) and abs(v) >= 1 else f"{v:g}"


def ci_bounds(ci: Any) -> tuple[float, float]:
    """(lo, hi) of an optional ``[lo, hi]``; (NaN, NaN) when absent or malformed."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return math.nan, math.nan
    return as_float(ci[0]), as_float(ci[1])


def format_ci(ci: Any, signed: bool = True) -> str:
    """``[+0.0312, +0.0688]`` for a two-element interval; '' when absent or not finite."""
    lo, hi = ci_bounds(ci)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return ""
    fmt = format_delta if signed else format_r2
    return f"[{fmt(lo)}, {fmt(hi)}]"


def pct(fraction: float | None, digits: int = 1) -> str:
    """'29.8%'; missing -> 'n/a'."""
    v = as_float(fraction)
    return f"{100 * v:.{digits}f}%" if math.isfinite(v) else "n/a"


def seconds(value: Any) -> str:
    v = as_float(value)
    if not math.isfinite(v):
        return "n/a"
    return f"{v:,.1f} s ({v / 60:.1f} min)" if v >= 60 else f"{v:.1f} s"


def span(values: Iterable[float], fmt=format_r2, dash: str = "–") -> str:
    """'0.8700–0.9000' for the range of finite ``values``, one number when they agree; 'n/a' without any."""
    finite = sorted(v for v in values if v is not None and math.isfinite(v))
    if not finite:
        return "n/a"
    low, high = fmt(finite[0]), fmt(finite[-1])
    return low if low == high else f"{low}{dash}{high}"


# ----------------------------------------------------------------------------- ranges of bins
def _edge(value: float) -> str:
    """An edge as written in configs: '%g' when that is exact, else the full repr."""
    text = f"{value:g}"
    return text if float(text) == value else repr(value)


def snr_range_label(low: Any, high: Any, spaced: bool = False) -> str:
    """The half-open interval of an SNR bin: '4≤SNR<7', 'SNR≥7' (no upper edge), 'SNR<2' (lower edge 0 or
    none); ``spaced``: '4 ≤ SNR < 7' (report text)."""
    lo, hi = as_float(low), as_float(high)
    has_lo, has_hi = math.isfinite(lo) and lo > 0, math.isfinite(hi)
    le, lt, ge = (" ≤ ", " < ", " ≥ ") if spaced else ("≤", "<", "≥")
    if has_lo and has_hi:
        return f"{_edge(lo)}{le}SNR{lt}{_edge(hi)}"
    if has_lo:
        return f"SNR{ge}{_edge(lo)}"
    if has_hi:
        return f"SNR{lt}{_edge(hi)}"
    return "all SNR"


def interval_label(column: str, low: Any, high: Any) -> str:
    """'T_eff [4000, 5000)'; an open end (None / inf) is written with ∞: 'M_H (−∞, 0)', 'T_eff [5000, ∞)'."""
    lo, hi = as_float(low), as_float(high)
    left = f"[{_edge(lo)}" if math.isfinite(lo) else "(−∞"
    right = f"{_edge(hi)})" if math.isfinite(hi) else "∞)"
    return f"{column} {left}, {right}"


# ----------------------------------------------------------------------------- markdown
def _pipes(cell: str) -> str:
    """A cell's own '|' escaped (grid cells are named 'cool|poor'); an escaped one is left as it is."""
    return re.sub(r"(?<!\\)\|", r"\\|", cell)


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A markdown table as lines."""
    lines = ["| " + " | ".join(_pipes(str(h)) for h in header) + " |",
             "|" + "|".join("-" * max(3, len(str(h)) + 2) for h in header) + "|"]
    lines += ["| " + " | ".join(_pipes(str(c)) for c in row) + " |" for row in rows]
    return lines


def code(value: Any) -> str:
    """A value quoted as code (file contents, config text): it is data, not a sentence of the report."""
    return f"`{str(value).replace('`', chr(39))}`"
