"""Figures and markdown report built from a hand-made results dict and predictions frame."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from sklearn.metrics import r2_score

from snrmoe_dask.errors import ConfigError, InputError
from snrmoe_dask.report.plots import FIGURE_NAMES, make_figures
from snrmoe_dask.report.text import (
    coverage,
    hub_block,
    render_report,
    roadmap_block,
    update_tracking_block,
    write_report,
)

BIN_EDGES = {"H": (7.0, None), "M": (4.0, 7.0), "L": (2.0, 4.0), "X": (0.0, 2.0)}


def make_results(decision: str = "PASS") -> dict:
    """A 20k-train / 400-test run with bin H skipped (62 < 100 training spectra)."""
    delta = {"PASS": 0.0412, "FAIL": 0.0087, "INCONCLUSIVE": 0.0215}[decision]
    ci = {"PASS": [0.0281, 0.0553], "FAIL": [-0.0031, 0.0196], "INCONCLUSIVE": [0.0079, 0.0348]}[decision]
    next_step = {"PASS": "Continue to MVP-2.0 (Deployable Gate)",
                 "FAIL": "Jump to Gate-4 (Whitening/Conditional)",
                 "INCONCLUSIVE": "Evaluate on more test spectra (test_10k) before deciding"}[decision]
    g_r2 = 0.4629
    bins = {
        "H": dict(n_train=62, n_test=2, skipped=True, delta_r2=0.0,
                  expert=dict(r2=0.6721, mae=0.5101, rmse=0.6322), global_=dict(r2=0.6721, mae=0.5101, rmse=0.6322)),
        "M": dict(n_train=5_950, n_test=118, skipped=False, delta_r2=0.0964, delta_r2_ci=[0.0512, 0.1390],
                  expert=dict(r2=0.7103, mae=0.4668, rmse=0.6011), global_=dict(r2=0.6139, mae=0.5203, rmse=0.6980)),
        "L": dict(n_train=7_610, n_test=152, skipped=False, delta_r2=-0.0066, delta_r2_ci=[-0.0301, 0.0170],
                  expert=dict(r2=0.4974, mae=0.6291, rmse=0.8163), global_=dict(r2=0.5040, mae=0.6244, rmse=0.8110)),
        "X": dict(n_train=6_378, n_test=128, skipped=False, delta_r2=0.0577, delta_r2_ci=[0.0190, 0.0941],
                  expert=dict(r2=0.3094, mae=0.7971, rmse=0.9795), global_=dict(r2=0.2517, mae=0.8406, rmse=1.0199)),
    }
    for name, spec in bins.items():
        spec["global"] = spec.pop("global_")
        spec["low"], spec["high"] = BIN_EDGES[name]
        spec["alpha"] = 100000.0
    return {
        "experiment": "LOGG-SNR-ORACLE-01", "date": "2026-11-25", "decision": decision,
        "next_step": next_step, "threshold": 0.02, "delta_r2": delta, "delta_r2_ci": ci,
        "models": {
            "global": dict(r2=g_r2, mae=0.6572, rmse=0.8480, n_train=20_000, n_test=400, alpha=100000.0,
                           r2_ci=[0.4105, 0.5098]),
            "oracle": dict(r2=g_r2 + delta, mae=0.6260, rmse=0.8101, n_train=20_000, n_test=400, alpha=100000.0,
                           r2_ci=[g_r2 + delta - 0.0481, g_r2 + delta + 0.0564]),
        },
        "bins": bins,
        "snr": {"method": "norm", "train_median": 2.93, "train_max": 8.94, "test_median": 2.88, "test_max": 8.12},
        "data": {"n_train": 20_000, "n_test": 400, "pixels": 4096,
                 "train_files": ["train_200k_0/dataset.h5", "train_200k_1/dataset.h5"],
                 "test_file": "test_1k_0/dataset.h5"},
        "config": {"model": {"alpha": 100000.0, "min_train": 100}, "noise": {"level": 1.0, "seed": 42, "test_seed": 7},
                   "preprocessing": {"scaler": "StandardScaler", "clip_flux": True},
                   "routing": {"type": "oracle"}, "snr": {"method": "norm"}},
        "timings_s": {"pass": 100.4, "solve": 3.1, "test": 1.2, "total": 110.3},
        "provenance": {"package_version": "0.1.0", "git_commit": "abc1234", "host": "testbox"},
    }


def make_predictions(results: dict, seed: int = 0) -> pd.DataFrame:
    """One row per test spectrum: noisier predictions in lower-SNR bins, oracle better where trained."""
    rng = np.random.default_rng(seed)
    frames = []
    for name, spec in results["bins"].items():
        n = spec["n_test"]
        low, high = spec["low"], spec["high"] if spec["high"] is not None else spec["low"] + 3
        y = 1.0 + 4.0 * rng.beta(2.2, 2.0, n)
        noise = {"H": 0.35, "M": 0.5, "L": 0.75, "X": 0.95}[name]
        y_global = 3.0 + 0.6 * (y - 3.0) + rng.normal(0, noise, n)
        y_oracle = y_global if spec["skipped"] else 3.0 + 0.7 * (y - 3.0) + rng.normal(0, 0.9 * noise, n)
        frames.append(pd.DataFrame({"y_true": y, "snr": rng.uniform(low, high, n), "bin": name,
                                    "y_global": y_global, "y_oracle": y_oracle}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def results() -> dict:
    return make_results()


# ----------------------------------------------------------------------------- figures
def test_make_figures_writes_four_decodable_pngs(results, tmp_path):
    predictions = make_predictions(results)
    assert len(predictions) == 400
    paths = make_figures(results, predictions, tmp_path / "img")
    assert [p.name for p in paths] == list(FIGURE_NAMES)
    for path in paths:
        image = imread(path)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
        assert image[..., :3].std() > 0.05  # something was drawn
    assert not [p for p in (tmp_path / "img").iterdir() if p.name.endswith(".tmp")]


def test_make_figures_survives_missing_r2_and_ci(tmp_path):
    results = make_results("FAIL")
    one_spectrum = {"r2": None, "mae": 0.4, "rmse": 0.4}  # R2 is undefined for n_test < 2
    results["bins"]["H"].update(n_test=1, delta_r2=None, expert=dict(one_spectrum), **{"global": dict(one_spectrum)})
    results["bins"]["L"]["expert"]["r2"] = float("nan")
    del results["delta_r2_ci"], results["models"]["global"]["r2_ci"]
    predictions = make_predictions(make_results())
    paths = make_figures(results, predictions, tmp_path)
    assert all(imread(p).size > 0 for p in paths)
    text = render_report(results)
    assert "n/a" in text and "TODO" not in text


def test_make_figures_names_missing_column(results, tmp_path):
    with pytest.raises(InputError, match="y_oracle"):
        make_figures(results, make_predictions(results).drop(columns="y_oracle"), tmp_path)
    broken = copy.deepcopy(results)
    del broken["models"]["oracle"]["rmse"]
    with pytest.raises(InputError, match="models.oracle.rmse"):
        make_figures(broken, make_predictions(results), tmp_path)


# ----------------------------------------------------------------------------- report
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_render_report_fills_the_template(results, lang):
    text = render_report(results, lang=lang)
    assert "TODO" not in text and "[按模板填写]" not in text
    assert text.startswith("# 🧪 Experiment: Oracle SNR-binned MoE")
    assert "**Experiment ID:** `LOGG-SNR-ORACLE-01`" in text and "2026-11-25" in text
    assert "✅ PASS" in text and "PASS" in text
    assert "+0.0412" in text and "[+0.0281, +0.0553]" in text
    assert "| H1: ΔR² ≥ 0.02 | ≥ 0.02 | +0.0412" in text
    for name in ("Bin H", "Bin M", "Bin L", "Bin X"):
        assert name in text
    for figure in FIGURE_NAMES:
        assert f"(img/{figure})" in text
    assert "| Model | R² | MAE | RMSE | N_train | N_test |" in text
    assert "| Global Ridge | 0.4629 | 0.6572 | 0.8480 | 20,000 | 400 |" in text
    assert "0.7103 (global 0.6139)" in text and "5,950 (29.8%)" in text
    assert "20,000" in text and "4,096" in text and "100,000" in text
    assert "99.5%" in text  # coverage: 398 of 400 test spectra reach a trained expert
    assert "Continue to MVP-2.0 (Deployable Gate)" in text
    assert "110.3" in text  # timings
    assert ("高斯" in text) == (lang == "zh")


def test_coverage_counts_spectra_in_trained_bins(results):
    trained = sum(s["n_test"] for s in results["bins"].values() if not s["skipped"])
    assert coverage(results) == pytest.approx(trained / 400) == pytest.approx(0.995)


@pytest.mark.parametrize("decision, mark, step", [
    ("FAIL", "❌ FAIL", "Jump to Gate-4 (Whitening/Conditional)"),
    ("INCONCLUSIVE", "⚠️ INCONCLUSIVE", "test_10k"),
])
def test_decision_changes_status_and_next_step(decision, mark, step):
    results = make_results(decision)
    for lang in ("zh", "en"):
        text = render_report(results, lang=lang)
        assert f"**Status:** {mark}" in text
        assert "✅ PASS" not in text
        assert step in text
        assert "Continue to MVP-2.0" not in text.split("## 📎")[0].split("Decision Gate")[0]
    assert f"{mark}" in hub_block(results) and format(results["delta_r2"], "+.4f") in roadmap_block(results)


def test_inconclusive_names_the_straddling_ci_and_deployed_model_is_reported():
    results = make_results("INCONCLUSIVE")
    results["models"]["deployed"] = dict(r2=0.4850, mae=0.6400, rmse=0.8300, n_train=20_000, n_test=400)
    zh, en = render_report(results, lang="zh"), render_report(results, lang="en")
    assert "CI 跨越阈值 0.02" in zh and "the CI straddles the 0.02 threshold" in en
    assert "| Deployed MoE | 0.4850 | 0.6400 | 0.8300 | 20,000 | 400 |" in en
    rho = (0.4850 - 0.4629) / 0.0215
    assert f"| {rho:.2f} |" in en


def test_report_r2_matches_sklearn_peer_format(results):
    """Numbers in the report are the dict's numbers, formatted like sklearn's r2 rounded to 4 places."""
    predictions = make_predictions(results)
    r2 = r2_score(predictions["y_true"], predictions["y_oracle"])
    results["models"]["oracle"]["r2"] = r2
    results["delta_r2"] = r2 - results["models"]["global"]["r2"]
    text = render_report(results, lang="en")
    assert f"| Oracle MoE | {r2:.4f} |" in text
    assert f"{results['delta_r2']:+.4f}" in text


def test_render_report_rejects_unknown_language(results):
    with pytest.raises(ConfigError, match="lang='fr'"):
        render_report(results, lang="fr")


def test_write_report_is_atomic_and_relative_paths(results, tmp_path):
    path = write_report(results, tmp_path / "out", lang="zh")
    assert path == tmp_path / "out" / "report.md"
    assert path.read_text(encoding="utf-8") == render_report(results, lang="zh")
    assert [p.name for p in path.parent.iterdir()] == ["report.md"]


# ----------------------------------------------------------------------------- tracking blocks
def test_update_tracking_block_is_idempotent(results, tmp_path):
    path = tmp_path / "moe_snr_roadmap.md"
    path.write_text("# Roadmap\n\nintro text\n\n## MVP-1.0\nplan\n", encoding="utf-8")
    update_tracking_block(path, "LOGG-SNR-ORACLE-01", roadmap_block(results))
    once = path.read_text(encoding="utf-8")
    update_tracking_block(path, "LOGG-SNR-ORACLE-01", roadmap_block(results))
    assert path.read_text(encoding="utf-8") == once
    assert once.startswith("# Roadmap\n\nintro text\n\n## MVP-1.0\nplan\n")
    assert once.count("<!-- snrmoe:LOGG-SNR-ORACLE-01:begin -->") == 1

    # a new result replaces the block in place; text after it is kept
    path.write_text(once + "\n## MVP-2.0\nnext\n", encoding="utf-8")
    update_tracking_block(path, "LOGG-SNR-ORACLE-01", roadmap_block(make_results("FAIL")))
    replaced = path.read_text(encoding="utf-8")
    assert replaced.count("snrmoe:LOGG-SNR-ORACLE-01:begin") == 1 and "❌ FAIL" in replaced
    assert "✅ PASS" not in replaced and replaced.endswith("## MVP-2.0\nnext\n")

    update_tracking_block(path, "LOGG-SNR-ORACLE-02", "second experiment")
    both = path.read_text(encoding="utf-8")
    assert both.count("snrmoe:LOGG-SNR-ORACLE-01:begin") == 1
    assert "<!-- snrmoe:LOGG-SNR-ORACLE-02:begin -->\nsecond experiment\n<!-- snrmoe:LOGG-SNR-ORACLE-02:end -->" in both
    update_tracking_block(path, "LOGG-SNR-ORACLE-02", "second experiment")
    assert path.read_text(encoding="utf-8") == both


def test_update_tracking_block_creates_file_and_rejects_bad_input(results, tmp_path):
    path = tmp_path / "hub" / "moe_snr_hub.md"
    path.parent.mkdir()
    update_tracking_block(path, "LOGG-SNR-ORACLE-01", hub_block(results))
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!-- snrmoe:LOGG-SNR-ORACLE-01:begin -->") and text.endswith(":end -->\n")
    assert "H1" in text and "✅" in text
    with pytest.raises(ConfigError):
        update_tracking_block(path, "bad-->id", "x")
    path.write_text("<!-- snrmoe:E1:begin -->\nno end\n", encoding="utf-8")
    with pytest.raises(InputError, match="E1:end"):
        update_tracking_block(path, "E1", "x")


def test_blocks_carry_key_numbers_and_verdict(results):
    for lang in ("zh", "en"):
        roadmap, hub = roadmap_block(results, lang=lang), hub_block(results, lang=lang)
        assert "TODO" not in roadmap + hub
        assert all(s in roadmap for s in ("0.4629", "0.5041", "+0.0412", "99.5%", "✅ PASS"))
        assert all(s in hub for s in ("H1", "ΔR² ≥ 0.02", "+0.0412", "✅"))
