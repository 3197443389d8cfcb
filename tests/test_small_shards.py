"""Many small shards: runs of shards smaller than a block are summed together, one task and one
accumulator a run (engine.graph.gather_small_shards), with the same statistics as their shards' own results."""

from __future__ import annotations

import copy

import dask
import h5py
import numpy as np
import pytest
from dask import delayed

from snrmoe_dask import open_shards
from snrmoe_dask.core.sum_order import fold_blocks
from snrmoe_dask.engine.graph import SmallShards
from snrmoe_dask.engine.statistics import _plan, bin_statistics, statistics_and_prefixes
from snrmoe_dask.errors import InputError
from snrmoe_dask.io.cache import ShardCache
from snrmoe_dask.io.cache.maintenance import verify_cache
from snrmoe_dask.io.shards import FLUX_KEY
from snrmoe_dask.io.simulate import simulate_set

BLOCK_ROWS = 256
FIELDS = ("n", "s", "S", "t", "u", "q")


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return simulate_set(root, train=(11, 70), val=0, test=0, seed=4, pixels=16, progress=False)


def _open(paths):
    return open_shards(paths, block_rows=BLOCK_ROWS)


def _same(a, b) -> bool:
    return all(np.array_equal(getattr(a.stats, f), getattr(b.stats, f)) for f in FIELDS) and \
        np.array_equal(a.snr_values, b.snr_values)


@pytest.mark.parametrize("precision, tol, options", [
    ("float64", 1e-12, {}), ("float32", 1e-6, {}),
    # the expected effect of noise instead of draws, and the gate's features of every row
    ("float64", 1e-12, {"noise": {"level": 1.0, "seed": 42, "mode": "expected"}, "features": True})],
    ids=["float64", "float32", "expected-noise-features"])
def test_small_shards_are_summed_in_runs_equal_to_their_shards_results(paths, precision, tol, options):
    ds = _open(paths)
    parts = _plan(ds, block_rows=BLOCK_ROWS).parts
    # 70 rows each: three shards (210 rows) fill a run of at most 256; 11 shards make 3 + 3 + 3 + 2
    assert [len(p.members) for p in parts] == [3, 3, 3, 2] and all(isinstance(p, SmallShards) for p in parts)
    lazy = bin_statistics(ds, precision=precision, **options)
    tasks = [k for k in dict(lazy.__dask_graph__()) if "-shards-" in str(k)]
    assert len(tasks) == 4  # one task per run, none per shard
    total = lazy.compute()
    shards = bin_statistics(ds, per_shard=True, precision=precision, **options).compute()  # a result per shard
    assert len(shards) == 11
    assert np.array_equal(total.stats.n, sum(s.stats.n for s in shards))
    for f in ("s", "S", "t", "u", "q"):  # the same sums, their products over other runs of rows
        ours, theirs = getattr(total.stats, f), sum(getattr(s.stats, f) for s in shards)
        assert np.abs(ours - theirs).max() <= tol * np.abs(theirs).max(), f
    assert np.array_equal(total.snr_values, np.concatenate([s.snr_values for s in shards]))
    if options.get("features"):
        assert np.array_equal(total.feature_values, np.concatenate([s.feature_values for s in shards]))
    assert len(total.digests) == 11  # one per shard's block, in order


def test_runs_give_the_same_bits_on_every_scheduler(paths):
    lazy = bin_statistics(_open(paths))
    ref = lazy.compute(scheduler="threads", num_workers=2)
    for scheduler, workers in (("sync", 1), ("processes", 2), ("threads", 1)):
        assert _same(ref, lazy.compute(scheduler=scheduler, num_workers=workers)), scheduler


def test_a_prefix_of_runs_equals_a_pass_over_its_shards(paths):
    ds = _open(paths)
    # a reader keeps a copy: the partial sums it reads are added into afterwards
    prefix = delayed(lambda blocks: copy.deepcopy(fold_blocks(blocks)), pure=True)
    total, read = statistics_and_prefixes(ds, lambda rows: {2: lambda blocks: prefix(blocks)}).compute()
    assert _same(total, bin_statistics(ds).compute())
    alone = bin_statistics(_open(paths[:6]), shift=(total.spec.c, total.spec.y0)).compute()  # the first two runs' shards
    assert _same(read[2], alone)


def test_a_pass_over_runs_is_cached_as_one_merged_entry(paths, tmp_path):
    ds = _open(paths)
    cache = ShardCache(tmp_path / "cache", min_gflop=0, max_ratio=1000)
    first = bin_statistics(ds, cache=cache).compute()
    assert len(list((tmp_path / "cache").glob("*.h5"))) == 1  # the merged entry; runs have none of their own
    again = bin_statistics(ds, cache=ShardCache(tmp_path / "cache", min_gflop=0, max_ratio=1000))
    assert not [k for k in dict(again.__dask_graph__()) if "-shards-" in str(k)]  # loaded, not passed
    assert _same(first, again.compute())
    lines, changed = verify_cache(tmp_path / "cache")
    assert changed == 0 and "1 ok" in lines[-1], lines


def test_overflow_in_a_run_names_the_file_and_row(paths, tmp_path):
    victim = tmp_path / "train_70_4" / "dataset.h5"
    victim.parent.mkdir()
    victim.write_bytes(paths[4].read_bytes())
    with h5py.File(victim, "r+") as f:
        flux = f[FLUX_KEY][...]
        flux[9] = 1e20
        f[FLUX_KEY][...] = flux
    lazy = bin_statistics(_open([*paths[:4], victim, *paths[5:]]))
    with pytest.raises(InputError, match=rf"{victim}: row 9: flux value 1e\+20"):
        dask.compute(lazy, scheduler="sync")
