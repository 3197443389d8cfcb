"""Hostile inputs end in ONE line `snrmoe: error: ...` (exit 2) naming the file, column, row or key, with
nothing written; silent repairs and overflows are told. Each class: the reported reproduction and variants
(other files, columns, dtypes, positions of the bad row)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import random_shard
from snrmoe_dask.cli import main
from snrmoe_dask.errors import ConfigError, InputError
from snrmoe_dask.experiment.config_file import load_config
from snrmoe_dask.io.params_table import read_params
from snrmoe_dask.io.shards import ERROR_KEY, FLUX_KEY, WAVE_KEY, write_shard
from snrmoe_dask.report.text import update_tracking_block

REPO = Path(__file__).resolve().parent.parent
PIXELS = 32
T0, T1, VAL, TEST = "train_0/dataset.h5", "train_1/dataset.h5", "val/dataset.h5", "test/dataset.h5"
AUTO = ("--set", "model.alpha=auto")
COLUMN = ("--set", "snr.method=column")
PRE_NOISED = ("--set", "noise.test=pre_noised")
BY_TEFF = ("--set", "routing.by=T_eff", "--set", "routing.bins={cool: [-.inf, 0.5], hot: [0.5, .inf]}",
           "--set", "model.experts=2")
GRID = ("--set", "routing.by=[T_eff, M_H]", "--set", "model.experts=4", "--set",
        "routing.bins={T_eff: {c: [-.inf, 0.5], h: [0.5, .inf]}, M_H: {p: [-.inf, 0.5], r: [0.5, .inf]}}")


# ----------------------------------------------------------------------------- tiny data and runs
@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    for name, n, seed in ((T0, 300, 1), (T1, 300, 2), (VAL, 120, 3), (TEST, 120, 4)):
        random_shard(root / name, n=n, d=PIXELS, seed=seed)
    return root


@pytest.fixture
def data(clean, tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(clean, root)
    return root


def run_args(root: Path, tmp: Path, *extra: str) -> list[str]:
    return ["run", str(REPO / "config" / "demo.yaml"), "-q", "--set", f"data.root={root}",
            "--set", 'data.train_shards=["train_{0..1}/dataset.h5"]', "--set", f"data.val_file={VAL}",
            "--set", f"data.test_file={TEST}", "--set", f"data.feature_dim={PIXELS}",
            "--set", f"output.dir={tmp / 'out'}", "--set", f"compute.cache_dir={tmp / 'cache'}", "--set", "compute.cache_min_gflop=0",
            "--set", "compute.cache_max_ratio=100",
            "--set", "compute.block_rows=64", "--set", "evaluation.bootstrap=0",
            "--set", "evaluation.min_bin_samples=10", "--set", "model.alpha=10", *extra]


def one_error_line(capsys, argv: list[str], *names) -> str:
    """Run the CLI; assert exit 2, no traceback, and exactly one stderr line `snrmoe: error: ...` (the
    last; log lines may come before it) naming every name."""
    code = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("snrmoe: error: ")]
    assert code == 2 and len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    assert "Traceback" not in err and "Warning" not in err, err
    for name in names:
        assert str(name) in errors[0], (name, errors[0])
    return errors[0]


def refused_run(capsys, root: Path, tmp: Path, extra, *names) -> str:
    """A run refused before its pass: no results folder, no cache folder, no hidden partial folder."""
    line = one_error_line(capsys, run_args(root, tmp, *extra), *names)
    assert not (tmp / "out").exists() and not (tmp / "cache").exists()
    assert not list(tmp.glob(".out*"))
    return line


def rewrite(path: Path, flux=None, error=None, params: pd.DataFrame | None = None) -> None:
    """Write the shard at ``path`` again with some parts replaced (flux/error keep their dtype)."""
    with h5py.File(path) as f:
        wave, old_flux, old_error = f[WAVE_KEY][...], f[FLUX_KEY][...], f[ERROR_KEY][...]
    flux = old_flux if flux is None else flux
    error = old_error if error is None else error
    params = read_params(path) if params is None else params
    path.unlink()
    write_shard(path, wave, np.real(flux).astype(np.float32), np.real(error).astype(np.float32), params, chunk_rows=64)
    with h5py.File(path, "a") as f:
        for key, values in ((FLUX_KEY, flux), (ERROR_KEY, error)):
            if values.dtype != np.float32:
                del f[key]
                f.create_dataset(key, data=values, chunks=(64, values.shape[1]))


def set_value(column: str, row: int, value):
    def edit(path: Path) -> None:
        params = read_params(path)
        if isinstance(value, str) or value is None:
            params[column] = params[column].astype(object)
        params.loc[row, column] = value
        rewrite(path, params=params)
    return edit


def drop_column(column: str):
    return lambda path: rewrite(path, params=read_params(path).drop(columns=[column]))


def as_dtype(key: str, dtype):
    def edit(path: Path) -> None:
        with h5py.File(path) as f:
            values = f[key][...]
        scaled = (values * 100).astype(dtype)
        rewrite(path, **{("flux" if key == FLUX_KEY else "error"): scaled})
    return edit


def first_rows(n: int):
    def edit(path: Path) -> None:
        with h5py.File(path) as f:
            flux, error = f[FLUX_KEY][:n], f[ERROR_KEY][:n]
        rewrite(path, flux, error, read_params(path).iloc[:n])
    return edit


def set_pixels(key: str, row: int, value: float):
    def edit(path: Path) -> None:
        with h5py.File(path) as f:
            values = f[key][...]
        values[row] = value
        rewrite(path, **{("flux" if key == FLUX_KEY else "error"): values})
    return edit


# ----------------------------------------------------------------------------- §5 target, snr and routing columns
COLUMN_CASES = {
    # id: (file, edit, overrides, names the line must hold)
    "nan target in the test file": (TEST, set_value("log_g", 5, np.nan), (), ("'log_g'", "row 5", "nan")),
    "nan target, first training shard, row 0": (T0, set_value("log_g", 0, np.nan), (), ("'log_g'", "row 0")),
    "'n/a' target in a training shard": (T1, set_value("log_g", 7, "n/a"), (), ("'log_g'", "row 7", "'n/a'")),
    "'n/a' target in the test file": (TEST, set_value("log_g", 7, "n/a"), (), ("'log_g'", "row 7", "'n/a'")),
    "inf target in the validation file": (VAL, set_value("log_g", 3, np.inf), AUTO, ("'log_g'", "row 3", "inf")),
    "None target, last row of the test file": (TEST, set_value("log_g", 119, None), (), ("'log_g'", "row 119")),
    "nan snr, snr.method column": (T1, set_value("snr", 11, np.nan), COLUMN, ("'snr'", "row 11")),
    "negative snr, pre-noised test": (TEST, set_value("snr", 2, -1.0), PRE_NOISED, ("'snr'", "row 2", "-1.0")),
    "'high' snr in the validation file": (VAL, set_value("snr", 0, "high"), COLUMN + AUTO, ("'snr'", "row 0", "'high'")),
    "nan snr in the test file, snr.method column": (TEST, set_value("snr", 9, np.nan), COLUMN, ("'snr'", "row 9")),
    "no snr column, pre-noised test": (TEST, drop_column("snr"), PRE_NOISED, ("no column 'snr'",)),
    "'hot' in a routing column": (T0, set_value("T_eff", 3, "hot"), BY_TEFF, ("'T_eff'", "row 3", "'hot'")),
    "nan in a grid column of the test file": (TEST, set_value("M_H", 4, np.nan), GRID, ("'M_H'", "row 4")),
    "no routing column in the validation file": (VAL, drop_column("T_eff"), BY_TEFF + AUTO, ("no column 'T_eff'",)),
}


@pytest.mark.parametrize("case", COLUMN_CASES)
def test_bad_params_column_is_one_line_naming_file_column_row(case, data, tmp_path, capsys):
    name, edit, extra, names = COLUMN_CASES[case]
    edit(data / name)
    refused_run(capsys, data, tmp_path, extra, data / name, *names)


def test_unused_columns_may_hold_anything(data, tmp_path, capsys):
    # the snr column is read only by snr.method: column / pre_noised, T_eff only when it routes
    for name in (T0, TEST):
        set_value("snr", 4, "n/a")(data / name)
        set_value("T_eff", 4, "hot")(data / name)
    assert main(run_args(data, tmp_path)) == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "results.json").exists()


# ----------------------------------------------------------------------------- §6 dtypes of flux and error
DTYPE_CASES = {
    "int32 flux, training": (T1, as_dtype(FLUX_KEY, np.int32), (), ("dataset/arrays/flux/value", "int32")),
    "int16 error, test": (TEST, as_dtype(ERROR_KEY, np.int16), (), ("dataset/arrays/error/value", "int16")),
    "uint8 flux, validation": (VAL, as_dtype(FLUX_KEY, np.uint8), AUTO, ("flux", "uint8")),
    "int64 both, first shard": (T0, lambda p: (as_dtype(FLUX_KEY, np.int64)(p), as_dtype(ERROR_KEY, np.int64)(p)), (),
                                ("flux", "int64")),
    "complex64 error": (T0, as_dtype(ERROR_KEY, np.complex64), (), ("error", "complex64")),
}


@pytest.mark.parametrize("case", DTYPE_CASES)
def test_non_float_arrays_are_refused_naming_file_dataset_dtype(case, data, tmp_path, capsys):
    name, edit, extra, names = DTYPE_CASES[case]
    edit(data / name)
    refused_run(capsys, data, tmp_path, extra, data / name, *names)


def numbers(out: Path) -> dict:
    r = json.loads((out / "results.json").read_text())
    return {k: r[k] for k in ("decision", "delta_r2", "models", "bins", "snr", "repairs")}


def test_other_float_types_give_the_float32_numbers(data, clean, tmp_path):
    # float64 and big-endian float32 hold the float32 values exactly: read through h5py, same results
    assert main(run_args(clean, tmp_path / "ref")) == 0
    with h5py.File(data / T0) as f:
        flux, error = f[FLUX_KEY][...], f[ERROR_KEY][...]
    rewrite(data / T0, flux.astype(np.float64), error.astype(">f4"))
    assert main(run_args(data, tmp_path / "wide")) == 0
    assert numbers(tmp_path / "wide" / "out") == numbers(tmp_path / "ref" / "out")
    as_dtype(FLUX_KEY, np.float16)(data / T1)  # accepted (rounded by the user, not by us)
    assert main(run_args(data, tmp_path / "half")) == 0


# ----------------------------------------------------------------------------- §5 test sets R² cannot score
@pytest.mark.parametrize("name, edit, extra, names", [
    (TEST, first_rows(1), (), ("1 spectrum", "at least 2")),
    (TEST, set_value("log_g", slice(None), 2.5), (), ("all 120 target values equal 2.5",)),
    (VAL, first_rows(1), AUTO, ("data.val_file", "1 spectrum")),
], ids=["1-row test file", "constant target in the test file", "1-row validation file"])
def test_test_set_r2_cannot_score_is_refused_up_front(name, edit, extra, names, data, tmp_path, capsys):
    edit(data / name)
    refused_run(capsys, data, tmp_path, extra, data / name, *names)


@pytest.mark.parametrize("edit", [first_rows(1), set_value("log_g", slice(None), 2.5)],
                         ids=["1-row test file", "constant target"])
def test_api_evaluate_refuses_what_the_cli_refuses_with_the_same_line(edit, data, tmp_path, capsys):
    """The API's evaluate gave R² 0.0 and a FAIL for a constant target and a TypeError for one spectrum."""
    from snrmoe_dask import BinnedRidge, bin_statistics, evaluate, open_shards

    edit(data / TEST)
    line = one_error_line(capsys, run_args(data, tmp_path))
    model = BinnedRidge(alpha=10.0, min_bin_samples=10).fit(bin_statistics(open_shards(str(data / T0))))
    with pytest.raises(InputError) as err:
        evaluate(model, open_shards(str(data / TEST)), bootstrap=0)
    assert line == f"snrmoe: error: {err.value}"


@pytest.mark.parametrize("n, y, words", [(1, [2.0], "1 spectrum"), (0, [], "0 spectra"),
                                         (5, [3.0] * 5, "all 5 target values equal 3.0")])
def test_api_evaluate_refuses_in_memory_test_sets_r2_cannot_score(n, y, words):
    import xarray as xr

    from snrmoe_dask import BinnedRidge, bin_statistics, evaluate

    rng = np.random.default_rng(0)
    flux = 1 + rng.random((400, 8))
    train = xr.Dataset({"flux": (("sample", "pixel"), flux), "error": (("sample", "pixel"), np.full((400, 8), 0.2)),
                        "log_g": ("sample", flux.sum(axis=1))})
    model = BinnedRidge(alpha=1.0, min_bin_samples=10).fit(bin_statistics(train))
    test = train.isel(sample=slice(0, n)).assign(log_g=("sample", np.asarray(y, dtype=float)))
    with pytest.raises(InputError, match=f"^the test set \\(column 'log_g'\\): {words}"):
        evaluate(model, test, bootstrap=0)


# ----------------------------------------------------------------------------- §6 a shard listed twice
@pytest.mark.parametrize("extra, names", [
    (("--set", 'data.train_shards=["train_{0..1}/dataset.h5", "train_0/dataset.h5"]'),
     (T0, "positions 0 and 2 of data.train_shards")),
    (("--set", 'data.train_shards=["train_*/dataset.h5", "test/dataset.h5"]'), (TEST, "data.test_file")),
    (("--set", f"data.val_file={TEST}") + AUTO, ("data.test_file", "data.val_file")),
    (("--set", 'data.train_shards=["train_{0..1}/dataset.h5", "link.h5"]'), ("link.h5", "(as ")),
    (("--set", 'data.train_shards=["train_0/dataset.h5", "train_1/../train_0/dataset.h5"]'), ("train_1/../train_0",)),
], ids=["brace range and literal", "test file as a training shard", "validation = test", "symlink", "dot-dot"])
def test_same_file_twice_is_refused(extra, names, data, tmp_path, capsys):
    (data / "link.h5").symlink_to(data / T0)
    refused_run(capsys, data, tmp_path, extra, "listed twice", *names)


def test_test_or_validation_pattern_naming_several_files_is_refused(data, tmp_path, capsys):
    refused_run(capsys, data, tmp_path, ("--set", "data.test_file=train_*/dataset.h5"),
                "data.test_file: 'train_*/dataset.h5' names 2 files", data / T0)
    refused_run(capsys, data, tmp_path, ("--set", "data.val_file=train_{0..1}/dataset.h5") + AUTO,
                "data.val_file", "names 2 files")


# ----------------------------------------------------------------------------- §5 not a regular file
def test_directory_as_a_shard_is_refused(data, tmp_path, capsys):
    refused_run(capsys, data, tmp_path, ("--set", 'data.train_shards=["train_0"]'), data / "train_0", "a directory")
    (data / "train_9" / "dataset.h5").mkdir(parents=True)  # a glob hit that is a folder
    refused_run(capsys, data, tmp_path, ("--set", 'data.train_shards=["train_*/dataset.h5"]'),
                data / "train_9" / "dataset.h5", "a directory")
    one_error_line(capsys, ["inspect", str(data / "train_0")], "a directory")


@pytest.mark.parametrize("argv", [["inspect", "{fifo}"], ["inspect", "{root}/train_*/dataset.h5", "{fifo}"],
                                  ["run", "--set", "data.test_file=fifo.h5"]], ids=["inspect", "inspect list", "run"])
def test_fifo_is_refused_not_waited_on(argv, data, tmp_path):
    fifo = data / "fifo.h5"
    os.mkfifo(fifo)
    argv = [a.format(fifo=fifo, root=data) for a in argv]
    if argv[0] == "run":
        argv = run_args(data, tmp_path, *argv[1:])
    # a subprocess with a timeout: opening a FIFO for reading would block this test forever
    proc = subprocess.run([sys.executable, "-m", "snrmoe_dask.cli", *argv], capture_output=True, text=True,
                          timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("snrmoe: error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(fifo) in errors[0] and "FIFO" in errors[0]
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- §6 values whose products overflow
OVERFLOW_CASES = {
    # id: (file, edit, overrides, names)
    "flux 3e38 in a training shard": (T1, set_pixels(FLUX_KEY, 17, 3e38), (), (T1, "row 17", "flux value 3e+38")),
    "flux 1e20 in a later block": (T0, set_pixels(FLUX_KEY, 200, 1e20), (), (T0, "row 200", "flux value 1e+20")),
    "flux 3e38 in the test file": (TEST, set_pixels(FLUX_KEY, 17, 3e38), (), (TEST, "row 17", "flux value 3e+38")),
    "error 1e30 at noise level 1": (T1, set_pixels(ERROR_KEY, 5, 1e30), (), (T1, "row 5", "error value 1e+30")),
    "noise.level 1e30": (None, None, ("--set", "noise.level=1e30"), ("noise.level: 1e+30",)),
    "noise.level 1e39 (inf in float32)": (None, None, ("--set", "noise.level=1e39"), ("noise.level: 1e+39",)),
    "noise.level 1e200, expected noise": (None, None, ("--set", "noise.level=1e200", "--set", "noise.mode=expected"),
                                          ("noise.level: 1e+200",)),
}


@pytest.mark.parametrize("case", OVERFLOW_CASES)
def test_overflow_names_the_file_and_row_or_the_key(case, data, tmp_path, capsys):
    name, edit, extra, names = OVERFLOW_CASES[case]
    if edit:
        edit(data / name)
    names = [data / n if n in (T0, T1, TEST) else n for n in names]
    line = one_error_line(capsys, run_args(data, tmp_path, *extra), *names)
    if name != TEST:
        assert str(data / TEST) not in line  # never blames the test set for another cause
    assert not (tmp_path / "out").exists()


def test_overflow_line_comes_without_numpy_warnings(data, tmp_path):
    set_pixels(FLUX_KEY, 17, 3e38)(data / T1)
    proc = subprocess.run([sys.executable, "-m", "snrmoe_dask.cli", *run_args(data, tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Warning" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"snrmoe: error: {data / T1}: row 17")


def test_float64_products_take_what_float32_cannot(data, tmp_path, capsys):
    # training shards in other units (a row of 1e20 among rows of 1 is refused as mis-scaled: test_precision.py)
    for name in (T0, T1):
        with h5py.File(data / name) as f:
            flux = f[FLUX_KEY][...]
        rewrite(data / name, flux=flux * np.float32(1e20))
    one_error_line(capsys, run_args(data, tmp_path), "train_", "float32 products overflow", "for float32 products")
    assert main(run_args(data, tmp_path, "--set", "compute.precision=float64")) == 0


# ----------------------------------------------------------------------------- §6 repairs are told
def test_repairs_above_a_thousandth_are_in_summary_and_report(data, tmp_path, capsys):
    def zero_error(path: Path) -> None:
        with h5py.File(path) as f:
            error = f[ERROR_KEY][...]
        error[:, :3] = 0  # 3 of 32 pixels of every row: 9.4 %
        rewrite(path, error=error)
    zero_error(data / T1)
    set_pixels(ERROR_KEY, 7, np.nan)(data / TEST)  # one whole row of the test set but one pixel
    with h5py.File(data / TEST, "a") as f:
        f[ERROR_KEY][7, 0] = 0.3
    assert main(run_args(data, tmp_path, "--lang", "en")) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["repairs"]["error_nonpositive"] == 900 and results["test_repairs"]["error_nan"] == 31
    assert out.count("repairs: 900 of 19,200 training pixels (4.7%)") == 1 and "error <= 0 -> 1e-6 900" in out
    assert "repairs: 31 of 3,840 test pixels (0.8%)" in out and "error NaN -> nearest pixel 31" in out
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Repairs on read changed 900 of the 19,200 training pixels (4.7%): error ≤ 0 → 1e-6 900." in report
    assert "Repairs on read changed 31 of the 3,840 test pixels (0.8%): error NaN → nearest pixel 31." in report
    assert main(["report", str(tmp_path / "out"), "--lang", "zh"]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "读取时的修复改动了训练集 19,200 个像素中的 900 个（4.7%）：error ≤ 0 → 1e-6 900 个。" in report


def test_repairs_below_a_thousandth_are_not_announced(data, tmp_path, capsys):
    set_pixels(ERROR_KEY, 3, 0.3)(data / T0)
    with h5py.File(data / T0, "a") as f:
        f[ERROR_KEY][3, 0] = 0  # 1 of 19,200 pixels
    assert main(run_args(data, tmp_path)) == 0
    assert "repairs:" not in capsys.readouterr().out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["repairs"]["error_nonpositive"] == 1
    assert "修复改动" not in (tmp_path / "out" / "report.md").read_text()


# ----------------------------------------------------------------------------- §5/§6 config files and --set
def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text", [
    "data: " + "[" * 5000 + "]" * 5000,
    "model: " + "{a: " * 3000 + "1" + "}" * 3000,
    "data:\n" + "".join("  " * i + "- \n" for i in range(1, 2000)),
    "routing:\n  bins: " + "{a: " * 40 + "1" + "}" * 40,
], ids=["5000 lists", "3000 flow mappings", "2000 block lists", "40 levels (parses, still too deep)"])
def test_deep_yaml_file_is_one_line(text, tmp_path, capsys):
    path = write(tmp_path, text)
    one_error_line(capsys, ["run", str(path)], path, "nested too deeply")


def alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines)


@pytest.mark.parametrize("text, expected", [
    ("defs:\n" + "\n".join("  " + line for line in alias_bomb().splitlines()) + "\nmodel:\n  alpha: *a8\n",
     "expands to 926,177,119 values"),  # 9^9 strings and their lists: before, a 300 MB error line after 17 s
    ("a: &a [*a]\n", "nested too deeply"),  # an alias of itself
], ids=["alias bomb", "self-referencing alias"])
def test_yaml_aliases_cannot_blow_up(text, expected, tmp_path, capsys):
    path = write(tmp_path, text)
    line = one_error_line(capsys, ["run", str(path)], path, expected)
    assert len(line) < 400


def test_config_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "exp.yaml"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "snrmoe_dask.cli", "run", str(fifo)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"snrmoe: error: {fifo}: is not a regular file, expected a YAML config file"]


def test_deep_yaml_in_set_is_one_short_line(tmp_path, capsys):
    line = one_error_line(capsys, ["run", str(REPO / "config" / "demo.yaml"), "--set",
                                   "model.alpha=" + "[" * 5000 + "]" * 5000], "override", "nested too deeply")
    assert len(line) < 400


def test_set_twice_blames_the_override_that_holds(tmp_path):
    demo = REPO / "config" / "demo.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(demo, ["model.alpha=-1", "model.alpha=-5"])
    assert "'model.alpha=-5'" in str(info.value) and "'model.alpha=-1'" not in str(info.value)
    with pytest.raises(ConfigError, match=r"set by override 'model=\{alpha: -1\}'"):
        load_config(demo, ["model.alpha=5", "model={alpha: -1}"])
    with pytest.raises(ConfigError, match=r"set by override 'model.alpha=-2'"):
        load_config(demo, ["model={alpha: 5}", "model.alpha=-2"])
    assert load_config(demo, ["model.alpha=-1", "model.alpha=7"]).model.alpha == 7.0  # the last one wins


# ----------------------------------------------------------------------------- §5 snrmoe report
@pytest.fixture(scope="module")
def finished(clean, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("finished")
    assert main(run_args(clean, tmp)) == 0
    return tmp / "out"


def _garbage(folder: Path) -> None:
    (folder / "predictions.csv").write_bytes(bytes(range(256)) * 8)


def _empty(folder: Path) -> None:
    (folder / "predictions.csv").write_bytes(b"")


def _text_in_numbers(folder: Path) -> None:
    frame = pd.read_csv(folder / "predictions.csv")
    frame["y_oracle"] = frame["y_oracle"].astype(object)
    frame.loc[4, "y_oracle"] = "abc"
    frame.to_csv(folder / "predictions.csv", index=False)


def _truncated(folder: Path) -> None:
    frame = pd.read_csv(folder / "predictions.csv")
    frame.iloc[:-10].to_csv(folder / "predictions.csv", index=False)


def _json_folder(folder: Path) -> None:
    (folder / "results.json").unlink()
    (folder / "results.json").mkdir()


def _json_value(text: str):
    return lambda folder: (folder / "results.json").write_text(text)


def _bad_r2(folder: Path) -> None:
    results = json.loads((folder / "results.json").read_text())
    results["models"]["global"]["r2"] = "abc"
    (folder / "results.json").write_text(json.dumps(results))


def _results_value(path: list[str], value):
    def damage(folder: Path) -> None:
        results = json.loads((folder / "results.json").read_text())
        node = results
        for key in path[:-1]:
            node = node[key] if key != "<first bin>" else next(iter(node.values()))
        node[path[-1]] = value
        (folder / "results.json").write_text(json.dumps(results))
    return damage


REPORT_CASES = {
    "garbage predictions.csv": (_garbage, ("predictions.csv",)),
    "empty predictions.csv": (_empty, ("predictions.csv", "empty")),
    "text in a number column": (_text_in_numbers, ("predictions.csv", "'y_oracle'", "row 4", "'abc'")),
    "predictions.csv short of rows": (_truncated, ("predictions.csv", "110 rows", "n_test=120")),
    "results.json is a folder": (_json_folder, ("results.json", "not a regular file")),
    "results.json is not JSON": (_json_value("{nope"), ("results.json", "not valid JSON")),
    "results.json is a list": (_json_value("[1, 2]"), ("results.json", "expected a dict")),
    "results.json is a bare number": (_json_value("3"), ("results.json", "expected a dict")),
    "results.json with a text R2": (_bad_r2, ("results.json", "'abc' is not a number")),
    "a bin's metrics are a number": (_results_value(["bins", "<first bin>", "expert"], 5),
                                     ("results.json", ".expert' must be a dict")),
    "a text count": (_results_value(["models", "global", "n_train"], "x"), ("'models.global.n_train' is 'x'",)),
    "a fractional count": (_results_value(["models", "oracle", "n_test"], 120.5), ("'models.oracle.n_test' is 120.5",)),
    "repairs are a list": (_results_value(["repairs"], [1]), ("'repairs' must be a dict",)),
    "timings are text": (_results_value(["timings_s"], "x"), ("'timings_s' must be a dict",)),
    "pixels are text": (_results_value(["data", "pixels"], "x"), ("'data.pixels' is 'x'",)),
    "a gate of the wrong shape": (_results_value(["gate"], {"confusion": "x", "names": 5}),
                                  ("results.json", "unexpected type or shape")),
}


@pytest.mark.parametrize("case", REPORT_CASES)
def test_report_on_damaged_results_is_one_line(case, finished, tmp_path, capsys):
    folder = tmp_path / "res"
    shutil.copytree(finished, folder)
    damage, names = REPORT_CASES[case]
    damage(folder)
    before = (folder / "report.md").read_bytes()
    one_error_line(capsys, ["report", str(folder)], folder, *names)
    assert (folder / "report.md").read_bytes() == before


def test_report_on_a_file_or_nothing_is_one_line(tmp_path, capsys):
    file = tmp_path / "results"
    file.write_text("not a folder")
    one_error_line(capsys, ["report", str(file)], file, "not a folder")
    one_error_line(capsys, ["report", str(tmp_path / "missing")], tmp_path / "missing", "not found")
    assert file.read_text() == "not a folder"


# ----------------------------------------------------------------------------- §5 snrmoe simulate
def test_simulate_into_a_file_is_one_line(tmp_path, capsys):
    file = tmp_path / "afile"
    file.write_text("keep me")
    small = ["--train", "1x20", "--val", "0", "--test", "0", "--pixels", "16", "-q"]
    one_error_line(capsys, ["simulate", str(file), *small], file, "is a file")
    one_error_line(capsys, ["simulate", str(file / "sub"), *small], file / "sub", f"lies under {file}")
    (tmp_path / "set" / "train_20_0" / "dataset.h5").mkdir(parents=True)
    one_error_line(capsys, ["simulate", str(tmp_path / "set"), *small], "train_20_0/dataset.h5", "not a regular file")
    assert file.read_text() == "keep me" and not list((tmp_path / "set").rglob("*.partial"))


# ----------------------------------------------------------------------------- §5 snrmoe cache
def test_cache_clear_that_cannot_delete_is_one_line(clean, tmp_path, capsys, monkeypatch):
    assert main(run_args(clean, tmp_path)) == 0
    cache = tmp_path / "cache"
    entries = sorted(cache.glob("*.h5"))
    assert len(entries) == 3  # two shards and their merged entry
    cache.chmod(0o555)
    unlink = Path.unlink

    def read_only(path, missing_ok=False):  # root ignores the mode bits: refuse as a read-only folder would
        if path.parent == cache:
            raise PermissionError(13, "Permission denied", str(path))
        return unlink(path, missing_ok=missing_ok)
    monkeypatch.setattr(Path, "unlink", read_only)
    try:
        one_error_line(capsys, ["cache", "clear", "--dir", str(cache)], entries[0], "cannot delete",
                       "removed 0 of 3", "3 left")
    finally:
        cache.chmod(0o755)
    assert sorted(cache.glob("*.h5")) == entries


def test_cache_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    file = tmp_path / "cachefile"
    file.write_text("x")
    for action in ("ls", "clear"):
        one_error_line(capsys, ["cache", action, "--dir", str(file)], file, "not a folder")
    assert file.read_text() == "x"


def test_a_folder_in_place_of_a_cache_entry_is_left_alone(clean, tmp_path, capsys, caplog):
    assert main(run_args(clean, tmp_path / "a")) == 0
    cache = tmp_path / "a" / "cache"
    entries = sorted(cache.glob("*.h5"))
    for entry in entries:  # someone else's folders, named like our entries
        entry.unlink()
        entry.mkdir()
        (entry / "theirs.txt").write_text("keep")
    with caplog.at_level("WARNING"):
        assert main(run_args(clean, tmp_path / "a", "--set", "output.dir=" + str(tmp_path / "b"))) == 0
    assert "not a cache file" in caplog.text
    assert numbers(tmp_path / "b") == numbers(tmp_path / "a" / "out")
    capsys.readouterr()
    assert main(["cache", "ls", "--dir", str(cache)]) == 0
    assert capsys.readouterr().out.count("not ours, left alone") == len(entries)
    assert main(["cache", "clear", "--dir", str(cache)]) == 0
    assert all((e / "theirs.txt").read_text() == "keep" for e in entries)


# ----------------------------------------------------------------------------- §6 --roadmap / --hub
BEGIN, END = "<!-- snrmoe:E1:begin -->", "<!-- snrmoe:E1:end -->"


@pytest.mark.parametrize("before, after", [
    (f"a\r\nb\r\n{BEGIN}\r\nold\r\n{END}\r\ntail\r\nno newline at the end", "\r\ntail\r\nno newline at the end"),
    (f"\ufeff# BOM\n{BEGIN}\nold\n{END}", ""),
    (f"x\n{BEGIN}\nold\n{END}\n\n\n", "\n\n\n"),
], ids=["crlf, no final newline", "bom", "trailing blank lines"])
def test_tracking_block_keeps_every_byte_outside(before, after, tmp_path):
    path = tmp_path / "roadmap.md"
    path.write_bytes(before.encode("utf-8"))
    path.chmod(0o600)
    update_tracking_block(path, "E1", "new\nbody")
    raw = path.read_bytes()
    head = before[:before.index(BEGIN)].encode("utf-8")
    nl = "\r\n" if "\r\n" in before else "\n"
    assert raw == head + f"{BEGIN}{nl}new{nl}body{nl}{END}".encode() + after.encode("utf-8")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    update_tracking_block(path, "E1", "new\nbody")
    assert path.read_bytes() == raw  # idempotent


@pytest.mark.parametrize("before, sep", [("text without final newline", "\n\n"), ("a\r\nb\r\n", "\r\n"),
                                         ("", "")], ids=["no final newline", "crlf", "empty"])
def test_tracking_block_appended_after_the_untouched_text(before, sep, tmp_path):
    path = tmp_path / "hub.md"
    path.write_bytes(before.encode())
    update_tracking_block(path, "E1", "body")
    nl = "\r\n" if "\r\n" in before else "\n"
    assert path.read_bytes() == (before + sep + f"{BEGIN}{nl}body{nl}{END}{nl}").encode()


def test_tracking_block_follows_a_link(tmp_path):
    target = tmp_path / "real.md"
    target.write_text("keep\n")
    link = tmp_path / "link.md"
    link.symlink_to(target)
    update_tracking_block(link, "E1", "body")
    assert link.is_symlink() and target.read_text().startswith("keep\n\n" + BEGIN)


TRACKING_CASES = {
    "begin without end": (f"x\n{BEGIN}\nold\n", ("found 1", "and 0", "line 2")),
    "two begins": (f"{BEGIN}\na\n{END}\n{BEGIN}\nb\n{END}\n", ("found 2",)),
    "end before begin": (f"{END}\n{BEGIN}\n", ("begin before end", "line 1")),
    "not UTF-8": (b"\xff\xfe\x00bad", ("not UTF-8",)),
}


@pytest.mark.parametrize("case", TRACKING_CASES)
@pytest.mark.parametrize("flag", ["--roadmap", "--hub"])
def test_bad_tracking_file_is_refused_before_the_run(case, flag, clean, tmp_path, capsys):
    text, names = TRACKING_CASES[case]
    path = tmp_path / "track.md"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = path.read_bytes()
    refused_run(capsys, clean, tmp_path, ("--set", "experiment.id=E1", flag, str(path)), path, *names)
    assert path.read_bytes() == before


def test_tracking_file_that_is_a_folder_or_has_no_folder_is_refused(clean, tmp_path, capsys):
    (tmp_path / "dir.md").mkdir()
    refused_run(capsys, clean, tmp_path, ("--roadmap", str(tmp_path / "dir.md")), "dir.md", "not a regular file")
    refused_run(capsys, clean, tmp_path, ("--hub", str(tmp_path / "no" / "hub.md")), "does not exist")
    (tmp_path / "sub").mkdir()
    same = ("--roadmap", str(tmp_path / "r.md"), "--hub", f"{tmp_path}/sub/../r.md")
    refused_run(capsys, clean, tmp_path, same, "--roadmap and --hub name the same file")


def test_hard_linked_tracking_files_are_recognised(clean, tmp_path, capsys):
    """A hard-linked --roadmap/--hub pair was accepted and ended as two separate files."""
    (tmp_path / "r.md").write_text("# roadmap\n")
    os.link(tmp_path / "r.md", tmp_path / "h.md")
    pair = ("--roadmap", str(tmp_path / "r.md"), "--hub", str(tmp_path / "h.md"))
    refused_run(capsys, clean, tmp_path, pair, "--roadmap and --hub name the same file")
    # one name of a hard link: the atomic rewrite would part it from the other name
    refused_run(capsys, clean, tmp_path, ("--hub", str(tmp_path / "h.md")), "--hub", "h.md", "2 hard links")
    assert (tmp_path / "r.md").read_text() == "# roadmap\n" and os.stat(tmp_path / "r.md").st_nlink == 2


def test_missing_tracking_file_is_created(clean, tmp_path, capsys):
    roadmap, hub = tmp_path / "roadmap.md", tmp_path / "hub.md"
    hub.write_bytes(b"# Hub\r\nintro")
    assert main(run_args(clean, tmp_path, "--set", "experiment.id=E1", "--roadmap", str(roadmap),
                         "--hub", str(hub))) == 0
    assert roadmap.read_text().startswith(BEGIN + "\n") and roadmap.read_text().endswith(END + "\n")
    assert hub.read_bytes().startswith(b"# Hub\r\nintro\r\n\r\n" + BEGIN.encode() + b"\r\n")


def test_update_tracking_block_raises_input_error_on_its_own(tmp_path):
    path = tmp_path / "t.md"
    path.write_text(f"{BEGIN}\n{BEGIN}\n{END}\n")
    with pytest.raises(InputError, match="found 2"):
        update_tracking_block(path, "E1", "x")
