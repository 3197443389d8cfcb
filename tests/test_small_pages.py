"""core.small_pages: large arrays in ordinary pages behave as numpy's own (zeros, writable, picklable)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from snrmoe_dask.core import small_pages
from snrmoe_dask.core.stats import GramTiles


@pytest.mark.parametrize("shape,dtype", [((1024, 1024), np.float64), ((3, 700, 700), np.float32), (10, np.float64)])
def test_arrays_are_numpy_arrays_of_that_shape(shape, dtype):
    zeros, empty = small_pages.zeros(shape, dtype), small_pages.empty(shape, dtype)
    for a in (zeros, empty):
        assert a.shape == np.empty(shape).shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    assert not zeros.any()
    zeros[...] = 1.5
    assert pickle.loads(pickle.dumps(zeros)).sum() == 1.5 * zeros.size  # e.g. sent to a dask worker


def test_large_arrays_live_in_their_own_mapping():
    large = small_pages.empty((1024, 1024))  # 8 MiB: not numpy's allocation
    assert not large.flags.owndata
    assert small_pages.empty(100).flags.owndata


def test_empty_tiles_take_what_they_are_given():
    tiles = GramTiles.empty(2, 300)
    assert tiles.data.shape == GramTiles(2, 300).data.shape
    tiles.data[...] = 2.0
    assert np.array_equal(tiles.dense(), np.full((2, 300, 300), 2.0))
