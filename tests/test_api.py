"""The library API: open_shards, bin_statistics, BinnedRidge, evaluate, against scikit-learn and numpy
peers, across sources (HDF5, zarr, numpy, dask) and schedulers, and equal to what `snrmoe run` computes."""

from __future__ import annotations

import doctest
import json
import pickle
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import snrmoe_dask
from snrmoe_dask import BinnedRidge, add_noise, bin_statistics, evaluate, open_shards, simulate_set
from snrmoe_dask.cli import main
from snrmoe_dask.core.snr import snr_norm
from snrmoe_dask.engine import graph
from snrmoe_dask.engine.dataset import shard_files
from snrmoe_dask.errors import ConfigError, InputError, InvalidParameterError

REPO = Path(__file__).resolve().parent.parent
PIXELS = 48
FIELDS = ("n", "s", "S", "t", "u", "q")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("api")
    simulate_set(root, train=(2, 1500), val=300, test=400, seed=5, pixels=PIXELS, progress=False)
    return root


@pytest.fixture(scope="module")
def train(data):
    return open_shards("train_1500_{0..1}/dataset.h5", root=data, block_rows=512)


def same_stats(a, b) -> bool:
    return a.names == b.names and all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


def in_memory(ds: xr.Dataset) -> xr.Dataset:
    """The same spectra as numpy arrays: no dask, no files."""
    out = ds.copy()
    out["flux"], out["error"] = (("sample", "pixel"), ds.flux.values), (("sample", "pixel"), ds.error.values)
    return out


# ----------------------------------------------------------------------------- the public names
def test_public_api_and_its_examples_run():
    assert {"open_shards", "bin_statistics", "BinnedRidge", "evaluate", "add_noise"} <= set(snrmoe_dask.__all__)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for name in ("open_shards", "bin_statistics", "BinnedRidge", "evaluate", "add_noise", "scaling_curve"):
        tests = doctest.DocTestFinder(recurse=False).find(getattr(snrmoe_dask, name), name)
        assert tests and tests[0].examples, f"{name} has no Examples section"
        for test in tests:
            result = runner.run(test)
            assert result.failed == 0, f"{name}: {result.failed} example(s) failed"


def test_open_shards_is_lazy_picklable_and_carries_the_noise_identity(data, train):
    assert isinstance(train.flux.data, dask.array.Array) and train.flux.data.chunks[0][0] == 512
    assert train.sizes == {"sample": 3000, "pixel": PIXELS}
    assert {"wave", "shard", "row"} <= set(train.coords)
    assert train.shard.values.tolist() == [0] * 1500 + [1] * 1500
    assert train.row.values[1500] == 0 and train.row.values[-1] == 1499
    assert {"T_eff", "log_g", "snr"} <= set(train.data_vars)
    clone = pickle.loads(pickle.dumps(train))
    assert np.array_equal(clone.flux[:10].values, train.flux[:10].values)


# ----------------------------------------------------------------------------- against scikit-learn
def _reference_matrix(ds: xr.Dataset, noise: dict):
    """The noisy (N, D) float64 matrix the pass sees, its target and SNR bin, computed here with numpy."""
    flux = np.maximum(ds.flux.values, 0).astype(np.float32)
    error = ds.error.values.astype(np.float32)
    snr = snr_norm(flux, error, noise["level"])
    x = np.vstack([add_noise(flux[ds.shard.values == k], error[ds.shard.values == k], noise["level"],
                             seed=noise["seed"], shard=k) for k in np.unique(ds.shard.values)])
    bins = np.searchsorted([2.0, 4.0, 7.0], snr, side="right")  # X, L, M, H
    return x.astype(np.float64), ds.log_g.values, np.array(["X", "L", "M", "H"])[bins]


@pytest.mark.parametrize("scaler", ["per-expert", "shared"])
def test_numpy_dataset_equals_sklearn_per_bin(train, scaler):
    noise = {"level": 1.0, "seed": 9, "mode": "sample"}
    ds = in_memory(train)
    model = BinnedRidge(alpha=300.0, min_bin_samples=50, scaler=scaler).fit(
        bin_statistics(ds, noise=noise, precision="float64"))
    x, y, bins = _reference_matrix(ds, noise)
    shared = StandardScaler().fit(x)
    for name, expert in [("global", model.global_), *model.experts_.items()]:
        if expert is None:
            assert (bins == name).sum() < 50
            continue
        rows = slice(None) if name == "global" else bins == name
        scaler_step = shared if scaler == "shared" and name != "global" else StandardScaler()
        if scaler_step is shared:
            ref = Ridge(alpha=300.0).fit(shared.transform(x[rows]), y[rows]).predict(shared.transform(x))
        else:
            ref = make_pipeline(scaler_step, Ridge(alpha=300.0)).fit(x[rows], y[rows]).predict(x)
        ours = expert.predict(x)
        assert np.max(np.abs(ours - ref) / np.maximum(np.abs(ref), y.std())) <= 1e-6, name
    routed = model.predict(x, bins=bins)
    for name, expert in model.experts_.items():
        sel = bins == name
        want = (expert or model.global_).predict(x[sel])
        assert np.array_equal(routed[sel], want)


def test_shared_scaler_differs_from_per_expert(train):
    stats = bin_statistics(in_memory(train), precision="float64").compute()
    own = BinnedRidge(alpha=1e3, min_bin_samples=50).fit(stats)
    shared = BinnedRidge(alpha=1e3, min_bin_samples=50, scaler="shared").fit(stats)
    assert np.array_equal(own.global_.coef_, shared.global_.coef_)  # the global model has one scaler anyway
    assert not np.allclose(own.experts_["M"].coef_, shared.experts_["M"].coef_)


# ----------------------------------------------------------------------------- sources and schedulers
def test_hdf5_zarr_numpy_and_dask_give_the_same_statistics(train, tmp_path):
    fast = bin_statistics(train).compute()
    store = tmp_path / "train.zarr"
    # zarr needs uniform chunks: one chunk of 512 rows across the two shards' boundary
    train.chunk({"sample": 512}).to_zarr(store, consolidated=False)
    sources = {"zarr": xr.open_zarr(store, consolidated=False), "numpy": in_memory(train),
               "dask, other chunks": in_memory(train).chunk({"sample": 700})}
    for label, ds in sources.items():
        other = bin_statistics(ds, block_rows=512).compute()
        assert same_stats(fast.stats, other.stats), label
        assert np.array_equal(fast.snr_values, other.snr_values), label
        assert fast.repairs == other.repairs, label


def test_uniform_chunks_write_zarr_in_one_call_and_keep_the_numbers(data, train, tmp_path):
    assert len(set(train.flux.chunks[0][:-1])) > 1  # by default each file ends on a short chunk
    uniform = open_shards("train_1500_{0..1}/dataset.h5", root=data, block_rows=512, chunks="uniform")
    assert set(uniform.flux.chunks[0][:-1]) == {512} and uniform.flux.chunks == uniform.error.chunks
    assert shard_files(uniform) == shard_files(train) is not None  # still read straight from the files
    uniform.to_zarr(tmp_path / "train.zarr", consolidated=False)
    fast = bin_statistics(train).compute()
    for label, ds in {"uniform": uniform, "zarr": xr.open_zarr(tmp_path / "train.zarr", consolidated=False)}.items():
        other = bin_statistics(ds).compute()
        assert same_stats(fast.stats, other.stats), label
        assert np.array_equal(fast.snr_values, other.snr_values) and fast.repairs == other.repairs, label
    with pytest.raises(InvalidParameterError, match="chunks='rows': expected 'files' or 'uniform'"):
        open_shards("train_1500_{0..1}/dataset.h5", root=data, chunks="rows")


def test_block_size_changes_numbers_only_at_rounding(train):
    a = bin_statistics(in_memory(train), block_rows=512, precision="float64").compute().stats
    b = bin_statistics(in_memory(train), block_rows=300, precision="float64").compute().stats
    assert np.array_equal(a.n, b.n)
    for f in FIELDS[1:]:
        x, y = getattr(a, f), getattr(b, f)
        assert np.max(np.abs(x - y)) <= 1e-9 * np.max(np.abs(x)), f


def test_local_cluster_client_equals_threads(train):
    distributed = pytest.importorskip("distributed")
    lazy = bin_statistics(train)
    threads = lazy.compute(scheduler="threads")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c, \
            distributed.Client(c) as client:
        persisted = bin_statistics(train).persist()
        remote = client.compute(bin_statistics(train)).result()
        from_persisted = persisted.compute()
        segment_tasks = [k for k in client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.tasks))
                         if "segment-" in str(k)]
    for other in (remote, from_persisted):
        assert same_stats(threads.stats, other.stats)
    assert segment_tasks, "the pass's tasks must be visible to the scheduler (dashboard)"


def test_per_shard_results_add_up_to_the_total(train):
    total = bin_statistics(train).compute()
    parts = bin_statistics(train, per_shard=True).compute()
    assert len(parts) == 2 and [int(p.stats.n.sum()) for p in parts] == [1500, 1500]
    acc = parts[0].stats.copy()
    acc += parts[1].stats
    assert same_stats(acc, total.stats)


# ----------------------------------------------------------------------------- the estimator
def test_new_alpha_refits_without_a_data_pass(train, monkeypatch):
    model = BinnedRidge(alpha=1e5).fit(bin_statistics(train).persist())
    first = model.global_.coef_.copy()

    def no_pass(*a, **k):
        raise AssertionError("a data pass ran for a new alpha")
    monkeypatch.setattr(graph, "segment_pass", no_pass)
    model.set_params(alpha=10.0).fit()
    assert model.global_.alpha_ == 10.0 and not np.allclose(model.global_.coef_, first)
    again = model.set_params(alpha=1e5).fit()
    assert np.array_equal(again.global_.coef_, first)
    assert repr(model) == "BinnedRidge()" and "array" not in repr(BinnedRidge(alpha=3.0))


def test_predict_takes_numpy_and_dask(train):
    model = BinnedRidge(alpha=1e3).fit(bin_statistics(train))
    bins = np.arange(train.sizes["sample"]) % 4
    on_numpy = model.predict(train.flux.values, bins=bins)
    on_dask = model.predict(train.flux.data, bins=bins)
    assert isinstance(on_dask, dask.array.Array)
    np.testing.assert_allclose(on_dask.compute(), on_numpy, rtol=1e-13)  # BLAS may round row blocks differently
    names = np.array(model.bin_names_)[bins]
    np.testing.assert_array_equal(model.predict(train.flux.values, bins=names), on_numpy)
    with pytest.raises(InputError, match="unknown bin"):
        model.predict(train.flux.values[:2], bins=["H", "nope"])


def test_save_load_round_trip(train, tmp_path):
    model = BinnedRidge(alpha=1e3, min_bin_samples=200).fit(bin_statistics(train))
    model.save(tmp_path / "models.h5")
    back = BinnedRidge.load(tmp_path / "models.h5")
    assert back.get_params() == model.get_params() and list(back.experts_) == list(model.experts_)
    x, bins = train.flux.values[:50], np.arange(50) % 4
    np.testing.assert_array_equal(back.predict(x, bins=bins), model.predict(x, bins=bins))


def test_alpha_auto_needs_validation_statistics(train, data):
    with pytest.raises(InputError, match="val_stats"):
        BinnedRidge(alpha="auto").fit(bin_statistics(train))
    val = open_shards("val_300/dataset.h5", root=data, first_shard=10 ** 6)
    train_stats = bin_statistics(train).compute()
    model = BinnedRidge(alpha="auto", min_bin_samples=50).fit(
        train_stats, bin_statistics(val, shift=(train_stats.spec.c, train_stats.spec.y0)))
    assert model.alpha_choice_ is not None and model.global_.alpha_ in model.alpha_choice_.global_model.alphas


@pytest.mark.parametrize("bad, error", [({"alpha": -1.0}, "alpha"), ({"min_bin_samples": -3}, "min_bin_samples"),
                                        ({"scaler": "none"}, "scaler")])
def test_bad_parameters_are_one_line_errors(train, bad, error):
    # scikit-learn's manners: a ValueError naming the estimator's parameter, not a config key
    with pytest.raises(ValueError, match=f"^BinnedRidge: {error}=") as caught:
        BinnedRidge(**bad).fit(bin_statistics(train))
    assert isinstance(caught.value, InvalidParameterError) and caught.value.parameter == error
    assert "\n" not in str(caught.value) and "model." not in str(caught.value)


def test_bad_datasets_are_one_line_errors(train):
    with pytest.raises(InputError, match="'flux'"):
        bin_statistics(train.drop_vars("flux"))
    with pytest.raises(InputError, match="log_g"):
        bin_statistics(train.drop_vars("log_g"))
    ints = in_memory(train)
    ints["flux"] = ints.flux.astype(np.int32)
    with pytest.raises(InputError, match="floating-point"):
        bin_statistics(ints)
    nan = in_memory(train)
    nan["log_g"] = nan.log_g.where(nan.sample != 7)
    with pytest.raises(InputError, match=r"train_1500_0/dataset.h5: row 7: log_g is nan"):
        bin_statistics(nan)
    nan.attrs = {}  # not from files: the sample is named instead
    with pytest.raises(InputError, match="sample 7: log_g is nan"):
        bin_statistics(nan)
    twice = xr.concat([in_memory(train).isel(sample=slice(0, 100))] * 2, dim="sample")
    with pytest.raises(InputError, match="appears twice"):
        bin_statistics(twice)
    with pytest.raises(ConfigError, match="bins"):
        bin_statistics(train, by="T_eff")


def test_partition_by_a_column(train):
    bins = {"cool": [3700, 4800], "hot": [4800, 6100]}
    stats = bin_statistics(train, by="T_eff", bins=bins).compute().stats
    teff = train.T_eff.values
    assert stats.names == ("cool", "hot")
    assert stats.n.tolist() == [int((teff < 4800).sum()), int((teff >= 4800).sum())]
    by_values = bin_statistics(train, by=teff, bins=bins).compute().stats
    assert same_stats(stats, by_values)


# ----------------------------------------------------------------------------- equal to the CLI
def test_api_defaults_and_evaluate_equal_snrmoe_run(data, train, tmp_path):
    """bin_statistics(open_shards(paths)) with every default is the pass of config/oracle_snr.yaml, and
    evaluate gives the numbers of metrics.nc."""
    out = tmp_path / "run"
    sets = [f"data.root={data}", 'data.train_shards=["train_1500_{0..1}/dataset.h5"]',
            "data.test_file=test_400_0/dataset.h5", f"data.feature_dim={PIXELS}", f"output.dir={out}",
            "compute.cache=false", "evaluation.bootstrap=300"]
    assert main(["run", str(REPO / "config" / "oracle_snr.yaml"), "-q", *[a for s in sets for a in ("--set", s)]]) == 0
    model = BinnedRidge().fit(bin_statistics(open_shards("train_1500_{0..1}/dataset.h5", root=data)))
    cli = BinnedRidge.load(out / "models.h5")
    np.testing.assert_array_equal(model.global_.coef_, cli.global_.coef_)
    for name, expert in model.experts_.items():
        assert (expert is None) == (cli.experts_[name] is None)
        if expert is not None:
            np.testing.assert_array_equal(expert.coef_, cli.experts_[name].coef_)
    metrics = evaluate(model, open_shards("test_400_0/dataset.h5", root=data), bootstrap=300)
    written = xr.open_dataset(out / "metrics.nc")
    np.testing.assert_array_equal(metrics.value.values, written.value.values)
    np.testing.assert_array_equal(metrics.r2_low.values, written.r2_low.values)
    assert metrics.attrs["delta_r2"] == json.loads((out / "results.json").read_text())["delta_r2"]


def test_per_expert_scaler_false_reaches_the_model(data, train, tmp_path):
    out = tmp_path / "shared"
    sets = [f"data.root={data}", 'data.train_shards=["train_1500_{0..1}/dataset.h5"]',
            "data.test_file=test_400_0/dataset.h5", f"data.feature_dim={PIXELS}", f"output.dir={out}",
            "compute.cache=false", "evaluation.bootstrap=0", "preprocessing.per_expert_scaler=false",
            "compute.block_rows=512"]
    assert main(["run", str(REPO / "config" / "oracle_snr.yaml"), "-q", *[a for s in sets for a in ("--set", s)]]) == 0
    cli = BinnedRidge.load(out / "models.h5")
    api = BinnedRidge(scaler="shared").fit(bin_statistics(train))
    for name, expert in api.experts_.items():
        if expert is not None:
            np.testing.assert_array_equal(cli.experts_[name].coef_, expert.coef_)
            np.testing.assert_array_equal(cli.experts_[name].scaler_scale_, api.global_.scaler_scale_)


def test_a_local_compute_does_not_import_distributed():
    """Threaded and sync computes never import distributed (dask.compute does, to look for a client, when
    given a scheduler's name): that import held the GIL for half a second at the start of every pass."""
    import subprocess
    import sys

    code = ("import sys, dask\nfrom snrmoe_dask.engine.cluster import compute_context\n"
            "for name in ('threads', 'sync'):\n"
            "    with compute_context(name, 2, progress=False) as compute:\n"
            "        assert compute(dask.delayed(sum)([1, 2])) == 3\n"
            "print('distributed' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
