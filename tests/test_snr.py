"""SNR per spectrum against plain numpy, and the SNR bins' tiling rules and half-open routing."""

import math
import pickle

import numpy as np
import pytest

from snrmoe_dask.core.snr import Bins, compute_snr, snr_column, snr_median, snr_norm
from snrmoe_dask.errors import ConfigError, InputError

CARD = {"H": [7, math.inf], "M": [4, 7], "L": [2, 4], "X": [0, 2]}


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(5)
    flux = (1.0 + 0.2 * rng.standard_normal((50, 300))).clip(0).astype(np.float32)
    error = (0.1 + 0.5 * rng.random((50, 300))).astype(np.float32)
    return flux, error


@pytest.mark.parametrize("level", [1.0, 0.5, 2.5])
def test_snr_norm_matches_numpy(pair, level):
    flux, error = pair
    f64, e64 = flux.astype(np.float64), error.astype(np.float64)
    expected = np.linalg.norm(f64, axis=1) / np.linalg.norm(e64 * level, axis=1)
    got = snr_norm(flux, error, level)
    assert got.dtype == np.float64 and got.shape == (50,)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("level", [1.0, 0.5])
def test_snr_median_matches_numpy(pair, level):
    flux, error = pair
    expected = np.median(flux.astype(np.float64) / (error.astype(np.float64) * level), axis=1)
    np.testing.assert_allclose(snr_median(flux, error, level), expected, rtol=1e-6)


def test_snr_column_and_dispatch(pair):
    flux, error = pair
    table = np.linspace(1.0, 9.0, 50)
    np.testing.assert_array_equal(snr_column(table, 2.0), table / 2.0)
    np.testing.assert_array_equal(compute_snr("column", flux, error, 2.0, table), table / 2.0)
    np.testing.assert_array_equal(compute_snr("norm", flux, error, 1.0), snr_norm(flux, error))
    np.testing.assert_array_equal(compute_snr("median", flux, error, 1.0), snr_median(flux, error))
    with pytest.raises(ConfigError, match="snr.method.*'foo'"):
        compute_snr("foo", flux, error, 1.0)
    with pytest.raises(ConfigError, match="snr.method"):
        compute_snr("column", flux, error, 1.0, None)
    with pytest.raises(ConfigError, match="noise.level"):
        snr_norm(flux, error, 0.0)


def test_card_bins_half_open():
    bins = Bins.from_mapping(CARD)
    values = np.array([0.0, 1.999, 2.0, 3.999, 4.0, 6.999, 7.0, 1e9, np.inf])
    got = np.asarray(bins.names)[bins.assign(values)]
    assert list(got) == ["X", "X", "L", "L", "M", "M", "H", "H", "H"]
    assert bins.assign(values).dtype == np.int8
    assert bins.n_bins == 4 and bins.names == ("H", "M", "L", "X")


def test_user_order_kept_for_any_listed_order():
    bins = Bins.from_mapping({"L": [2, 4], "H": [7, "inf"], "X": [0, 2], "M": [4, 7]})
    assert bins.names == ("L", "H", "X", "M")
    idx = bins.assign(np.array([1.0, 3.0, 5.0, 8.0]))
    assert [bins.names[i] for i in idx] == ["X", "L", "M", "H"]


@pytest.mark.parametrize("inf", [math.inf, np.inf, "inf", ".inf", "Infinity", None])
def test_inf_spellings_and_round_trip(inf):
    bins = Bins.from_mapping({"lo": [0, 3], "hi": [3, inf]})
    assert bins.high[1] == math.inf
    assert bins.to_dict() == {"lo": [0.0, 3.0], "hi": [3.0, None]}
    again = Bins.from_mapping(bins.to_dict())
    assert again == bins and hash(again) == hash(bins)
    assert pickle.loads(pickle.dumps(bins)) == bins


@pytest.mark.parametrize("mapping, offenders", [
    ({"H": [7, "inf"], "M": [4, 6], "L": [2, 4], "X": [0, 2]}, ["gap", "'M'", "'H'"]),
    ({"H": [7, "inf"], "M": [4, 7.5], "L": [2, 4], "X": [0, 2]}, ["overlaps", "'M'", "'H'"]),
    ({"H": [7, "inf"], "M": [4, 7], "L": [2, 4]}, ["start at 0", "'L'"]),
    ({"H": [7, 50], "M": [4, 7], "L": [2, 4], "X": [0, 2]}, ["reach inf", "'H'"]),
    ([("H", [2, "inf"]), ("H", [0, 2])], ["duplicate", "'H'"]),
    ({"H": [7, 4], "X": [0, 7]}, ["low must be < high", "'H'"]),
    ({"H": [7, "inf"], "X": [0, 7, 9]}, ["'X'", "[low, high]"]),
    ({"H": ["seven", "inf"], "X": [0, 7]}, ["'H'", "'seven'"]),
])
def test_tiling_errors_name_key_and_bins(mapping, offenders):
    with pytest.raises(ConfigError) as err:
        Bins.from_mapping(mapping, key="my.bins")
    message = str(err.value)
    assert message.startswith("my.bins:") and "\n" not in message
    for word in offenders:
        assert word in message


def test_assign_refuses_nan_and_negative():
    bins = Bins.from_mapping(CARD)
    with pytest.raises(InputError, match="2 of 4 SNR values are NaN"):
        bins.assign(np.array([1.0, np.nan, 3.0, np.nan]))
    with pytest.raises(InputError, match="1 of 2 SNR values are negative"):
        bins.assign(np.array([-0.5, 3.0]))


@pytest.mark.parametrize("name, words", [
    ("overall", ["reserved"]), ("Global", ["reserved"]), ("oracle", ["reserved"]), ("DEPLOYED", ["reserved"]),
    ("noisy_snr_routed", ["reserved"]), ("a/b", ["HDF5", "'/'"]), (".", ["HDF5"]), ("..", ["HDF5"]),
    ("a\nb", ["HDF5"]), ("a\x00b", ["HDF5"]), ("", ["non-empty"]), (3, ["non-empty strings"]),
])
def test_bin_names_that_collide_or_cannot_be_stored_are_refused(name, words):
    """A bin named like an aggregate or a model would share a label with it in metrics.nc and
    models.h5; one that HDF5 cannot name would fail after the pass."""
    with pytest.raises(ConfigError) as err:
        Bins.from_mapping({name: [4, "inf"], "low": [0, 4]}, key="my.bins")
    message = str(err.value)
    assert message.startswith("my.bins:") and "\n" not in message and repr(name) in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("name", ["overall_hi", "globalish", "H|", "信噪比高", "a.b", "low snr"])
def test_names_near_the_reserved_ones_are_kept(name):
    assert Bins.from_mapping({name: [4, "inf"], "low": [0, 4]}).names == (name, "low")
