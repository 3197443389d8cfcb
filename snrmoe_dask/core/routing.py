"""Routing spectra to experts: by their known bin (oracle routing), or by the bin of their SNR."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .block_pass import PassSpec
from .ridge import RidgeModel
from .snr import compute_snr


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


def route_by_snr(spec: PassSpec, flux: np.ndarray, error: np.ndarray) -> np.ndarray:
    """(N,) bin index of each spectrum of flux, error (N, D) by a pass's SNR rule: its SNR method at its
    noise level, binned by its SNR bins."""
    return spec.bins.assign(compute_snr(spec.snr_method, flux, error, spec.noise.level))
