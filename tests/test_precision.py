"""Values finite but absurd (issue 22): one flux value of 1e17 flipped the card's verdict in float32 and
not in float64. Absurd values (more than 1e6 x their row's typical magnitude) are repaired and counted;
blocks whose values span too wide a range for float32 products are multiplied in float64; so float32
decides as float64 does, whatever magnitude is injected."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from snrmoe_dask import BinnedRidge, bin_statistics, evaluate, open_shards
from snrmoe_dask.cli import main
from snrmoe_dask.engine.segment import WIDE_OFFSET, WIDE_PEAK, products_dtype
from snrmoe_dask.errors import InputError
from snrmoe_dask.io.shards import ERROR_KEY, FLUX_KEY
from snrmoe_dask.io.simulate import simulate_set

REPO = Path(__file__).resolve().parent.parent
PIXELS, ROWS = 64, 1000
T0, T1, TEST = "train_1k_0/dataset.h5", "train_1k_1/dataset.h5", "test_300_0/dataset.h5"


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("precision")
    simulate_set(root, train=(2, ROWS), val=0, test=300, seed=3, pixels=PIXELS, progress=False)
    return root


def injected(clean: Path, tmp: Path, key: str, cells: list[tuple[int, int]], value: float, name: str = T0) -> Path:
    """A copy of the clean set with ``value`` at (row, pixel) ``cells`` of ``key`` in shard ``name``."""
    root = tmp / "data"
    shutil.copytree(clean, root, dirs_exist_ok=True)
    with h5py.File(root / name, "a") as f:
        for row, pixel in cells:
            f[key][row, pixel] = value
    return root


def delta_and_decision(root: Path, precision: str) -> tuple[float, str]:
    train = open_shards([str(root / T0), str(root / T1)])
    model = BinnedRidge(alpha=1e3, min_bin_samples=50).fit(bin_statistics(train, precision=precision))
    metrics = evaluate(model, open_shards(str(root / TEST)), bootstrap=0, threshold=0.02)
    return float(metrics.attrs["delta_r2"]), str(metrics.attrs["decision"])


@pytest.mark.parametrize("magnitude", [1e4, 1e5, 1e6, 1e14, 1e17])
def test_float32_decides_as_float64_whatever_magnitude_is_injected(magnitude, clean, tmp_path):
    """Before: ΔR² differed by 1e-4 at 1e5, 2e-3 at 1e6, and the decision itself at 1e14 and 1e16."""
    root = injected(clean, tmp_path, FLUX_KEY, [(17, 40)], magnitude)
    (d32, v32), (d64, v64) = delta_and_decision(root, "float32"), delta_and_decision(root, "float64")
    assert v32 == v64 and abs(d32 - d64) < 1e-5, (d32, d64)


def run_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(REPO / "config" / "demo.yaml"), "-q", "--set", f"data.root={root}",
            "--set", 'data.train_shards=["train_1k_{0..1}/dataset.h5"]', "--set", "data.val_file=null",
            "--set", f"data.test_file={TEST}", "--set", f"data.feature_dim={PIXELS}", "--set", f"output.dir={out}",
            "--set", "compute.cache=false", "--set", "evaluation.bootstrap=0", "--set", "model.alpha=1000",
            "--set", "evaluation.min_bin_samples=50", *extra]


@pytest.fixture(scope="module")
def reference(clean, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference") / "res"
    assert main(run_args(clean, out)) == 0
    return json.loads((out / "results.json").read_text())


def test_the_reported_case_is_repaired_counted_and_named(clean, reference, tmp_path, capsys, caplog):
    """One flux value of 1e17 in one training row: FAIL in float32, PASS in float64, a warning naming no file."""
    root = injected(clean, tmp_path, FLUX_KEY, [(17, 40)], 1e17)
    results = {}
    for precision in ("float32", "float64"):
        with caplog.at_level(logging.WARNING, logger="snrmoe_dask.engine.segment"):
            assert main(run_args(root, tmp_path / precision, "--set", f"compute.precision={precision}")) == 0
        results[precision] = json.loads((tmp_path / precision / "results.json").read_text())
        assert results[precision]["repairs"]["flux_absurd"] == 1
        # once per run (the shift's read of the first rows does not say it again)
        assert caplog.text.count(f"{root / T0}: row 17, pixel 40: flux value 1e+17 is ") == 1, caplog.text
        warned = caplog.text
        caplog.clear()
    assert results["float32"]["decision"] == results["float64"]["decision"] == reference["decision"]
    assert abs(results["float32"]["delta_r2"] - results["float64"]["delta_r2"]) < 1e-6
    assert abs(results["float32"]["delta_r2"] - reference["delta_r2"]) < 0.003  # the neighbour's value, not the truth
    assert f"{root / T0}: row 17, pixel 40: flux value 1e+17 is " in warned
    # the summary and the report say so, however few (other repairs only above 0.1 % of the pixels)
    assert "flux > 1e6 x its row's typical -> nearest pixel 1" in capsys.readouterr().out
    assert "flux 超过本行典型值 10⁶ 倍 → 最近像素 1 个" in (tmp_path / "float32" / "report.md").read_text()


@pytest.mark.parametrize("key, cells, counted", [
    (FLUX_KEY, [(3, 0), (250, 63), (251, 10), (999, 31)], "flux_absurd"),  # four bit flips to 4.6e18
    (ERROR_KEY, [(17, 40), (500, 2)], "error_absurd"),  # the noise they scale is as absurd
], ids=["four flux", "two error"])
def test_other_absurd_values_are_repaired_alike_in_both_precisions(key, cells, counted, clean, tmp_path):
    root = injected(clean, tmp_path, key, cells, 4.6e18)
    for precision in ("float32", "float64"):
        train = open_shards([str(root / T0), str(root / T1)])
        assert getattr(bin_statistics(train, precision=precision).compute().repairs, counted) == len(cells)
    assert delta_and_decision(root, "float32")[1] == delta_and_decision(root, "float64")[1]


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_a_mis_scaled_spectrum_is_refused_naming_its_row(precision, clean, tmp_path):
    root = injected(clean, tmp_path, FLUX_KEY, [(200, p) for p in range(PIXELS)], 1e20)  # the whole row
    with pytest.raises(InputError) as err:
        bin_statistics(open_shards([str(root / T0), str(root / T1)]), precision=precision).compute()
    assert str(err.value).startswith(f"{root / T0}: row 200: flux value 1e+20 is typical of the row, ")


def test_absurd_test_values_are_repaired_and_counted(clean, reference, tmp_path):
    root = injected(clean, tmp_path, FLUX_KEY, [(5, 9)], 3e16, name=TEST)
    assert main(run_args(root, tmp_path / "res")) == 0
    results = json.loads((tmp_path / "res" / "results.json").read_text())
    assert results["test_repairs"]["flux_absurd"] == 1 and results["repairs"]["flux_absurd"] == 0
    assert abs(results["delta_r2"] - reference["delta_r2"]) < 0.003


def test_wide_blocks_are_multiplied_in_float64():
    rng = np.random.default_rng(0)
    x = (1 + 0.3 * rng.standard_normal((512, 64))).astype(np.float32)
    c = np.ones(64)
    typical = float(np.median(np.abs(x[::8, :] - c)))
    assert products_dtype(x, c, np.dtype(np.float32)) == np.float32  # spectra: far below both limits
    off = c.copy()
    off[40] += 1.5 * WIDE_OFFSET * typical  # a shift far from one column's values (lifted by a few huge values)
    assert products_dtype(x, off, np.dtype(np.float32)) == np.float64
    x[7, 3] = 1 + 1.5 * WIDE_PEAK * typical  # one value far outside the block's range
    assert products_dtype(x, c, np.dtype(np.float32)) == np.float64
    assert products_dtype(x, c, np.dtype(np.float64)) == np.float64
