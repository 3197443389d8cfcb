"""The experiment report (the card's "Step 4" template) and the roadmap/hub tracking blocks.

Everything is rendered from the results dict alone (the parsed ``results.json``); the figures
are embedded by relative path ``<img_prefix>/<name>.png`` (``img/`` inside the results folder).
Per the card's language rule the header is English, the body (every sentence of it, the tracking
blocks too) Chinese (``lang="zh"``) or English (``lang="en"``), figure text English.

The verdict is the card's: ✅ PASS when ΔR² >= threshold, ❌ FAIL otherwise. The bootstrap interval
is shown beside it as a separate robustness verdict and never replaces it.
Files are written atomically (temporary file in the same folder + ``os.replace``); the report ends
with the line :data:`MARK` so that the tool knows which report files it wrote.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .._version import __version__
from ..core.card import BINS as CARD_BINS
from ..core.card import EXPECTED_SHARE, R2_CEILING, RHO_BAR
from ..core.metrics import NEXT_STEP
from ..errors import ConfigError, InputError
from ..io.atomic import write_text
from ..experiment.summary import shown_metrics
from ..experiment.verdict import describe
from .scaling import scaling_section
from .plots import (
    FIG_ALPHA_CURVE,
    FIG_COMPARISON,
    FIG_DELTA_HEATMAP,
    FIG_GATE_CONFUSION,
    FIG_PERBIN,
    FIG_PRED_VS_TRUE,
    METRIC_LABELS,
    alpha_curves,
    as_float,
    bin_delta,
    bin_marked,
    cell_range_label,
    check_results,
    ci_bounds,
    column_label,
    decision,
    format_ci,
    format_count,
    format_delta,
    format_r2,
    is_snr_partition,
    min_train_count,
    partition_columns,
    partition_noun,
    robustness_of,
)

TITLE = "# 🧪 Experiment: Oracle SNR-binned MoE"
DEFAULT_MVP = "MVP-1.0 (Gate-2)"
HUB_PATH = "logg/moe/moe_snr_hub.md"
ROADMAP_PATH = "logg/moe/moe_snr_roadmap.md"
STATUS = {"PASS": "✅ PASS", "FAIL": "❌ FAIL"}  # the header's words (English)
VERDICT_ZH = {"PASS": "✅ 通过", "FAIL": "❌ 不通过"}  # the card's Decision Gate words
NEXT_STEP_ZH = {"PASS": "继续 MVP-2.0 (Deployable Gate)", "FAIL": "跳到 Gate-4 (Whitening/Conditional)"}
LANGS = ("zh", "en")
MARK = "<!-- written by snrmoe-dask"  # the report's last line starts with it
FEW_VALIDATION = 100  # an alpha chosen on fewer validation spectra is flagged

Text = Callable[[str, str], str]


# ----------------------------------------------------------------------------- small helpers
def _text(lang: str) -> Text:
    if lang not in LANGS:
        raise ConfigError(f"lang={lang!r}: expected one of {', '.join(map(repr, LANGS))}")
    return (lambda zh, en: zh) if lang == "zh" else (lambda zh, en: en)


def _lang(t: Text) -> str:
    return t("zh", "en")


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.1f}%" if math.isfinite(fraction) else "n/a"


def _share(count: int, total: int) -> str:
    """'5,950 (29.8%)'."""
    return f"{count:,} ({_pct(count / total)})" if total > 0 else f"{count:,}"


def _with_ci(value: str, ci: Any, signed: bool = True) -> str:
    text = format_ci(ci, signed=signed)
    return f"{value} (CI {text})" if text else value


def _number(value: Any) -> str:
    """Alpha-like numbers: '100,000' for integers, '%g' otherwise; missing -> 'n/a'."""
    v = as_float(value)
    if not math.isfinite(v):
        return "n/a"
    return f"{int(v):,}" if v == int(v) and abs(v) >= 1 else f"{v:g}"


def _level(value: Any) -> str:
    """A noise level as written in configs: '1.0', '0.5'; missing -> 'n/a'."""
    v = as_float(value)
    return str(v) if math.isfinite(v) else "n/a"


def _lookup(mapping: Any, *paths: str) -> Any:
    """First value found at one of the dotted ``paths`` (``"noise.level"``), else None."""
    for path in paths:
        node = mapping
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            return node
    return None


def _seconds(value: Any) -> str:
    v = as_float(value)
    if not math.isfinite(v):
        return "n/a"
    return f"{v:,.1f} s ({v / 60:.1f} min)" if v >= 60 else f"{v:.1f} s"


def _pipes(cell: str) -> str:
    """A cell's own '|' escaped (grid cells are named 'cool|poor'); an escaped one is left as it is."""
    return re.sub(r"(?<!\\)\|", r"\\|", cell)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(map(_pipes, header)) + " |",
             "|" + "|".join("-" * max(3, len(h) + 2) for h in header) + "|"]
    lines += ["| " + " | ".join(map(_pipes, row)) + " |" for row in rows]
    return lines


def _flatten(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted paths and leaf values; a list of mappings is indexed: ``files[0].path``."""
    if isinstance(node, Mapping):
        out: list[tuple[str, Any]] = []
        for key, value in node.items():
            out += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(node, (list, tuple)) and node and all(isinstance(v, Mapping) for v in node):
        return [pair for i, value in enumerate(node) for pair in _flatten(value, f"{prefix}[{i}]")]
    return [(prefix, node)]


def _cell(value: Any) -> str:
    """A value inside a markdown table cell: pipes escaped, lists joined."""
    if isinstance(value, (list, tuple)):
        value = ", ".join(map(str, value))
    return str(value).replace("|", "\\|").replace("\n", " ")


# ----------------------------------------------------------------------------- facts
@dataclass(frozen=True)
class BinFacts:
    """One bin's (or grid cell's) numbers, ready for the report."""

    name: str
    cell_range: str
    n_train: int
    n_test: int
    train_fraction: float
    test_fraction: float
    skipped: bool
    r2: float
    r2_global: float
    delta: float
    delta_ci: Any
    mae: float
    rmse: float
    alpha: Any

    @property
    def label(self) -> str:
        return f"{self.name} ({self.cell_range})"


def bin_facts(results: Mapping[str, Any]) -> list[BinFacts]:
    """The bins in results order, with train/test shares of the bins' totals."""
    bins = results["bins"]
    total_train = sum(int(s["n_train"]) for s in bins.values())
    total_test = sum(int(s["n_test"]) for s in bins.values())
    out = []
    for name, spec in bins.items():
        expert = spec["expert"]
        out.append(BinFacts(
            name=str(name), cell_range=cell_range_label(spec),
            n_train=int(spec["n_train"]), n_test=int(spec["n_test"]),
            train_fraction=int(spec["n_train"]) / total_train if total_train else math.nan,
            test_fraction=int(spec["n_test"]) / total_test if total_test else math.nan,
            skipped=bool(spec.get("skipped", False)), r2=as_float(expert.get("r2")),
            r2_global=as_float(spec["global"].get("r2")), delta=bin_delta(spec),
            delta_ci=spec.get("delta_r2_ci"), mae=as_float(expert.get("mae")), rmse=as_float(expert.get("rmse")),
            alpha=spec.get("alpha"),
        ))
    return out


def coverage(results: Mapping[str, Any]) -> float:
    """Fraction of test spectra routed to a trained expert (not in a skipped bin); NaN without test spectra."""
    bins = results["bins"].values()
    total = sum(int(s["n_test"]) for s in bins)
    trained = sum(int(s["n_test"]) for s in bins if not s.get("skipped", False))
    return trained / total if total else math.nan


def _coverage_text(results: Mapping[str, Any], t: Text) -> str:
    bins = results["bins"].values()
    total = sum(int(s["n_test"]) for s in bins)
    trained = sum(int(s["n_test"]) for s in bins if not s.get("skipped", False))
    return t(f"{_pct(coverage(results))}（{total:,} 条测试光谱中 {trained:,} 条由已训练的 expert 预测）",
             f"{_pct(coverage(results))} ({trained:,} of {total:,} test spectra routed to a trained expert)")


def _status(results: Mapping[str, Any]) -> str:
    """'✅ PASS' / '❌ FAIL': the card's rule on the point estimate (English, for the header)."""
    return STATUS[decision(results)]


def _verdict(results: Mapping[str, Any], t: Text) -> str:
    """The card's Decision Gate words in the body's language: '✅ 通过' / '✅ PASS'."""
    d = decision(results)
    return t(VERDICT_ZH[d], STATUS[d])


def _verdict_mark(results: Mapping[str, Any]) -> str:
    return _status(results).split()[0]


def _next_step(results: Mapping[str, Any], t: Text) -> str:
    """The card's next step for the decision, in the body's language."""
    d = decision(results)
    return t(NEXT_STEP_ZH[d], NEXT_STEP[d])


def _robust_text(results: Mapping[str, Any], t: Text) -> str:
    """The robustness verdict as a clause: the interval, where it lies, and what would settle it."""
    rob = robustness_of(results)
    if rob is None:
        return t("未计算区间（evaluation.bootstrap: 0），因此没有稳健性判定",
                 "no interval (evaluation.bootstrap: 0), so no robustness verdict")
    threshold = as_float(results["threshold"])
    if _lang(t) == "en":
        return describe(rob, threshold)
    lo, hi = rob["ci"]
    thr, level, ci, n = _thr(results), f"{100 * rob['level']:g}%", format_ci(rob["ci"]), format_count(rob["n_test"])
    if rob["verdict"] == "robust":
        side = "不低于" if lo >= threshold else "低于"
        return f"{level} CI {ci} 整体{side}阈值 {thr}：在 {n} 条测试光谱下稳健"
    where = f"包含阈值 {thr}" if lo < threshold <= hi else f"落在阈值 {thr} 的另一侧"
    needed = rob.get("test_spectra_needed")
    settle = (f"；按此效应大小，约需 {format_count(needed)} 条测试光谱才能定论（估计）" if needed
              else "；ΔR² 恰好等于阈值，增加测试光谱也无法定论")
    return f"{level} CI {ci} {where}：在 {n} 条测试光谱下不稳健{settle}"


def _ci_definition(results: Mapping[str, Any], t: Text) -> str:
    """What every interval of the report is (said once), or that there are none."""
    rob = robustness_of(results)
    if rob is None:
        return t("本次运行关闭了 bootstrap（evaluation.bootstrap: 0）：报告中没有置信区间，也没有稳健性判定。",
                 "The bootstrap was off for this run (evaluation.bootstrap: 0): the report has no intervals "
                 "and no robustness verdict.")
    level = f"{100 * rob['level']:g}%"
    b = format_count(rob["resamples"]) if rob.get("resamples") else "B"
    return t(f"本报告中的 CI 均为 {level} 配对百分位 bootstrap 区间：对测试光谱有放回重采样 {b} 次，训练好的模型保持不变；"
             f"它不包含训练噪声抽样带来的变化。判定只看 ΔR² 的点估计（卡片规则），区间只说明判定是否稳健。",
             f"Every CI in this report is a {level} paired percentile bootstrap interval over the test spectra "
             f"({b} resamples), with the trained models held fixed; it does not include the variation from "
             f"the training-noise draw. The decision follows the card's rule on the point estimate of ΔR²; "
             f"the interval only says how robust it is.")


def _models(results: Mapping[str, Any]) -> tuple[Mapping, Mapping, float, float]:
    m = results["models"]
    return m["global"], m["oracle"], as_float(results["delta_r2"]), as_float(results["threshold"])


def _thr(results: Mapping[str, Any]) -> str:
    return f"{as_float(results['threshold']):g}"


def _split(results: Mapping[str, Any]) -> str:
    """What the experts are split by: 'SNR', 'T_eff', 'T_eff × M_H'."""
    return " × ".join(column_label(c) for c in partition_columns(results))


def _noun(results: Mapping[str, Any], t: Text) -> str:
    """One expert's domain: 'SNR bin', 'T_eff bin', 'T_eff × M_H cell' (zh: '… 格子' for a grid)."""
    noun = partition_noun(results)
    return t(noun[:-len(" cell")] + " 格子", noun) if noun.endswith(" cell") else noun


# ----------------------------------------------------------------------------- sections
def _header(results: Mapping[str, Any]) -> list[str]:
    mvp = results.get("mvp") or DEFAULT_MVP
    card_date = results.get("card_date")
    return [TITLE, "",
            f"**Experiment ID:** `{results.get('experiment', 'LOGG-SNR-ORACLE-01')}`  ",
            f"**Date:** {results.get('date', 'n/a')}" + (f" (card date {card_date})" if card_date else "") + "  ",
            f"**Status:** {_status(results)} (ΔR² {format_delta(results['delta_r2'])}, threshold {_thr(results)})  ",
            f"**Robustness:** {_robust_text(results, _text('en'))}  ",
            f"**MVP:** {mvp}", "", "---", ""]


def _upstream(results: Mapping[str, Any], t: Text) -> list[str]:
    rows = [["Hub", f"`{HUB_PATH}`"],
            ["Roadmap", f"`{ROADMAP_PATH}` MVP-1.0"],
            [t("验证假设", "Hypothesis"), t("Q1: SNR 分域是否有 headroom？", "Q1: does splitting by SNR leave headroom?")],
            [t("参考实现", "Reference implementation"),
             t("`SCALING-20251223-oracle-moe-noise1-01`（Teff/[M/H] 分箱）",
               "`SCALING-20251223-oracle-moe-noise1-01` (Teff/[M/H] binning)")],
            [t("SNR 阈值来源", "Source of the SNR edges"), "`SCALING-20251224-fisher-multi-mag`"]]
    return [t("## 🔗 上游追溯", "## 🔗 Upstream"), "", *_table(["Type", "Link"], rows), "", "---", ""]


def _summary_sentence(results: Mapping[str, Any], t: Text) -> str:
    g, o, delta, _ = _models(results)
    thr, verdict, step = _thr(results), _verdict(results, t), _next_step(results, t)
    verb = t("提升到", "raises") if delta >= 0 else t("降低到", "lowers")
    split = _split(results)
    base = t(f"Oracle {split} 路由的 MoE 将测试 R² 从 {format_r2(g['r2'])} {verb} {format_r2(o['r2'])}"
             f"（ΔR² = {format_delta(delta)}）",
             f"Oracle {split} routing {verb} test R² from {format_r2(g['r2'])} to {format_r2(o['r2'])} "
             f"(ΔR² = {format_delta(delta)})")
    if decision(results) == "PASS":
        tail = t(f"，≥ 阈值 {thr} → {verdict}：{split} 分域存在 headroom；下一步：{step}。",
                 f", ≥ the {thr} threshold → {verdict}: splitting by {split} leaves headroom; next: {step}.")
    else:
        tail = t(f"，< 阈值 {thr} → {verdict}：即使完美路由，{split} 分域的 headroom 也不足；下一步：{step}。",
                 f", < the {thr} threshold → {verdict}: even perfect routing leaves too little headroom; "
                 f"next: {step}.")
    return base + tail + t(f"稳健性：{_robust_text(results, t)}。", f" Robustness: {_robust_text(results, t)}.")


def _at_a_glance(results: Mapping[str, Any], t: Text) -> list[str]:
    g, o, delta, _ = _models(results)
    thr = _thr(results)
    actual = _with_ci(format_delta(delta), results.get("delta_r2_ci"))
    hyp = _table([t("假设", "Hypothesis"), t("预期", "Expected"), t("实际", "Actual"), t("验证", "Verdict")],
                 [[f"H1: ΔR² ≥ {thr}", f"≥ {thr}", actual, _verdict_mark(results)]])
    rows = [["Global Ridge R²", _with_ci(format_r2(g["r2"]), g.get("r2_ci"), signed=False)],
            ["Oracle MoE R²", _with_ci(format_r2(o["r2"]), o.get("r2_ci"), signed=False)],
            ["ΔR²", actual],
            ["Coverage", _coverage_text(results, t)]]
    deployed = results["models"].get("deployed")
    if isinstance(deployed, Mapping):
        rows.append(["Deployed MoE R²", _with_ci(format_r2(deployed.get("r2")), deployed.get("r2_ci"), signed=False)])
        rows.append(["ρ = (R²_deployed − R²_global) / (R²_oracle − R²_global)", _rho_verdict(results, t)])
    noisy = results["models"].get("noisy_snr_routed")
    if isinstance(noisy, Mapping):
        rows.append([t("Noisy-SNR 硬路由 R²", "Noisy-SNR routed R²"), format_r2(noisy.get("r2"))])
    rows.append([t("判定（卡片规则）", "Decision (the card's rule)"), f"{_verdict(results, t)} → {_next_step(results, t)}"])
    rows.append([t("稳健性", "Robustness"), _robust_text(results, t)])
    return [t("## ⚡ 核心结论速览", "## ⚡ Key results at a glance"), "",
            f"> **{t('一句话总结', 'One-sentence summary')}**: {_summary_sentence(results, t)}", "",
            *hyp, "", *_table([t("关键数字", "Key number"), t("值", "Value")], rows), "",
            f"> {_ci_definition(results, t)}", "", "---", ""]


def _goal(results: Mapping[str, Any], t: Text) -> list[str]:
    thr = _thr(results)
    lines = t(
        f"验证 **\"按 SNR 分专家\"** 在 oracle routing 下能带来多少 headroom：\n\n"
        f"- 核心问题：SNR-based MoE 是否值得做？\n"
        f"- 验收标准：**Oracle ΔR² ≥ {thr}**（相对 Global 单模型 Ridge）\n"
        f"- 若 ΔR² < {thr} → MoE 不值得，转向 whitening/conditional (Gate-4)\n"
        f"- Oracle 路由使用每条测试光谱的真实 SNR，因此 ΔR² 是 SNR 分专家能达到的上限（headroom），"
        f"而不是可部署模型的性能",
        f"Measure how much headroom **one expert per SNR bin** gives under oracle routing:\n\n"
        f"- Core question: is an SNR-based MoE worth building?\n"
        f"- Acceptance: **Oracle ΔR² ≥ {thr}** relative to one global Ridge\n"
        f"- If ΔR² < {thr}: the MoE is not worth it; move to whitening/conditional models (Gate-4)\n"
        f"- Oracle routing uses each test spectrum's true SNR, so ΔR² is an upper bound (headroom) "
        f"for SNR experts, not the performance of a deployable model")
    if not is_snr_partition(results):
        split = _split(results)
        lines += t(f"\n\n> **本次运行的分专家方式**：experts 按 `{split}`（参数表列）划分，而不是按 SNR；"
                   f"oracle 路由使用每条测试光谱真实的 {split} 值，ΔR² 因此是按 {split} 分专家的 headroom。",
                   f"\n\n> **Experts in this run**: split by `{split}` (params-table column) instead of SNR; "
                   f"oracle routing uses each test spectrum's true {split}, so ΔR² is the headroom of "
                   f"{split} experts.")
    return [t("## 🎯 目标", "## 🎯 Goal"), "", lines, "", "---", ""]


def _snr_method(method: Any, t: Text) -> str:
    if method == "norm":
        return t("SNR = ‖flux‖ / ‖error × noise_level‖（像素 L2 范数，用无噪声 flux，即 oracle SNR）",
                 "SNR = ‖flux‖ / ‖error × noise_level‖ (L2 norms over pixels, noise-free flux: oracle SNR)")
    if method == "median":
        return t("SNR = median(flux / error)（用无噪声 flux，即 oracle SNR）",
                 "SNR = median(flux / error) (noise-free flux: oracle SNR)")
    return t(f"方法 `{method}`", f"method `{method}`")


def _files(files: Any, limit: int = 6) -> str:
    files = [str(f) for f in (files or [])]
    shown = ", ".join(f"`{f}`" for f in files[:limit])
    return shown + (f", … (+{len(files) - limit})" if len(files) > limit else "")


def _per_bin(results: Mapping[str, Any]) -> bool:
    """``evaluation.per_bin`` of the run (true unless the config says false): the per-bin tables."""
    return _lookup(results, "config.evaluation.per_bin") is not False


def _metric_names(results: Mapping[str, Any]) -> list[str]:
    """The chosen metrics with their units: 'R²', 'MAE (dex)', 'RMSE (dex)'."""
    return [METRIC_LABELS[k] + ("" if k == "r2" else " (dex)") for k in shown_metrics(results)]


def _code(value: Any) -> str:
    """A value quoted as code (file contents, config text): it is data, not a sentence of the report."""
    return f"`{str(value).replace('`', chr(39))}`"


def _file_sources(results: Mapping[str, Any]) -> list[str | None] | None:
    """The ``source`` attribute of every input file (None where a file has none); None when the
    results do not record it."""
    files = _lookup(results, "provenance.files")
    if not isinstance(files, list) or not all(isinstance(f, Mapping) and "source" in f for f in files):
        return None
    return [f["source"] for f in files]


def _source_rows(results: Mapping[str, Any], t: Text) -> list[list[str]]:
    """What the files say about where their spectra come from, what the config says, and a warning
    when the two disagree."""
    configured = _lookup(results, "config.data.source")
    sources = _file_sources(results)
    rows = []
    if sources is not None:
        named = sorted({s for s in sources if s is not None})
        unnamed = sum(s is None for s in sources)
        parts = [t(f"{_code(s)}（{sum(x == s for x in sources)} 个文件）", f"{_code(s)} ({sum(x == s for x in sources)} "
                   f"files)") for s in named]
        if unnamed:
            parts.append(t(f"{unnamed} 个文件未带 source 属性（真实数据文件不带）",
                           f"{unnamed} files carry no source attribute (real data files do not)"))
        rows.append([t("数据源（文件所写）", "Source (as the files say)"), t("；", "; ").join(parts)])
        if named and configured is not None and any(s != configured for s in named):
            rows.append([t("⚠️ 来源不一致", "⚠️ Source mismatch"),
                         t(f"配置的 data.source 是 {_code(configured)}，与文件所写不同；本报告的数字来自上面这些文件",
                           f"the config's data.source is {_code(configured)}, which is not what the files say; "
                           f"the numbers of this report come from the files above")])
    if configured is not None:
        rows.append([t("数据源（配置 data.source）", "Source (config data.source)"), _code(configured)])
    return rows


def _design(results: Mapping[str, Any], t: Text) -> list[str]:
    data, snr, config = results.get("data", {}), results.get("snr", {}), results.get("config", {}) or {}
    g, _, _, _ = _models(results)
    bins = bin_facts(results)
    n_train = data.get("n_train", g["n_train"])
    n_test = data.get("n_test", g["n_test"])
    files = data.get("train_files") or []
    target = _lookup(config, "data.target") or "log_g"
    data_rows = [*_source_rows(results, t),
        [t("训练集", "Train"), t(f"{format_count(n_train)} 条光谱，{len(files)} 个 shard：{_files(files)}",
                                f"{format_count(n_train)} spectra in {len(files)} shards: {_files(files)}")],
        [t("测试集", "Test"), t(f"{format_count(n_test)} 条光谱：`{data.get('test_file', 'n/a')}`",
                               f"{format_count(n_test)} spectra: `{data.get('test_file', 'n/a')}`")],
        [t("特征维度", "Features"), t(f"{format_count(data['pixels'])} 像素", f"{format_count(data['pixels'])} pixels")
         if "pixels" in data else "n/a"],
        [t("目标", "Target"), f"`{target}`"],
    ]

    minimum = min_train_count(results)
    bin_rows = []
    for b in bins:
        if b.skipped:
            why = f"n_train={b.n_train:,} < {minimum:,}" if minimum is not None else f"n_train={b.n_train:,}"
            expert = t(f"— 跳过（{why}），由 Global Ridge 服务", f"— skipped ({why}); served by Global Ridge")
        else:
            expert = t("✅ 已训练", "✅ trained")
        bin_rows.append([f"**{b.name}**", b.cell_range, _share(b.n_train, sum(x.n_train for x in bins)),
                         _share(b.n_test, sum(x.n_test for x in bins)), expert])
    snr_stats = t(
        f"训练集 SNR 中位数 {as_float(snr.get('train_median')):.2f}，最大值 {as_float(snr.get('train_max')):.2f}；"
        f"测试集中位数 {as_float(snr.get('test_median')):.2f}，最大值 {as_float(snr.get('test_max')):.2f}",
        f"train SNR median {as_float(snr.get('train_median')):.2f}, max {as_float(snr.get('train_max')):.2f}; "
        f"test median {as_float(snr.get('test_median')):.2f}, max {as_float(snr.get('test_max')):.2f}")

    alpha = g.get("alpha", _lookup(config, "model.alpha"))
    alphas = {b.name: b.alpha for b in bins if b.alpha is not None and not b.skipped}
    alpha_text = _number(alpha)
    if any(as_float(a) != as_float(alpha) for a in alphas.values()):
        alpha_text += t("（expert：", " (experts: ") + ", ".join(f"{k} {_number(a)}" for k, a in alphas.items()) + \
            t("）", ")")
    if isinstance(results.get("alpha"), Mapping):
        alpha_text += t("；在验证集上按模型选择，见“Alpha 选择”", "; chosen per model on the validation set, see "
                        "“Alpha selection”")
    n_experts = sum(not b.skipped for b in bins)
    snr_partition, split, noun = is_snr_partition(results), _split(results), _noun(results, t)
    if snr_partition:
        routing = t("Oracle：每条测试光谱按真实（无噪声）SNR 分到对应 bin 的 expert；跳过的 bin 回退到 Global Ridge",
                    "oracle: each test spectrum goes to the expert of its true (noise-free) SNR bin; "
                    "skipped bins fall back to Global Ridge")
    else:
        routing = t(f"Oracle：每条测试光谱按参数表中真实的 {split} 分到对应 {noun} 的 expert；跳过的 {noun} 回退到 Global Ridge",
                    f"oracle: each test spectrum goes to the expert of its true {noun} (params table); "
                    f"skipped {noun}s fall back to Global Ridge")
    if results.get("gate"):
        routing += t("；另评估可部署 gate（见下文）", "; a deployable gate is evaluated as well (see below)")
    scaler = _lookup(config, "preprocessing.scaler") or "StandardScaler"
    shared = _lookup(config, "preprocessing.per_expert_scaler") is False
    scaling = (t(f"{scaler}（用全部训练光谱拟合一个，Global 与所有 expert 共用）",
                 f"{scaler} (one, fitted on all training spectra, shared by the global model and every expert)")
               if shared else
               t(f"{scaler}（每个 expert 用本 bin 的训练光谱独立拟合；Global 用全部训练光谱）",
                 f"{scaler} (fitted per expert on its bin's training spectra; the global model on all)"))
    clip = _lookup(config, "preprocessing.clip_flux")
    clip_text = t("flux 截断负值（clip ≥ 0）", "flux clipped at 0") if clip in (None, True) else \
        t("flux 不截断", "flux not clipped")
    level = _lookup(config, "noise.level", "noise_level")
    noise_cfg = _lookup(config, "noise")
    seeds = ", ".join(f"{k}={v}" for k, v in noise_cfg.items() if "seed" in str(k)) \
        if isinstance(noise_cfg, Mapping) else ""
    seeds_text = t(f"（{seeds}）", f" ({seeds})") if seeds else ""
    ci_note = t("；ΔR² 与 R² 附 CI", "; ΔR² and R² with CI") if results.get("delta_r2_ci") else ""
    metrics = t("、", ", ").join(_metric_names(results))
    where = t("总体 + 每个 bin", "overall and per bin") if _per_bin(results) else t("仅总体", "overall only")
    model_rows = [
        [t("模型", "Model"), t(f"Ridge：1 个 Global + {n_experts} 个 expert（每个 {noun} 一个）",
                              f"Ridge: 1 global + {n_experts} SNR-bin experts" if snr_partition else
                              f"Ridge: 1 global + {n_experts} experts (one per {noun})")],
        ["alpha", alpha_text],
        [t("预处理", "Preprocessing"), t(f"{scaling}；{clip_text}", f"{scaling}; {clip_text}")],
        [t("噪声", "Noise"), t(f"异方差高斯噪声：flux + N(0,1) × error × {_level(level)}；训练集即时加噪，测试集固定 seed 加噪一次"
                             f"{seeds_text}",
                             f"heteroscedastic Gaussian: flux + N(0,1) × error × {_level(level)}; training noise drawn "
                             f"on the fly, test noise drawn once with a fixed seed{seeds_text}")],
        [t("路由", "Routing"), routing],
        [t("评估", "Evaluation"), t(f"{metrics}，{where}；对照组：Global Ridge{ci_note}",
                                  f"{metrics}, {where}; baseline: Global Ridge{ci_note}")],
    ]
    if snr_partition:
        heading, range_header, split_lines = t("### 2. SNR 分箱", "### 2. SNR bins"), t("SNR 范围", "SNR range"), []
    else:
        heading = t(f"### 2. 按 {split} 划分的 expert", f"### 2. Experts by {split}")
        range_header = t(f"{split} 范围", f"{split} range")
        columns = ", ".join(f"`{c}`" for c in partition_columns(results))
        split_lines = [t(f"- expert 按参数表列 {columns} 划分（{len(bins)} 个 {noun}）；SNR 仍按下述方法计算，仅用于描述数据",
                         f"- experts split by the params-table column(s) {columns} ({len(bins)} {noun}s); SNR is "
                         f"still computed as below, to describe the data")]
    return [t("## 🧪 实验设计", "## 🧪 Experiment design"), "",
            t("### 1. 数据", "### 1. Data"), "", *_table([t("项目", "Item"), t("值", "Value")], data_rows), "",
            *_repairs_note(results, t),
            heading, "", *split_lines,
            f"- {_snr_method(snr.get('method'), t)}", f"- {snr_stats}",
            t(f"- 每个 bin 最少训练样本：{minimum:,}（不足则不训练 expert）" if minimum is not None else
              "- 样本不足的 bin 不训练 expert",
              f"- minimum training spectra per expert: {minimum:,} (below it no expert is trained)"
              if minimum is not None else "- bins with too few training spectra get no expert"), "",
            *_table(["Bin", range_header, t("N_train（占比）", "N_train (share)"),
                     t("N_test（占比）", "N_test (share)"), "Expert"], bin_rows), "",
            t("### 3. 模型与评估", "### 3. Model and evaluation"), "",
            *_table([t("项目", "Item"), t("值", "Value")], model_rows), "", "---", ""]


def _repairs_note(results: Mapping[str, Any], t: Text) -> list[str]:
    """One sentence per set (training, test) whose repairs on read changed more than 0.1 % of its pixels."""
    from ..core.repair import notable_repairs

    data = results.get("data") or {}
    labels = {"flux_negative": t("flux < 0 → 0", "flux < 0 → 0"),
              "error_nan": t("error 为 NaN → 最近像素", "error NaN → nearest pixel"),
              "error_nonpositive": t("error ≤ 0 → 1e-6", "error ≤ 0 → 1e-6")}
    lines = []
    for key, rows, name in (("repairs", data.get("n_train"), t("训练集", "training")),
                            ("test_repairs", data.get("n_test"), t("测试集", "test"))):
        pixels = int(as_float(rows) * as_float(data.get("pixels"))) if rows and data.get("pixels") else 0
        counts = notable_repairs(results.get(key), pixels)
        if counts:
            total, kinds = sum(counts.values()), [(labels.get(k, k), n) for k, n in counts.items()]
            share = _pct(total / pixels)
            lines += [t(f"> ⚠️ 读取时的修复改动了{name} {pixels:,} 个像素中的 {total:,} 个（{share}）："
                        + "；".join(f"{label} {n:,} 个" for label, n in kinds) + "。",
                        f"> ⚠️ Repairs on read changed {total:,} of the {pixels:,} {name} pixels ({share}): "
                        + "; ".join(f"{label} {n:,}" for label, n in kinds) + "."), ""]
    return lines


def _is_card_bin(name: str, spec: Mapping[str, Any]) -> bool:
    """True for an SNR bin with the card's name and edges (open ends compare equal)."""
    if name not in CARD_BINS:
        return False
    same = [(a == b) or not (math.isfinite(a) or math.isfinite(b))
            for a, b in zip((as_float(spec.get("low")), as_float(spec.get("high"))), CARD_BINS[name])]
    return all(same)


def _card_check(results: Mapping[str, Any], t: Text) -> list[str]:
    """Per-bin training shares against the card's expected shares and per-bin R² against the card's
    Fisher ceilings R²_max, with the bins whose R² exceeds its ceiling flagged as suspicious."""
    if not is_snr_partition(results) or not _per_bin(results):
        return []
    heading = [t("## 🔍 与卡片预期的对照", "## 🔍 Checked against the card's expectations"), ""]
    bins = bin_facts(results)
    card_bins = [b for b in bins if _is_card_bin(b.name, results["bins"][b.name])]
    if not card_bins:
        return heading + [t("本次运行的 SNR bin 与卡片的 H/M/L/X 不同，无法对照卡片的预期占比和 Fisher 上限。",
                            "This run's SNR bins are not the card's H/M/L/X, so the card's expected shares and "
                            "Fisher ceilings do not apply."), "", "---", ""]
    rows = []
    for b in card_bins:
        ceiling, expected = R2_CEILING[b.name], EXPECTED_SHARE[b.name]
        best = max((v for v in (b.r2, b.r2_global) if math.isfinite(v)), default=math.nan)
        flags = []
        if math.isfinite(b.train_fraction) and b.train_fraction < expected:
            flags.append(t("占比低于卡片预期", "share below the card's expectation"))
        if math.isfinite(best) and best > ceiling:
            flags.append(t("⚠️ 可疑：R² 高于 Fisher 上限", "⚠️ suspicious: R² above the Fisher ceiling"))
        rows.append([f"**{b.name}**", b.cell_range, _pct(b.train_fraction), f"~{expected:.0%}+",
                     format_r2(b.r2), format_r2(b.r2_global), f"{ceiling:g}", t("；", "; ").join(flags) or "✅"])
    lines = heading + [
        t("卡片给出每个 bin 的预期训练样本占比和 Fisher 信息给出的 R² 上限 R²_max。R² 高于上限说明数据或评估可能有问题"
          "（例如泄漏），应当核查；占比偏离只说明数据的 SNR 分布与卡片设想不同。",
          "The card gives each bin's expected share of the training spectra and the ceiling R²_max that the "
          "Fisher information allows. An R² above its ceiling points to a problem in the data or the evaluation "
          "(a leak, say) and should be checked; a share off the expectation only says the SNR distribution "
          "differs from the card's."), "",
        *_table(["Bin", t("SNR 范围", "SNR range"), t("训练占比", "Training share"), t("卡片预期", "Card expects"),
                 "Oracle expert R²", "Global R²", "R²_max (Fisher)", t("检查", "Check")], rows), ""]
    if any(s is not None for s in _file_sources(results) or []):
        lines += [t("注意：输入文件由模拟器生成（见“数据源”），卡片的 Fisher 上限是对真实 BOSZ 数据估计的，模拟数据不必遵循。",
                    "Note: the input files are simulated (see “Source”); the card's Fisher ceilings were estimated "
                    "for the real BOSZ data, which the simulated set need not follow."), ""]
    return lines + ["---", ""]


def _figures(results: Mapping[str, Any], t: Text, img: str) -> list[str]:
    noun = _noun(results, t)
    thr = _thr(results)
    marks = t(f"★ 只标出 ΔR² 的 CI 下限 ≥ {thr} 的 bin：{thr} 是总体 ΔR² 的判定规则，bin 级标记只作描述，不参与判定。",
              f"★ marks only the bins whose ΔR² CI has its lower bound at or above {thr}: {thr} is the rule for the "
              f"overall ΔR², and the per-bin marks only describe the bins; they take no part in the decision.")
    items = [
        ("Figure 1: Oracle vs Global R² Comparison", "comparison", FIG_COMPARISON,
         t("Global 与 Oracle 的测试 R²（有 CI 时带误差棒），红色虚线为决策阈值 R²_global + 阈值；文字框给出 ΔR²、"
           "卡片规则的判定和稳健性。",
           "Test R² of Global and Oracle (CI error bars when available); the dashed red line is the decision "
           "threshold R²_global + threshold; the box gives ΔR², the decision by the card's rule and its robustness.")),
        ("Figure 2: Per-bin R²", "perbin", FIG_PERBIN,
         t(f"每个 {noun} 的 Global 与 Oracle expert R²（误差棒为 CI），横轴标签给出每个 bin 的范围与训练/测试样本数，"
           f"柱上标注 ΔR² 及其 CI。" + marks,
           f"Global vs Oracle expert R² per {noun} (error bars: CI); tick labels give each bin's range and "
           f"train/test counts, the boxes ΔR² and its CI. " + marks)),
        ("Figure 3: Prediction vs True", "pred_vs_true", FIG_PRED_VS_TRUE,
         t(f"测试集真实 vs 预测 log g，按 {noun} 着色，左 Global、右 Oracle；每个面板给出 ΔR² 与样本数（总体及每个 bin）。",
           f"True vs predicted log g on the test set, coloured by {noun}; Global left, Oracle right; each panel "
           f"gives ΔR² and the counts, overall and per bin.")),
        ("Figure 4: ΔR² Heatmap", "delta_heatmap", FIG_DELTA_HEATMAP,
         t("每个 bin（及总体）的 Global R²、Oracle R² 与 ΔR²（格内附 CI），行标签给出 n_train 与 n_test。" + marks,
           "Global R², Oracle R² and ΔR² (with its CI in the cell) per bin and overall; row labels give n_train "
           "and n_test. " + marks)),
    ]
    lines = [t("## 📊 实验图表", "## 📊 Figures"), ""]
    for title, alt, name, caption in items:
        lines += [f"### {title}", f"![{alt}]({img}/{name})", "", caption, ""]
    return lines + ["---", ""]


def _rho(results: Mapping[str, Any]) -> float:
    """ρ = (R²_deployed − R²_global) / (R²_oracle − R²_global): results["gate"]["rho"] (None there:
    not defined), else from the models' R² under the same rule (``core.gate.rho_score``); NaN when
    not defined."""
    from ..core.gate import rho_score

    gate = results.get("gate")
    if isinstance(gate, Mapping) and "rho" in gate:
        return as_float(gate["rho"])
    models = results["models"]
    deployed = models.get("deployed")
    if not isinstance(deployed, Mapping):
        return math.nan
    rho = rho_score(deployed.get("r2"), models["global"]["r2"], models["oracle"]["r2"], results.get("delta_r2_ci"))
    return as_float(rho)


def _rho_verdict(results: Mapping[str, Any], t: Text) -> str:
    """'1.05 ≥ 0.7 ✅' / '0.41 < 0.7 ❌' / 'not defined (no oracle headroom)' and why."""
    rho = _rho(results)
    if not math.isfinite(rho):
        lo, hi = ci_bounds(results.get("delta_r2_ci"))
        why = (t(f"ΔR² 的 CI {format_ci([lo, hi])} 没有整体大于 0", f"the ΔR² CI {format_ci([lo, hi])} does not lie "
                 f"above 0") if math.isfinite(lo) else
               t(f"ΔR² = {format_delta(results['delta_r2'])} 不大于 0", f"ΔR² = {format_delta(results['delta_r2'])} "
                 f"is not above 0"))
        return t(f"未定义（oracle 没有 headroom：{why}）", f"not defined (no oracle headroom: {why})")
    if rho >= RHO_BAR:
        return t(f"{rho:.2f} ≥ 门槛 {RHO_BAR:g} ✅", f"{rho:.2f} ≥ the {RHO_BAR:g} bar ✅")
    return t(f"{rho:.2f} < 门槛 {RHO_BAR:g} ❌", f"{rho:.2f} < the {RHO_BAR:g} bar ❌")


def _gate_sentence(results: Mapping[str, Any], t: Text) -> str:
    """One sentence on the deployable gate for the conclusion; '' without a gate."""
    gate, deployed = results.get("gate"), results["models"].get("deployed")
    if not isinstance(gate, Mapping) or not isinstance(deployed, Mapping):
        return ""
    r2 = _with_ci(format_r2(deployed.get("r2")), deployed.get("r2_ci"), signed=False)
    return t(f"可部署 gate（只用 error 统计量）的测试 R² 为 {r2}，ρ = {_rho_verdict(results, t)}。",
             f"The deployable gate (error statistics only) reaches test R² {r2}, ρ = {_rho_verdict(results, t)}.")


def _gate(results: Mapping[str, Any], t: Text, img: str) -> list[str]:
    """The deployable gate (MVP-2.0): accuracy, fallback, ρ against the owner's bar, deployed R², the
    noisy-SNR hard-routing baseline, per-bin R², the confusion matrix and its figure."""
    gate = results.get("gate")
    if not isinstance(gate, Mapping):
        return []
    models = results["models"]
    g, o = models["global"], models["oracle"]
    deployed = models.get("deployed") if isinstance(models.get("deployed"), Mapping) else {}
    noisy = models.get("noisy_snr_routed") if isinstance(models.get("noisy_snr_routed"), Mapping) else None
    fallback = as_float(gate.get("fallback"))
    fallback_text = f"{fallback:g}" if math.isfinite(fallback) else "n/a"
    names = [str(n) for n in gate.get("names") or results["bins"]]
    delta_dep = as_float(deployed.get("r2")) - as_float(g["r2"])
    rows = [
        [t("Gate 准确率（测试集，argmax 对真实 bin）", "Gate accuracy (test set, argmax vs true bin)"),
         _pct(as_float(gate.get("accuracy")))],
        [t(f"回退率（max p < {fallback_text} → Global Ridge）", f"Fallback rate (max p < {fallback_text} → Global Ridge)"),
         _pct(as_float(gate.get("fallback_rate")))],
        ["ρ = (R²_deployed − R²_global) / (R²_oracle − R²_global)", _rho_verdict(results, t)],
        ["Deployed MoE R²", _with_ci(format_r2(deployed.get("r2")), deployed.get("r2_ci"), signed=False)],
        ["ΔR² (Deployed − Global)", _with_ci(format_delta(delta_dep), gate.get("delta_r2_ci"))],
        ["Oracle MoE R²", _with_ci(format_r2(o["r2"]), o.get("r2_ci"), signed=False)],
        ["Global Ridge R²", _with_ci(format_r2(g["r2"]), g.get("r2_ci"), signed=False)],
    ]
    if noisy is not None:
        acc = as_float(gate.get("noisy_snr_accuracy"))
        rows.append([t("Noisy-SNR 硬路由 R²（基线）", "Noisy-SNR hard routing R² (baseline)"),
                     format_r2(noisy.get("r2")) + t(f"（路由准确率 {_pct(acc)}）", f" (routing accuracy {_pct(acc)})")])
    bin_rows = []
    for b in bin_facts(results):
        dep = results["bins"][b.name].get("deployed") or {}
        bin_rows.append([f"**{b.name}**", b.cell_range, format_count(b.n_test),
                         format_r2(b.r2_global), format_r2(b.r2), format_r2(dep.get("r2"))])
    lines = [t("## 🚦 可部署 Gate（MVP-2.0）", "## 🚦 Deployable gate (MVP-2.0)"), "",
             t(f"Oracle 路由用的是真实 SNR，部署时不可得。可部署 gate 只用 error 向量的 10 个统计量，以多项 logistic 回归预测 "
               f"SNR bin，预测值 = Σ_k p_k · expert_k（soft routing），当 max_k p_k < {fallback_text} 时回退到 Global Ridge。"
               f"另一个可部署基线按加噪 flux 上测得的 SNR 硬路由。",
               f"Oracle routing uses the true SNR, which a deployed model does not have. The deployable gate "
               f"predicts the SNR bin from 10 statistics of the error vector alone (multinomial logistic "
               f"regression); the prediction is Σ_k p_k · expert_k (soft routing), falling back to Global Ridge "
               f"where max_k p_k < {fallback_text}. A second deployable baseline routes hard by the SNR measured "
               f"on the noisy flux."), "",
             *_table([t("关键数字", "Key number"), t("值", "Value")], rows), "",
             t(f"负责人设定的门槛：ρ ≥ {RHO_BAR:g}，即可部署 gate 至少保留 oracle headroom 的 {RHO_BAR:.0%}。",
               f"The owner's bar: ρ ≥ {RHO_BAR:g}, i.e. the deployable gate keeps at least {RHO_BAR:.0%} of the "
               f"oracle's headroom."), ""]
    if _per_bin(results):
        lines += [t("### 每个 bin 的测试 R²", "### Test R² per bin"), "",
                  *_table(["Bin", t("范围", "Range"), "N_test", "Global", "Oracle expert", "Deployed"], bin_rows), ""]
    confusion = gate.get("confusion")
    if isinstance(confusion, (list, tuple)) and len(confusion) == len(names):
        conf_rows = [[f"**{name}**", *[format_count(v) for v in row]] for name, row in zip(names, confusion)]
        lines += [t("### 混淆矩阵（行：真实 bin，列：gate 预测的 bin）", "### Confusion matrix (rows: true bin, "
                    "columns: the gate's bin)"), "",
                  *_table([t("真实 ↓ / 预测 →", "true ↓ / predicted →"), *names], conf_rows), ""]
    lines += [t("### Figure 5: Gate 混淆矩阵", "### Figure 5: Gate confusion matrix"),
              f"![gate_confusion]({img}/{FIG_GATE_CONFUSION})", "",
              t("gate 的混淆矩阵：行为真实 SNR bin，列为 gate 预测的 bin；颜色为每行占比，格内为计数与占比，对角线加框。",
                "The gate's confusion matrix: rows are the true SNR bin, columns the gate's bin; colours are "
                "row shares, cells give the count and share, the diagonal is framed."), "", "---", ""]
    return lines


def _alpha(results: Mapping[str, Any], t: Text, img: str) -> list[str]:
    """Alpha chosen on the validation set: per model, the chosen alpha, its validation R² and the gain
    over the fixed alpha, and the figure of the curves."""
    choice = results.get("alpha")
    if not isinstance(choice, Mapping):
        return []
    fixed = choice.get("fixed_alpha")
    spec = _lookup(results, "config.model.alpha")
    spec_text = "auto" if isinstance(spec, str) else (
        ", ".join(_number(a) for a in spec) if isinstance(spec, (list, tuple)) else _number(spec))
    val_file = _lookup(results, "data.val_file") or _lookup(results, "config.data.val_file") or "n/a"
    models = [("Global Ridge", choice.get("global"))]
    models += [(f"Expert {name}", m) for name, m in (choice.get("experts") or {}).items()]
    rows = []
    for label, m in models:
        if not isinstance(m, Mapping):
            continue
        rows.append([label, _number(m.get("alpha")), format_r2(m.get("val_r2")), format_r2(m.get("val_r2_fixed")),
                     format_delta(m.get("gain_over_fixed")), _count(m.get("n_train")), _count(m.get("n_val")),
                     t("；", "; ").join(_alpha_flags(m, t)) or "—"])
    fixed_text = _number(fixed) if fixed is not None else "n/a"
    lines = [t("## 🎚️ Alpha 选择", "## 🎚️ Alpha selection"), "",
             t(f"`model.alpha: {spec_text}`：每个模型（Global 与每个 expert）在验证集 `{val_file}` 上按 R² 选择 alpha，"
               f"只用统计量求解，不再读取训练数据。固定 alpha = {fixed_text} 总在候选中，因此验证集上的增益 ≥ 0。",
               f"`model.alpha: {spec_text}`: every model (global and each expert) picks its alpha by R² on the "
               f"validation set `{val_file}`, solved from the statistics alone (no second pass over the training "
               f"data). The fixed alpha = {fixed_text} is always a candidate, so the validation gain is ≥ 0."), "",
             *_table([t("模型", "Model"), t("选中 α", "Chosen α"), t("验证 R²（选中 α）", "Val R² (chosen α)"),
                      t(f"验证 R²（α = {fixed_text}）", f"Val R² (α = {fixed_text})"), t("增益", "Gain"),
                      "N_train", "N_val", t("备注", "Note")], rows), ""]
    if alpha_curves(choice)[0]:
        lines += [t("### Figure 6: 验证集 R² 随 α 变化", "### Figure 6: Validation R² vs α"),
                  f"![alpha_curve]({img}/{FIG_ALPHA_CURVE})", "",
                  t("每个模型的验证 R² 随 Ridge α 变化（对数横轴），★ 为选中的 α，虚线为固定 α。",
                    "Validation R² against the Ridge α per model (log axis); ★ marks the chosen α, the dashed "
                    "line the fixed α."), ""]
    return lines + ["---", ""]


def _alpha_flags(model: Mapping[str, Any], t: Text) -> list[str]:
    """Why one model's chosen alpha deserves a second look: taken from the global model, at the edge
    of the candidate grid (the best may lie beyond it), or chosen on < FEW_VALIDATION spectra."""
    n_val = as_float(model.get("n_val"))
    if model.get("source") == "global":
        return [t(f"验证光谱只有 {_count(n_val)} 条：沿用 Global 的 alpha",
                  f"only {_count(n_val)} validation spectra: uses the global model's alpha")]
    flags = []
    grid = [as_float(a) for a in (model.get("curve") or {}).get("alpha") or []]
    alpha = as_float(model.get("alpha"))
    if len(grid) > 1 and alpha in (min(grid), max(grid)):
        flags.append(t("⚠️ 选在候选网格的边缘：最优值可能在网格之外",
                       "⚠️ at the edge of the candidate grid: the best alpha may lie beyond it"))
    if math.isfinite(n_val) and n_val < FEW_VALIDATION:
        flags.append(t(f"⚠️ 只用 {_count(n_val)} 条验证光谱选出", f"⚠️ chosen on only {_count(n_val)} validation spectra"))
    return flags


def _count(value: Any) -> str:
    return format_count(value) if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _bin_of(value: float, bins: list[BinFacts], results: Mapping[str, Any]) -> str | None:
    for b in bins:
        spec = results["bins"][b.name]
        lo, hi = as_float(spec.get("low")), as_float(spec.get("high"))
        if (not math.isfinite(lo) or value >= lo) and (not math.isfinite(hi) or value < hi):
            return b.name
    return None


def _insights(results: Mapping[str, Any], t: Text) -> list[str]:
    bins = bin_facts(results)
    thr = as_float(results["threshold"])
    trained = [b for b in bins if not b.skipped and math.isfinite(b.delta)]
    per_bin = _per_bin(results)
    out: list[str] = []

    if trained and per_bin:
        best, worst = max(trained, key=lambda b: b.delta), min(trained, key=lambda b: b.delta)
        s = t(f"**增益最大的 bin 是 {best.label}**：ΔR² = {format_delta(best.delta)}"
              f"（expert {format_r2(best.r2)} vs global {format_r2(best.r2_global)}）",
              f"**The largest gain is in bin {best.label}**: ΔR² = {format_delta(best.delta)} "
              f"(expert {format_r2(best.r2)} vs global {format_r2(best.r2_global)})")
        if worst is not best:
            s += t(f"；增益最小的是 {worst.label}：ΔR² = {format_delta(worst.delta)}。",
                   f"; the smallest is in {worst.label}: ΔR² = {format_delta(worst.delta)}.")
        else:
            s += t("。", ".")
        out.append(s)

        worse = [b for b in trained if b.delta < 0]
        if worse:
            names = ", ".join(f"{b.label} ({format_delta(b.delta)})" for b in worse)
            out.append(t(f"**expert 比 Global 更差的 bin**：{names}。在这些 bin 上单独训练的 expert 没有带来收益，"
                         f"可部署方案可考虑在此回退到 Global 模型或与相邻 bin 合并。",
                         f"**Bins where the expert is worse than Global**: {names}. A dedicated expert does not "
                         f"help there; a deployable scheme may fall back to the global model or merge with a "
                         f"neighbour."))
        else:
            out.append(t("所有训练了 expert 的 bin 上，expert 都不差于 Global 模型。",
                         "In every bin with an expert, the expert is at least as good as the global model."))

    snr = results.get("snr", {})
    shares = " · ".join(f"{b.name} {_pct(b.train_fraction)}" for b in bins)
    median = as_float(snr.get("train_median"))
    home = _bin_of(median, bins, results) if math.isfinite(median) and is_snr_partition(results) else None
    where = t(f"（落在 bin {home}）", f" (in bin {home})") if home else ""
    out.append(t(f"**训练集 SNR 分布**：中位数 {median:.2f}{where}，最大值 {as_float(snr.get('train_max')):.2f}；"
                 f"训练样本占比 {shares}。",
                 f"**Training SNR distribution**: median {median:.2f}{where}, max "
                 f"{as_float(snr.get('train_max')):.2f}; training shares {shares}."))

    if per_bin:
        r2_trend = " → ".join(f"{b.name} {format_r2(b.r2)}" for b in bins)
        g_trend = " → ".join(f"{b.name} {format_r2(b.r2_global)}" for b in bins)
        noun = _noun(results, t)
        out.append(t(f"**R² 随 {noun} 变化**：Oracle {r2_trend}；Global {g_trend}。",
                     f"**R² across {noun}s**: Oracle {r2_trend}; Global {g_trend}."))

    skipped = [b for b in bins if b.skipped]
    minimum = min_train_count(results)
    if skipped:
        names = ", ".join(t(f"{b.label}（n_train={b.n_train:,}，n_test={b.n_test:,}）",
                            f"{b.label} (n_train={b.n_train:,}, n_test={b.n_test:,})") for b in skipped)
        limit = t(f"少于 {minimum:,} 条训练光谱", f"fewer than {minimum:,} training spectra") \
            if minimum is not None else t("训练光谱过少", "too few training spectra")
        out.append(t(f"**跳过的 bin**：{names}{limit}，没有训练 expert，其测试光谱由 Global Ridge 预测"
                     f"（该 bin ΔR² 恒为 0）；Coverage = {_pct(coverage(results))}。",
                     f"**Skipped bins**: {names} had {limit}; no expert was trained and their test spectra are "
                     f"served by Global Ridge (ΔR² = 0 there); coverage = {_pct(coverage(results))}."))
    else:
        out.append(t("所有 bin 都训练了 expert（Coverage = 100%）。",
                     "Every bin has an expert (coverage = 100%)."))

    with_ci = [b for b in trained if format_ci(b.delta_ci)]
    if with_ci and per_bin:
        starred = [b.name for b in with_ci if bin_marked(results["bins"][b.name], thr)]
        above_zero = [b.name for b in with_ci if as_float(b.delta_ci[0]) > 0]
        none = t("无", "none")
        out.append(t("**bin 级 ΔR² 的 CI**：" + "；".join(f"{b.name} {format_ci(b.delta_ci)}" for b in with_ci)
                     + f"。CI 完全大于 0 的 bin：{', '.join(above_zero) or none}；CI 下限 ≥ {thr:g} 的 bin（★）："
                     f"{', '.join(starred) or none}。{thr:g} 是总体 ΔR² 的判定规则，bin 级标记只作描述。",
                     "**Per-bin ΔR² CIs**: " + "; ".join(f"{b.name} {format_ci(b.delta_ci)}" for b in with_ci)
                     + f". Bins whose CI lies above 0: {', '.join(above_zero) or none}; bins whose CI has its lower "
                     f"bound at or above {thr:g} (★): {', '.join(starred) or none}. {thr:g} is the rule for the "
                     f"overall ΔR²; the per-bin marks only describe the bins."))
    small = [b for b in bins if 0 < b.n_test < 100 and not b.skipped]
    if small and per_bin:
        names = ", ".join(f"{b.name} (n_test={b.n_test:,})" for b in small)
        out.append(t(f"**小样本提醒**：{names} 的测试光谱少于 100 条，其 bin 级 R² 的不确定性大。",
                     f"**Small samples**: {names} have fewer than 100 test spectra, so their per-bin R² is "
                     f"uncertain."))
    return [t("## 💡 关键洞见", "## 💡 Key insights"), "", *[f"{i}. {s}" for i, s in enumerate(out, 1)], "", "---", ""]


def _conclusion(results: Mapping[str, Any], t: Text) -> list[str]:
    g, o, delta, _ = _models(results)
    thr, verdict = _thr(results), decision(results)
    n_train, n_test = format_count(o["n_train"]), format_count(o["n_test"])
    cmp_ = "≥" if verdict == "PASS" else "<"
    split = _split(results)
    finding = t(
        f"在 {n_train} 条训练光谱、{n_test} 条测试光谱上，oracle {split} 路由的 MoE 测试 R² 为 {format_r2(o['r2'])}，"
        f"Global Ridge 为 {format_r2(g['r2'])}：ΔR² = {format_delta(delta)} {cmp_} 阈值 {thr}，"
        f"Gate-2 判定为 **{_verdict(results, t)}**。",
        f"On {n_train} training and {n_test} test spectra, the MoE with oracle {split} routing reaches test R² "
        f"{format_r2(o['r2'])} against {format_r2(g['r2'])} for Global Ridge: ΔR² = {format_delta(delta)} {cmp_} "
        f"the {thr} threshold, so Gate-2 is **{_verdict(results, t)}**.")
    if is_snr_partition(results):
        implication = {
            "PASS": t("SNR 分域存在可用的 headroom：值得构建可部署的 gate（MVP-2.0：只用 error 向量的统计量预测 SNR bin，"
                      "soft routing），并以 ρ = (R²_deployed − R²_global) / (R²_oracle − R²_global) 衡量能兑现多少 headroom。",
                      "Splitting by SNR leaves usable headroom: build a deployable gate (MVP-2.0: predict the SNR "
                      "bin from error-vector statistics only, soft routing) and measure how much headroom it keeps "
                      "with ρ = (R²_deployed − R²_global) / (R²_oracle − R²_global)."),
            "FAIL": t("即使完美（oracle）路由，SNR 分专家的增益也低于阈值：SNR-based MoE 不值得继续，转向 Gate-4 "
                      "（whitening / conditional 模型），让单个模型直接利用噪声信息。",
                      "Even perfect (oracle) routing gains less than the threshold: an SNR-based MoE is not worth "
                      "pursuing; move to Gate-4 (whitening / conditional models) so one model uses the noise "
                      "information directly."),
        }[verdict]
    else:
        implication = {
            "PASS": t(f"{split} 分域存在可用的 headroom：可部署方案需要从光谱本身估计 {split} 以选择 expert，"
                      f"其效果应以 ρ = (R²_deployed − R²_global) / (R²_oracle − R²_global) 衡量。",
                      f"Splitting by {split} leaves usable headroom: a deployable scheme has to estimate {split} "
                      f"from the spectrum to pick the expert, and should be measured by "
                      f"ρ = (R²_deployed − R²_global) / (R²_oracle − R²_global)."),
            "FAIL": t(f"即使完美（oracle）路由，按 {split} 分专家的增益也低于阈值：这种划分不值得继续。",
                      f"Even perfect (oracle) routing by {split} gains less than the threshold: this split is not "
                      f"worth pursuing."),
        }[verdict]
    gate_note = _gate_sentence(results, t)
    if gate_note:
        implication += " " + gate_note
    rob = robustness_of(results)
    robust = (t("无区间", "no interval") if rob is None else
              t("稳健", "robust") if rob["verdict"] == "robust" else t("不稳健", "not robust"))
    gate_rows = [[f"ΔR² ≥ {thr}", t("✅ 通过", "✅ pass"), t(NEXT_STEP_ZH["PASS"], NEXT_STEP["PASS"])],
                 [f"ΔR² < {thr}", t("❌ 不通过", "❌ fail"), t(NEXT_STEP_ZH["FAIL"], NEXT_STEP["FAIL"])]]
    marker = 0 if verdict == "PASS" else 1
    gate_rows[marker] = [f"**👉 {c}**" for c in gate_rows[marker]]
    quick = [["Global Ridge R²", format_r2(g["r2"])], ["Oracle MoE R²", format_r2(o["r2"])],
             ["ΔR²", _with_ci(format_delta(delta), results.get("delta_r2_ci"))], [t("阈值", "Threshold"), thr],
             [t("判定", "Decision"), _verdict(results, t)],
             [t("稳健性", "Robustness"), robust],
             ["Coverage", _pct(coverage(results))], ["N_train / N_test", f"{n_train} / {n_test}"]]
    if _per_bin(results):
        quick += [[f"ΔR² bin {b.name}", t("无 expert（= Global）", "no expert (= Global)") if b.skipped
                   else format_delta(b.delta)] for b in bin_facts(results)]
    total = _total_seconds(results)
    if total is not None:
        quick.append([t("总耗时", "Total time"), _seconds(total)])
    return [t("## 📝 结论", "## 📝 Conclusion"), "",
            t("### 核心发现", "### Core finding"), "", finding, "",
            t("### 设计启示（Decision Gate）", "### Design implication (Decision Gate)"), "", implication, "",
            *_table([t("结果", "Result"), t("判定", "Verdict"), t("下一步", "Next step")], gate_rows), "",
            t(f"判定只看 ΔR² 的点估计（卡片规则）。稳健性另行说明：{_robust_text(results, t)}。",
              f"The decision follows the card's rule on the point estimate of ΔR². Its robustness is stated "
              f"separately: {_robust_text(results, t)}."), "",
            t(f"**下一步**：{_next_step(results, t)}", f"**Next step**: {_next_step(results, t)}"), "",
            t("### 关键数字速查", "### Key numbers"), "",
            *_table([t("指标", "Metric"), t("值", "Value")], quick), "", "---", ""]


def _phases(t: Text) -> dict[str, str]:
    """What each phase of ``timings_s`` is (``experiment.driver.Timer``'s names)."""
    return {"open": t("打开并检查所有输入文件", "open and check every input file"),
            "pass": t("训练数据 pass（读取、修复、加噪、SNR、分 bin、累积统计量）",
                      "training pass (read, repair, noise, SNR, bin, sums)"),
            "validation pass": t("验证集 pass（用于选择 alpha）", "validation pass (for choosing alpha)"),
            "solve": t("求解 Global 与各 expert", "solve the global model and the experts"),
            "test": t("读取测试集、路由与评估（含 bootstrap）", "read, route and score the test set (bootstrap included)"),
            "write": t("写出结果、图表与报告", "write results, figures and report"),
            "total": t("总计", "total")}


def _total_seconds(results: Mapping[str, Any]) -> float | None:
    timings = results.get("timings_s") or {}
    if "total" in timings:
        return as_float(timings["total"])
    return sum(as_float(v) for v in timings.values()) if timings else None


def _appendix(results: Mapping[str, Any], t: Text) -> list[str]:
    models = results["models"]
    bins = bin_facts(results)
    total_train = sum(b.n_train for b in bins)
    metrics = shown_metrics(results)
    rows = []
    for key, name in (("global", "Global Ridge"), ("oracle", "Oracle MoE"), ("deployed", "Deployed MoE"),
                      ("noisy_snr_routed", "Noisy-SNR routed")):
        m = models.get(key)
        if isinstance(m, Mapping):
            rows.append([name, *[format_r2(m.get(k)) for k in metrics],
                         format_count(m["n_train"]), format_count(m["n_test"])])
    if _per_bin(results):
        for b in bins:
            note = t(", 无 expert", ", no expert") if b.skipped else ""
            values = {"r2": f"{format_r2(b.r2)} (global {format_r2(b.r2_global)}{note})", "mae": format_r2(b.mae),
                      "rmse": format_r2(b.rmse)}
            rows.append([f"- Bin {b.label}", *[values[k] for k in metrics], _share(b.n_train, total_train),
                         format_count(b.n_test)])
    phases = _phases(t)
    timings = dict(results.get("timings_s") or {})
    timing_rows = [[f"`{k}`", phases.get(k, k), _seconds(v)] for k, v in timings.items()]
    if timings and "total" not in timings:
        timing_rows.append(["`total`", t("总计（写出阶段之前；完整总计见 results.json）",
                                         "total (before the write phase; results.json has the full total)"),
                            _seconds(_total_seconds(results))])
    header = ["Model", *_metric_names(results), "N_train", "N_test"]
    lines = [t("## 📎 附录", "## 📎 Appendix"), "", t("### 数值结果表", "### Numerical results"), "",
             *_table(header, rows), ""]
    if _per_bin(results):
        lines += [t("Bin 行给出 expert 的数值（跳过的 bin 为 Global 的数值），括号内为同一 bin 上 Global Ridge 的 R²。",
                    "Bin rows give the expert's numbers (the global model's for skipped bins); the R² of Global "
                    "Ridge on the same bin is in parentheses."), ""]
    if timing_rows:
        lines += [t("### 耗时", "### Timings"), "",
                  *_table([t("阶段", "Phase"), t("说明", "What"), t("耗时", "Time")], timing_rows), ""]
    provenance = _flatten(results.get("provenance") or {})
    if provenance:
        lines += [t("### 溯源", "### Provenance"), "",
                  *_table([t("键", "Key"), t("值", "Value")],
                          [[f"`{k}`", _code(_cell(v)) if v not in (None, "") else "—"] for k, v in provenance]), ""]
    config = results.get("config")
    if config:
        lines += [t("### 完整配置", "### Full configuration"), "", "```json",
                  json.dumps(config, indent=2, ensure_ascii=False, default=str), "```", ""]
    return lines


# ----------------------------------------------------------------------------- public API
def render_report(results: Mapping[str, Any], lang: str = "zh", img_prefix: str = "img") -> str:
    """The experiment report as markdown: English header, body in ``lang`` ("zh" or "en"), figures
    linked as ``<img_prefix>/<name>.png``; the last line is the tool's mark (:data:`MARK`)."""
    t = _text(lang)
    check_results(results)
    _status(results)
    img = img_prefix.rstrip("/") or "."
    lines = [*_header(results), *_upstream(results, t), *_at_a_glance(results, t), *_goal(results, t),
             *_design(results, t), *_card_check(results, t), *_figures(results, t, img), *_gate(results, t, img),
             *_alpha(results, t, img),
             *scaling_section(results, t, img), *_insights(results, t), *_conclusion(results, t), *_appendix(results, t)]
    mark = f"{MARK} {__version__} ({results.get('experiment', 'LOGG-SNR-ORACLE-01')}); it rewrites this file -->"
    return "\n".join(lines).rstrip("\n") + "\n\n" + mark + "\n"


def written_by_snrmoe(path: str | os.PathLike) -> bool:
    """True when the report at ``path`` ends with this tool's mark (:data:`MARK`)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - 4096))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return False
    return MARK in tail


def write_report(results: Mapping[str, Any], out_dir: str | os.PathLike, lang: str = "zh",
                 name: str = "report.md", img_prefix: str = "img") -> Path:
    """Write ``out_dir/<name>`` atomically (figures linked as ``<img_prefix>/<figure>.png``, relative to
    ``out_dir``); creates ``out_dir``; returns the path."""
    text = render_report(results, lang=lang, img_prefix=img_prefix)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    write_text(path, text)
    return path


def _markers(experiment_id: str) -> tuple[str, str]:
    experiment_id = str(experiment_id)
    if not experiment_id.strip() or any(s in experiment_id for s in ("-->", "\n", "\r", ":")):
        raise ConfigError(f"experiment_id={experiment_id!r}: expected a non-empty id without ':', '-->' or newlines")
    return f"<!-- snrmoe:{experiment_id}:begin -->", f"<!-- snrmoe:{experiment_id}:end -->"


def _read_tracking(path: Path, begin: str, end: str) -> tuple[str, tuple[int, int] | None]:
    """(the file's text, the span of its block or None). A missing file reads as "" (it will be
    created, but not its folder); the text keeps a BOM and every line ending as they are."""
    if path.exists() and not path.is_file():
        raise InputError(f"{path}: is not a regular file; expected a markdown file to update (or none, to create)")
    if not path.exists():
        if not path.parent.is_dir():
            raise InputError(f"{path}: folder {path.parent} does not exist; the tracking file is created, not its folder")
        return "", None
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the tracking file: {exc.strerror}") from None
    starts, stops = text.count(begin), text.count(end)
    if (starts, stops) == (0, 0):
        return text, None
    start, stop = text.find(begin), text.find(end)
    if (starts, stops) != (1, 1) or stop < start:
        line = text.count("\n", 0, min(p for p in (start, stop) if p >= 0)) + 1
        raise InputError(f"{path}: found {starts} {begin} and {stops} {end} (the first at line {line}); "
                         "expected one pair, begin before end, or none")
    return text, (start, stop + len(end))


def check_tracking_file(path: str | os.PathLike, experiment_id: str) -> None:
    """Raise what :func:`update_tracking_block` would raise for ``path``, before a run writes anything."""
    begin, end = _markers(experiment_id)
    _read_tracking(Path(path).resolve(), begin, end)


def update_tracking_block(path: str | os.PathLike, experiment_id: str, body: str) -> None:
    """Insert or replace the block ``<!-- snrmoe:{id}:begin -->`` ... ``<!-- snrmoe:{id}:end -->`` in ``path``.

    Idempotent: the same body gives the same file. A missing file is created (its folder must
    exist); a new block is appended after the existing text. Every byte outside the block is kept
    (a BOM, CRLF line endings, a missing final newline); the block's lines end like the file's.
    A link is followed: the file it points to is updated. Written atomically, mode kept.
    """
    begin, end = _markers(experiment_id)
    path = Path(path).resolve()
    text, span = _read_tracking(path, begin, end)
    nl = "\r\n" if "\r\n" in text else "\n"
    block = nl.join([begin, *body.strip("\n").split("\n"), end])
    if span:
        new = text[:span[0]] + block + text[span[1]:]
    else:
        newlines = text[len(text.rstrip("\r\n")):].count("\n")  # a blank line before the block
        new = text + nl * (max(0, 2 - newlines) if text else 0) + block + nl
    if new != text:
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
        write_text(path, new, mode)


def roadmap_block(results: Mapping[str, Any], lang: str = "zh") -> str:
    """Key numbers for the roadmap's MVP-1.0 entry (markdown), in ``lang``."""
    t = _text(lang)
    check_results(results)
    g, o, delta, _ = _models(results)
    head = (f"**{results.get('experiment', 'LOGG-SNR-ORACLE-01')}** ({results.get('date', 'n/a')}) · "
            f"{results.get('mvp') or DEFAULT_MVP} · {_verdict(results, t)} → {_next_step(results, t)}")
    row = [format_r2(g["r2"]), format_r2(o["r2"]), _with_ci(format_delta(delta), results.get("delta_r2_ci")),
           _thr(results), _pct(coverage(results)), f"{format_count(o['n_train'])} / {format_count(o['n_test'])}"]
    lines = [head, "", *_table(["Global R²", "Oracle R²", "ΔR²", t("阈值", "Threshold"), "Coverage",
                                "N_train / N_test"], [row]), "",
             t(f"稳健性：{_robust_text(results, t)}。", f"Robustness: {_robust_text(results, t)}.")]
    if _per_bin(results):
        per_bin = " · ".join(f"{b.name} " + (t("无 expert", "no expert") if b.skipped else format_delta(b.delta))
                             for b in bin_facts(results))
        lines += ["", t(f"每个 bin 的 ΔR²（expert − global）：{per_bin}", f"Per-bin ΔR² (expert − global): {per_bin}")]
    return "\n".join(lines)


def hub_block(results: Mapping[str, Any], lang: str = "zh") -> str:
    """The hypothesis verdict (H1 / Q1) for the hub (markdown), in ``lang``."""
    t = _text(lang)
    check_results(results)
    _, _, delta, _ = _models(results)
    thr = _thr(results)
    source = f"`{results.get('experiment', 'LOGG-SNR-ORACLE-01')}` ({results.get('date', 'n/a')})"
    row = [t(f"H1 (Q1: SNR 分域是否有 headroom？): ΔR² ≥ {thr}", f"H1 (Q1: does splitting by SNR leave headroom?): "
             f"ΔR² ≥ {thr}"), f"≥ {thr}", _with_ci(format_delta(delta), results.get("delta_r2_ci")),
           _verdict(results, t), source]
    answer = {"PASS": t("是", "yes"), "FAIL": t("否", "no")}[decision(results)]
    return "\n".join([*_table([t("假设", "Hypothesis"), t("预期", "Expected"), t("实际", "Actual"),
                                t("验证", "Verdict"), t("来源", "Source")], [row]), "",
                       t(f"> **Q1 结论**：{answer}（ΔR² = {format_delta(delta)}）→ {_next_step(results, t)}；"
                         f"稳健性：{_robust_text(results, t)}。",
                         f"> **Q1 answer**: {answer} (ΔR² = {format_delta(delta)}) → {_next_step(results, t)}; "
                         f"robustness: {_robust_text(results, t)}.")])
