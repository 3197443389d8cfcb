"""A segment's pipelined pass (next block read in a helper thread into the buffers the current block's
rows were copied out of) gives exactly the numbers of the plain block-by-block fold, and its errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from snrmoe_dask.core.fold import PassResult, PassSpec
from snrmoe_dask.core.snr import Bins, snr_norm
from snrmoe_dask.core.stats import BinStats
from snrmoe_dask.engine.blocks import plan_segments
from snrmoe_dask.engine.segment import add_block, segment_pass
from snrmoe_dask.errors import InputError
from snrmoe_dask.io.shards import ERROR_KEY, FLUX_KEY

ROWS, PIXELS = 300, 32


def spec_for(path, mode: str, precision: str) -> PassSpec:
    with h5py.File(path) as f:
        flux, error = f[FLUX_KEY][...], f[ERROR_KEY][...]
    snr = snr_norm(flux, error, 1.0)
    edges = np.quantile(snr, [1 / 3, 2 / 3])
    bins = Bins.from_mapping({"H": [float(edges[1]), float("inf")], "M": [float(edges[0]), float(edges[1])],
                              "L": [0.0, float(edges[0])]})
    return PassSpec(bins=bins, snr_method="norm", level=1.0, seed=3, c=flux.mean(axis=0), y0=0.5,
                    precision=precision, noise_mode=mode, features=True)


def block_by_block(blocks, y, spec: PassSpec) -> PassResult:
    result = PassResult(BinStats.zeros(spec.bins.names, spec.c, spec.y0))
    for block in blocks:
        add_block(result, block, y[block.start - blocks[0].start:block.stop - blocks[0].start], None, spec)
    result.stats.mirror()
    return result


@pytest.mark.parametrize("mode,precision", [("sample", "float32"), ("sample", "float64"), ("expected", "float32")])
def test_pipelined_segment_equals_block_by_block(shard_factory, mode, precision):
    path = shard_factory(n=ROWS, d=PIXELS, chunk_rows=16)
    y = np.random.default_rng(1).random(ROWS)
    spec = spec_for(path, mode, precision)
    blocks = plan_segments([str(path)], [ROWS], 32, 10 ** 9)[0]
    assert len(blocks) > 3
    piped, plain = segment_pass(blocks, y, None, None, spec), block_by_block(blocks, y, spec)
    assert set(np.flatnonzero(piped.stats.n)) == {0, 1, 2}  # every bin gets rows from most blocks
    for field in ("n", "s", "S", "t", "u", "q"):
        assert np.array_equal(getattr(piped.stats, field), getattr(plain.stats, field)), field
    assert np.array_equal(piped.snr_values, plain.snr_values)
    assert np.array_equal(piped.feature_values, plain.feature_values)
    assert piped.repairs == plain.repairs


def test_bad_block_read_ahead_names_file_and_row(shard_factory):
    path = shard_factory(n=ROWS, d=PIXELS, chunk_rows=16)
    spec = spec_for(path, "sample", "float32")
    with h5py.File(path, "r+") as f:
        f[FLUX_KEY][200, 5] = np.nan  # in the 7th block of 32 rows, read by the helper thread
    blocks = plan_segments([str(path)], [ROWS], 32, 10 ** 9)[0]
    with pytest.raises(InputError, match=rf"{path}: row 200: flux contains NaN"):
        segment_pass(blocks, np.zeros(ROWS), None, None, spec)
