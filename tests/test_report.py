"""Figures and markdown report built from hand-made results and predictions (tests/report_cases.py); the
owner's file layout; the logs of a run. The verdict is the card's rule, its robustness stated beside it.
The sentences' rules are tested in test_report_rules.py, the schema of results.json in test_results_schema.py."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.image import imread
from matplotlib.text import Text
from PIL import Image
from sklearn.metrics import r2_score

from report_cases import make_predictions, make_results, one_m_style, ten_k_fail, with_gate
from snrmoe_dask.cli import main
from snrmoe_dask.errors import ConfigError, InputError
from snrmoe_dask.io.shards import inspect_shard, read_source
from snrmoe_dask.io.simulate import simulate_set
from snrmoe_dask.report.gate_alpha_plots import alpha_curve_figure
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
from snrmoe_dask.report.text import coverage, render_report, write_report
from snrmoe_dask.report.tracking import hub_block, roadmap_block, update_tracking_block
from test_report_rules import zh_body_words

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def results() -> dict:
    return make_results()


# ----------------------------------------------------------------------------- helpers
CARD_FIGURE_TITLES = ("### Figure 1: Oracle vs Global R² Comparison", "### Figure 2: Per-bin R²",
                      "### Figure 3: Prediction vs True", "### Figure 4: ΔR² Heatmap")  # the card's template


def drawn(monkeypatch, draw, *args):
    """The Figure a plot function draws (not saved), after a draw so that text extents are known."""
    import snrmoe_dask.report.plots as plots

    captured = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: captured.append(fig) or path)
    draw(*args)
    fig = captured[0]
    FigureCanvasAgg(fig).draw()  # a real draw: the layout runs, as when saved (the base canvas draws nothing)
    return fig


def texts_of(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def overlapping(extents) -> list[tuple[int, int]]:
    """Pairs of display boxes that overlap."""
    return [(i, j) for i in range(len(extents)) for j in range(i + 1, len(extents)) if extents[i].overlaps(extents[j])]


def layout_clashes(fig) -> list[tuple[str, str]]:
    """Pairs of the figure's texts whose display boxes overlap: the suptitle, the legends, the axes' titles,
    labels and visible tick labels, and the text boxes drawn in the axes (by their box, when they have one)."""
    renderer = fig.canvas.get_renderer()
    found: list[tuple[str, Any]] = []

    def add(what: str, artist) -> None:
        if artist is not None and artist.get_visible() and (not isinstance(artist, Text) or artist.get_text()):
            patch = artist.get_bbox_patch() if isinstance(artist, Text) else None
            found.append((what, (patch or artist).get_window_extent(renderer)))

    add("suptitle", fig._suptitle)
    for i, legend in enumerate(fig.legends):
        add(f"legend {i}", legend)
    for i, ax in enumerate(fig.axes):
        add(f"axes {i} title", ax.title)
        add(f"axes {i} x label", ax.xaxis.label)
        add(f"axes {i} y label", ax.yaxis.label)
        for k, axis in enumerate((ax.xaxis, ax.yaxis)):
            low, high = sorted(axis.get_view_interval())
            for t in axis.get_ticklabels():  # those drawn: within the axis' limits
                if low - 1e-9 <= t.get_position()[k] <= high + 1e-9:
                    add(f"axes {i} {'xy'[k]} tick {t.get_text()!r}", t)
        for t in ax.texts:
            add(f"axes {i} text {t.get_text().splitlines()[0]!r}", t)
    return [(a, b) for k, (a, ea) in enumerate(found) for b, eb in found[k + 1:] if ea.overlaps(eb)]


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
    paths = make_figures(results, make_predictions(make_results()), tmp_path)
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


def test_a_bin_is_marked_only_when_its_interval_clears_the_threshold(results):
    bins = results["bins"]
    # M: ΔR² +0.0964, CI [+0.0512, +0.1390] -> marked; X: ΔR² +0.0577 >= 0.02 but CI from +0.0190 -> not;
    # L: below; H: no expert
    assert [n for n, spec in bins.items() if bin_marked(spec, 0.02)] == ["M"]
    assert bin_marked({"delta_r2": 0.01, "delta_r2_ci": [0.02, 0.05]}, 0.02)  # lower bound at the threshold
    assert not bin_marked({"delta_r2": 0.062}, 0.02)  # no interval, no mark
    assert not bin_marked({"delta_r2": 0.062, "delta_r2_ci": [-0.07, 0.17]}, 0.02)


def test_figure_2_has_one_threshold_rule_named_in_its_legend(results, monkeypatch):
    """Issue: per-bin "Global R² + 0.02" lines judged the point estimate while ★ used the interval, so
    bins cleared the line without a ★. Now the ★ is the figure's only rule, and the legend names it."""
    fig = drawn(monkeypatch, plot_perbin, results, Path("unused.png"))
    ax = fig.axes[0]
    assert not [c for c in ax.collections if isinstance(c, LineCollection) and c.get_linestyle()[0][1]]  # no dashes
    texts = texts_of(fig)
    starred = [t for t in texts if "★" in t and "ΔR² =" in t]
    assert len(starred) == 1 and "ΔR² = +0.0964 ★" in starred[0] and "CI [+0.0512, +0.1390]" in starred[0]
    assert any("ΔR² = +0.0577\nCI [+0.0190, +0.0941]" in t for t in texts)  # X: no star
    assert "★ ΔR² CI lower bound ≥ 0.02" in [t.get_text() for t in fig.legends[0].get_texts()]
    # the boxes of values sit above the data: none overlaps a bar or an error bar
    boxes = [t.get_window_extent() for t in ax.texts]
    data = [bar.get_window_extent() for bar in ax.patches] + [
        c.get_window_extent() for c in ax.collections if isinstance(c, LineCollection)]
    assert not [b for b in boxes for d in data if b.overlaps(d) and d.width > 0 and d.height > 0]


def test_figure_2_draws_the_intervals_as_error_bars(results, monkeypatch):
    fig = drawn(monkeypatch, plot_perbin, results, Path("unused.png"))
    bars = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert [len(b.lines[2][0].get_segments()) for b in bars] == [1, 1]  # overall only: bins carry no r2_ci here
    for name in ("M", "L", "X"):
        results["bins"][name]["global"]["r2_ci"] = [0.1, 0.9]
        results["bins"][name]["expert"]["r2_ci"] = [0.1, 0.9]
    results["bins"]["H"]["expert"]["r2_ci"] = [0.1, 0.9]  # skipped: its bar is the global model's
    fig = drawn(monkeypatch, plot_perbin, results, Path("unused.png"))
    bars = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert [len(b.lines[2][0].get_segments()) for b in bars] == [4, 4]


def test_figure_1_draws_every_interval_and_keeps_its_box_clear_of_the_data(monkeypatch):
    results = with_gate(make_results("PASS_NOT_ROBUST"), 0.47, {})
    results["models"]["noisy_snr_routed"] = dict(r2=0.46, mae=0.66, rmse=0.85, n_train=20_000, n_test=400,
                                                 r2_ci=[0.41, 0.51])
    results["models"]["deployed"]["r2_ci"] = [0.42, 0.52]
    fig = drawn(monkeypatch, plot_comparison, results, Path("unused.png"))
    ax = fig.axes[0]
    (errorbars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(errorbars.lines[2][0].get_segments()) == 4  # the noisy-SNR bar has its interval too
    box = next(t for t in ax.texts if t.get_text().startswith("ΔR² (Oracle − Global)"))
    assert "≥ threshold 0.02  →  PASS (the card's rule)" in box.get_text()
    assert "95% CI [+0.0079, +0.0348] includes the threshold: not robust" in box.get_text()
    extent = box.get_bbox_patch().get_window_extent()
    data = [p.get_window_extent() for p in ax.patches if p is not box.get_bbox_patch()]
    data += [c.get_window_extent() for c in ax.collections]
    assert not [d for d in data if np.isfinite(d.get_points()).all() and extent.overlaps(d)]
    assert not any("INCONCLUSIVE" in t for t in texts_of(fig))


@pytest.mark.parametrize("case", ["10k FAIL", "1M style"])
def test_figures_2_and_3_lay_out_their_texts_without_overlaps(case, monkeypatch):
    """Issue 24: on the 10,000-spectrum FAIL, Figure 3's suptitle ran into the panels' titles and its legend
    into the x labels (equal-aspect panels in a constrained layout), and Figure 2's boxes into each other."""
    results = ten_k_fail() if case == "10k FAIL" else one_m_style()
    if case == "10k FAIL":  # the run's numbers, and so its boxes' widths
        for name, (a, b) in zip("LMHX", [(0.1489, 0.0927), (0.1532, 0.1778), (0.1719, 0.0004), (0.1625, 0.0234)]):
            results["bins"][name]["global"]["r2"], results["bins"][name]["expert"]["r2"] = a, b
            results["bins"][name]["delta_r2_ci"] = [-0.3076, -0.0793]
    predictions = make_predictions(make_results())
    for draw, args in ((plot_perbin, (results,)), (plot_pred_vs_true, (results, predictions))):
        fig = drawn(monkeypatch, draw, *args, Path("unused.png"))
        assert layout_clashes(fig) == [], draw.__name__
        for ax in fig.axes:  # and the boxes inside their axes, not cut at its top
            inside = ax.get_window_extent()
            for t in ax.texts:
                box = t.get_bbox_patch().get_window_extent()
                assert inside.y0 <= box.y0 and box.y1 <= inside.y1 and inside.x0 <= box.x0 and box.x1 <= inside.x1


def test_figure_3_keeps_text_off_the_data_and_its_axes_on_the_data(monkeypatch):
    """Issue: both panels carried the same text box, drawn under the points; the axes ran -0.3 to 6.7
    for targets 1-5 because of a few predictions."""
    results = one_m_style()
    predictions = make_predictions(make_results())
    predictions.loc[0, "y_global"], predictions.loc[1, "y_oracle"] = 9.5, -4.0  # far outliers
    predictions = predictions.loc[predictions.index.repeat(3)].reset_index(drop=True)  # 1,200 rows
    fig = drawn(monkeypatch, plot_pred_vs_true, results, predictions, Path("unused.png"))
    for ax in fig.axes:
        assert len(ax.texts) == 0  # no box inside the panels
        low, high = ax.get_ylim()
        assert low <= predictions["y_true"].min() and high >= predictions["y_true"].max()
        assert low > -4.0 and high < 9.5  # the outliers lie on the edge, not on the scale
        assert ax.get_xlim() == ax.get_ylim()
        assert "slope" in ax.get_title()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("beyond the axes, on the edge: Global ") for t in legend)
    assert "M (4≤SNR<7): n_test=354, ΔR² +0.0964" in legend
    assert "training range of log g" in legend and "least-squares fit" in legend


def test_figure_4_puts_the_bins_on_x_and_the_threshold_where_the_eye_compares(results, monkeypatch):
    """Issue: bins on the rows, colour-bar ticks colliding ('−0.075−0.050−0.025'), the threshold a thin
    tick on the colour bar."""
    fig = drawn(monkeypatch, plot_delta_heatmap, results, Path("unused.png"))
    ax_r2, ax_d, cax_r2, cax_d = fig.axes
    labels = [t.get_text() for t in ax_d.get_xticklabels()]
    assert [label.split("\n")[0] for label in labels] == ["H", "M", "L", "X", "Overall"]
    assert [t.get_text() for t in ax_d.get_yticklabels()] == ["ΔR²\n(Oracle − Global)"]
    norm = ax_d.images[0].norm
    assert norm.vcenter == pytest.approx(0.02)  # white is the threshold, in every cell
    cells = [t.get_text() for t in ax_d.texts]
    assert "+0.0964\n[+0.0512, +0.1390]" in cells and "+0.0412\n[+0.0281, +0.0553]" in cells and "no expert" in cells
    for cax in (cax_r2, cax_d):
        ticks = [t.get_window_extent() for t in cax.get_yticklabels() if t.get_text() and t.get_visible()]
        assert len(ticks) >= 3 and overlapping(ticks) == []
    assert "threshold 0.02" in cax_d.get_ylabel()


def test_the_alpha_curve_is_not_crushed_by_one_collapsed_value(tmp_path, monkeypatch):
    """Issue: one validation R² of −7.9 crushed the y range of every other curve."""
    import snrmoe_dask.report.gate_alpha_plots as gate_alpha_plots

    captured = []
    monkeypatch.setattr(gate_alpha_plots, "save_figure", lambda fig, path: captured.append(fig) or path)
    alphas = [1.0, 10.0, 100.0, 1000.0, 1e4, 1e5]
    curves = {"global": (alphas, [0.10, 0.15, 0.22, 0.28, 0.29, 0.13]),
              "H": (alphas, [-7.9, -1.2, 0.05, 0.30, 0.33, 0.20]), "M": (alphas, [0.2, 0.25, 0.3, 0.35, 0.3, 0.2])}
    alpha_curve_figure(curves, {"global": 1e4, "H": 1e4, "M": 1000.0}, 1e5, tmp_path / "a.png")
    ax = captured[0].axes[0]
    low, high = ax.get_ylim()
    assert low > -7.9 and high >= 0.35
    assert (0.35 - 0.10) / (high - low) > 0.25  # the ordinary curves use a good part of the height
    assert any("below the axis" in t.get_text() for t in captured[0].legends[0].get_texts())


# ----------------------------------------------------------------------------- report
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_render_report_fills_the_template(results, lang):
    text = render_report(results, lang=lang)
    assert "TODO" not in text and "[按模板填写]" not in text
    assert text.startswith("# 🧪 Experiment: Oracle SNR-binned MoE")
    assert "**Experiment ID:** `LOGG-SNR-ORACLE-01`" in text
    assert "**Date:** 2026-11-25 (card date 2025-12-26)" in text
    assert "**Status:** ✅ PASS (ΔR² +0.0412, threshold 0.02)" in text
    assert "| H1: ΔR² ≥ 0.02 | ≥ 0.02 | +0.0412 [+0.0281, +0.0553] | ✅ |" in text
    for name in ("Bin H", "Bin M", "Bin L", "Bin X"):
        assert name in text
    for title, figure in zip(CARD_FIGURE_TITLES, FIGURE_NAMES):
        assert f"{title}\n![" in text and f"(img/{figure})" in text
    assert "| Model | R² | MAE (dex) | RMSE (dex) | N_train | N_test |" in text
    assert "| Global Ridge | 0.4629 | 0.6572 | 0.8480 | 20,000 | 400 |" in text
    assert "| - Bin M (4 ≤ SNR < 7) | 0.7103 / 0.6139 | 0.4668 / 0.5203 | 0.6011 / 0.6980 | 5,950 (29.8%) | 118 |" in text
    assert "99.5%" in text  # coverage: 398 of 400 test spectra reach a trained expert
    step = {"zh": "继续 MVP-2.0 (Deployable Gate)", "en": "Continue to MVP-2.0 (Deployable Gate)"}[lang]
    assert f"| **👉 {step}** |" in text
    assert "110.3 s" in text.split("## 📎")[1]  # timings: the appendix only
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
        assert "**Status:** ❌ FAIL" in text
        assert "✅ PASS" not in text.replace("| ΔR² ≥ 0.02 | ✅ PASS |", "")  # only the Decision Gate's other row
        assert verdict in text and step in text
        assert "MVP-2.0 (Deployable Gate)" not in text.split("Decision Gate")[0]
        assert "| **👉 ΔR² < 0.02** |" in text
        assert f"{verdict}" in hub_block(results, lang) and "+0.0087" in roadmap_block(results, lang)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_a_pass_that_is_not_robust_reads_pass_with_its_premise(lang):
    """ΔR² above the threshold whose interval includes it: ✅ PASS by the card, 'not robust' as a premise
    under the summary, never INCONCLUSIVE and never a sentence that contradicts the decision."""
    results = make_results("PASS_NOT_ROBUST")
    results["models"]["deployed"] = dict(r2=0.4850, mae=0.6400, rmse=0.8300, n_train=20_000, n_test=400)
    text = render_report(results, lang=lang)
    assert "**Status:** ✅ PASS (ΔR² +0.0215, threshold 0.02)" in text
    assert "INCONCLUSIVE" not in text and "⚠️ 无法判定" not in text
    assert "| **👉 ΔR² ≥ 0.02** |" in text and "| ΔR² < 0.02 |" in text
    if lang == "zh":
        assert "≥ 阈值 0.02），按卡片规则判定为 ✅ 通过，下一步：继续 MVP-2.0 (Deployable Gate)。" in text
        assert ("> - ⚠️ 测试集偏小：ΔR² 的 95% 置信区间 [+0.0079, +0.0348] 跨过阈值 0.02，400 条测试光谱下判定不稳健；"
                "按当前效应大小，约需 33,000 条测试光谱才能定论（估计）。") in text
        assert "95% 配对百分位 bootstrap 区间：对测试光谱有放回重采样 2,000 次" in text
        assert text.count("配对百分位 bootstrap") == 1  # said once
    else:
        assert "≥ the 0.02 threshold), so the card's rule gives ✅ PASS; next: Continue to MVP-2.0" in text
        assert "so with 400 test spectra the verdict is not robust; about 33,000 test spectra would settle it" in text
        assert "95% paired percentile bootstrap interval over the test spectra (2,000 resamples)" in text
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
    assert "⚠️ 未计算置信区间（`evaluation.bootstrap: 0`）：无法判断 400 条测试光谱下判定是否稳健。" in zh
    assert "本次运行未计算置信区间（`evaluation.bootstrap: 0`）。" in zh
    assert "No confidence interval was computed (`evaluation.bootstrap: 0`)" in en
    assert "CI [" not in zh and "CI [" not in en and "★" not in zh


def test_report_r2_matches_sklearn_peer_format(results):
    """Numbers in the report are the results' numbers, formatted like sklearn's r2 rounded to 4 places."""
    predictions = make_predictions(results)
    r2 = r2_score(predictions["y_true"], predictions["y_oracle"])
    results["models"]["oracle"]["r2"] = r2
    results["delta_r2"] = r2 - results["models"]["global"]["r2"]
    results["decision"] = "PASS" if results["delta_r2"] >= 0.02 else "FAIL"
    del results["delta_r2_ci"]
    text = render_report(results, lang="en")
    assert f"| Oracle MoE | {r2:.4f} |" in text
    assert f"{results['delta_r2']:+.4f}" in text


def test_an_older_results_json_gets_its_diagnostics_from_the_predictions(results):
    predictions = make_predictions(results)
    text = render_report(results, lang="en", predictions=predictions)
    slope = np.polyfit(predictions["y_true"], predictions["y_global"], 1)[0]
    assert f"/ {slope:.2f} | n/a / n/a |" in text.split("| Overall (Oracle / Global) |")[1].splitlines()[0]
    assert "slope of predicted" not in render_report(results, lang="en")  # without them: nothing said


def test_render_report_rejects_unknown_language(results):
    with pytest.raises(ConfigError, match="lang='fr'"):
        render_report(results, lang="fr")


def test_write_report_is_atomic_and_relative_paths(results, tmp_path):
    path = write_report(results, tmp_path / "out", lang="zh")
    assert path == tmp_path / "out" / "report.md"
    assert path.read_text(encoding="utf-8") == render_report(results, lang="zh")
    assert [p.name for p in path.parent.iterdir()] == ["report.md"]


# ----------------------------------------------------------------------------- the card's expectations
def test_card_expectations_flag_low_shares_and_apply_only_to_the_cards_bins():
    results = make_results("PASS")
    results["bins"]["M"]["n_train"] = 1_000  # 5% of the training spectra against the card's ~30%
    text = render_report(results, lang="en")
    row = next(line for line in text.splitlines() if line.startswith("| Expected training shares"))
    total = sum(spec["n_train"] for spec in results["bins"].values())
    assert (f"below expectation: H {100 * 62 / total:.1f}% (expected ~30%+), M {100 * 1000 / total:.1f}% "
            "(expected ~30%+)") in row
    results["bins"]["M"]["low"] = 5.0
    results["bins"] = {("M2" if k == "M" else k): v for k, v in results["bins"].items()}
    row = next(line for line in render_report(results, lang="en").splitlines()
               if line.startswith("| Expected training shares"))
    assert "M2" not in row and f"H {100 * 62 / total:.1f}%" in row  # the card's other bins still checked


def test_alpha_flags_edge_of_grid_and_few_validation_spectra():
    results = make_results("PASS")
    curve = {"alpha": [1.0, 10.0, 100.0], "val_r2": [0.1, 0.2, 0.3]}
    results["alpha"] = {"fixed_alpha": 100.0, "global": {"alpha": 100.0, "source": "validation", "n_train": 20_000,
                                                        "n_val": 1000, "val_r2": 0.3, "val_r2_fixed": 0.3,
                                                        "gain_over_fixed": 0.0, "curve": curve},
                        "experts": {"M": {"alpha": 10.0, "source": "validation", "n_train": 5950, "n_val": 40,
                                          "val_r2": 0.2, "val_r2_fixed": 0.1, "gain_over_fixed": 0.1, "curve": curve},
                                    "X": {"alpha": 100.0, "source": "global", "n_train": 6378, "n_val": 1,
                                          "curve": {"alpha": [1.0, 10.0, 100.0], "val_r2": None}}}}
    results["config"]["model"]["alpha"] = "auto"
    en, zh = render_report(results, lang="en"), render_report(results, lang="zh")
    section = en.split("## 🎚️")[1].split("\n---\n")[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    assert "edge of the candidate grid" in rows["Global Ridge"]  # 100 is the grid's largest
    assert "chosen on only 40 validation spectra" in rows["Expert M"] and "edge" not in rows["Expert M"]
    assert "only 1 validation spectra: uses Global Ridge's alpha" in rows["Expert X"]
    assert "⚠️ 选在候选网格的边缘" in zh and "⚠️ 只用 40 条验证光谱选出" in zh
    assert "Global Ridge at α = 100 (the grid's highest)" in en  # and a premise of the conclusion


# ----------------------------------------------------------------------------- provenance and units
def test_the_report_states_what_the_files_say_and_warns_on_a_mismatch():
    results = make_results("PASS")
    results["config"]["data"] = {"source": "BOSZ simulated spectra", "root": "/d"}
    results["provenance"]["files"] = [{"path": "/d/train_0/dataset.h5", "bytes": 10,
                                       "source": "snrmoe simulate (synthetic BOSZ/PFS-MR-like spectra), seed 3"}]
    zh, en = render_report(results, lang="zh"), render_report(results, lang="en")
    said = "`snrmoe simulate (synthetic BOSZ/PFS-MR-like spectra), seed 3`"
    assert f"| Source | files: {said} (1 files); config data.source: `BOSZ simulated spectra` (⚠️ not what" in en
    assert f"| 数据源 | 文件：{said}（1 个文件）；配置 data.source：`BOSZ simulated spectra`（⚠️ 与文件所写不一致" in zh
    assert "Input files (relative to data.root = `/d`): `train_0/dataset.h5` (10 B)" in en
    results["config"]["data"]["source"] = "snrmoe simulate (synthetic BOSZ/PFS-MR-like spectra), seed 3"
    assert "⚠️ not what" not in render_report(results, lang="en")
    results["provenance"]["files"][0]["source"] = None  # the real data set carries no attribute
    real = render_report(results, lang="en")
    assert "1 files carry no source attribute (real data files do not)" in real and "⚠️ not what" not in real


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
        assert re.search(rf"`{phase}` [\d.]+ s( \([\d.]+ min\))? \([a-z]", timings)  # every phase is described
    assert "`total` 109.4 s (1.8 min) (the run up to the write phase)" in timings
    results["timings_s"]["total"] = 111.0
    assert "`total` 111.0 s (1.9 min)" in render_report(results, lang="en")
    assert "MAE (dex)" in en and "RMSE (dex)" in en and "| MAE |" not in en


def test_metrics_and_per_bin_keys_are_honoured():
    results = make_results("PASS")
    results["config"]["evaluation"].update(metrics=["R2", "RMSE"], per_bin=False)
    for lang in ("zh", "en"):
        text = render_report(results, lang=lang)
        assert "| Model | R² | RMSE (dex) | N_train | N_test |" in text and "MAE" not in text.split("```json")[0]
        assert "- Bin " not in text and "~30%+" not in text and "R²_max" not in text
        assert "+0.0964" not in roadmap_block(results, lang)
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
        assert ("判定稳健" in roadmap + hub) == (lang == "zh") and ("Robust:" in roadmap + hub) == (lang == "en")


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
    assert "`total` 104.7 s" in render.report.read_text()  # the sum of the phases so far
    results["timings_s"].update(write=2.0, total=106.7)
    results["output_dir"] = str(tmp_path / "partial")
    render.finish(results)
    for path in (render.report, tmp_path / "partial" / "report.md"):
        assert "`total` 106.7 s (1.8 min)" in path.read_text()


@pytest.mark.parametrize("case", ["FAIL", "PASS"])
def test_demo_ends_with_what_it_is_expected_to_show_and_where_the_report_is(case, tmp_path, monkeypatch, capsys):
    import snrmoe_dask.cli as cli
    import snrmoe_dask.experiment.driver as driver

    results = dict(make_results(case), output_dir=str(tmp_path / "results" / "demo"))
    results["models"]["global"]["n_train"] = 100_000
    monkeypatch.setattr(driver, "ensure_demo_data", lambda data_dir, progress: Path(data_dir) / "demo")
    monkeypatch.setattr(cli, "_run", lambda *args, **kwargs: results)  # the run itself: the tests above
    assert main(["demo", "--data-dir", str(tmp_path / "data"), "-q"]) == 0
    expected, report = capsys.readouterr().out.splitlines()[-2:]
    assert expected.startswith("expected: FAIL by the card's rule on the demo's 100,000 simulated training spectra")
    assert expected.endswith("This run: FAIL, as expected." if case == "FAIL"
                             else "This run: PASS, not what this set is expected to give.")
    assert report == f"report: {tmp_path / 'results' / 'demo' / 'report.md'}"


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
    assert zh_body_words(text) == []  # a real zh report: no English term in its body either
    results = json.loads((out / "results.json").read_text())
    assert results["decision"] == ("PASS" if results["delta_r2"] >= 0.02 else "FAIL")
    assert results["robustness"]["resamples"] == 100 and results["robustness"]["n_test"] == 300
    assert results["provenance"]["files"][0]["source"] == "snrmoe simulate (synthetic BOSZ/PFS-MR-like spectra), seed 5"
    # the new numbers of the experiment layer, against a plain numpy peer
    predictions = pd.read_csv(out / "predictions.csv")
    targets = np.concatenate([pd.read_hdf(tiny / f"train_600_{k}/dataset.h5")["log_g"].to_numpy() for k in (0, 1)])
    checks = results["diagnostics"]
    assert checks["target"]["train_min"] == targets.min() and checks["target"]["train_max"] == targets.max()
    assert checks["target"]["test_std"] == pytest.approx(predictions["y_true"].std(ddof=0), rel=1e-12)
    for model, column in (("global", "y_global"), ("oracle", "y_oracle"), ("deployed", "y_deployed")):
        y, pred = predictions["y_true"].to_numpy(), predictions[column].to_numpy()
        assert checks["models"][model]["slope"] == pytest.approx(np.polyfit(y, pred, 1)[0], rel=1e-9)
        outside = np.mean((pred < targets.min()) | (pred > targets.max()))
        assert checks["models"][model]["outside_train_range"] == pytest.approx(outside)
    in_m = (predictions["bin"] == "M").to_numpy()
    assert checks["bins"]["M"]["expert"]["slope"] == pytest.approx(
        np.polyfit(predictions["y_true"][in_m], predictions["y_oracle"][in_m], 1)[0], rel=1e-9)
    lo, hi = results["models"]["noisy_snr_routed"]["r2_ci"]  # the noisy-SNR bar has its interval
    assert lo < results["models"]["noisy_snr_routed"]["r2"] < hi
    assert "`total`" in text.split("### 耗时")[1]  # the owner's copy has the run's final total
    capsys.readouterr()

    # a file of the owner's in the way: one line, exit 2, before any work (no results folder)
    (owner / "logg/moe/exp/img" / FIGURE_NAMES[2]).write_bytes(b"not ours")
    out2 = tmp_path / "res2"
    assert main(_run_args(tiny, out2, *layout)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("snrmoe: error: ") and FIGURE_NAMES[2] in err
    assert not out2.exists() and not list(tmp_path.glob(".res2*"))


def test_logs_a_person_can_tail(tiny, tmp_path):
    """stderr not a terminal (as under nohup): progress as a few lines labelled by phase with rate and ETA,
    not a flood of carriage returns; --log keeps the same timestamped lines and ends with the decision and
    the next step; the printed wall time is the whole command's; --pid lives exactly as long as the run."""
    data = tmp_path / "data"
    simulate = subprocess.run([sys.executable, "-m", "snrmoe_dask.cli", "simulate", str(data), "--train", "2x3000",
                               "--val", "0", "--test", "300", "--pixels", str(PIXELS), "--block-rows", "200"],
                              capture_output=True, text=True, timeout=300)
    assert simulate.returncode == 0, simulate.stderr[-2000:]
    log, pid = tmp_path / "logs" / "LOGG-SNR-ORACLE-01.log", tmp_path / "logs" / "LOGG-SNR-ORACLE-01.pid"
    args = _run_args(data, tmp_path / "res", "--log", str(log), "--pid", str(pid))
    shards = args.index('data.train_shards=["train_600_{0..1}/dataset.h5"]')
    args[shards] = 'data.train_shards=["train_3k_{0..1}/dataset.h5"]'
    started = time.monotonic()
    # the installed command, as users run it: its exit skips the interpreter's teardown (cli.entry)
    command = Path(sys.executable).with_name("snrmoe")
    run = subprocess.run([str(command), *args], capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stderr[-2000:]
    for stderr in (simulate.stderr, run.stderr):
        lines = stderr.splitlines()
        assert 0 < len(lines) < 100 and "\r" not in stderr
    progress = [line for line in (simulate.stderr + run.stderr).splitlines() if "snrmoe_dask.progress" in line]
    assert any(re.search(r"simulate: [\d,]+/6,300 spectra \(\d+%\), [\d,.]+ spectra/s, ETA ", p) for p in progress)
    assert any(re.search(r"progress: train: \d+/\d+ tasks \(\d+%\), [\d,.]+ tasks/s, ETA ", p) for p in progress)
    assert len([p for p in progress if "simulate:" in p]) <= 12  # about one line per 10 %
    # the log file holds what stderr showed, each line timestamped
    logged = log.read_text().splitlines()
    assert logged == run.stderr.splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", line) for line in logged)
    results = json.loads((tmp_path / "res" / "results.json").read_text())
    assert re.search(rf"decision: {results['decision']} \(the card's rule: dR2 [-+]\d\.\d{{4}} [<>]=? threshold 0\.02\)$",
                     logged[-2])
    assert logged[-1].endswith(f"next step: {results['next_step']}")
    assert any("test: done in" in line for line in logged) and any("write: done in" in line for line in logged)
    wall = float(re.search(r"wall time ([\d.]+) s \(the whole command\)", run.stdout).group(1))
    assert results["timings_s"]["total"] < wall <= elapsed + 0.2 and wall > elapsed - 2.0
    assert not pid.exists()  # removed at exit
    assert run.stdout.rstrip().endswith("report.md")  # the summary's last line, flushed before the exit


def test_quiet_with_a_log_leaves_stderr_to_warnings_and_errors(tiny, tmp_path, capsys):
    log = tmp_path / "run.log"
    log.write_text("an earlier run\n")
    assert main(_run_args(tiny, tmp_path / "res", "--log", str(log), "-q")) == 0
    err = capsys.readouterr().err.splitlines()
    assert all(" WARNING " in line for line in err)  # only warnings (bin H has too few spectra here)
    logged = log.read_text().splitlines()
    assert logged[0] == "an earlier run"  # appended, never overwritten
    assert any("snrmoe_dask.progress: train: " in line for line in logged)
    assert any("write: done in" in line for line in logged)
    assert "next step: " in logged[-1]
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
