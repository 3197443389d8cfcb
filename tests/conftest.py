"""Shared fixtures: tiny shards in the real layout, written with the project's writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from snrmoe_dask.core.block_pass import PassResult, PassSpec, sorted_rows
from snrmoe_dask.core.stats import BinStats
from snrmoe_dask.engine.blocks import Block, plan_blocks
from snrmoe_dask.engine.segment import load_block
from snrmoe_dask.engine.sources import ShardFile
from snrmoe_dask.io.shards import PARAM_COLUMNS, write_shard

# The files that take longest, first: pytest-xdist hands whole files to its workers in collection order
# (--dist loadfile), so a long file collected last would run alone at the end while the other worker idles.
LONGEST_FIRST = ("test_cluster_scale.py", "test_cluster_faults.py", "test_safety.py", "test_compose.py",
                 "test_scale.py", "test_report.py", "test_notebook.py", "test_scaling.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: within a file, as written


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


def file_blocks(path: Path, rows: int, block_rows: int, shard: int = 0) -> list[Block]:
    """The blocks of one shard file of ``rows`` spectra, as a pass over it cuts them."""
    return plan_blocks(np.full(rows, shard), np.arange(rows), block_rows)[shard]


def fold_block_by_block(path: Path, blocks: list[Block], y: np.ndarray, spec: PassSpec) -> PassResult:
    """The plain reference of a segment's pass: each block read, folded and multiplied in turn, with no
    read-ahead and a fresh array per block; y (rows,) for the blocks' rows one after the other."""
    result = PassResult(BinStats.zeros(spec.bins.names, spec.c, spec.y0), spec=spec)
    at = 0
    for block in blocks:
        rows, yb, bins = sorted_rows(result, [(block.shard, block.row0, block.rows)],
                                     load_block(ShardFile(str(path)), block, spec.clip_flux),
                                     y[at:at + block.rows], None, spec, None, None)
        at += block.rows
        result.stats.add_block(rows, yb, bins, dtype=np.dtype(spec.precision), mirror=False, overwrite_x=True)
    result.stats.mirror()
    return result
