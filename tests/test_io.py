"""Shard I/O: round trip, lazy opening, pickling, cluster use, and one-line errors for bad files."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pandas as pd
import pytest

from snrmoe_dask.engine.dataset import open_shards
from snrmoe_dask.io import params_table
from snrmoe_dask.io import shards as io
from snrmoe_dask.cli import main
from snrmoe_dask.core import repair
from snrmoe_dask.core.repair import repair_block
from snrmoe_dask.errors import InputError


def test_expand_braces_keeps_numeric_order():
    assert io.expand_braces("train_200k_{0..2}/dataset.h5") == [f"train_200k_{i}/dataset.h5" for i in range(3)]
    assert io.expand_braces("a{8..10}b{1..2}") == ["a8b1", "a8b2", "a9b1", "a9b2", "a10b1", "a10b2"]


def test_the_arrays_are_named_after_the_files_versions(tmp_path, shard_factory):
    """Dask keys name the data: the same files give the same names (through a link as well), a file
    written again new ones, so that no persisted or cached result of the old file stands for the new."""
    import os

    a = shard_factory("a/dataset.h5", n=40, seed=1)
    os.symlink(a, tmp_path / "link.h5")
    names = [open_shards([p]).flux.data.name for p in (a, a, tmp_path / "link.h5")]
    assert names[0] == names[1] == names[2]
    shard_factory("a/dataset.h5", n=40, seed=2)  # the same path, written again
    assert open_shards([a]).flux.data.name != names[0]


def test_params_of_files_with_other_columns_join_as_pandas_joins_them(tmp_path, shard_factory):
    """Float64 tables with the same columns are joined as arrays; any other mix as pandas.concat does."""
    paths = [shard_factory(f"s{k}/dataset.h5", n=20 + k, seed=k) for k in range(3)]
    with h5py.File(paths[0]) as f:
        flux, error, wave = f[io.FLUX_KEY][...], f[io.ERROR_KEY][...], f[io.WAVE_KEY][...]
    same = open_shards(paths[:2])
    expected = pd.concat([pd.read_hdf(p) for p in paths[:2]], ignore_index=True)
    for col in expected.columns:
        np.testing.assert_array_equal(same[col].values, expected[col].to_numpy())
    params = params_table.read_params(paths[0])
    params["extra"] = np.arange(len(params))  # an int column: not a float table, and one more column
    paths[0].unlink()
    io.write_shard(paths[0], wave, flux, error, params, chunk_rows=64)
    mixed = open_shards(paths)
    expected = pd.concat([pd.read_hdf(p) for p in paths], ignore_index=True)
    assert sorted(k for k in mixed.data_vars if k not in ("flux", "error")) == sorted(expected.columns)
    for col in expected.columns:
        np.testing.assert_array_equal(mixed[col].values, expected[col].to_numpy())
    assert np.isnan(mixed.extra.values[20:]).all()


def test_round_trip_lazy_identical(tmp_path, shard_factory):
    a = shard_factory("train_0/dataset.h5", n=300, seed=1)
    b = shard_factory("train_1/dataset.h5", n=250, seed=2)
    paths = io.resolve_shards(tmp_path, "train_{0..1}/dataset.h5")
    assert paths == [a, b]
    ds = open_shards(paths, block_rows=100)
    # block rows are rounded to whole HDF5 chunks (64 rows here)
    assert ds.flux.data.chunks[0] == (64, 64, 64, 64, 44, 64, 64, 64, 58)
    assert ds.sizes == {"sample": 550, "pixel": 32}
    with h5py.File(b) as f:
        flux_b, err_b = f[io.FLUX_KEY][...], f[io.ERROR_KEY][...]
    assert np.array_equal(ds.flux.values[300:], flux_b)
    assert np.array_equal(ds.error.values[300:], err_b)
    assert np.array_equal(ds.shard.values, np.r_[np.zeros(300), np.ones(250)])
    assert np.array_equal(ds.log_g.values[300:], pd.read_hdf(b)["log_g"].to_numpy())
    clone = pickle.loads(pickle.dumps(ds))
    assert np.array_equal(clone.flux.values, ds.flux.values)


def test_open_reads_no_array(tmp_path, shard_factory, monkeypatch):
    path = shard_factory(n=200)
    calls = []
    monkeypatch.setattr(io.H5Rows, "__getitem__", lambda self, idx: calls.append(idx))
    open_shards([path])
    assert calls == []


def test_lazy_dataset_under_process_cluster(tmp_path, shard_factory):
    distributed = pytest.importorskip("distributed")
    path = shard_factory(n=400)
    ds = open_shards([path], block_rows=64)
    expected = ds.flux.values.astype(np.float64).sum(axis=0)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c, \
            distributed.Client(c) as client:
        got = client.compute(ds.flux.data.astype(np.float64).sum(axis=0)).result()
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "x" / "dataset.h5"
    with pytest.raises(RuntimeError):
        with io.ShardWriter(path, 10, np.arange(4.0)) as w:
            w.write(0, np.ones((10, 4), np.float32), np.ones((10, 4), np.float32))
            raise RuntimeError("crash")
    assert not path.exists() and not list(path.parent.iterdir())


def test_repairs_counted():
    flux = np.array([[1.0, -0.5, 2.0, 1.0]], np.float32)
    error = np.array([[np.nan, 0.2, np.nan, 0.0]], np.float32)
    counts = repair_block(flux, error)
    assert flux.tolist() == [[1.0, 0.0, 2.0, 1.0]]
    # NaN takes the nearest finite pixel: pixel 0 <- pixel 1 (0.2); pixel 2 <- pixel 1 (tie goes left);
    # then error <= 0 becomes the 1e-6 floor.
    np.testing.assert_array_equal(error, np.array([[0.2, 0.2, 0.2, 1e-6]], np.float32))
    assert counts.to_dict() == {"flux_negative": 1, "error_nan": 2, "error_nonpositive": 1, "flux_absurd": 0,
                                "error_absurd": 0}


@pytest.mark.parametrize("kind", ["flux", "error"])
@pytest.mark.parametrize("ratio, absurd", [(9.9e5, False), (1.01e6, True), (1e17, True), (4.6e18, True),
                                           (-1e17, True)])
def test_absurd_values_are_replaced_by_their_nearest_pixel(kind, ratio, absurd):
    """The rule: |value| > 1e6 x the row's typical magnitude (median |value| of 32 evenly spaced pixels)."""
    rng = np.random.default_rng(3)
    arrays = {"flux": (1.0 + 0.01 * rng.standard_normal((4, 96))).astype(np.float32),
              "error": (0.5 + 0.01 * rng.random((4, 96))).astype(np.float32)}
    target = arrays[kind]
    typical = float(np.sort(np.abs(target[2, ::3]))[16])  # 96 pixels: every 3rd, the upper middle of 32
    target[2, 40] = np.float32(ratio * typical)
    before = {k: a.copy() for k, a in arrays.items()}
    found = []
    counts = repair_block(arrays["flux"], arrays["error"], clip_flux=False, found=found)
    assert getattr(counts, f"{kind}_absurd") == int(absurd) and counts.flux_negative == counts.error_nan == 0
    if absurd:
        assert target[2, 40] == target[2, 39]  # the nearest pixel (ties go left)
        assert found == [repair.Absurd(kind, 2, 40, float(before[kind][2, 40]), typical)]
        before[kind][2, 40] = target[2, 40]
    else:
        assert found == []
    for k in arrays:  # nothing else changed
        np.testing.assert_array_equal(arrays[k], before[k])


def test_rows_without_a_scale_of_their_own_are_held_to_the_blocks():
    flux = np.ones((3, 64), np.float32)
    flux[1] = 0.0  # a clipped row: typical 0
    flux[1, 5] = 2.0  # ordinary next to the other rows: kept
    flux[1, 9] = 5e6  # absurd next to them: replaced by 0 (its nearest pixel)
    error = np.full((3, 64), 0.2, np.float32)
    error[2, :40] = 0.0  # floored later; its 0.2 pixels are ordinary for the block
    counts = repair_block(flux, error)
    assert counts.flux_absurd == 1 and counts.error_absurd == 0 and counts.error_nonpositive == 40
    assert flux[1, 5] == 2.0 and flux[1, 9] == 0.0 and (error[2, 40:] == np.float32(0.2)).all()


# ----------------------------------------------------------------------------- malformed input
def _edit(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)
    return path


def _bad_inputs(tmp_path, shard_factory):
    def good(name):
        return shard_factory(f"{name}/dataset.h5", n=100)

    def truncated():
        p = good("trunc")
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 3])
        return p

    def text():
        p = tmp_path / "text" / "dataset.h5"
        p.parent.mkdir()
        p.write_text("not hdf5")
        return p

    def no_flux():
        return _edit(good("noflux"), lambda f: f.__delitem__(io.FLUX_KEY))

    def shape_mismatch():
        def fn(f):
            del f[io.ERROR_KEY]
            f.create_dataset(io.ERROR_KEY, data=np.ones((100, 31), np.float32))
        return _edit(good("shape"), fn)

    def wave_len():
        def fn(f):
            del f[io.WAVE_KEY]
            f.create_dataset(io.WAVE_KEY, data=np.arange(30, dtype=np.float32))
        return _edit(good("wave"), fn)

    def no_params():
        p = tmp_path / "noparams" / "dataset.h5"
        p.parent.mkdir()
        with h5py.File(p, "w") as f:
            f.create_dataset(io.WAVE_KEY, data=np.arange(4, dtype=np.float32))
            f.create_dataset(io.FLUX_KEY, data=np.ones((3, 4), np.float32))
            f.create_dataset(io.ERROR_KEY, data=np.ones((3, 4), np.float32))
        return p

    def no_target():
        p = good("notarget")
        df = pd.read_hdf(p).drop(columns=["log_g"])
        with pd.HDFStore(p, mode="a") as store:
            store.remove("params")
        df.to_hdf(p, key="params", mode="a")
        return p

    def row_count():
        p = good("rows")
        df = pd.read_hdf(p).iloc[:90]
        with pd.HDFStore(p, mode="a") as store:
            store.remove("params")
        df.to_hdf(p, key="params", mode="a")
        return p

    def zero_rows():
        return random_empty(tmp_path / "empty" / "dataset.h5")

    return {
        "missing": (lambda: tmp_path / "nope" / "dataset.h5", "file not found"),
        "truncated": (truncated, "not a readable HDF5 file"),
        "not hdf5": (text, "not a readable HDF5 file"),
        "dataset missing": (no_flux, "missing dataset dataset/arrays/flux/value (datasets present:"),
        "shape mismatch": (shape_mismatch, "has shape (100, 31) but"),
        "wave length": (wave_len, "expected (32,) to match 32 pixels"),
        "params missing": (no_params, "expected exactly one pandas params table, found no pandas table"),
        "no target": (no_target, "has no column 'log_g' (columns: T_eff"),
        "row count": (row_count, "params table has 90 rows but the arrays have 100 spectra"),
        "zero rows": (zero_rows, "has 0 rows"),
    }


def random_empty(path):
    return io.write_shard(path, np.arange(4.0), np.ones((0, 4), np.float32), np.ones((0, 4), np.float32),
                          pd.DataFrame({c: np.zeros(0) for c in io.PARAM_COLUMNS}))


CASES = ["missing", "truncated", "not hdf5", "dataset missing", "shape mismatch", "wave length",
         "params missing", "no target", "row count", "zero rows"]


@pytest.mark.parametrize("case", CASES)
def test_bad_shard_one_line_exit_2(case, tmp_path, shard_factory, capsys):
    make, expected = _bad_inputs(tmp_path, shard_factory)[case]
    path = make()
    with pytest.raises(InputError) as exc:
        io.inspect_shard(path)
    assert str(path) in str(exc.value) and expected in str(exc.value)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("snrmoe: error: ") and expected in err
    assert "Traceback" not in err


def test_no_file_matches_pattern(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "train_*/dataset.h5")]) == 2
    err = capsys.readouterr().err
    assert "no file matches this pattern" in err and err.count("\n") == 1


def test_shards_must_share_grid(tmp_path, shard_factory):
    a = shard_factory("a/dataset.h5", d=32)
    b = shard_factory("b/dataset.h5", d=16)
    with pytest.raises(InputError, match=f"{b}: 16 pixels but {a} has 32"):
        io.inspect_shards([a, b])
    c = shard_factory("c/dataset.h5", d=32)
    _edit(c, lambda f: f[io.WAVE_KEY].__setitem__(slice(0, 1), 5000.0))
    with pytest.raises(InputError, match=f"{c}: wavelength grid differs from that of {a}"):
        io.inspect_shards([a, c])


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("bad_first", [True, False], ids=["first shard", "second shard"])
def test_non_finite_wavelength_is_blamed_on_its_own_file(value, bad_first, shard_factory):
    """A NaN in train_0's grid was reported as train_1's "grid differs"."""
    a, b = shard_factory("a/dataset.h5", d=32), shard_factory("b/dataset.h5", d=32)
    bad = a if bad_first else b
    _edit(bad, lambda f: f[io.WAVE_KEY].__setitem__(slice(7, 9), value))
    with pytest.raises(InputError) as err:
        io.inspect_shards([a, b])
    assert str(err.value).startswith(f"{bad}: {io.WAVE_KEY} pixel 7 is ") and "2 of 32 pixels" in str(err.value)


def test_inspect_reports_repairs_and_bins(tmp_path, shard_factory, capsys):
    path = shard_factory(n=200)
    _edit(path, lambda f: f[io.ERROR_KEY].__setitem__((slice(0, 3), 0), np.nan))
    assert main(["inspect", "--json", str(path)]) == 0
    import json

    summary = json.loads(capsys.readouterr().out)[0]
    assert summary["n"] == 200 and summary["pixels"] == 32
    assert summary["repairs"]["error_nan"] == 3
    assert sum(b["count"] for b in summary["bins"].values()) == 200
    assert list(summary["bins"]) == ["H", "M", "L", "X"]


PARAMS_CASES = {
    "floats, as the real files": lambda n, rng: pd.DataFrame({c: rng.random(n) for c in io.PARAM_COLUMNS}),
    "ints and floats: two blocks": lambda n, rng: pd.DataFrame({"log_g": rng.random(n), "id": np.arange(n),
                                                                "snr": rng.random(n).astype(np.float32)}),
    "a text column": lambda n, rng: pd.DataFrame({"log_g": rng.random(n), "name": [f"s{i}" for i in range(n)]}),
    "an index of its own": lambda n, rng: pd.DataFrame({"log_g": rng.random(n)}, index=np.arange(n)[::-1] * 3),
    "a two-level index": lambda n, rng: pd.DataFrame(
        {"log_g": rng.random(n)}, index=pd.MultiIndex.from_arrays([np.arange(n) // 10, np.arange(n) % 10])),
    "two-level column names": lambda n, rng: pd.DataFrame(
        rng.random((n, 2)), columns=pd.MultiIndex.from_tuples([("a", "log_g"), ("a", "snr")])),
    "a date column": lambda n, rng: pd.DataFrame({"log_g": rng.random(n),
                                                  "when": pd.date_range("2026-01-01", periods=n)}),
}
NOT_PLAIN = ("a text column", "two-level column names", "a date column")  # what pandas itself reads


@pytest.mark.parametrize("case", PARAMS_CASES)
@pytest.mark.parametrize("fmt, key", [("fixed", "params"), ("table", "params"), ("fixed", "meta/params")])
def test_params_table_reads_as_pandas_reads_it(case, fmt, key, tmp_path):
    """The params table through h5py (a plain fixed-format frame) or pandas (anything else): the same frame."""
    path = tmp_path / "dataset.h5"
    frame = PARAMS_CASES[case](50, np.random.default_rng(1))
    frame.to_hdf(path, key=key, format=fmt)
    expected = pd.read_hdf(path).reset_index(drop=True)
    pd.testing.assert_frame_equal(params_table.read_params(path), expected)
    with h5py.File(path, "r") as f:
        fast = params_table._fixed_frame(f.id)
    plain = fmt == "fixed" and case not in NOT_PLAIN
    assert (fast is not None) == plain  # the h5py path only for what it reads exactly
    if plain:
        pd.testing.assert_frame_equal(fast.frame() if isinstance(fast, params_table.FloatTable) else fast, expected)


@pytest.mark.parametrize("complib", ["zlib", "blosc"])
def test_compressed_params_table_reads_as_pandas_reads_it(complib, tmp_path):
    # zlib: h5py decompresses it; blosc: no h5py filter, so pandas reads it
    path = tmp_path / "dataset.h5"
    frame = PARAMS_CASES["floats, as the real files"](50, np.random.default_rng(2))
    frame.to_hdf(path, key="params", complevel=5, complib=complib)
    pd.testing.assert_frame_equal(params_table.read_params(path), pd.read_hdf(path).reset_index(drop=True))


def test_params_table_with_two_pandas_objects_is_refused(tmp_path):
    path = tmp_path / "dataset.h5"
    pd.DataFrame({"log_g": [1.0, 2.0]}).to_hdf(path, key="params")
    pd.DataFrame({"log_g": [1.0, 2.0]}).to_hdf(path, key="other", mode="a")
    with pytest.raises(InputError, match="exactly one pandas params table"):
        params_table.read_params(path)


def test_prefetching_metadata_never_blocks_nor_fails(tmp_path, shard_factory):
    import os
    import threading

    fifo = tmp_path / "fifo.h5"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer
    paths = [shard_factory(), fifo, tmp_path / "missing.h5", tmp_path]
    thread = threading.Thread(target=lambda: (io.prefetch(paths), io.prefetch(paths, whole_up_to=1 << 30)), daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
