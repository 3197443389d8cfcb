"""Routing test spectra to experts."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .ridge import RidgeModel


def oracle_route(x: np.ndarray, bin_idx: np.ndarray, experts: Sequence[RidgeModel | None],
                 fallback: np.ndarray) -> np.ndarray:
    """(N,) predictions: each spectrum of x (N, D) by the expert of its true bin.

    bin_idx (N,) indexes ``experts``; spectra of a bin without an expert (None) keep ``fallback`` (N,),
    the global model's predictions.
    """
    out = np.array(fallback, dtype=np.float64, copy=True)
    for k, expert in enumerate(experts):
        sel = bin_idx == k
        if expert is not None and sel.any():
            out[sel] = expert.predict(x[sel])
    return out
