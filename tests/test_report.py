"""Figures and markdown report built from a hand-made results dict and predictions frame; the owner's
file layout; the logs of a run. The verdict is the card's rule, its robustness stated beside it."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from matplotlib.text import Text
from PIL import Image
from sklearn.metrics import r2_score

from snrmoe_dask.cli import main
from snrmoe_dask.errors import ConfigError, InputError
from snrmoe_dask.io.shards import inspect_shard, read_source
from snrmoe_dask.io.simulate import simulate_set
from snrmoe_dask.report.plots import (
    FIGURE_NAMES,
    bin_marked,
    make_figures,
    plot_comparison,
    plot_delta_heatmap,
    plot_perbin,
    plot_pred_vs_true,
)
from snrmoe_dask.report.plots import written_by_snrmoe as png_written_by_snrmoe
from snrmoe_dask.report.render import Renderer
from snrmoe_dask.report.text import (
    coverage,
    hub_block,
    render_report,
    roadmap_block,
    update_tracking_block,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]

BIN_EDGES = {"H": (7.0, None), "M": (4.0, 7.0), "L": (2.0, 4.0), "X": (0.0, 2.0)}


def make_results(case: str = "PASS") -> dict:
    """A 20k-train / 400-test run with bin H skipped (62 < 100 training spectra).

    case: "PASS" (robust), "FAIL" (robust) or "PASS_NOT_ROBUST" (the interval includes the threshold).
    """
    delta = {"PASS": 0.0412, "FAIL": 0.0087, "PASS_NOT_ROBUST": 0.0215}[case]
    ci = {"PASS": [0.0281, 0.0553], "FAIL": [-0.0031, 0.0196], "PASS_NOT_ROBUST": [0.0079, 0.0348]}[case]
    decision = "FAIL" if case == "FAIL" else "PASS"
    next_step = {"PASS": "Continue to MVP-2.0 (Deployable Gate)",
                 "FAIL": "Jump to Gate-4 (Whitening/Conditional)"}[decision]
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
        "experiment": "LOGG-SNR-ORACLE-01", "date": "2026-11-25", "card_date": "2025-12-26", "decision": decision,
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
                   "routing": {"type": "oracle"}, "snr": {"method": "norm"}, "evaluation": {"bootstrap": 2000}},
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


# ----------------------------------------------------------------------------- helpers
CARD_FIGURE_TITLES = ("### Figure 1: Oracle vs Global R² Comparison", "### Figure 2: Per-bin R²",
                      "### Figure 3: Prediction vs True", "### Figure 4: ΔR² Heatmap")  # the card's template
# Names the zh body may use as they are: models, stages, the card's own terms, units.
ALLOWED_NAMES = ("Global Ridge", "Oracle MoE", "Deployed MoE", "Noisy-SNR routed", "Oracle expert", "StandardScaler",
                 "Deployable Gate", "Whitening/Conditional", "SNR-based MoE", "soft routing", "oracle routing",
                 "SNR bin", "Global R²", "Oracle R²")
ENGLISH_RUN = re.compile(r"[A-Za-z][A-Za-z'-]*(?:[ ,.;:!?]+[A-Za-z][A-Za-z'-]*){2,}")


def english_sentences(report: str) -> list[str]:
    """Runs of three or more English words in the body (after the English header), leaving out code,
    file names, links, HTML comments, the card's own figure titles and the allowed names."""
    body = report.split("\n---\n", 1)[1] if report.startswith("# ") else report
    body = re.sub(r"```.*?```", " ", body, flags=re.S)
    body = re.sub(r"<!--.*?-->", " ", body, flags=re.S)
    body = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", body)
    body = re.sub(r"`[^`]*`", " ", body)
    body = "\n".join(line for line in body.splitlines() if line.strip() not in CARD_FIGURE_TITLES)
    for name in ALLOWED_NAMES:
        body = body.replace(name, " ")
    return ENGLISH_RUN.findall(body)


def figure_texts(monkeypatch, draw, *args) -> list[str]:
    """Every text a figure function draws (titles, labels, annotations, tick labels, legend)."""
    import snrmoe_dask.report.plots as plots

    captured = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: captured.append(fig) or path)
    draw(*args)
    fig = captured[0]
    fig.canvas.draw()
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def image_links(report: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)


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
        assert png_written_by_snrmoe(path)  # PNG metadata Software: snrmoe-dask
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


# ----------------------------------------------------------------------------- per-bin marks
def test_a_bin_is_marked_only_when_its_interval_clears_the_threshold(results):
    bins = results["bins"]
    # M: ΔR² +0.0964, CI [+0.0512, +0.1390] -> marked; X: ΔR² +0.0577 >= 0.02 but CI from +0.0190 -> not;
    # L: below; H: no expert
    assert [n for n, spec in bins.items() if bin_marked(spec, 0.02)] == ["M"]
    assert bin_marked({"delta_r2": 0.01, "delta_r2_ci": [0.02, 0.05]}, 0.02)  # lower bound at the threshold
    assert not bin_marked({"delta_r2": 0.062}, 0.02)  # no interval, no mark (bin H of the issue)
    assert not bin_marked({"delta_r2": 0.062, "delta_r2_ci": [-0.07, 0.17]}, 0.02)


def test_figures_2_and_4_star_by_the_interval_and_show_it(results, monkeypatch):
    perbin = figure_texts(monkeypatch, plot_perbin, results, Path("unused.png"))
    starred = [t for t in perbin if "★" in t and "ΔR² =" in t]
    assert len(starred) == 1 and starred[0].startswith("ΔR² = +0.0964 ★") and "CI [+0.0512, +0.1390]" in starred[0]
    assert any(t.startswith("ΔR² = +0.0577\nCI [+0.0190, +0.0941]") for t in perbin)  # X: no star
    assert any("descriptive; the decision is on the overall ΔR²" in t for t in perbin)

    heat = figure_texts(monkeypatch, plot_delta_heatmap, results, Path("unused.png"))
    cells = [t for t in heat if t.startswith(("+", "-")) and "[" in t]
    assert "+0.0964 ★\n[+0.0512, +0.1390]" in cells and "+0.0577\n[+0.0190, +0.0941]" in cells
    assert "+0.0412\n[+0.0281, +0.0553]" in cells  # the overall row carries its interval too
    assert sum("★" in t for t in cells) == 1
    labels = [t for t in heat if "n_train=" in t]
    assert any("n_train=5,950\nn_test=118" in t for t in labels) and any("Overall\nn_train=20,000" in t for t in labels)


def test_figure_2_draws_the_intervals_as_error_bars(results, monkeypatch):
    import snrmoe_dask.report.plots as plots
    from matplotlib.container import ErrorbarContainer

    captured = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: captured.append(fig) or path)
    plot_perbin(results, Path("unused.png"))
    bars = [c for c in captured[0].axes[0].containers if isinstance(c, ErrorbarContainer)]
    (_, _, (global_lines,)), (_, _, (expert_lines,)) = bars
    # the global model: every bin with an R² interval is none here but the overall one; experts: likewise
    assert len(global_lines.get_segments()) == 1 and len(expert_lines.get_segments()) == 1
    for name in ("M", "L", "X"):
        results["bins"][name]["global"]["r2_ci"] = [0.1, 0.9]
        results["bins"][name]["expert"]["r2_ci"] = [0.1, 0.9]
    results["bins"]["H"]["expert"]["r2_ci"] = [0.1, 0.9]  # skipped: its bar is the global model's
    captured.clear()
    plot_perbin(results, Path("unused.png"))
    bars = [c for c in captured[0].axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert [len(b.lines[2][0].get_segments()) for b in bars] == [4, 4]


def test_figure_3_shows_delta_and_counts_in_each_panel(results, monkeypatch):
    texts = figure_texts(monkeypatch, plot_pred_vs_true, results, make_predictions(results), Path("unused.png"))
    panels = [t for t in texts if t.startswith("ΔR² (Oracle − Global) = +0.0412")]
    assert len(panels) == 2
    for panel in panels:
        assert "CI [+0.0281, +0.0553]" in panel and "n_train = 20,000, n_test = 400" in panel
        assert "M: n_train = 5,950, n_test = 118, ΔR² = +0.0964" in panel
    assert any("RMSE = 0.8480 dex" in t for t in texts)


def test_figure_1_states_the_card_decision_and_its_robustness(monkeypatch):
    texts = figure_texts(monkeypatch, plot_comparison, make_results("PASS_NOT_ROBUST"), Path("unused.png"))
    box = next(t for t in texts if t.startswith("ΔR² (Oracle − Global)"))
    assert "≥ threshold 0.02  →  PASS (the card's rule)" in box
    assert "95% CI [+0.0079, +0.0348] includes the threshold: not robust" in box
    assert not any("INCONCLUSIVE" in t for t in texts)


# ----------------------------------------------------------------------------- report
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_render_report_fills_the_template(results, lang):
    text = render_report(results, lang=lang)
    assert "TODO" not in text and "[按模板填写]" not in text
    assert text.startswith("# 🧪 Experiment: Oracle SNR-binned MoE")
    assert "**Experiment ID:** `LOGG-SNR-ORACLE-01`" in text
    assert "**Date:** 2026-11-25 (card date 2025-12-26)" in text
    assert "**Status:** ✅ PASS" in text
    assert "+0.0412" in text and "[+0.0281, +0.0553]" in text
    assert "| H1: ΔR² ≥ 0.02 | ≥ 0.02 | +0.0412" in text
    for name in ("Bin H", "Bin M", "Bin L", "Bin X"):
        assert name in text
    for figure in FIGURE_NAMES:
        assert f"(img/{figure})" in text
    assert "| Model | R² | MAE (dex) | RMSE (dex) | N_train | N_test |" in text
    assert "| Global Ridge | 0.4629 | 0.6572 | 0.8480 | 20,000 | 400 |" in text
    assert "0.7103 (global 0.6139)" in text and "5,950 (29.8%)" in text
    assert "20,000" in text and "4,096" in text and "100,000" in text
    assert "99.5%" in text  # coverage: 398 of 400 test spectra reach a trained expert
    step = {"zh": "继续 MVP-2.0 (Deployable Gate)", "en": "Continue to MVP-2.0 (Deployable Gate)"}[lang]
    assert f"**{'下一步' if lang == 'zh' else 'Next step'}**" in text and step in text
    assert "110.3" in text  # timings
    assert ("高斯" in text) == (lang == "zh")
    assert text.rstrip().splitlines()[-1].startswith("<!-- written by snrmoe-dask")


def test_coverage_counts_spectra_in_trained_bins(results):
    trained = sum(s["n_test"] for s in results["bins"].values() if not s["skipped"])
    assert coverage(results) == pytest.approx(trained / 400) == pytest.approx(0.995)


def test_fail_changes_status_and_next_step():
    results = make_results("FAIL")
    for lang, verdict, step in (("zh", "❌ 不通过", "跳到 Gate-4 (Whitening/Conditional)"),
                                ("en", "❌ FAIL", "Jump to Gate-4 (Whitening/Conditional)")):
        text = render_report(results, lang=lang)
        assert "**Status:** ❌ FAIL" in text and "✅ PASS" not in text
        assert verdict in text and step in text
        assert "MVP-2.0 (Deployable Gate)" not in text.split("Decision Gate")[0]
        assert "| **👉 ΔR² < 0.02** |" in text
        assert f"{verdict}" in hub_block(results, lang) and "+0.0087" in roadmap_block(results, lang)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_issue_example_reads_pass_with_its_robustness_beside_it(lang):
    """ΔR² above the threshold whose interval includes it: ✅ PASS by the card, 'not robust' beside it,
    never INCONCLUSIVE and never a sentence that contradicts the decision."""
    results = make_results("PASS_NOT_ROBUST")
    results["models"]["deployed"] = dict(r2=0.4850, mae=0.6400, rmse=0.8300, n_train=20_000, n_test=400)
    text = render_report(results, lang=lang)
    assert "**Status:** ✅ PASS (ΔR² +0.0215, threshold 0.02)" in text
    assert ("**Robustness:** 95% CI [+0.0079, +0.0348] includes the threshold: not robust with 400 test spectra; "
            "about 33,000 test spectra would resolve it at this effect size (an estimate)") in text
    assert "INCONCLUSIVE" not in text and "⚠️ 无法判定" not in text and "straddle" not in text
    assert "| **👉 ΔR² ≥ 0.02** |" in text and "| ΔR² < 0.02 |" in text
    if lang == "zh":
        assert "≥ 阈值 0.02 → ✅ 通过" in text and "下一步：继续 MVP-2.0 (Deployable Gate)" in text
        assert "在 400 条测试光谱下不稳健；按此效应大小，约需 33,000 条测试光谱才能定论（估计）" in text
        assert "配对百分位 bootstrap 区间：对测试光谱有放回重采样 2,000 次，训练好的模型保持不变；它不包含训练噪声抽样" in text
        assert text.count("配对百分位 bootstrap") == 1  # said once
    else:
        assert "≥ the 0.02 threshold → ✅ PASS" in text and "next: Continue to MVP-2.0 (Deployable Gate)" in text
        assert ("a 95% paired percentile bootstrap interval over the test spectra (2,000 resamples), with the "
                "trained models held fixed; it does not include the variation from the training-noise draw") in text
    assert "| Deployed MoE | 0.4850 | 0.6400 | 0.8300 | 20,000 | 400 |" in text
    rho = (0.4850 - 0.4629) / 0.0215  # the headroom's interval [+0.0079, +0.0348] lies above 0
    assert f"| {rho:.2f} " in text


def test_a_stale_decision_is_refused():
    results = make_results("PASS_NOT_ROBUST")
    results["decision"] = "INCONCLUSIVE"  # what earlier versions wrote
    with pytest.raises(InputError, match="decision='INCONCLUSIVE' but the card's rule gives PASS"):
        render_report(results)
    results["decision"] = "FAIL"
    with pytest.raises(InputError, match="card's rule gives PASS"):
        make_figures(results, make_predictions(results), Path("/nonexistent"))


def test_without_bootstrap_the_report_says_there_is_no_robustness_verdict():
    results = make_results("PASS")
    del results["delta_r2_ci"]
    for model in results["models"].values():
        del model["r2_ci"]
    for spec in results["bins"].values():
        spec.pop("delta_r2_ci", None)
    results["config"]["evaluation"]["bootstrap"] = 0
    zh, en = render_report(results, lang="zh"), render_report(results, lang="en")
    assert "**Robustness:** no interval (evaluation.bootstrap: 0), so no robustness verdict" in zh
    assert "本次运行关闭了 bootstrap（evaluation.bootstrap: 0）：报告中没有置信区间，也没有稳健性判定。" in zh
    assert "The bootstrap was off for this run (evaluation.bootstrap: 0)" in en
    assert "CI [" not in zh and "CI [" not in en


def test_report_r2_matches_sklearn_peer_format(results):
    """Numbers in the report are the dict's numbers, formatted like sklearn's r2 rounded to 4 places."""
    predictions = make_predictions(results)
    r2 = r2_score(predictions["y_true"], predictions["y_oracle"])
    results["models"]["oracle"]["r2"] = r2
    results["delta_r2"] = r2 - results["models"]["global"]["r2"]
    results["decision"] = "PASS" if results["delta_r2"] >= 0.02 else "FAIL"
    del results["delta_r2_ci"]
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


# ----------------------------------------------------------------------------- language
def _variants() -> list[dict]:
    """Constructed results that reach every section: PASS / FAIL / not robust, the gate with and
    without ρ, alpha selection with flags, no bootstrap, files with a source, a non-SNR split."""
    plain, fail, shaky = make_results("PASS"), make_results("FAIL"), make_results("PASS_NOT_ROBUST")
    gated = make_results("FAIL")
    gated["models"]["deployed"] = dict(r2=0.47, mae=0.65, rmse=0.84, n_train=20_000, n_test=400, r2_ci=[0.41, 0.52])
    gated["models"]["noisy_snr_routed"] = dict(r2=0.46, mae=0.66, rmse=0.85, n_train=20_000, n_test=400)
    gated["gate"] = {"accuracy": 0.9, "fallback_rate": 0.05, "rho": None, "names": list("HMLX"), "fallback": 0.4,
                     "noisy_snr_accuracy": 0.85, "confusion": [[1, 1, 0, 0], [0, 100, 18, 0], [0, 5, 140, 7],
                                                                [0, 0, 10, 118]], "delta_r2_ci": [-0.01, 0.02]}
    gated["delta_r2_ci"] = [-0.004, 0.006]
    alpha = make_results("PASS")
    curve = {"alpha": [1.0, 10.0, 100.0], "val_r2": [0.1, 0.2, 0.3]}
    alpha["alpha"] = {"fixed_alpha": 100.0, "global": {"alpha": 100.0, "source": "validation", "n_train": 20_000,
                                                      "n_val": 1000, "val_r2": 0.3, "val_r2_fixed": 0.3,
                                                      "gain_over_fixed": 0.0, "curve": curve},
                      "experts": {"M": {"alpha": 10.0, "source": "validation", "n_train": 5950, "n_val": 40,
                                        "val_r2": 0.2, "val_r2_fixed": 0.1, "gain_over_fixed": 0.1, "curve": curve},
                                  "X": {"alpha": 100.0, "source": "global", "n_train": 6378, "n_val": 1,
                                        "note": "only 1 validation spectra (< 2): uses the global model's alpha 100",
                                        "curve": {"alpha": [1.0, 10.0, 100.0], "val_r2": None}}}}
    alpha["config"]["model"]["alpha"] = "auto"
    no_boot = make_results("FAIL")
    del no_boot["delta_r2_ci"]
    sourced = make_results("PASS")
    sourced["config"]["data"] = {"source": "BOSZ simulated spectra"}
    sourced["provenance"]["files"] = [{"path": "/d/train_0/dataset.h5", "bytes": 10,
                                       "source": "snrmoe simulate (synthetic BOSZ/PFS-MR-like spectra), seed 3"}]
    teff = make_results("FAIL")
    teff["partition"] = {"by": "T_eff", "names": list(teff["bins"])}
    for spec in teff["bins"].values():
        spec["by"] = "T_eff"
    return [plain, fail, shaky, gated, alpha, no_boot, sourced, teff]


def test_the_zh_report_has_no_english_sentence_in_its_body():
    for results in _variants():
        text = render_report(results, lang="zh")
        assert english_sentences(text) == [], results["decision"]
        for block in (roadmap_block(results, "zh"), hub_block(results, "zh")):
            assert english_sentences(block) == []
    # the check itself finds English: the en body is full of it, and so is one stray sentence
    assert len(english_sentences(render_report(make_results(), lang="en"))) > 20
    assert english_sentences("# T\n\n---\n\n这是中文。Undecided at this test size: add test spectra。") != []


# ----------------------------------------------------------------------------- ρ
@pytest.mark.parametrize("lang, words", [("zh", "未定义（oracle 没有 headroom"), ("en", "not defined (no oracle headroom")])
def test_rho_is_not_defined_without_an_oracle_headroom(lang, words):
    gated = _variants()[3]  # headroom +0.0087 whose interval [-0.004, +0.006]... includes 0; results say null
    text = render_report(gated, lang=lang)
    assert text.count(words) >= 2  # key numbers and the gate section
    assert "≥ 门槛 0.7 ✅" not in text and "≥ the 0.7 bar ✅" not in text
    # a results dict without "rho" gets the same rule from its own numbers
    del gated["gate"]["rho"]
    assert words in render_report(gated, lang=lang)
    gated["delta_r2_ci"] = [0.004, 0.013]  # now the interval lies above 0: ρ is defined
    rho = (0.47 - 0.4629) / 0.0087
    assert f"{rho:.2f} ≥ " in render_report(gated, lang=lang)


# ----------------------------------------------------------------------------- the card's expectations
def test_card_expectations_table_flags_shares_and_suspicious_r2():
    results = make_results("PASS")
    results["bins"]["M"]["expert"]["r2"] = 0.80  # above the card's Fisher ceiling 0.74 for M
    results["bins"]["L"]["expert"]["r2"] = results["bins"]["L"]["global"]["r2"] = 0.30  # below its 0.37
    text = render_report(results, lang="en")
    section = text.split("## 🔍 Checked against the card's expectations")[1].split("\n---\n")[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| **")}
    assert set(rows) == {"**H**", "**M**", "**L**", "**X**"}
    assert "| 29.8% | ~30%+ | 0.8000 | 0.6139 | 0.74 |" in rows["**M**"]
    assert "share below the card's expectation" in rows["**M**"] and "suspicious" in rows["**M**"]
    assert "suspicious" in rows["**X**"]  # R² 0.31 against a ceiling of 0
    assert "| 38.0% | ~20%+ | 0.3000 | 0.3000 | 0.37 | ✅ |" in rows["**L**"]
    assert "share below" in rows["**H**"] and "suspicious" not in rows["**H**"]  # 0.67 < 0.89
    zh = render_report(results, lang="zh")
    assert "⚠️ 可疑：R² 高于 Fisher 上限" in zh and "占比低于卡片预期" in zh
    # other SNR edges: the card's numbers do not apply
    results["bins"]["M"]["low"] = 5.0
    results["bins"] = {("M2" if k == "M" else k): v for k, v in results["bins"].items()}
    other = render_report(results, lang="en")
    assert "| **M2** |" not in other.split("## 🔍")[1].split("\n---\n")[0]


def test_alpha_flags_edge_of_grid_and_few_validation_spectra():
    results = _variants()[4]
    en, zh = render_report(results, lang="en"), render_report(results, lang="zh")
    section = en.split("## 🎚️")[1].split("\n---\n")[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    assert "edge of the candidate grid" in rows["Global Ridge"]  # 100 is the grid's largest
    assert "chosen on only 40 validation spectra" in rows["Expert M"] and "edge" not in rows["Expert M"]
    assert "only 1 validation spectra: uses the global model's alpha" in rows["Expert X"]
    assert "⚠️ 选在候选网格的边缘" in zh and "⚠️ 只用 40 条验证光谱选出" in zh


# ----------------------------------------------------------------------------- provenance and units
def test_the_report_states_what_the_files_say_and_warns_on_a_mismatch():
    results = _variants()[6]
    zh, en = render_report(results, lang="zh"), render_report(results, lang="en")
    said = "`snrmoe simulate (synthetic BOSZ/PFS-MR-like spectra), seed 3`"
    assert f"| Source (as the files say) | {said} (1 files) |" in en
    assert "| ⚠️ Source mismatch | the config's data.source is `BOSZ simulated spectra`" in en
    assert f"| 数据源（文件所写） | {said}（1 个文件） |" in zh and "⚠️ 来源不一致" in zh
    assert "the input files are simulated" in en  # the card's Fisher ceilings are for the real data
    results["config"]["data"]["source"] = "snrmoe simulate (synthetic BOSZ/PFS-MR-like spectra), seed 3"
    assert "mismatch" not in render_report(results, lang="en")
    results["provenance"]["files"][0]["source"] = None  # the real data set carries no attribute
    real = render_report(results, lang="en")
    assert "1 files carry no source attribute (real data files do not)" in real and "mismatch" not in real


def test_simulated_shards_say_where_they_come_from_and_real_ones_do_not(shard_factory, tmp_path):
    path = simulate_set(tmp_path / "sim", train=(1, 20), val=0, test=0, seed=9, pixels=16, progress=False)[0]
    assert read_source(path) == "snrmoe simulate (synthetic BOSZ/PFS-MR-like spectra), seed 9"
    assert inspect_shard(path).n == 20  # the attribute leaves the layout as it was
    assert read_source(shard_factory()) is None  # written like the real files: no attribute


def test_units_and_timings():
    results = make_results("PASS")
    results["timings_s"] = {"open": 0.5, "pass": 100.4, "validation pass": 2.0, "solve": 3.1, "test": 1.2,
                            "write": 2.2}
    en = render_report(results, lang="en")
    timings = en.split("### Timings")[1].split("###")[0]
    for phase in ("open", "pass", "validation pass", "solve", "test", "write"):
        row = next(line for line in timings.splitlines() if line.startswith(f"| `{phase}` |"))
        assert row.split("|")[2].strip() not in ("", phase)  # every phase is described
    assert ("| `total` | total (before the write phase; results.json has the full total) | 109.4 s (1.8 min) |"
            in timings)
    results["timings_s"]["total"] = 111.0
    assert "| `total` | total | 111.0 s (1.9 min) |" in render_report(results, lang="en")
    assert "MAE (dex)" in en and "RMSE (dex)" in en and "| MAE |" not in en


def test_metrics_and_per_bin_keys_are_honoured():
    results = make_results("PASS")
    results["config"]["evaluation"].update(metrics=["R2", "RMSE"], per_bin=False)
    for lang in ("zh", "en"):
        text = render_report(results, lang=lang)
        assert "| Model | R² | RMSE (dex) | N_train | N_test |" in text and "MAE" not in text.split("```json")[0]
        assert "- Bin " not in text and "## 🔍" not in text and "ΔR² bin M" not in text
        assert "- Bin" not in roadmap_block(results, lang) and "+0.0964" not in roadmap_block(results, lang)
    assert "R², RMSE (dex), overall only" in render_report(results, lang="en")


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
    assert replaced.count("snrmoe:LOGG-SNR-ORACLE-01:begin") == 1 and "❌ 不通过" in replaced
    assert "✅ 通过" not in replaced and replaced.endswith("## MVP-2.0\nnext\n")

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


def test_blocks_carry_key_numbers_and_verdict_in_the_chosen_language(results):
    for lang, verdict, step in (("zh", "✅ 通过", "继续 MVP-2.0 (Deployable Gate)"),
                                ("en", "✅ PASS", "Continue to MVP-2.0 (Deployable Gate)")):
        roadmap, hub = roadmap_block(results, lang=lang), hub_block(results, lang=lang)
        assert "TODO" not in roadmap + hub
        assert all(s in roadmap for s in ("0.4629", "0.5041", "+0.0412", "99.5%", verdict, step))
        assert all(s in hub for s in ("H1", "ΔR² ≥ 0.02", "+0.0412", verdict, step))
        assert ("稳健" in roadmap + hub) == (lang == "zh") and ("robust" in roadmap + hub) == (lang == "en")


# ----------------------------------------------------------------------------- the owner's layout
def _resolve_links(report: Path) -> list[Path]:
    links = image_links(report.read_text(encoding="utf-8"))
    assert links
    return [(report.parent / link).resolve() for link in links]


@pytest.mark.parametrize("img_dir", [None, "{root}/figures/{date}"])  # the card's img/ beside: the run below
def test_owner_layout_paths_and_links(results, tmp_path, img_dir):
    predictions = make_predictions(results)
    report = f"{tmp_path}/logg/moe/exp/exp_logg_snr_oracle_01_{{date}}.md"
    render = Renderer("zh", report, img_dir and img_dir.format(root=tmp_path, date="{date}"), day=date(2025, 12, 26))
    assert render.report == tmp_path / "logg/moe/exp/exp_logg_snr_oracle_01_20251226.md"
    expected_img = {None: tmp_path / "logg/moe/exp/img", "{root}/logg/moe/exp/img/": tmp_path / "logg/moe/exp/img",
                    "{root}/figures/{date}": tmp_path / "figures/20251226"}[img_dir]
    assert render.img_dir == expected_img
    out = tmp_path / "results" / "run"
    render(results, predictions, out)
    # the results folder keeps its own copy, with img/ links
    assert (out / "report.md").exists() and {p.parent for p in _resolve_links(out / "report.md")} == {out / "img"}
    for target in _resolve_links(render.report):
        assert target.exists() and target.parent == expected_img.resolve()
    assert {p.name for p in expected_img.iterdir()} == set(FIGURE_NAMES)
    prefix = {None: "img/", "{root}/logg/moe/exp/img/": "img/", "{root}/figures/{date}": "../../../figures/20251226/"}
    assert all(link.startswith(prefix[img_dir]) for link in image_links(render.report.read_text()))
    # a second run overwrites what the first one wrote
    Renderer("en", report, img_dir and img_dir.format(root=tmp_path, date="{date}"), day=date(2025, 12, 26))(
        results, predictions, out)
    assert "Key results at a glance" in render.report.read_text()


def test_owner_layout_never_overwrites_a_foreign_file(results, tmp_path):
    report = tmp_path / "exp" / "exp_20251226.md"
    report.parent.mkdir()
    report.write_text("# the owner's own notes\n")
    with pytest.raises(InputError, match=f"{re.escape(str(report))}: exists and was not written by snrmoe"):
        Renderer("zh", tmp_path / "exp" / "exp_{date}.md", day=date(2025, 12, 26))
    assert report.read_text() == "# the owner's own notes\n"
    report.unlink()
    foreign_png = tmp_path / "exp" / "img" / FIGURE_NAMES[1]
    foreign_png.parent.mkdir()
    Image.new("RGB", (4, 4)).save(foreign_png)  # a PNG without snrmoe's metadata
    with pytest.raises(InputError, match=re.escape(str(foreign_png))):
        Renderer("zh", tmp_path / "exp" / "exp_{date}.md", day=date(2025, 12, 26))
    with pytest.raises(ConfigError, match=r"output.img_dir: unknown placeholder \{run\}"):
        Renderer("zh", img_dir=tmp_path / "img_{run}")


def test_finish_rewrites_the_reports_with_the_final_timings(results, tmp_path):
    del results["timings_s"]["total"]
    render = Renderer("en", tmp_path / "owner" / "r.md")
    render(results, make_predictions(results), tmp_path / "partial")
    assert "before the write phase" in render.report.read_text()
    results["timings_s"].update(write=2.0, total=106.7)
    results["output_dir"] = str(tmp_path / "partial")
    render.finish(results)
    for path in (render.report, tmp_path / "partial" / "report.md"):
        assert "| `total` | total | 106.7 s (1.8 min) |" in path.read_text()
        assert "before the write phase" not in path.read_text()


# ----------------------------------------------------------------------------- end to end: layout, logs
PIXELS = 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report-data")
    simulate_set(root, train=(2, 600), val=300, test=300, seed=5, pixels=PIXELS, progress=False)
    return root


def _run_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(REPO / "config" / "demo.yaml"), "--set", f"data.root={data}",
            "--set", 'data.train_shards=["train_600_{0..1}/dataset.h5"]', "--set", "data.val_file=null",
            "--set", "data.test_file=test_300_0/dataset.h5", "--set", f"data.feature_dim={PIXELS}",
            "--set", f"output.dir={out}", "--set", "compute.block_rows=128", "--set", "evaluation.bootstrap=100",
            "--set", "compute.cache=false", *extra]


def test_run_writes_the_owner_layout_and_refuses_a_foreign_file_before_the_pass(tiny, tmp_path, capsys):
    owner = tmp_path / "Physics_Informed_AI"
    layout = ["--set", f"output.report={owner}/logg/moe/exp/exp_logg_snr_oracle_01_{{date}}.md",
              "--set", f"output.img_dir={owner}/logg/moe/exp/img/"]
    out = tmp_path / "res"
    # every section of the report: the gate, alpha chosen on validation, intervals
    sections = ["--set", "evaluation.deployable_gate=true", "--set", "model.alpha=auto",
                "--set", "data.val_file=val_300/dataset.h5"]
    assert main(_run_args(tiny, out, *layout, *sections)) == 0
    reports = list((owner / "logg/moe/exp").glob("exp_logg_snr_oracle_01_*.md"))
    assert len(reports) == 1 and re.fullmatch(r"exp_logg_snr_oracle_01_\d{8}\.md", reports[0].name)
    assert all(p.exists() for p in _resolve_links(reports[0]))
    assert (out / "report.md").exists() and (out / "img" / FIGURE_NAMES[0]).exists()
    text = reports[0].read_text()
    assert "## 🚦" in text and "## 🎚️" in text
    assert english_sentences(text) == []  # a real zh report: no English sentence either
    results = json.loads((out / "results.json").read_text())
    assert results["decision"] == ("PASS" if results["delta_r2"] >= 0.02 else "FAIL")
    assert results["robustness"]["resamples"] == 100 and results["robustness"]["n_test"] == 300
    assert results["provenance"]["files"][0]["source"] == "snrmoe simulate (synthetic BOSZ/PFS-MR-like spectra), seed 5"
    assert "| `total` | 总计 |" in text  # the owner's copy has the run's final total
    capsys.readouterr()

    # a file of the owner's in the way: one line, exit 2, before any work (no results folder)
    (owner / "logg/moe/exp/img" / FIGURE_NAMES[2]).write_bytes(b"not ours")
    out2 = tmp_path / "res2"
    assert main(_run_args(tiny, out2, *layout)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("snrmoe: error: ") and FIGURE_NAMES[2] in err
    assert not out2.exists() and not list(tmp_path.glob(".res2*"))


def test_logs_a_person_can_tail(tiny, tmp_path):
    """stderr not a terminal (as under nohup): progress as a few lines with rate and ETA, not a flood of
    carriage returns; --log keeps the same timestamped lines, --pid lives exactly as long as the run."""
    data = tmp_path / "data"
    simulate = subprocess.run([sys.executable, "-m", "snrmoe_dask.cli", "simulate", str(data), "--train", "2x3000",
                               "--val", "0", "--test", "300", "--pixels", str(PIXELS), "--block-rows", "200"],
                              capture_output=True, text=True, timeout=300)
    assert simulate.returncode == 0, simulate.stderr[-2000:]
    log, pid = tmp_path / "logs" / "LOGG-SNR-ORACLE-01.log", tmp_path / "logs" / "LOGG-SNR-ORACLE-01.pid"
    args = _run_args(data, tmp_path / "res", "--log", str(log), "--pid", str(pid))
    shards = args.index('data.train_shards=["train_600_{0..1}/dataset.h5"]')
    args[shards] = 'data.train_shards=["train_3k_{0..1}/dataset.h5"]'
    run = subprocess.run([sys.executable, "-m", "snrmoe_dask.cli", *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    for stderr in (simulate.stderr, run.stderr):
        lines = stderr.splitlines()
        assert 0 < len(lines) < 100 and "\r" not in stderr
    progress = [line for line in (simulate.stderr + run.stderr).splitlines() if "snrmoe_dask.progress" in line]
    assert any(re.search(r"simulate: [\d,]+/6,300 spectra \(\d+%\), [\d,.]+ spectra/s, ETA ", p) for p in progress)
    assert any(re.search(r"train-total: \d+/\d+ tasks \(\d+%\), [\d,.]+ tasks/s, ETA ", p) for p in progress)
    assert len([p for p in progress if "simulate:" in p]) <= 12  # about one line per 10 %
    # the log file holds what stderr showed, each line timestamped
    logged = log.read_text().splitlines()
    assert logged == run.stderr.splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", line) for line in logged)
    assert not pid.exists()  # removed at exit


def test_quiet_with_a_log_leaves_stderr_to_warnings_and_errors(tiny, tmp_path, capsys):
    log = tmp_path / "run.log"
    log.write_text("an earlier run\n")
    assert main(_run_args(tiny, tmp_path / "res", "--log", str(log), "-q")) == 0
    err = capsys.readouterr().err.splitlines()
    assert all(" WARNING " in line for line in err)  # only warnings (bin H has too few spectra here)
    logged = log.read_text().splitlines()
    assert logged[0] == "an earlier run"  # appended, never overwritten
    assert any("snrmoe_dask.progress: train-total: " in line for line in logged)
    assert any("phase write" in line for line in logged)
    # an error ends the log with its one line too
    assert main(_run_args(tiny, tmp_path / "res", "--log", str(log), "-q", "--set", "model.alpha=-1")) == 2
    assert "ERROR snrmoe: error: " in log.read_text().splitlines()[-1]
    assert capsys.readouterr().err.startswith("snrmoe: error: ")


def test_pid_file_rules(tiny, tmp_path, capsys):
    pid = tmp_path / "run.pid"
    pid.write_text("my notes\n")
    assert main(_run_args(tiny, tmp_path / "res", "--pid", str(pid), "-q")) == 2
    assert "does not hold a process id; refusing to overwrite it" in capsys.readouterr().err
    assert pid.read_text() == "my notes\n"
    pid.write_text(f"{os.getppid()}\n")  # a live process: another run
    assert main(_run_args(tiny, tmp_path / "res", "--pid", str(pid), "-q")) == 2
    assert "is still running" in capsys.readouterr().err
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid.write_text(dead.stdout)  # a stale file of a finished process is replaced, then removed
    assert main(_run_args(tiny, tmp_path / "res", "--pid", str(pid), "-q")) == 0
    assert not pid.exists()
