"""Composition: every public lazy result of the library, computed together with another, after another was
persisted, and twice, gives bit for bit what it gives alone, on every scheduler (sync, threads, processes,
a distributed LocalCluster of process workers). And keys that follow every input: results that differ in
any input never share a task."""

from __future__ import annotations

import itertools
import random
from concurrent.futures import ProcessPoolExecutor

import dask
import numpy as np
import pytest
import xarray as xr

from snrmoe_dask import BinnedRidge, bin_statistics, open_shards, scaling_curve, simulate_set, sum_results
from snrmoe_dask.engine import statistics
from snrmoe_dask.experiment.evaluation import load_test_set
from snrmoe_dask.io.cache import ShardCache

FIELDS = ("n", "s", "S", "t", "u", "q")
ROWS, PIXELS, BLOCK = 600, 32, 128


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("compose")
    simulate_set(root, train=(3, ROWS), val=0, test=200, seed=11, pixels=PIXELS, progress=False)
    return root


@pytest.fixture(scope="module")
def ds(data):
    return open_shards(f"train_{ROWS}_{{0..2}}/dataset.h5", root=data, block_rows=BLOCK)


@pytest.fixture(scope="module", autouse=True)
def small_segments():
    # several segments per shard, so that every shard is a chain of adds and the total a tree of them
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(statistics, "SEGMENT_ROWS", 2 * BLOCK)
        yield


def fingerprint(value):
    """Everything a result holds, as comparable bytes (lists of results: one per part)."""
    if isinstance(value, list):
        return [fingerprint(v) for v in value]
    if isinstance(value, dict):  # a scaling curve
        return repr([(p["n_train"], p["global"]["r2"], p["oracle"]["r2"]) for p in value["points"]])
    stats = value.stats
    return (stats.names, *(getattr(stats, f).tobytes() for f in FIELDS), value.snr_values.tobytes(),
            repr(value.repairs), b"".join(value.digests))


def lazy_results(ds, cache_dir, test):
    """name -> a builder of each public lazy result (built anew for every use, as a user would)."""
    cache = ShardCache(cache_dir, min_gflop=0)
    return {
        "total": lambda: bin_statistics(ds),
        "per_shard": lambda: bin_statistics(ds, per_shard=True),
        "splits": lambda: bin_statistics(ds, per_shard=True, splits=2),
        "split_total": lambda: bin_statistics(ds, splits=2),
        "cached_total": lambda: bin_statistics(ds, cache=cache),
        "cached_per_shard": lambda: bin_statistics(ds, per_shard=True, cache=cache),
        # blocks longer than a shard: the three shards are one run of small shards, summed in one task
        "small_shards": lambda: bin_statistics(ds, block_rows=4 * ROWS),
    }


@pytest.fixture(scope="module")
def process_pool():
    with ProcessPoolExecutor(2) as pool:
        yield pool


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        yield c


def _scheduler_options(name, process_pool):
    if name == "processes":
        return {"scheduler": "processes", "pool": process_pool}
    return {"scheduler": name, "num_workers": 2} if name == "threads" else {"scheduler": name}


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes", "local-cluster"])
def test_every_pair_together_persisted_and_twice_equals_alone(scheduler, ds, data, tmp_path, process_pool,
                                                              request):
    test = load_test_set(open_shards("test_200_0/dataset.h5", root=data), partition=bin_statistics(ds).compute()
                         .spec.bins)
    builders = lazy_results(ds, tmp_path / "cache", test)
    assert any("-shards-" in str(k) for k in builders["small_shards"]().__dask_graph__())  # a run of small shards
    if scheduler == "local-cluster":
        import distributed

        client = distributed.Client(request.getfixturevalue("cluster"))
        options = {}
    else:
        client, options = None, _scheduler_options(scheduler, process_pool)
    try:
        alone = {name: fingerprint(build().compute(**options)) for name, build in builders.items()}
        # the cached results: once filled, the cache serves the same bits
        for name in ("cached_total", "cached_per_shard"):
            assert fingerprint(builders[name]().compute(**options)) == alone[name]
        assert alone["cached_total"] == alone["total"] and alone["cached_per_shard"] == alone["per_shard"]
        for a, b in itertools.combinations(builders, 2):
            together = dask.compute(builders[a](), builders[b](), **options)
            assert [fingerprint(v) for v in together] == [alone[a], alone[b]], (a, b)
        pairs = list(itertools.permutations(builders, 2))
        for a, b in random.Random(scheduler).sample(pairs, 8):  # persist one, then compute the other
            kept = builders[a]().persist(**options)
            assert fingerprint(builders[b]().compute(**options)) == alone[b], (a, b)
            assert fingerprint(kept.compute(**options)) == alone[a], (a, b)
            assert fingerprint(kept.compute(**options)) == alone[a], (a, b)  # and twice
        # one object computed twice, and a scaling curve after a persisted total
        once = builders["per_shard"]()
        assert fingerprint(once.compute(**options)) == fingerprint(once.compute(**options)) == alone["per_shard"]
        kept = builders["total"]().persist(**options)
        with dask.config.set(**options):
            curve = scaling_curve(builders["per_shard"](), model=BinnedRidge(alpha=10.0, min_bin_samples=5),
                                  test=test, bootstrap=0)
        with dask.config.set(scheduler="sync"):
            reference = scaling_curve(builders["per_shard"](), model=BinnedRidge(alpha=10.0, min_bin_samples=5),
                                      test=test, bootstrap=0)
        assert fingerprint(curve) == fingerprint(reference)
        assert fingerprint(kept.compute(**options)) == alone["total"]
    finally:
        if client is not None:
            client.close()


def test_the_reported_case_per_shard_and_total_computed_together(ds):
    """The issue's reproduction: shard 0 came back equal to the total (sync), or a TypeError (threads)."""
    alone = bin_statistics(ds, per_shard=True).compute(scheduler="sync")
    for scheduler in ("sync", "threads"):
        parts, total = dask.compute(bin_statistics(ds, per_shard=True), bin_statistics(ds), scheduler=scheduler)
        assert list(parts[0].stats.n) == list(alone[0].stats.n) and int(parts[0].stats.n.sum()) == ROWS
        assert fingerprint(total) == fingerprint(sum_results(parts))
        assert fingerprint(parts) == fingerprint(alone)


# ----------------------------------------------------------------------------- keys follow every input
def _pairs_differ(a, b):
    """(a computed with b, b computed with a) equal to each alone."""
    together = dask.compute(a(), b(), scheduler="threads")
    assert fingerprint(together[0]) == fingerprint(a().compute(scheduler="sync"))
    assert fingerprint(together[1]) == fingerprint(b().compute(scheduler="sync"))
    assert fingerprint(together[0]) != fingerprint(together[1])


def test_rows_read_are_part_of_the_key(data, ds):
    short = open_shards(f"train_{ROWS}_{{0..2}}/dataset.h5", root=data, block_rows=BLOCK, max_rows=ROWS + 100)
    _pairs_differ(lambda: bin_statistics(ds), lambda: bin_statistics(short))
    later = open_shards(f"train_{ROWS}_{{0..2}}/dataset.h5", root=data, block_rows=BLOCK, first_shard=5)
    _pairs_differ(lambda: bin_statistics(ds), lambda: bin_statistics(later))


def test_target_labels_and_error_values_are_part_of_the_key(ds):
    changed = ds.copy()
    changed["log_g"] = ds.log_g + np.where(np.arange(ds.sizes["sample"]) % 7 == 0, 0.5, 0.0)
    _pairs_differ(lambda: bin_statistics(ds), lambda: bin_statistics(changed))
    bins = {"lo": [-np.inf, 0.5], "hi": [0.5, np.inf]}
    rng = np.random.default_rng(0)
    labels_a, labels_b = rng.random(ds.sizes["sample"]), rng.random(ds.sizes["sample"])
    _pairs_differ(lambda: bin_statistics(ds, by=labels_a, bins=bins), lambda: bin_statistics(ds, by=labels_b, bins=bins))
    shuffled = ds.copy()
    shuffled["T_eff"] = ("sample", rng.permutation(ds.T_eff.values))
    teff = {"cool": [-np.inf, 4800.0], "hot": [4800.0, np.inf]}
    _pairs_differ(lambda: bin_statistics(ds, by="T_eff", bins=teff), lambda: bin_statistics(shuffled, by="T_eff", bins=teff))
    noisier = ds.copy()
    noisier["error"] = ds.error * 3  # the same flux, three times the error: other SNR bins
    _pairs_differ(lambda: bin_statistics(ds), lambda: bin_statistics(noisier))


def test_numpy_datasets_are_keyed_by_their_values_not_their_id(ds):
    flux, error, y = ds.flux.values, ds.error.values, ds.log_g.values
    shift = bin_statistics(ds).compute().spec
    results = []
    for scale in (1.0, 1.1, 1.2, 1.3):  # new Datasets, each dropped before the next (ids are reused)
        numpy_ds = xr.Dataset({"flux": (("sample", "pixel"), flux * scale), "error": (("sample", "pixel"), error),
                               "log_g": ("sample", y)})
        results.append(bin_statistics(numpy_ds, shift=(shift.c, shift.y0)))
        del numpy_ds
    computed = dask.compute(*results, scheduler="threads")
    assert len({fingerprint(r)[3] for r in computed}) == 4  # four different S


def test_a_scaling_curve_of_shards_that_differ_only_in_rows_read(data, ds):
    test = load_test_set(open_shards("test_200_0/dataset.h5", root=data), partition=bin_statistics(ds).compute()
                         .spec.bins)
    short = open_shards(f"train_{ROWS}_{{0..2}}/dataset.h5", root=data, block_rows=BLOCK, max_rows=ROWS + 100)
    full_parts, short_parts = dask.compute(bin_statistics(ds, per_shard=True), bin_statistics(short, per_shard=True))
    model = BinnedRidge(alpha=10.0, min_bin_samples=5)
    curve = scaling_curve(short_parts, model=model, test=test, bootstrap=0)
    assert [p["n_train"] for p in curve["points"]] == [ROWS, ROWS + 100]
    assert len(full_parts) == 3
