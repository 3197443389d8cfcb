"""End to end: `snrmoe run` on tiny simulated shards against a plain numpy/scikit-learn computation."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from snrmoe_dask.cli import main
from snrmoe_dask.core.card_defaults import BINS as CARD_BINS
from snrmoe_dask.core.noise import add_noise
from snrmoe_dask.core.repair import repair_block
from snrmoe_dask.core.snr import Bins, snr_norm
from snrmoe_dask.io.shards import ERROR_KEY, FLUX_KEY
from snrmoe_dask.io.simulate import simulate_set

PIXELS = 96


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    simulate_set(root, train=(2, 3000), val=0, test=1000, seed=7, pixels=PIXELS, progress=False)
    return root


def run_args(root: Path, out: Path, *extra: str) -> list[str]:
    repo = Path(__file__).resolve().parent.parent
    return ["run", str(repo / "config" / "demo.yaml"), "-q",
            "--set", f"data.root={root}", "--set", 'data.train_shards=["train_3k_{0..1}/dataset.h5"]',
            "--set", "data.val_file=null", "--set", "data.test_file=test_1k_0/dataset.h5",
            "--set", f"data.feature_dim={PIXELS}", "--set", f"output.dir={out}",
            "--set", "compute.block_rows=512", "--set", "evaluation.bootstrap=0", *extra]


def load_matrix(path: Path, seed: int, shard: int):
    with h5py.File(path) as f:
        flux, error = f[FLUX_KEY][...], f[ERROR_KEY][...]
    repair_block(flux, error)
    snr = snr_norm(flux, error, 1.0)
    x = add_noise(flux, error, 1.0, seed=seed, shard=shard, row0=0)
    return x.astype(np.float64), pd.read_hdf(path)["log_g"].to_numpy(), snr


def numpy_metrics(y, p):
    return {"r2": 1 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2),
            "mae": np.mean(np.abs(y - p)), "rmse": np.sqrt(np.mean((y - p) ** 2))}


@pytest.fixture(scope="module")
def float64_run(tiny_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "res"
    assert main(run_args(tiny_set, out, "--set", "compute.precision=float64", "--set", "model.alpha=1000",
                         "--set", "evaluation.min_bin_samples=100")) == 0
    return out


def test_metrics_equal_plain_sklearn(tiny_set, float64_run):
    results = json.loads((float64_run / "results.json").read_text())
    cfg = results["config"]
    alpha, seed, test_seed = 1000.0, cfg["noise"]["seed"], cfg["noise"]["test_seed"]
    bins = Bins.from_mapping(CARD_BINS)
    parts = [load_matrix(tiny_set / f"train_3k_{k}" / "dataset.h5", seed, k) for k in range(2)]
    X = np.concatenate([p[0] for p in parts]); y = np.concatenate([p[1] for p in parts])
    b = bins.assign(np.concatenate([p[2] for p in parts]))
    Xt, yt, snr_t = load_matrix(tiny_set / "test_1k_0" / "dataset.h5", test_seed, 0)
    bt = bins.assign(snr_t)

    glob = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(X, y)
    p_global = glob.predict(Xt)
    p_oracle = p_global.copy()
    for k, name in enumerate(bins.names):
        n_train = int((b == k).sum())
        assert results["bins"][name]["n_train"] == n_train
        assert results["bins"][name]["n_test"] == int((bt == k).sum())
        assert results["bins"][name]["skipped"] == (n_train < 100)
        if n_train >= 100:
            expert = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(X[b == k], y[b == k])
            p_oracle[bt == k] = expert.predict(Xt[bt == k])

    preds = pd.read_csv(float64_run / "predictions.csv")
    np.testing.assert_allclose(preds["y_global"], p_global, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(preds["y_oracle"], p_oracle, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(preds["y_true"], yt)
    for model, p in (("global", p_global), ("oracle", p_oracle)):
        for metric, value in numpy_metrics(yt, p).items():
            assert results["models"][model][metric] == pytest.approx(value, rel=1e-6, abs=1e-9)
    for k, name in enumerate(bins.names):
        sel = bt == k
        if sel.sum() >= 2:
            exp = numpy_metrics(yt[sel], p_oracle[sel])["r2"]
            assert results["bins"][name]["expert"]["r2"] == pytest.approx(exp, rel=1e-6, abs=1e-9)
            assert results["bins"][name]["delta_r2"] == pytest.approx(
                exp - numpy_metrics(yt[sel], p_global[sel])["r2"], rel=1e-6, abs=1e-9)
    delta = numpy_metrics(yt, p_oracle)["r2"] - numpy_metrics(yt, p_global)["r2"]
    assert results["delta_r2"] == pytest.approx(delta, rel=1e-6, abs=1e-9)
    assert results["decision"] == ("PASS" if delta >= 0.02 else "FAIL")


def test_outputs_exist_and_parse(float64_run):
    results = json.loads((float64_run / "results.json").read_text())
    for key in ("experiment", "decision", "threshold", "delta_r2", "models", "bins", "snr", "timings_s", "provenance"):
        assert key in results
    assert results["provenance"]["files"] and results["provenance"]["packages"]["numpy"]
    with h5py.File(float64_run / "models.h5") as f:
        assert "global" in f and f["global/coef"].shape == (PIXELS,)
        assert f["global"].attrs["n_train"] == 6000
    ds = xr.open_dataset(float64_run / "metrics.nc")
    assert ds["value"].sel(model="oracle", bin="overall", metric="r2") == pytest.approx(results["models"]["oracle"]["r2"])
    for name in ("comparison", "perbin_r2", "pred_vs_true", "delta_heatmap"):
        img = mpimg.imread(float64_run / "img" / f"snr_oracle_moe_{name}.png")
        assert img.shape[0] > 100 and img.shape[1] > 100
    report = (float64_run / "report.md").read_text()
    assert "TODO" not in report and "img/snr_oracle_moe_comparison.png" in report
    assert not list(float64_run.parent.glob(f".{float64_run.name}.*"))  # no partial or old folder left


def test_skipped_bin_served_by_global(tiny_set, tmp_path):
    out = tmp_path / "skip"
    assert main(run_args(tiny_set, out, "--set", "evaluation.min_bin_samples=2000")) == 0
    results = json.loads((out / "results.json").read_text())
    skipped = [n for n, b in results["bins"].items() if b["skipped"]]
    assert skipped and all(results["bins"][n]["n_train"] < 2000 for n in skipped)
    preds = pd.read_csv(out / "predictions.csv")
    sel = preds["bin"].isin(skipped)
    assert sel.any()
    np.testing.assert_array_equal(preds.loc[sel, "y_oracle"], preds.loc[sel, "y_global"])
    with h5py.File(out / "models.h5") as f:
        assert not any(n in f for n in skipped)
    assert "global" in (out / "report.md").read_text().lower()


def test_report_rebuilds_from_results(float64_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(float64_run, copy)
    shutil.rmtree(copy / "img")
    (copy / "report.md").unlink()
    assert main(["report", str(copy), "--lang", "en"]) == 0
    assert (copy / "img" / "snr_oracle_moe_delta_heatmap.png").exists()
    assert "TODO" not in (copy / "report.md").read_text()


@pytest.mark.parametrize("override, key", [
    ("model.alpha=-1", "model.alpha"),
    ("model.unknown_key=3", "model.unknown_key"),
    ("evaluation.threshold=high", "evaluation.threshold"),
    ("snr.bins={H: [7, .inf], M: [4, 7], X: [0, 2]}", "snr.bins"),
    ("data.feature_dim=4096", "data.feature_dim"),
])
def test_bad_config_exit_2_no_results(tiny_set, tmp_path, capsys, override, key):
    out = tmp_path / "bad"
    assert main(run_args(tiny_set, out, "--set", override)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".bad*"))
