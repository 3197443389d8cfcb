"""BinnedRidge as scikit-learn and dask users use it: small when pickled or shipped in a graph, saved with
its bins and pass rule (a loaded model evaluates as the one saved, for any partition), scikit-learn's
manners (parameters, validation, NotFittedError, score), and numpy, dask and xarray inputs."""

from __future__ import annotations

import pickle

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from sklearn.base import clone, is_regressor
from sklearn.exceptions import NotFittedError
from sklearn.metrics import r2_score
from sklearn.utils import estimator_checks

from snrmoe_dask import BinnedRidge, bin_statistics, evaluate, open_shards, simulate_set
from snrmoe_dask.core.routing import route_by_snr
from snrmoe_dask.errors import InputError, InvalidParameterError
from snrmoe_dask.experiment.evaluation import load_test_set
from snrmoe_dask.io.models import save_models

PIXELS = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    simulate_set(root, train=(2, 1200), val=300, test=300, seed=3, pixels=PIXELS, progress=False)
    return root


@pytest.fixture(scope="module")
def train(data):
    return open_shards("train_1200_{0..1}/dataset.h5", root=data, block_rows=256)


@pytest.fixture(scope="module")
def test_set(data):
    return open_shards("test_300_0/dataset.h5", root=data)


# ----------------------------------------------------------------------------- small to ship
@pytest.fixture(scope="module")
def wide_model():
    """A model of 4096 pixels, as the card's: its training sums are K x D x D (0.5 GB)."""
    rng = np.random.default_rng(0)
    n, d = 600, 4096
    flux = (1 + 0.1 * rng.standard_normal((n, d))).astype(np.float32)
    error = np.full((n, d), 0.1, np.float32) * rng.uniform(0.5, 8, (n, 1)).astype(np.float32)
    ds = xr.Dataset({"flux": (("sample", "pixel"), flux), "error": (("sample", "pixel"), error),
                     "log_g": ("sample", rng.uniform(1, 5, n))})
    return BinnedRidge(alpha=1e3, min_bin_samples=10).fit(bin_statistics(ds)), flux


def test_a_fitted_model_pickles_to_its_coefficients_and_still_refits(wide_model):
    model, _ = wide_model
    size = len(pickle.dumps(model))
    assert size < 2e6, size  # the sums alone are 4 bins x 4096² / 2 x 8 bytes = 268 MB
    back = pickle.loads(pickle.dumps(model))
    assert back.get_params() == model.get_params() and list(back.experts_) == list(model.experts_)
    with pytest.raises(InputError, match="no statistics in this process"):
        back.set_params(alpha=1e4).fit()
    before = model.global_.coef_.copy()
    model.set_params(alpha=1e4).fit()  # the process that fitted still holds its statistics
    assert not np.allclose(model.global_.coef_, before)
    model.set_params(alpha=1e3).fit()
    assert np.array_equal(model.global_.coef_, before)


def test_a_dask_predict_graph_is_small_and_named(wide_model):
    model, flux = wide_model
    x = da.from_array(flux, chunks=(150, flux.shape[1]), name="spectra")
    bins = np.arange(len(flux)) % 4
    lazy = model.predict(x, bins=bins)
    graph = dict(lazy.__dask_graph__())
    own = {k: v for k, v in graph.items() if not str(k).startswith("('spectra")}
    assert len(pickle.dumps(own)) < 2e6
    assert all(str(k[0] if isinstance(k, tuple) else k).startswith(("predict-", "array-", "add-", "getitem-",
                                                                     "rechunk-", "spectra"))
               for k in graph), sorted(graph, key=str)[:5]
    assert any(str(k[0]).startswith("predict-") for k in graph if isinstance(k, tuple))
    np.testing.assert_allclose(lazy.compute(scheduler="threads"), model.predict(flux, bins=bins), rtol=1e-12)


# ----------------------------------------------------------------------------- saved with its bins
CASES = {
    "card bins": {},
    "custom bins": {"bins": {"low": [0, 3.0], "high": [3.0, np.inf]}},
    "T_eff": {"by": "T_eff", "bins": {"cool": [-np.inf, 4700.0], "warm": [4700.0, 5300.0], "hot": [5300.0, np.inf]}},
    "grid": {"by": ["T_eff", "M_H"], "bins": {"T_eff": {"cool": [-np.inf, 4800.0], "hot": [4800.0, np.inf]},
                                             "M_H": {"poor": [-np.inf, -0.5], "rich": [-0.5, np.inf]}}},
    "snr median": {"snr": "median"},
    "noise level 2": {"noise": {"level": 2.0}},
}


@pytest.mark.parametrize("case", CASES)
def test_evaluate_after_save_and_load_equals_evaluate_before(case, train, test_set, tmp_path):
    model = BinnedRidge(alpha=100.0, min_bin_samples=20).fit(bin_statistics(train, **CASES[case]))
    before = evaluate(model, test_set, bootstrap=50)
    model.save(tmp_path / "models.h5")
    loaded = BinnedRidge.load(tmp_path / "models.h5")
    after = evaluate(loaded, test_set, bootstrap=50)
    xr.testing.assert_identical(before, after)
    assert loaded.partition_ == model.partition_ and loaded.pass_spec_.mismatch(model.pass_spec_) is None


def test_a_model_file_without_bins_loads_and_says_what_is_missing(train, test_set, tmp_path):
    model = BinnedRidge(alpha=100.0, min_bin_samples=20).fit(bin_statistics(train))
    save_models(tmp_path / "old.h5", model.global_, model.experts_)  # as files written before bins were stored
    old = BinnedRidge.load(tmp_path / "old.h5")
    assert old.partition_ is None and list(old.experts_) == list(model.experts_)
    with pytest.raises(InputError, match="does not record its bins.*pass partition="):
        evaluate(old, test_set, bootstrap=0)
    np.testing.assert_array_equal(old.predict(test_set.flux.values, bins=np.zeros(300, int)),
                                  model.predict(test_set.flux.values, bins=np.zeros(300, int)))
    same = evaluate(old, test_set, partition=model.partition_, bootstrap=0)
    xr.testing.assert_allclose(same, evaluate(model, test_set, bootstrap=0))


# ----------------------------------------------------------------------------- scikit-learn's manners
@pytest.mark.parametrize("check", ["check_estimator_cloneable", "check_estimator_repr", "check_no_attributes_set_in_init",
                                   "check_get_params_invariance", "check_set_params",
                                   "check_do_not_raise_errors_in_init_or_set_params", "check_estimator_tags_renamed"])
def test_scikit_learn_checks_that_apply(check):
    getattr(estimator_checks, check)("BinnedRidge", BinnedRidge())


def test_parameters_validation_and_fitted_state(train):
    estimator_checks.check_parameters_default_constructible("BinnedRidge", BinnedRidge())
    assert is_regressor(BinnedRidge())
    with pytest.raises(TypeError):
        BinnedRidge(1e5, 100)  # everything but alpha is keyword-only
    with pytest.raises(NotFittedError):
        BinnedRidge().predict(np.zeros((2, PIXELS)), bins=[0, 1])
    for bad in ({"alpha": "1e5"}, {"alpha": True}, {"alpha": []}, {"alpha": np.inf}, {"min_bin_samples": 2.5},
                {"scaler": "global"}):
        with pytest.raises(InvalidParameterError) as caught:
            BinnedRidge(**bad).fit(bin_statistics(train))
        assert caught.value.parameter == next(iter(bad)) and isinstance(caught.value, ValueError)
    assert BinnedRidge(alpha=np.float32(3.0), min_bin_samples=np.int64(10)).fit(bin_statistics(train))


def test_alpha_lists_are_used_as_given_and_validation_sums_do_not_outlive_their_training_sums(data, train):
    stats = bin_statistics(train).compute()
    val = bin_statistics(open_shards("val_300/dataset.h5", root=data, first_shard=10 ** 6),
                         shift=(stats.spec.c, stats.spec.y0)).compute()
    model = BinnedRidge(alpha=[1.0, 10.0], min_bin_samples=20).fit(stats, val)
    assert list(model.alpha_choice_.global_model.alphas) == [1.0, 10.0]  # no alpha added behind the user's back
    model.set_params(alpha=[1.0, 100.0]).fit()  # the same training sums: the validation sums stay
    assert list(model.alpha_choice_.global_model.alphas) == [1.0, 100.0]
    with pytest.raises(InputError, match="val_stats"):
        model.fit(bin_statistics(train).compute())  # new training sums: the old validation sums are gone


def test_score_is_r2_and_predict_routes_by_error_with_the_models_own_rule(train, test_set):
    stats = bin_statistics(train, noise={"level": 2.0}).compute()
    model = BinnedRidge(alpha=100.0, min_bin_samples=20).fit(stats)
    flux, error, y = test_set.flux.values, test_set.error.values, test_set.log_g.values
    bins = route_by_snr(stats.spec, flux, error)  # level 2 halves every SNR: bins the card's rule would not give
    assert not np.array_equal(bins, route_by_snr(bin_statistics(train).compute().spec, flux, error))
    np.testing.assert_array_equal(model.predict(flux, error=error), model.predict(flux, bins=bins))
    np.testing.assert_array_equal(model.assign_bins(flux, error), np.asarray(model.bin_names_)[bins])
    assert model.score(flux, y, error=error) == pytest.approx(r2_score(y, model.predict(flux, bins=bins)), abs=0)
    with pytest.raises(InputError, match="exactly one of bins"):
        model.predict(flux)


def test_numpy_dask_and_xarray_inputs(train, test_set):
    model = BinnedRidge(alpha=100.0, min_bin_samples=20).fit(bin_statistics(train))
    flux, error = test_set.flux, test_set.error
    expected = model.predict(flux.values, error=error.values)
    lazy = model.predict(flux, error=error)  # dask-backed DataArrays in: a lazy DataArray out
    assert isinstance(lazy, xr.DataArray) and isinstance(lazy.data, da.Array) and lazy.dims == ("sample",)
    assert np.array_equal(lazy.shard.values, test_set.shard.values)
    np.testing.assert_allclose(lazy.compute().values, expected, rtol=1e-12)
    eager = model.predict(flux.compute(), error=error.compute())
    assert isinstance(eager, xr.DataArray) and isinstance(eager.data, np.ndarray)
    np.testing.assert_array_equal(eager.values, expected)
    names = model.assign_bins(flux.values, error.values)
    by_name = model.predict(flux.data, bins=da.from_array(names, chunks=100))
    np.testing.assert_allclose(by_name.compute(), expected, rtol=1e-12)
    np.testing.assert_allclose(model.predict_global(flux.data).compute(), model.global_.predict(flux.values),
                               rtol=1e-12)
    assert clone(model).get_params() == model.get_params()


def test_evaluate_describes_the_model_and_data_not_a_decision(train, test_set):
    model = BinnedRidge(alpha=100.0, min_bin_samples=20).fit(bin_statistics(train))
    metrics = evaluate(model, test_set, bootstrap=0)
    assert "experiment" not in metrics.attrs and "decision" not in metrics.attrs
    assert metrics.attrs["alpha"] == 100.0 and metrics.attrs["snr_method"] == "norm"
    decided = evaluate(model, test_set, bootstrap=0, threshold=0.02)
    assert decided.attrs["decision"] in ("PASS", "FAIL") and decided.attrs["threshold"] == 0.02
    noisy = load_test_set(test_set, partition=model.partition_).x
    assert float(metrics.value.sel(model="global", bin="overall", metric="r2")) == pytest.approx(
        r2_score(test_set.log_g.values, model.global_.predict(noisy)), abs=1e-12)
