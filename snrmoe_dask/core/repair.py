"""Repairs applied to every block on read, counted so that runs can report them.

- flux < 0 -> 0 (the card's ``clip_flux``; clipping happens before noise, never after)
- error NaN -> the nearest finite error along wavelength (NaN sits at the detector edges)
- error <= 0 -> 1e-6 (the card's troubleshooting rule: SNR would divide by zero)

Non-finite flux, or a row whose error is NaN everywhere, cannot be repaired: it raises.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

ERROR_FLOOR = np.float32(1e-6)
# Repairs that change more than this share of a set's pixels are reported in the summary and report.
NOTABLE_REPAIR_SHARE = 1e-3
REPAIR_LABELS = {"flux_negative": "flux < 0 -> 0", "error_nan": "error NaN -> nearest pixel",
                 "error_nonpositive": "error <= 0 -> 1e-6"}


@dataclass
class RepairCounts:
    """Pixels changed by :func:`repair_block`, summed over blocks with ``+``."""

    flux_negative: int = 0
    error_nan: int = 0
    error_nonpositive: int = 0

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


def repair_block(flux: np.ndarray, error: np.ndarray, clip_flux: bool = True) -> RepairCounts:
    """Repair a block in place. flux, error: (B, D) float32. Returns the counts of changed pixels.

    Raises ValueError naming the first bad row (relative to the block) when a row cannot be repaired.
    """
    counts = RepairCounts()
    # min/max are cheap reductions that propagate NaN and expose inf; the full masks are only
    # built when a repair or an error is actually needed.
    lo, hi = flux.min(initial=np.inf), flux.max(initial=-np.inf)
    if not (np.isfinite(lo) and np.isfinite(hi)) and flux.size:
        row = int(np.argwhere(~np.isfinite(flux))[0, 0])
        raise ValueError(f"row {row}: flux contains NaN or inf, expected finite values")
    if clip_flux and lo < 0:
        counts.flux_negative = int(np.count_nonzero(flux < 0))
        np.maximum(flux, 0, out=flux)
    lo = error.min(initial=np.inf)
    if np.isnan(lo):
        nan = np.isnan(error)
        counts.error_nan = int(nan.sum())
        for i in np.flatnonzero(nan.any(axis=1)):
            if nan[i].all():
                raise ValueError(f"row {i}: error is NaN at every pixel, cannot repair")
            _fill_nearest(error[i], nan[i])
        lo = error.min(initial=np.inf)  # the NaNs are now their neighbours' values
    hi = error.max(initial=-np.inf)
    if np.isinf(hi) or np.isinf(lo):
        row = int(np.argwhere(~np.isfinite(error))[0, 0])
        raise ValueError(f"row {row}: error contains inf, expected finite values")
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
    return nonzero if sum(nonzero.values()) > NOTABLE_REPAIR_SHARE * pixels else None
