"""report.md: the card's "Step 4" template filled from the facts of a run, section by section.

The facts come from ``facts`` (typed results), what may be said from ``rules``, the words from
``prose.zh`` / ``prose.en``; this module only puts them in the template's order. Header English, body
in the report's language, figure text English (the card's language rule). The verdict is the card's:
✅ PASS when ΔR² >= threshold, ❌ FAIL otherwise; the premises it rests on (the robustness of the
verdict first) follow the one-sentence summary. Provenance and the config go to the appendix, once.
Files are written atomically; the report ends with the line :data:`MARK`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

from .._version import __version__
from ..core.card_defaults import RHO_BAR
from ..io.atomic import write_text
from . import rules
from .prose import en, prose, zh
from .facts import Facts, build_facts, shown_delta_disagrees
from .formatting import code, format_ci, format_count, format_delta, format_number, format_r2, pct, seconds, table
from .files import FIG_ALPHA_CURVE, FIG_COMPARISON, FIG_DELTA_HEATMAP, FIG_GATE_CONFUSION, FIG_PERBIN, FIG_PRED_VS_TRUE
from .scaling import scaling_section
from .tracking import check_tracking_file, hub_block, roadmap_block, update_tracking_block  # noqa: F401 (the CLI's names)

TITLE = "# 🧪 Experiment: Oracle SNR-binned MoE"
DEFAULT_MVP = "MVP-1.0 (Gate-2)"
STATUS = {"PASS": "✅ PASS", "FAIL": "❌ FAIL"}  # the header's words (English)
MARK = "<!-- written by snrmoe-dask"  # the report's last line starts with it
FEW_VALIDATION = 100  # an alpha chosen on fewer validation spectra is flagged
CARD_FIGURES = (("Figure 1: Oracle vs Global R² Comparison", "comparison", FIG_COMPARISON),
                ("Figure 2: Per-bin R²", "perbin", FIG_PERBIN),
                ("Figure 3: Prediction vs True", "pred_vs_true", FIG_PRED_VS_TRUE),
                ("Figure 4: ΔR² Heatmap", "delta_heatmap", FIG_DELTA_HEATMAP))


def _with_ci(value: str, ci: Any, signed: bool = False) -> str:
    text = format_ci(ci, signed=signed)
    return f"{value} {text}" if text else value


def coverage(results: Any) -> float:
    """Share of test spectra routed to a trained expert (not in a skipped bin); NaN without test spectra."""
    return build_facts(results).coverage


def caveat_lines(results: Any, lang: str = "en") -> list[str]:
    """The premises that qualify the conclusion, one line each (for the log)."""
    f, p = build_facts(results), prose(lang)
    return [p.premise(s, f) for s in rules.caveats(f)]


# ----------------------------------------------------------------------------- sections
def _header(f: Facts) -> list[str]:
    r = f.results
    date = f"**Date:** {r.date or 'n/a'}" + (f" (card date {r.card_date})" if r.card_date else "") + "  "
    return [TITLE, "", f"**Experiment ID:** `{r.experiment}`  ", date,
            f"**Status:** {STATUS[f.decision]} (ΔR² {format_delta(f.delta)}, threshold {f.threshold:g})  ",
            f"**MVP:** {r.mvp or DEFAULT_MVP}", "", "---", ""]


def _upstream(p: ModuleType) -> list[str]:
    return [p.HEADINGS["upstream"], "", *table(["Type", "Link"], p.UPSTREAM), "", "---", ""]


def _glance(f: Facts, p: ModuleType) -> list[str]:
    premises = rules.premises(f)
    caveated = any(s.warn for s in premises)
    threshold_text = f"{f.threshold:g}"
    L = p.LABELS
    hypothesis = table([L["hypothesis"], L["expected"], L["actual"], L["verdict"]],
                       [[f"H1: ΔR² ≥ {threshold_text}", f"≥ {threshold_text}",
                         _with_ci(format_delta(f.delta), f.delta_ci, True), STATUS[f.decision].split()[0]]])
    g, o = f.global_, f.oracle
    rows = [["Global Ridge R²", _with_ci(format_r2(g.r2), g.r2_ci)], ["Oracle MoE R²", _with_ci(format_r2(o.r2), o.r2_ci)],
            ["ΔR²", _with_ci(format_delta(f.delta), f.delta_ci, True)]]
    spread = f.target.test_std
    for key, name in (("mae", "MAE"), ("rmse", "RMSE")):
        if key in f.metrics:
            value = f"{format_r2(getattr(g, key))} / {format_r2(getattr(o, key))} dex"
            if key == "rmse" and spread is not None:
                value += p.spread_note(spread)
            rows.append([f"{name} (Global / Oracle)", value])
    trained = sum(b.n_test for b in f.bins if b.trained)
    rows.append(p.coverage_row(pct(f.coverage), trained, f.n_test))
    rows += _deployed_rows(f, p)
    lines = [p.HEADINGS["glance"], "", f"> **{p.SUMMARY}**: {p.summary(f, caveated)}",
             *[f"> - {p.premise(s, f)}" for s in premises], "", *hypothesis, "",
             *table([L["key"], L["value"]], rows), ""]
    if shown_delta_disagrees([(o.r2, g.r2, f.delta)]):
        lines += [p.ROUNDING_NOTE, ""]
    return lines + ["---", ""]


def _deployed_rows(f: Facts, p: ModuleType) -> list[list[str]]:
    rows = []
    if f.deployed is not None:
        rows.append(["Deployed MoE R²", _with_ci(format_r2(f.deployed.r2), f.deployed.r2_ci)])
        rows.append(["ρ = (R²_deployed − R²_global) / (R²_oracle − R²_global)", _rho_text(f, p)])
    noisy = f.models.get("noisy_snr_routed")
    if noisy is not None:
        rows.append([p.GATE_ROWS["noisy"], _with_ci(format_r2(noisy.r2), noisy.r2_ci)])
    return rows


def _rho_text(f: Facts, p: ModuleType) -> str:
    from ..core.gate import rho_score

    gate = f.results.gate
    rho = gate.rho if gate is not None and "rho" in gate.model_fields_set else rho_score(
        f.deployed.r2, f.global_.r2, f.oracle.r2, list(f.delta_ci) if f.delta_ci else None)
    why = None if rho is not None else p.rho_undefined(format_ci(f.delta_ci) or None, format_delta(f.delta))
    return p.rho_text(rho, RHO_BAR, why)


def _goal(f: Facts, p: ModuleType) -> list[str]:
    return [p.HEADINGS["goal"], "", *p.goal(f), "", "---", ""]


def _design(f: Facts, p: ModuleType) -> list[str]:
    L = p.LABELS
    bin_rows = [[f"**{b.name}**", b.label, f"{format_count(b.n_train)} ({pct(b.train_share)})",
                 f"{format_count(b.n_test)} ({pct(b.test_share)})", p.expert_cell(b, f)]
                for b in f.bins]
    if f.snr_partition:
        heading, range_header = p.HEADINGS["bins"], L["range"]
    else:
        heading, range_header = p.split_heading(f.split), p.split_range(f.split)
    target = f.config("data.target") or "log_g"
    return [p.HEADINGS["design"], "", p.HEADINGS["data"], "", *table([L["item"], L["value"]], p.data_rows(f, target)),
            "", heading, "", *p.snr_lines(f), "",
            *table([L["unit"], range_header, L["n_train_share"], L["n_test_share"], L["expert"]], bin_rows), "",
            p.HEADINGS["model"], "", *table([L["item"], L["value"]], p.model_rows(f)), "", "---", ""]


def _checks(f: Facts, p: ModuleType) -> list[str]:
    L = p.LABELS
    rows = [p.check(s, f) for s in rules.checks(f)]
    return [p.HEADINGS["checks"], "", *table([L["problem"], L["card_fix"], L["found"]], rows), "",
            *_notable_repairs(f, p), "---", ""]


def _notable_repairs(f: Facts, p: ModuleType) -> list[str]:
    """A line per set (training, test) whose repairs on read changed more than 0.1 % of its pixels."""
    from ..core.repair import notable_repairs

    r, lines = f.results, []
    for name, repairs, rows in (("train", r.repairs, r.data.n_train), ("test", r.test_repairs, r.data.n_test)):
        pixels = rows * r.data.pixels if rows and r.data.pixels else 0
        counts = notable_repairs(repairs.model_dump() if repairs else None, pixels)
        if counts:
            lines += [p.repairs_line(name, counts, pixels), ""]
    return lines


def _figures(f: Facts, p: ModuleType, img: str) -> list[str]:
    lines = [p.HEADINGS["figures"], ""]
    if any(b.delta_ci is not None for b in f.trained):
        lines += [p.marks_note(f), ""]
    for (title, alt, name), caption in zip(CARD_FIGURES, p.captions(f)):
        lines += [f"### {title}", f"![{alt}]({img}/{name})", "", caption, ""]
    return lines + ["---", ""]


def _gate(f: Facts, p: ModuleType, img: str) -> list[str]:
    """The deployable gate (MVP-2.0): accuracy, fallback, per-bin R², the confusion matrix and its figure
    (the deployed and noisy-SNR R² and ρ are key numbers, in the summary)."""
    gate = f.results.gate
    if gate is None:
        return []
    fallback = f"{gate.fallback:g}" if gate.fallback is not None else "n/a"
    rows = [[p.GATE_ROWS["accuracy"], pct(gate.accuracy)],
            [p.GATE_ROWS["fallback"].format(f=fallback), pct(gate.fallback_rate)]]
    if f.deployed is not None:
        rows.append([p.GATE_ROWS["delta"], _with_ci(format_delta(f.deployed.r2 - f.global_.r2), gate.delta_r2_ci, True)])
    if gate.noisy_snr_accuracy is not None:
        rows.append([p.GATE_ROWS["noisy_acc"], pct(gate.noisy_snr_accuracy)])
    L = p.LABELS
    lines = [p.HEADINGS["gate"], "", p.gate_intro(fallback), "", *table([L["key"], L["value"]], rows), "",
             p.rho_bar(RHO_BAR), ""]
    if f.per_bin:
        bin_rows = [[f"**{b.name}**", b.label, format_count(b.n_test), format_r2(b.global_.r2),
                     format_r2(b.expert.r2), format_r2(b.deployed.r2 if b.deployed else None)] for b in f.bins]
        lines += [*table([L["unit"], L["range"], "N_test", "Global Ridge", L["expert"], "Deployed MoE"], bin_rows), ""]
    names = gate.names
    if len(gate.confusion) == len(names):
        conf_rows = [[f"**{n}**", *[format_count(v) for v in row]] for n, row in zip(names, gate.confusion)]
        lines += [p.HEADINGS["confusion"], "", *table([L["true_pred"], *names], conf_rows), ""]
    title, caption = p.GATE_FIGURE
    return lines + [title, f"![gate_confusion]({img}/{FIG_GATE_CONFUSION})", "", caption, "", "---", ""]


def _alpha(f: Facts, p: ModuleType, img: str) -> list[str]:
    """Alpha chosen on the validation set: per model, the chosen alpha, its validation R², the gain over
    the fixed alpha, flags, and the figure of the curves."""
    from .gate_alpha_plots import alpha_curves

    choice = f.results.alpha
    if choice is None:
        return []
    spec = f.config("model.alpha")
    spec_text = "auto" if isinstance(spec, str) else (
        ", ".join(format_number(a) for a in spec) if isinstance(spec, (list, tuple)) else format_number(spec))
    val_file = f.results.data.val_file or f.config("data.val_file") or "n/a"
    fixed = format_number(choice.fixed_alpha) if choice.fixed_alpha is not None else "n/a"
    L = p.LABELS
    rows = []
    for label, m in [("Global Ridge", choice.global_)] + [(f"{L['expert']} {n}", m) for n, m in choice.experts.items()]:
        rows.append([label, format_number(m.alpha), format_r2(m.val_r2), format_r2(m.val_r2_fixed),
                     format_delta(m.gain_over_fixed), _count(m.n_train), _count(m.n_val),
                     p.SEP.join(_alpha_flags(m, p)) or "—"])
    header = [L["model"], L["chosen"], L["val_r2"], p.val_r2_fixed(fixed),
              L["gain"], "N_train", "N_val", L["note"]]
    lines = [p.HEADINGS["alpha"], "", p.alpha_intro(spec_text, val_file, fixed), "", *table(header, rows), ""]
    if alpha_curves(choice)[0]:
        title, caption = p.ALPHA_FIGURE
        lines += [title, f"![alpha_curve]({img}/{FIG_ALPHA_CURVE})", "", caption, ""]
    return lines + ["---", ""]


def _count(value: Any) -> str:
    return format_count(value) if isinstance(value, int) else "n/a"


def _alpha_flags(model, p: ModuleType) -> list[str]:
    """Why one model's chosen alpha deserves a second look: taken from the global model, at the edge of
    the candidate grid (the best may lie beyond it), or chosen on < FEW_VALIDATION spectra."""
    if model.source == "global":
        return [p.alpha_flag("global", n=_count(model.n_val))]
    flags = []
    grid = model.curve.alpha
    if len(grid) > 1 and model.alpha in (min(grid), max(grid)):
        flags.append(p.alpha_flag("edge"))
    if model.n_val is not None and model.n_val < FEW_VALIDATION:
        flags.append(p.alpha_flag("few", n=_count(model.n_val)))
    return flags


def _insights(f: Facts, p: ModuleType) -> list[str]:
    items = [p.insight(s, f) for s in rules.insights(f)]
    return [p.HEADINGS["insights"], "", *[f"{i}. {s}" for i, s in enumerate(items, 1)], "", "---", ""]


def _conclusion(f: Facts, p: ModuleType) -> list[str]:
    caveated = any(s.warn for s in rules.premises(f))
    trained = f.trained
    best = max(trained, key=lambda b: b.delta) if trained else None
    worse = [b for b in trained if b.loses()]
    threshold_text, L = f"{f.threshold:g}", p.LABELS
    gate_rows = [[f"ΔR² ≥ {threshold_text}", p.VERDICT["PASS"], p.NEXT_STEP["PASS"]],
                 [f"ΔR² < {threshold_text}", p.VERDICT["FAIL"], p.NEXT_STEP["FAIL"]]]
    chosen = 0 if f.decision == "PASS" else 1
    gate_rows[chosen] = [f"**👉 {c}**" for c in gate_rows[chosen]]
    return [p.HEADINGS["conclusion"], "", p.HEADINGS["finding"], "", p.finding(f, best, worse), "",
            p.HEADINGS["implication"], "", p.implication(f, caveated), "",
            *table([L["result"], L["decision"], L["next"]], gate_rows), "",
            p.HEADINGS["quick"], "", p.QUICK, "", "---", ""]


def _ratio(score_a, score_b, attr: str) -> str:
    return f"{format_r2(getattr(score_a, attr))} / {format_r2(getattr(score_b, attr))}"


def _appendix(f: Facts, p: ModuleType) -> list[str]:
    names = {"global": "Global Ridge", "oracle": "Oracle MoE", "deployed": "Deployed MoE",
             "noisy_snr_routed": p.MODEL["noisy_snr_routed"]}
    rows = [[names[key], *[format_r2(getattr(s, k)) for k in f.metrics], format_count(m.n_train), format_count(m.n_test)]
            for key, s in f.models.items() for m in [getattr(f.results.models, "global_" if key == "global" else key)]]
    if f.per_bin:
        rows += [[f"- Bin {b.name} ({b.label})", *[_ratio(b.expert, b.global_, k) for k in f.metrics],
                  f"{format_count(b.n_train)} ({pct(b.train_share)})", format_count(b.n_test)] for b in f.bins]
    lines = [p.HEADINGS["appendix"], "", p.HEADINGS["numbers"], "",
             *table(["Model", *f.metric_names, "N_train", "N_test"], rows), ""]
    if f.per_bin:
        lines += [p.BIN_ROWS_NOTE, ""]
        if shown_delta_disagrees([(b.expert.r2, b.global_.r2, b.delta) for b in f.trained]):
            lines += [p.ROUNDING_NOTE, ""]
    lines += [*_per_bin_table(f, p), "", p.ci_definition(f), ""]
    lines += _timings(f, p)
    files = f.results.provenance.files if f.results.provenance else None
    listed = ([(code(_relative(x.path, f.config("data.root"))), _size(x.bytes)) for x in files] if files else [])
    lines += [p.HEADINGS["provenance"], "", *p.provenance_lines(f, f.config("data.root"), listed), ""]
    if f.results.config:
        lines += [p.HEADINGS["config"], "", "```json", *_config_lines(f.results.config), "```", ""]
    return lines


def _per_bin_table(f: Facts, p: ModuleType) -> list[str]:
    """Per bin (and overall): the target's spread, ΔR² with its interval, the slope of prediction on truth
    and the share outside the training range, expert / global model."""
    L = p.LABELS

    def share(score) -> str:
        return pct(score.outside) if score.outside is not None else "n/a"

    def slope(score) -> str:
        return f"{score.slope:.2f}" if score.slope is not None else "n/a"

    rows = [[b.name, f"{b.target_std:.4f}" if b.target_std is not None else "n/a",
             "—" if b.skipped else _with_ci(format_delta(b.delta), b.delta_ci, True),
             f"{slope(b.expert)} / {slope(b.global_)}", f"{share(b.expert)} / {share(b.global_)}"]
            for b in (f.bins if f.per_bin else ())]
    o, g = f.oracle, f.global_
    rows.append([L["overall"] + " (Oracle / Global)", f"{f.target.test_std:.4f}" if f.target.test_std is not None else "n/a",
                 _with_ci(format_delta(f.delta), f.delta_ci, True), f"{slope(o)} / {slope(g)}", f"{share(o)} / {share(g)}"])
    return table([L["unit"], L["std"], L["delta_ci"], L["slope"], L["outside"]], rows)


def _timings(f: Facts, p: ModuleType) -> list[str]:
    """Seconds per phase of the run, on one line (each phase named and described)."""
    timings = dict(f.results.timings_s)
    if not timings:
        return []
    total = timings.pop("total", sum(timings.values()))
    items = [(k, seconds(v), p.PHASES.get(k, k)) for k, v in timings.items()] + [("total", seconds(total), p.PHASES["total"])]
    return [p.HEADINGS["timings"], "", p.timings_line(items), ""]


def _relative(path: str, root: Any) -> str:
    if root:
        try:
            return str(Path(path).relative_to(Path(str(root))))
        except ValueError:
            pass
    return path


def _size(n: int | None) -> str:
    if n is None:
        return "n/a"
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n:,} B"


def _config_lines(config: dict) -> list[str]:
    """The config as JSON with one line per section: complete, and short."""
    items = list(config.items())
    body = [f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}" + ("," if i < len(items) - 1 else "")
            for i, (key, value) in enumerate(items)]
    return ["{", *body, "}"]


# ----------------------------------------------------------------------------- public API
def render_report(results: Any, lang: str = "zh", img_prefix: str = "img",
                  predictions: pd.DataFrame | None = None) -> str:
    """The experiment report as markdown: English header, body in ``lang`` ("zh" or "en"), figures
    linked as ``<img_prefix>/<name>.png``; the last line is the tool's mark (:data:`MARK`).

    results: the parsed results.json (or ``Results``); predictions: predictions.csv, used only for what
    an older results.json lacks (``diagnostics``)."""
    p = prose(lang)
    f = build_facts(results, predictions)
    img = img_prefix.rstrip("/") or "."
    lines = [*_header(f), *_upstream(p), *_glance(f, p), *_goal(f, p), *_design(f, p), *_checks(f, p),
             *_figures(f, p, img), *_gate(f, p, img), *_alpha(f, p, img), *scaling_section(f, lang, img),
             *_insights(f, p), *_conclusion(f, p), *_appendix(f, p)]
    mark = f"{MARK} {__version__} ({f.results.experiment}); it rewrites this file -->"
    return "\n".join(lines).rstrip("\n") + "\n\n" + mark + "\n"


def body_of(report: str) -> str:
    """The report before its appendix (what the length limit of the body counts)."""
    for heading in (zh.HEADINGS["appendix"], en.HEADINGS["appendix"]):
        if f"\n{heading}\n" in report:
            return report.split(f"\n{heading}\n")[0]
    return report


def written_by_snrmoe(path: str | os.PathLike) -> bool:
    """True when the report at ``path`` ends with this tool's mark (:data:`MARK`)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - 4096))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return False
    return MARK in tail


def write_report(results: Any, out_dir: str | os.PathLike, lang: str = "zh", name: str = "report.md",
                 img_prefix: str = "img", predictions: pd.DataFrame | None = None) -> Path:
    """Write ``out_dir/<name>`` atomically (figures linked as ``<img_prefix>/<figure>.png``, relative to
    ``out_dir``); creates ``out_dir``; returns the path."""
    text = render_report(results, lang=lang, img_prefix=img_prefix, predictions=predictions)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    write_text(path, text)
    return path
