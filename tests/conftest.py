"""Shared fixtures: tiny shards in the real layout, written with the project's writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from snrmoe_dask.io.shards import PARAM_COLUMNS, write_shard


def random_shard(path: Path, n: int = 300, d: int = 32, seed: int = 0, chunk_rows: int = 64) -> Path:
    """A shard of spectrum-like random data (positive flux ~1, error ~0.3) in the real layout."""
    rng = np.random.default_rng(seed)
    wave = np.linspace(7100.0, 8850.0, d)
    flux = (1.0 + 0.1 * rng.standard_normal((n, d))).astype(np.float32)
    error = (0.3 + 0.05 * rng.random((n, d))).astype(np.float32)
    params = pd.DataFrame({c: rng.random(n) for c in PARAM_COLUMNS})
    params["snr"] = np.linalg.norm(flux, axis=1) / np.linalg.norm(error, axis=1)
    return write_shard(path, wave, flux, error, params, chunk_rows=chunk_rows)


@pytest.fixture
def shard_factory(tmp_path):
    def make(name: str = "s/dataset.h5", **kw) -> Path:
        return random_shard(tmp_path / name, **kw)
    return make
