"""A segment's pipelined pass (next block read in a helper thread into the buffers the current block's
rows were copied out of) gives exactly the numbers of the plain block-by-block fold, and its errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from conftest import file_blocks, fold_block_by_block
from snrmoe_dask.core.block_pass import PassSpec
from snrmoe_dask.core.noise import NoiseSpec
from snrmoe_dask.core.partition import make_partition
from snrmoe_dask.core.snr import snr_norm
from snrmoe_dask.engine.segment import segment_pass
from snrmoe_dask.engine.sources import ShardFile
from snrmoe_dask.errors import InputError
from snrmoe_dask.io.shards import ERROR_KEY, FLUX_KEY

ROWS, PIXELS = 300, 32


def spec_for(path, mode: str, precision: str) -> PassSpec:
    with h5py.File(path) as f:
        flux, error = f[FLUX_KEY][...], f[ERROR_KEY][...]
    snr = snr_norm(flux, error, 1.0)
    edges = np.quantile(snr, [1 / 3, 2 / 3])
    bins = make_partition("snr", {}, {"H": [float(edges[1]), float("inf")], "M": [float(edges[0]), float(edges[1])],
                                      "L": [0.0, float(edges[0])]})
    return PassSpec(bins=bins, snr_method="norm", noise=NoiseSpec(1.0, 3, mode), c=flux.mean(axis=0), y0=0.5,
                    precision=precision, features=True)


@pytest.mark.parametrize("mode,precision", [("sample", "float32"), ("sample", "float64"), ("expected", "float32")])
def test_pipelined_segment_equals_block_by_block(shard_factory, mode, precision):
    path = shard_factory(n=ROWS, d=PIXELS, chunk_rows=16)
    y = np.random.default_rng(1).random(ROWS)
    spec = spec_for(path, mode, precision)
    blocks = file_blocks(path, ROWS, 32)
    assert len(blocks) > 3
    piped, plain = segment_pass(ShardFile(str(path)), blocks, y, None, None, spec), fold_block_by_block(path, blocks, y, spec)
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
    blocks = file_blocks(path, ROWS, 32)
    with pytest.raises(InputError, match=rf"{path}: row 200: flux contains NaN"):
        segment_pass(ShardFile(str(path)), blocks, np.zeros(ROWS), None, None, spec)


def test_concurrent_tasks_share_one_blas_limit_and_restore_it():
    import threading

    from threadpoolctl import threadpool_info

    from snrmoe_dask.engine.segment import one_blas_thread

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    before = blas_threads()
    inside, first_in, second_out = [], threading.Event(), threading.Event()

    def first():
        with one_blas_thread():
            first_in.set()
            second_out.wait(10)
            inside.append(blas_threads())  # the second task has ended: the limit must hold for this one

    for _ in range(2):  # twice: the first round must leave no thread in control of BLAS
        thread = threading.Thread(target=first)
        thread.start()
        first_in.wait(10)
        with one_blas_thread():
            inside.append(blas_threads())
        second_out.set()
        thread.join(10)
        first_in.clear(), second_out.clear()
        assert blas_threads() == before
    assert inside == [{1}] * 4
