"""Repairs applied to every block on read, counted so that runs can report them.

- flux < 0 -> 0 (the card's ``clip_flux``; clipping happens before noise, never after)
- error NaN -> the nearest finite error along wavelength (NaN sits at the detector edges)
- error <= 0 -> 1e-6 (the card's troubleshooting rule: SNR would divide by zero)
- a flux or error value finite but absurd -> the nearest pixel of its row that is not: absurd is a
  magnitude more than :data:`ABSURD_RATIO` (1e6) times its row's typical magnitude, the median
  magnitude of :data:`TYPICAL_PIXELS` (32) evenly spaced pixels of the row (a row whose typical flux
  is 0 is held to the block's typical row instead). No spectrum spans a million to one; a bit flip
  or a sentinel does, and one such value can decide the card's verdict.

Non-finite flux, a row whose error is NaN everywhere, or a row whose typical flux or error is more
than ABSURD_RATIO times the block's typical row's (a whole spectrum mis-scaled) cannot be repaired:
it raises.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

ERROR_FLOOR = np.float32(1e-6)
ABSURD_RATIO = 1e6
TYPICAL_PIXELS = 32
# Repairs that change more than this share of a set's pixels are reported in the summary and report;
# absurd values always are.
NOTABLE_REPAIR_SHARE = 1e-3
ALWAYS_NOTABLE = ("flux_absurd", "error_absurd")
REPAIR_LABELS = {"flux_negative": "flux < 0 -> 0", "error_nan": "error NaN -> nearest pixel",
                 "error_nonpositive": "error <= 0 -> 1e-6",
                 "flux_absurd": "flux > 1e6 x its row's typical -> nearest pixel",
                 "error_absurd": "error > 1e6 x its row's typical -> nearest pixel"}


@dataclass
class RepairCounts:
    """Pixels changed by :func:`repair_block`, summed over blocks with ``+``."""

    flux_negative: int = 0
    error_nan: int = 0
    error_nonpositive: int = 0
    flux_absurd: int = 0
    error_absurd: int = 0

    def __add__(self, other: "RepairCounts") -> "RepairCounts":
        return RepairCounts(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    def to_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in asdict(self).items()}


def _fill_nearest(row: np.ndarray, bad: np.ndarray) -> None:
    """Replace ``row[bad]`` in place by the value at the nearest good pixel (ties go left)."""
    good = np.flatnonzero(~bad)
    missing = np.flatnonzero(bad)
    right = np.searchsorted(good, missing).clip(1, len(good) - 1) if len(good) > 1 else np.zeros_like(missing)
    left = right - 1 if len(good) > 1 else right
    pick = np.where(np.abs(good[left] - missing) <= np.abs(good[right] - missing), good[left], good[right])
    row[missing] = row[pick]


class Absurd(NamedTuple):
    """The first absurd value of a block: which array, row (in the block), pixel, value, and the
    row's typical magnitude it was held to."""

    kind: str
    row: int
    pixel: int
    value: float
    typical: float


def typical_magnitude(values: np.ndarray) -> np.ndarray:
    """(B,) each row's typical magnitude: the median |value| of TYPICAL_PIXELS evenly spaced pixels of
    values (B, D) (the upper middle one of an even count)."""
    step = max(1, values.shape[1] // TYPICAL_PIXELS)
    sample = np.abs(values[:, ::step][:, :TYPICAL_PIXELS])
    middle = sample.shape[1] // 2
    sample.partition(middle, axis=1)
    return sample[:, middle]


def _repair_absurd(values: np.ndarray, peak: np.ndarray, kind: str, found: list[Absurd] | None) -> int:
    """Replace in place the values of (B, D) ``values`` whose magnitude exceeds ABSURD_RATIO times
    their row's typical one by the nearest pixel's that does not; peak: (B,) each row's largest
    magnitude. Returns how many were replaced; the first goes into ``found``."""
    typical = typical_magnitude(values).astype(np.float64)
    zero = typical == 0
    block = np.median(typical[~zero]) if not zero.all() else np.inf  # the block's typical row
    outside = np.flatnonzero(typical > ABSURD_RATIO * block)
    if len(outside):
        i = int(outside[0])
        raise ValueError(f"row {i}: {kind} value {typical[i]:.3g} is typical of the row, {typical[i] / block:.2g} "
                         f"times the typical row of its block ({block:.3g}); expected spectra within "
                         f"{ABSURD_RATIO:.0e} of each other (a mis-scaled or corrupt spectrum?)")
    typical[zero] = block  # a row mostly 0 (clipped flux) has no scale of its own
    limit = ABSURD_RATIO * typical
    rows = np.flatnonzero(peak > limit)
    count = 0
    for i in rows:
        bad = np.abs(values[i]) > limit[i]
        if found is not None and count == 0:
            pixel = int(np.flatnonzero(bad)[0])
            found.append(Absurd(kind, int(i), pixel, float(values[i, pixel]), float(typical[i])))
        count += int(bad.sum())
        _fill_nearest(values[i], bad)
    return count


def repair_block(flux: np.ndarray, error: np.ndarray, clip_flux: bool = True,
                 found: list[Absurd] | None = None) -> RepairCounts:
    """Repair a block in place. flux, error: (B, D) float32. Returns the counts of changed pixels;
    the first absurd flux and error value (see the module's rules) go into ``found`` when given.

    Raises ValueError naming the first bad row (relative to the block) when a row cannot be repaired.
    """
    counts = RepairCounts()
    if not flux.size:
        return counts
    # min/max per row are cheap reductions that propagate NaN and expose inf; the full masks are
    # only built when a repair or an error is actually needed.
    row_lo, row_hi = flux.min(axis=1), flux.max(axis=1)
    lo, hi = row_lo.min(), row_hi.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        row = int(np.argwhere(~np.isfinite(flux))[0, 0])
        raise ValueError(f"row {row}: flux contains NaN or inf, expected finite values")
    if clip_flux and lo < 0:
        counts.flux_negative = int(np.count_nonzero(flux < 0))
        np.maximum(flux, 0, out=flux)
        np.maximum(row_lo, 0, out=row_lo)
        np.maximum(row_hi, 0, out=row_hi)
    counts.flux_absurd = _repair_absurd(flux, np.maximum(row_hi, -row_lo), "flux", found)
    row_lo, row_hi = error.min(axis=1), error.max(axis=1)  # NaN propagates
    nan_rows = np.flatnonzero(np.isnan(row_lo))
    if len(nan_rows):
        nan = np.isnan(error[nan_rows])
        counts.error_nan = int(nan.sum())
        for i, bad in zip(nan_rows, nan):
            if bad.all():
                raise ValueError(f"row {i}: error is NaN at every pixel, cannot repair")
            _fill_nearest(error[i], bad)
        row_lo[nan_rows], row_hi[nan_rows] = error[nan_rows].min(axis=1), error[nan_rows].max(axis=1)
    lo, hi = row_lo.min(), row_hi.max()
    if np.isinf(hi) or np.isinf(lo):
        row = int(np.argwhere(~np.isfinite(error))[0, 0])
        raise ValueError(f"row {row}: error contains inf, expected finite values")
    # before the floor: a row of mostly 0 has no scale of its own, and is held to the block's
    counts.error_absurd = _repair_absurd(error, np.maximum(row_hi, -row_lo), "error", found)
    if lo <= 0:
        nonpositive = error <= 0
        counts.error_nonpositive = int(nonpositive.sum())
        error[nonpositive] = ERROR_FLOOR
    return counts


def notable_repairs(counts: dict[str, int] | None, pixels: int) -> dict[str, int] | None:
    """The nonzero repair counts (``RepairCounts.to_dict()``) of a set of ``pixels`` pixels when
    together they change more than :data:`NOTABLE_REPAIR_SHARE` of them; None otherwise."""
    if not counts or pixels <= 0:
        return None
    nonzero = {kind: int(n) for kind, n in counts.items() if n}
    notable = sum(nonzero.values()) > NOTABLE_REPAIR_SHARE * pixels or any(k in nonzero for k in ALWAYS_NOTABLE)
    return nonzero if notable else None
