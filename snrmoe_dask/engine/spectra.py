"""A small Dataset of spectra read whole into memory, repaired and noised as the pass would: the test set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.noise import NoiseSpec, add_noise
from ..core.repair import RepairCounts
from ..core.snr import compute_snr
from .blocks import plan_blocks
from .dataset import shard_sources
from .segment import load_block
from .sources import ArrayRows
from .statistics import _identity, _spectra, sample_values


@dataclass
class Spectra:
    """flux (N, D) float32 (noisy unless no noise was asked for), error (N, D) float32 (repaired),
    snr (N,) of the noise-free flux, repairs: what the repairs changed."""

    flux: np.ndarray
    error: np.ndarray
    snr: np.ndarray
    repairs: RepairCounts


def load_spectra(ds, *, noise: NoiseSpec, snr: str, clip_flux: bool = True) -> Spectra:
    """Every spectrum of ``ds`` in memory, in sample order: read, repaired (``clip_flux``: negative flux
    to 0), SNR by ``snr`` of the noise-free flux at ``noise.level``, then noised with ``noise`` from
    (seed, shard, row) exactly as the pass noises training rows (mode "sample"; "none" adds nothing).

    Holds N x D values: for test and validation sets, not for training sets.
    """
    flux_data, error_data = _spectra(ds)
    n = flux_data.shape[0]
    shard, row = _identity(ds, n)
    readers = shard_sources(ds)
    first = int(shard[0])
    flux = np.empty(flux_data.shape, np.float32)
    error = np.empty(flux_data.shape, np.float32)
    repairs = RepairCounts()
    for k, blocks in plan_blocks(shard, row, n).items():
        source = readers[k - first] if readers else ArrayRows(flux_data, error_data, 0)
        for block in blocks:
            f, e, counts = load_block(source, block, clip_flux)
            flux[block.start:block.stop], error[block.start:block.stop] = f, e
            repairs = repairs + counts
    table_snr = sample_values(ds, "snr", "the snr column") if snr == "column" else None
    values = compute_snr(snr, flux, error, noise.level, table_snr)
    if noise.mode == "sample":
        for blocks in plan_blocks(shard, row, n).values():
            for b in blocks:
                rows = slice(b.start, b.stop)
                add_noise(flux[rows], error[rows], noise.level, seed=noise.seed, shard=b.shard, row0=b.row0,
                          out=flux[rows])
    return Spectra(flux, error, values, repairs)
