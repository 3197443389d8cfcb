"""End to end beyond the card: the deployable gate, alpha chosen on validation, routing by a params
column and by a two-column grid, and the bootstrap decision rule, each through ``snrmoe run`` on
tiny simulated shards and checked against numpy / scikit-learn computed here from the files."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
from pathlib import Path

import h5py
import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from snrmoe_dask.cli import main
from snrmoe_dask.core.metrics import decision_for
from snrmoe_dask.core.noise import add_noise
from snrmoe_dask.core.repair import repair_block
from snrmoe_dask.experiment.plan import VAL_SHARD_INDEX
from snrmoe_dask.io.shards import ERROR_KEY, FLUX_KEY
from snrmoe_dask.io.simulate import simulate_set

PIXELS = 64
TRAIN = [f"train_2k_{k}/dataset.h5" for k in range(2)]
VAL, TEST = "val_400/dataset.h5", "test_600_0/dataset.h5"
# The simulator draws T_eff in [3750, 6000] K and [M/H] in [-1, 0] (simulate.BETA_PARAMS); these
# bins cover that range with ~1,200-1,400 training spectra each.
TEFF_BINS = {"cool": [3700.0, 4600.0], "mid": [4600.0, 5300.0], "hot": [5300.0, 6100.0]}
GRID_BINS = {"T_eff": {"cool": [3700.0, 4900.0], "hot": [4900.0, math.inf]},
             "M_H": {"poor": [-math.inf, -0.5], "rich": [-0.5, math.inf]}}
CI_SUFFIX = "_ci"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("beyond-data")
    simulate_set(root, train=(2, 2000), val=400, test=600, seed=7, pixels=PIXELS, progress=False)
    return root


def _yaml(value) -> str:
    return json.dumps(value).replace("Infinity", ".inf")


def run(data: Path, out: Path, *sets: str, lang: str = "en") -> tuple[dict, pd.DataFrame, str, str]:
    """`snrmoe run config/demo.yaml` on the tiny set; returns (results, predictions, report, summary)."""
    repo = Path(__file__).resolve().parent.parent
    args = ["run", str(repo / "config" / "demo.yaml"), "-q", "--lang", lang,
            "--set", f"data.root={data}", "--set", f"data.train_shards={_yaml(TRAIN)}",
            "--set", f"data.val_file={VAL}", "--set", f"data.test_file={TEST}",
            "--set", f"data.feature_dim={PIXELS}", "--set", f"output.dir={out}",
            "--set", "compute.block_rows=256"]
    for s in sets:
        args += ["--set", s]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    return results, pd.read_csv(out / "predictions.csv"), (out / "report.md").read_text(), stdout.getvalue()


def load_matrix(path: Path, seed: int, shard: int) -> tuple[np.ndarray, pd.DataFrame]:
    """The noisy float64 matrix the pass sees (repaired, clipped, noised) and the params table."""
    with h5py.File(path) as f:
        flux, error = f[FLUX_KEY][...], f[ERROR_KEY][...]
    repair_block(flux, error)
    x = add_noise(flux, error, 1.0, seed=seed, shard=shard, row0=0)
    return x.astype(np.float64), pd.read_hdf(path)


def training_matrix(data: Path, seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    parts = [load_matrix(data / name, seed, k) for k, name in enumerate(TRAIN)]
    return np.concatenate([p[0] for p in parts]), pd.concat([p[1] for p in parts], ignore_index=True)


def sk_ridge(alpha: float):
    return make_pipeline(StandardScaler(), Ridge(alpha=alpha))


def assert_png(path: Path) -> None:
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0.02  # something was drawn


def ci_keys(node, prefix: str = "") -> list[str]:
    """Every key path ending in '_ci' in a nested dict."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if str(key).endswith(CI_SUFFIX):
                found.append(path)
            found += ci_keys(value, path)
    return found


def check_tables(report: str) -> None:
    """Every markdown table row has as many (unescaped) cell separators as its header."""
    header = None
    for line in report.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        n = len(re.findall(r"(?<!\\)\|", line))
        if header is None:
            header = n
        assert n == header, f"table row breaks its table: {line!r}"


# ----------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def gate_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("gate") / "res"
    return out, *run(data, out, "evaluation.deployable_gate=true", "evaluation.bootstrap=200", "model.alpha=1000")


@pytest.fixture(scope="module")
def alpha_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("alpha") / "res"
    return out, *run(data, out, "model.alpha=auto", "evaluation.bootstrap=0", "compute.precision=float64",
                     lang="zh")


@pytest.fixture(scope="module")
def teff_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("teff") / "res"
    return out, *run(data, out, "routing.by=T_eff", f"routing.bins={_yaml(TEFF_BINS)}", "model.experts=3",
                     "model.alpha=1000", "compute.precision=float64", "evaluation.bootstrap=0")


@pytest.fixture(scope="module")
def grid_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("grid") / "res"
    return out, *run(data, out, f"routing.by={_yaml(['T_eff', 'M_H'])}", f"routing.bins={_yaml(GRID_BINS)}",
                     "model.experts=4", "model.alpha=1000", "evaluation.bootstrap=0")


# ----------------------------------------------------------------------------- a. deployable gate
def test_gate_fields_agree_with_predictions(gate_run):
    out, results, preds, report, summary = gate_run
    gate, models = results["gate"], results["models"]
    names = results["partition"]["names"]
    assert gate["names"] == names == ["H", "M", "L", "X"]
    for column in ("y_deployed", "gate_bin", "y_noisy_snr"):
        assert column in preds
    y = preds["y_true"].to_numpy()
    n_test = len(y)

    # deployed and noisy-SNR scores are scikit-learn's on the written predictions
    for model, column in (("deployed", "y_deployed"), ("noisy_snr_routed", "y_noisy_snr")):
        p = preds[column].to_numpy()
        assert models[model]["r2"] == pytest.approx(r2_score(y, p), rel=1e-9, abs=1e-12)
        assert models[model]["mae"] == pytest.approx(mean_absolute_error(y, p), rel=1e-9)
        assert models[model]["rmse"] == pytest.approx(root_mean_squared_error(y, p), rel=1e-9)
    for name in names:
        sel = (preds["bin"] == name).to_numpy()
        assert results["bins"][name]["deployed"]["r2"] == pytest.approx(
            r2_score(y[sel], preds["y_deployed"].to_numpy()[sel]), rel=1e-9, abs=1e-12)

    # rho from the results' own R², defined only where the oracle's headroom has an interval above 0
    r2_dep, r2_glob, r2_orc = models["deployed"]["r2"], models["global"]["r2"], models["oracle"]["r2"]
    if results["delta_r2_ci"][0] > 0:
        assert gate["rho"] == pytest.approx((r2_dep - r2_glob) / (r2_orc - r2_glob), rel=1e-12)
    else:
        assert gate["rho"] is None and "not defined (no oracle headroom" in report

    # confusion: rows = true bin, columns = the gate's bin, counts from predictions.csv
    confusion = np.array(gate["confusion"])
    assert confusion.shape == (len(names), len(names)) and confusion.sum() == n_test
    for i, true in enumerate(names):
        assert confusion[i].sum() == results["bins"][true]["n_test"]
        for j, chosen in enumerate(names):
            assert confusion[i, j] == int(((preds["bin"] == true) & (preds["gate_bin"] == chosen)).sum())
    assert gate["accuracy"] == pytest.approx(float(np.mean(preds["gate_bin"] == preds["bin"])), abs=1e-12)
    assert gate["accuracy"] == pytest.approx(np.trace(confusion) / n_test, abs=1e-12)
    assert 0.0 <= gate["fallback_rate"] <= 1.0 and 0.0 <= gate["noisy_snr_accuracy"] <= 1.0
    assert gate["fallback"] == results["config"]["evaluation"]["gate_fallback"]
    lo, hi = gate["delta_r2_ci"]
    assert lo <= r2_dep - r2_glob <= hi

    assert_png(out / "img" / "snr_oracle_moe_gate_confusion.png")
    assert "TODO" not in report
    assert "## 🚦 Deployable gate (MVP-2.0)" in report and "(img/snr_oracle_moe_gate_confusion.png)" in report
    assert f"{gate['accuracy'] * 100:.1f}%" in report and f"{r2_dep:.4f}" in report
    assert f"{models['noisy_snr_routed']['r2']:.4f}" in report and "ρ ≥ 0.7" in report
    check_tables(report)
    assert "deployed gate: R2" in summary and "noisy-SNR hard routing: R2" in summary
    assert f"accuracy {gate['accuracy']:.1%}" in summary


def test_report_rebuild_writes_the_extra_figures(gate_run, alpha_run, tmp_path):
    for i, (out, results, *_) in enumerate((gate_run, alpha_run)):
        copy = tmp_path / f"copy{i}"
        shutil.copytree(out, copy)
        shutil.rmtree(copy / "img")
        (copy / "report.md").unlink()
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["report", str(copy), "--lang", "zh"]) == 0
        text = (copy / "report.md").read_text()
        assert "TODO" not in text
        figure = "snr_oracle_moe_gate_confusion.png" if "gate" in results else "snr_oracle_moe_alpha_curve.png"
        assert_png(copy / "img" / figure)
        assert f"(img/{figure})" in text
        assert ("可部署门控" in text) == ("gate" in results) and ("α 的选择" in text) == ("alpha" in results)
        for name in ("comparison", "perbin_r2", "pred_vs_true", "delta_heatmap"):
            assert (copy / "img" / f"snr_oracle_moe_{name}.png").exists()


# ----------------------------------------------------------------------------- b. alpha chosen on validation
def test_alpha_auto_never_worse_than_fixed_and_matches_sklearn(data, alpha_run):
    out, results, preds, report, summary = alpha_run
    choice = results["alpha"]
    assert choice["fixed_alpha"] == 100000.0
    assert results["models"]["global"]["alpha"] == choice["global"]["alpha"]
    for name, spec in results["bins"].items():
        if not spec["skipped"]:
            assert spec["alpha"] == choice["experts"][name]["alpha"]
    models = {"global": choice["global"], **choice["experts"]}
    assert set(models) == {"global", *(n for n, b in results["bins"].items() if not b["skipped"])}
    for name, m in models.items():
        assert m["source"] == "validation", name
        alphas, r2 = np.array(m["curve"]["alpha"]), np.array(m["curve"]["val_r2"])
        at_chosen = r2[np.flatnonzero(alphas == m["alpha"])[0]]
        at_fixed = r2[np.flatnonzero(alphas == choice["fixed_alpha"])[0]]
        assert at_chosen >= at_fixed and at_chosen == pytest.approx(r2.max(), abs=1e-12)
        assert m["val_r2"] == at_chosen and m["val_r2_fixed"] == at_fixed
        assert m["gain_over_fixed"] == pytest.approx(at_chosen - at_fixed, abs=1e-15) and m["gain_over_fixed"] >= 0

    # the validation R² of the chosen and the fixed alpha, recomputed with scikit-learn on the files
    seed = results["config"]["noise"]["seed"]
    x, params = training_matrix(data, seed)
    xv, params_v = load_matrix(data / VAL, seed, VAL_SHARD_INDEX)
    y, yv = params["log_g"].to_numpy(), params_v["log_g"].to_numpy()
    bins, bins_v = _snr_bins(results, data, TRAIN), _snr_bins(results, data, [VAL])
    for name, m in models.items():
        sel = np.ones(len(y), bool) if name == "global" else bins == name
        sel_v = np.ones(len(yv), bool) if name == "global" else bins_v == name
        assert m["n_train"] == sel.sum() and m["n_val"] == sel_v.sum()
        for alpha, expected in ((m["alpha"], m["val_r2"]), (choice["fixed_alpha"], m["val_r2_fixed"])):
            pred = sk_ridge(alpha).fit(x[sel], y[sel]).predict(xv[sel_v])
            assert expected == pytest.approx(r2_score(yv[sel_v], pred), rel=1e-6, abs=1e-9), (name, alpha)

    assert_png(out / "img" / "snr_oracle_moe_alpha_curve.png")
    assert "TODO" not in report and "## 🎚️ α 的选择" in report and "(img/snr_oracle_moe_alpha_curve.png)" in report
    check_tables(report)
    assert "alpha chosen on validation: global" in summary


def _snr_bins(results: dict, data: Path, shards: list[str]) -> np.ndarray:
    """(N,) SNR-bin names of the spectra of ``shards``, from the noise-free flux as the pass computes them."""
    from snrmoe_dask.core.snr import Bins, snr_norm

    bins = Bins.from_mapping({n: [b["low"], math.inf if b["high"] is None else b["high"]]
                              for n, b in results["bins"].items()})
    snr = []
    for name in shards:
        with h5py.File(data / name) as f:
            flux, error = f[FLUX_KEY][...], f[ERROR_KEY][...]
        repair_block(flux, error)
        snr.append(snr_norm(flux, error, 1.0))
    return np.asarray(bins.names)[bins.assign(np.concatenate(snr))]


# ----------------------------------------------------------------------------- c. routing by T_eff
def test_teff_experts_equal_plain_sklearn(data, teff_run):
    out, results, preds, report, summary = teff_run
    cfg = results["config"]
    alpha, seed, test_seed = 1000.0, cfg["noise"]["seed"], cfg["noise"]["test_seed"]
    names = list(TEFF_BINS)
    assert results["partition"] == {"by": "T_eff", "names": names}
    x, params = training_matrix(data, seed)
    xt, params_t = load_matrix(data / TEST, test_seed, 0)
    y, yt = params["log_g"].to_numpy(), params_t["log_g"].to_numpy()

    def groups(teff: np.ndarray) -> np.ndarray:
        out = np.full(len(teff), -1)
        for k, (low, high) in enumerate(TEFF_BINS.values()):
            out[(teff >= low) & (teff < high)] = k
        assert (out >= 0).all()
        return out

    b, bt = groups(params["T_eff"].to_numpy()), groups(params_t["T_eff"].to_numpy())
    np.testing.assert_array_equal(preds["bin"], np.asarray(names)[bt])
    np.testing.assert_allclose(preds["y_true"], yt)
    p_global = sk_ridge(alpha).fit(x, y).predict(xt)
    np.testing.assert_allclose(preds["y_global"], p_global, rtol=1e-6, atol=1e-6)
    p_oracle = np.empty_like(p_global)
    for k, name in enumerate(names):
        spec = results["bins"][name]
        assert spec["by"] == "T_eff" and [spec["low"], spec["high"]] == TEFF_BINS[name]
        assert spec["n_train"] == int((b == k).sum()) > 100 and spec["n_test"] == int((bt == k).sum())
        assert not spec["skipped"] and spec["alpha"] == alpha
        p_oracle[bt == k] = sk_ridge(alpha).fit(x[b == k], y[b == k]).predict(xt[bt == k])
    np.testing.assert_allclose(preds["y_oracle"], p_oracle, rtol=1e-6, atol=1e-6)

    for k, name in enumerate(names):
        sel = bt == k
        for side, p in (("expert", p_oracle), ("global", p_global)):
            got = results["bins"][name][side]
            e = yt[sel] - p[sel]
            assert got["r2"] == pytest.approx(1 - np.sum(e ** 2) / np.sum((yt[sel] - yt[sel].mean()) ** 2),
                                              rel=1e-6, abs=1e-9)
            assert got["mae"] == pytest.approx(np.mean(np.abs(e)), rel=1e-6)
            assert got["rmse"] == pytest.approx(np.sqrt(np.mean(e ** 2)), rel=1e-6)
        assert results["bins"][name]["delta_r2"] == pytest.approx(
            r2_score(yt[sel], p_oracle[sel]) - r2_score(yt[sel], p_global[sel]), rel=1e-6, abs=1e-9)
    assert results["delta_r2"] == pytest.approx(r2_score(yt, p_oracle) - r2_score(yt, p_global), rel=1e-6, abs=1e-9)

    assert "TODO" not in report and "SNR range" not in report and "T_eff range" in report
    for name, (low, high) in TEFF_BINS.items():
        assert f"| **{name}** | T_eff [{low:g}, {high:g}) |" in report
    check_tables(report)
    for figure in ("comparison", "perbin_r2", "pred_vs_true", "delta_heatmap"):
        assert_png(out / "img" / f"snr_oracle_moe_{figure}.png")


# ----------------------------------------------------------------------------- d. grid partition
def test_grid_partition_runs_and_reports_cell_ranges(data, grid_run):
    out, results, preds, report, summary = grid_run
    cells = ["cool|poor", "cool|rich", "hot|poor", "hot|rich"]
    assert results["partition"] == {"by": ["T_eff", "M_H"], "names": cells}
    assert list(results["bins"]) == cells
    params = pd.concat([pd.read_hdf(data / name) for name in TRAIN], ignore_index=True)
    for cell in cells:
        spec = results["bins"][cell]
        t_name, m_name = cell.split("|")
        (t_lo, t_hi), (m_lo, m_hi) = GRID_BINS["T_eff"][t_name], GRID_BINS["M_H"][m_name]
        assert spec["by"] == ["T_eff", "M_H"]
        assert spec["low"] == {"T_eff": t_lo, "M_H": None if math.isinf(m_lo) else m_lo}
        assert spec["high"] == {"T_eff": None if math.isinf(t_hi) else t_hi, "M_H": None if math.isinf(m_hi) else m_hi}
        inside = ((params["T_eff"] >= t_lo) & (params["T_eff"] < t_hi)
                  & (params["M_H"] >= m_lo) & (params["M_H"] < m_hi))
        assert spec["n_train"] == int(inside.sum()) and spec["n_test"] == int((preds["bin"] == cell).sum())
    assert sum(b["n_train"] for b in results["bins"].values()) == 4000
    assert sum(b["n_test"] for b in results["bins"].values()) == len(preds) == 600

    assert "TODO" not in report
    assert "T_eff [3700, 4900) × M_H (−∞, -0.5)" in report and "T_eff [4900, ∞) × M_H [-0.5, ∞)" in report
    assert "cool\\|poor" in report  # the cell name's '|' must not split a table cell
    check_tables(report)
    for figure in ("comparison", "perbin_r2", "pred_vs_true", "delta_heatmap"):
        assert_png(out / "img" / f"snr_oracle_moe_{figure}.png")
    assert "- bin hot|rich" in summary


# ----------------------------------------------------------------------------- e. bootstrap decision
def test_decision_is_the_card_rule_and_the_interval_its_robustness(gate_run):
    _, results, _, report, summary = gate_run
    threshold, delta = results["threshold"], results["delta_r2"]
    lo, hi = results["delta_r2_ci"]
    assert results["decision"] == ("PASS" if delta >= threshold else "FAIL")
    assert (results["decision"], results["next_step"]) == decision_for(delta, threshold)
    rob = results["robustness"]
    assert rob["ci"] == [lo, hi] and rob["resamples"] == 200 and rob["level"] == 0.95
    assert rob["n_test"] == results["models"]["oracle"]["n_test"]
    robust = lo >= threshold if results["decision"] == "PASS" else hi < threshold
    assert rob["verdict"] == ("robust" if robust else "not robust")
    assert f"**Status:** {'✅ PASS' if results['decision'] == 'PASS' else '❌ FAIL'}" in report
    assert f"robustness: 95% CI [{lo:+.4f}, {hi:+.4f}]" in summary and "INCONCLUSIVE" not in report + summary

    def inside(value, ci, what):
        assert ci is not None and ci[0] <= ci[1], what
        assert ci[0] <= value <= ci[1], f"{what}: {value} outside {ci}"

    inside(delta, results["delta_r2_ci"], "delta_r2")
    for model in ("global", "oracle", "deployed"):
        inside(results["models"][model]["r2"], results["models"][model]["r2_ci"], f"models.{model}")
    for name, spec in results["bins"].items():
        inside(spec["delta_r2"], spec["delta_r2_ci"], f"bins.{name}.delta_r2")
        for side in ("expert", "global"):
            inside(spec[side]["r2"], spec[side]["r2_ci"], f"bins.{name}.{side}")


@pytest.mark.parametrize("which", ["alpha_run", "teff_run"])
def test_without_bootstrap_no_intervals_and_the_point_rule(which, request):
    _, results, _, report, _ = request.getfixturevalue(which)
    assert results["config"]["evaluation"]["bootstrap"] == 0
    assert ci_keys(results) == []
    expected = "PASS" if results["delta_r2"] >= results["threshold"] else "FAIL"
    assert results["decision"] == expected
    assert (results["decision"], results["next_step"]) == decision_for(results["delta_r2"], results["threshold"])
    assert results["robustness"] is None
    assert "CI [" not in report and "INCONCLUSIVE" not in report and "evaluation.bootstrap: 0" in report
