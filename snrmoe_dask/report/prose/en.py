"""The report's words in English (``--lang en``): the same names as ``zh``, each saying the same
statement of ``rules`` as an English reader would write it.

One module, though over 500 lines: every sentence of the report in one language, side by side
with ``zh`` name for name, so that a translator reads one file."""

from __future__ import annotations

from typing import Any

from ..facts import BinFacts, Facts
from ..formatting import code, format_ci, format_count, format_delta, format_number, format_r2, pct
from ..rules import Statement

SEP = ", "
VERDICT = {"PASS": "✅ PASS", "FAIL": "❌ FAIL"}
NEXT_STEP = {"PASS": "Continue to MVP-2.0 (Deployable Gate)", "FAIL": "Jump to Gate-4 (Whitening/Conditional)"}
MODEL = {"global": "Global Ridge", "oracle": "the Oracle MoE", "deployed": "the Deployed MoE",
         "noisy_snr_routed": "noisy-SNR routing", "expert": "the expert"}

HEADINGS = {
    "upstream": "## 🔗 Upstream", "glance": "## ⚡ Key results at a glance", "goal": "## 🎯 Goal",
    "design": "## 🧪 Experiment design", "data": "### 1. Data", "bins": "### 2. SNR bins",
    "model": "### 3. Model and evaluation", "checks": "## 🔧 Troubleshooting and the card's expectations",
    "figures": "## 📊 Figures", "gate": "## 🚦 Deployable gate (MVP-2.0)", "alpha": "## 🎚️ Alpha selection",
    "insights": "## 💡 Key insights", "conclusion": "## 📝 Conclusion", "finding": "### Core finding",
    "implication": "### Design implication (Decision Gate)", "quick": "### Key numbers", "appendix": "## 📎 Appendix",
    "numbers": "### Numerical results", "timings": "### Timings",
    "provenance": "### Provenance", "config": "### Configuration (this run, complete)",
    "confusion": "### Confusion matrix (rows: true bin, columns: the gate's bin)",
    "scaling": "## 📈 Scaling: R² against training-set size",
    "extrapolation": "### Extrapolation (beyond the measured range; an estimate only)",
}
LABELS = {
    "hypothesis": "Hypothesis", "expected": "Expected", "actual": "Actual", "verdict": "Verdict",
    "key": "Key number", "value": "Value", "item": "Item", "range": "SNR range",
    "n_train_share": "N_train (share)", "n_test_share": "N_test (share)", "expert": "Expert", "result": "Result",
    "decision": "Decision", "next": "Next step", "problem": "Problem (the card)", "card_fix": "The card's fix",
    "found": "Found in this run", "unit": "Bin",
    "std": "σ(log g) (dex)", "delta_ci": "ΔR² (95% CI)", "slope": "Slope (expert / Global)",
    "outside": "Outside the training range (expert / Global)", "overall": "Overall", "model": "Model",
    "chosen": "Chosen α", "val_r2": "Val R² (chosen α)", "gain": "Gain", "note": "Note", "curve": "Curve",
    "limit": "Extrapolated limit R²∞ (95% interval)", "true_pred": "true ↓ / predicted →",
}
UPSTREAM = [("Hub", "`logg/moe/moe_snr_hub.md`"), ("Roadmap", "`logg/moe/moe_snr_roadmap.md` MVP-1.0"),
            ("Hypothesis", "Q1: does splitting by SNR leave headroom?"),
            ("Reference implementation", "`SCALING-20251223-oracle-moe-noise1-01` (Teff/[M/H] bins)"),
            ("Source of the SNR edges", "`SCALING-20251224-fisher-multi-mag`")]
PHASES = {"open": "open and check every input file", "pass": "training pass: read, repair, noise, SNR, bin, sums",
          "validation pass": "validation pass, to choose alpha", "solve": "solve Global Ridge and the experts",
          "test": "read, route and score the test set, intervals included", "scaling": "the scaling curve's points",
          "write": "write results, figures and report", "total": "the run up to the write phase"}


def unit(f: Facts) -> str:
    return "cell" if len(f.columns) > 1 else "bin"


def names(bins: list) -> str:
    """'H', 'H and X', 'H, L and X' for bins (or their names)."""
    items = [b if isinstance(b, str) else b.name for b in bins]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _plural(f: Facts, bins: list) -> str:
    return unit(f) + ("s" if len(bins) > 1 else "")


# ----------------------------------------------------------------------------- summary and premises
def summary(f: Facts, caveated: bool) -> str:
    where = "On these simulated spectra, " if f.simulated_sources else ""
    verb = "raises" if f.delta >= 0 else "lowers"
    cmp_ = "≥" if f.decision == "PASS" else "<"
    text = (f"{where}{'o' if where else 'O'}racle routing by true {f.split} {verb} test R² from "
            f"{format_r2(f.global_.r2)} to {format_r2(f.oracle.r2)} (ΔR² = {format_delta(f.delta)} {cmp_} the "
            f"{f.threshold:g} threshold), so the card's rule gives {VERDICT[f.decision]}; next: {NEXT_STEP[f.decision]}.")
    return text + (" Read it with the premises below." if caveated else "")


def _ci(ci: Any) -> str:
    return format_ci(ci) or "n/a"


def _alpha_models(models: list[str], f: Facts) -> str:
    """'Global Ridge and the experts of bins L, M and X' for the models named ("global" or a bin)."""
    experts = [m for m in models if m != "global"]
    said = ["Global Ridge"] if "global" in models else []
    if len(experts) == 1:
        said.append(f"the {unit(f)} {experts[0]} expert")
    elif experts:
        said.append(f"the experts of {unit(f)}s {names(experts)}")
    return " and ".join(said)


def _negatives(found: list[tuple[str, str, float]], f: Facts) -> str:
    """'the Oracle MoE (-0.0100); in bin X, the expert (-0.0133) and Global Ridge (-0.0379)': grouped by where."""
    groups: dict[str, list[str]] = {}
    for where, model, value in found:
        groups.setdefault(where, []).append(f"{MODEL[model]} ({format_r2(value)})")
    return "; ".join(("" if where == "overall" else f"in {unit(f)} {where}, ") + " and ".join(items)
                     for where, items in groups.items())


def premise(s: Statement, f: Facts) -> str:
    d = s.data
    if s.kind == "robust":
        side = "above" if d["decision"] == "PASS" else "below"
        return (f"✅ Robust: the 95% CI of ΔR², {_ci(d['ci'])}, lies wholly {side} the {d['threshold']:g} threshold "
                f"with {format_count(d['n_test'])} test spectra.")
    if s.kind == "not_robust":
        settle = (f"about {format_count(d['needed'])} test spectra would settle it at this effect size (an estimate)"
                  if d["needed"] else "ΔR² equals the threshold, so no number of test spectra would settle it")
        return (f"⚠️ Small test set: the 95% CI of ΔR², {_ci(d['ci'])}, straddles the {d['threshold']:g} threshold, "
                f"so with {format_count(d['n_test'])} test spectra the verdict is not robust; {settle}.")
    if s.kind == "no_interval":
        return (f"⚠️ No confidence interval was computed (`evaluation.bootstrap: 0`), so nothing says whether the "
                f"verdict holds up with {format_count(d['n_test'])} test spectra.")
    if s.kind == "simulated":
        return (f"⚠️ The input files are simulated (their source attribute: {SEP.join(code(x) for x in d['sources'])}), "
                f"not real BOSZ/PFS spectra; the conclusion holds for this simulated set only.")
    if s.kind == "alpha_edge":
        models = "; ".join(f"{_alpha_models(n, f)} at α = {format_number(a)} (the grid's "
                           f"{'lowest' if e == 'low' else 'highest'})" for n, a, e in d["models"])
        return (f"⚠️ Alpha was chosen at the edge of its candidate grid ({models}): the validation curve may still rise "
                f"beyond it, so the best alpha may lie outside the grid.")
    if s.kind == "alpha_untuned":
        bins = d["bins"]
        return (f"⚠️ Alpha was fixed at {format_number(d['alpha'])}, not tuned on validation: each expert is trained on "
                f"its own {unit(f)} alone ({pct(d['share_min'])}–{pct(d['share_max'])} of the training spectra), where the "
                f"same alpha constrains it more, and the experts of {unit(f)}{'s' if len(bins) > 1 else ''} "
                f"{names(bins)} do worse than Global Ridge; ΔR² may be low for that reason (check with "
                f"`model.alpha: auto`).")
    if s.kind == "still_rising":
        parts = SEP.join(f"{MODEL[m]} from {format_r2(a)} to {format_r2(b)}" for m, a, b in d["models"])
        return (f"⚠️ Not saturated: from {format_count(d['n_before'])} to {format_count(d['n_last'])} training spectra, "
                f"R² still rose ({parts}); more training data may change the conclusion.")
    if s.kind == "negative_r2":
        return (f"⚠️ Negative R² (worse than predicting the mean): {_negatives(d['found'], f)}; the card's "
                f"troubleshooting says to check scaling and regularisation.")
    if s.kind == "deployed_above_oracle":
        bins = f", and so do bins {SEP.join(n for n, _, _ in d['bins'])}" if d["bins"] else ""
        return (f"⚠️ The deployed MoE beats the Oracle MoE ({format_r2(d['deployed'])} against "
                f"{format_r2(d['oracle'])}){bins}: the oracle's ΔR² is then no upper bound for a deployed model "
                f"(soft routing averages several experts' predictions).")
    raise KeyError(s.kind)




# ----------------------------------------------------------------------------- insights
def insight(s: Statement, f: Facts) -> str:
    d, u = s.data, unit(f)
    if s.kind == "gain_extremes":
        best, worst = d["best"], d["worst"]
        return (f"The point estimate of ΔR² is largest in {u} {best.name} ({best.label}): {format_delta(best.delta)} "
                f"(expert {format_r2(best.expert.r2)}, Global Ridge {format_r2(best.global_.r2)}); it is smallest in "
                f"{u} {worst.name} ({worst.label}): {format_delta(worst.delta)}.")
    if s.kind == "expert_better_everywhere":
        return (f"In every {u} with an expert, the expert is at least as good as Global Ridge: each ΔR² interval has "
                f"its lower bound at or above 0, and neither MAE nor RMSE is worse.")
    if s.kind == "expert_worse":
        bins = d["bins"]
        if d["interval"]:
            cis = SEP.join(f"{b.name} {_ci(b.delta_ci)}" for b in bins)
            return (f"The expert is clearly worse than Global Ridge in {_plural(f, bins)} {names(bins)} (ΔR² interval "
                    f"wholly below 0: {cis}); those {u}s could be served by Global Ridge or merged with a neighbour.")
        deltas = SEP.join(f"{b.name} {format_delta(b.delta)}" for b in bins)
        return (f"By the point estimates, the expert is worse than Global Ridge in {_plural(f, bins)} {names(bins)} "
                f"(ΔR²: {deltas}); without intervals, nothing says whether that exceeds the test-set noise.")
    if s.kind == "within_noise":
        bins = d["bins"]
        cis = SEP.join(f"{b.name} {_ci(b.delta_ci)}" for b in bins)
        return (f"In {_plural(f, bins)} {names(bins)} the ΔR² interval includes 0 ({cis}): there the expert and Global "
                f"Ridge differ by no more than the test-set sampling noise.")
    if s.kind == "mae_disagrees":
        items = SEP.join(f"{b.name} (ΔR² {format_delta(b.delta)}; MAE {format_r2(b.expert.mae)} dex for the expert, "
                         f"{format_r2(b.global_.mae)} dex for Global Ridge)" for b in d["bins"])
        return f"R² favours the expert but MAE does not in {_plural(f, d['bins'])} {items}: the two metrics disagree."
    if s.kind == "small_bins":
        bins = d["bins"]
        if len(bins) == 1:
            return (f"{u.capitalize()} {bins[0].name} has only {format_count(bins[0].n_test)} test spectra (fewer than "
                    f"{d['limit']}), so its R² and ΔR² are very uncertain.")
        counts = SEP.join(f"{b.name} {format_count(b.n_test)}" for b in bins)
        return (f"{u.capitalize()}s {names(bins)} have fewer than {d['limit']} test spectra each ({counts}), so their "
                f"R² and ΔR² are very uncertain.")
    if s.kind == "skipped":
        items = SEP.join(f"{b.name} ({b.label}, {format_count(b.n_train)})" for b in d["bins"])
        limit = f"fewer than {format_count(d['minimum'])}" if d["minimum"] is not None else "too few"
        return (f"{_plural(f, d['bins']).capitalize()} {items} had {limit} training spectra: no expert was trained, "
                f"and Global Ridge predicts their test spectra (ΔR² counted as 0); coverage {pct(f.coverage)}.")
    if s.kind == "shrinkage":
        slopes = SEP.join(f"{MODEL[m]} {v:.2f}" for m, v in d["slopes"])
        return (f"The predictions regress to the mean: the slope of predicted on true log g is {slopes} (1 means "
                f"none), so low log g is overestimated and high log g underestimated.")
    if s.kind == "outside_range":
        span = f" [{d['low']:.2f}, {d['high']:.2f}]" if d["low"] is not None else ""
        items = SEP.join(f"{MODEL[m]} {pct(share)} (predictions from {lo:.2f} to {hi:.2f})"
                         for m, share, lo, hi in d["models"])
        return f"Some predictions fall outside the training targets' range{span}: {items}."
    raise KeyError(s.kind)


# ----------------------------------------------------------------------------- the card's checks
def check(s: Statement, f: Facts) -> list[str]:
    d, u = s.data, unit(f)
    if s.kind == "check_min_train":
        minimum = format_count(d["minimum"]) if d["minimum"] is not None else "the minimum"
        if d["skipped"]:
            found = SEP.join(f"{u} {b.name}: {format_count(b.n_train)}" for b in d["skipped"]) + \
                    ": no expert, served by Global Ridge"
        else:
            small = d["smallest"]
            found = f"every {u} has enough (the smallest, {small.name}, has {format_count(small.n_train)})"
        return [f"A {u} with too few spectra", f"no expert below {minimum} training spectra", found]
    if s.kind == "check_repairs":
        parts = []
        for name, counts, _ in d["sets"]:
            parts.append(f"{name}: not recorded" if counts is None else
                         f"{name} {format_count(counts['error_nonpositive'])} / {format_count(counts['error_nan'])} / "
                         f"{format_count(counts['flux_negative'])}")
        return ["NaN in the SNR", "error = 0 clipped to 1e-6",
                "; ".join(parts) + " (pixels: error ≤ 0 set to 1e-6 / error NaN filled from a neighbour / flux < 0 set to 0)"]
    if s.kind == "check_negative_r2":
        found = _negatives(d["found"], f) or "none"
        return ["Negative R²", "poor predictions: check scaling and regularisation", found]
    if s.kind == "check_shares":
        if not d["applies"]:
            found = f"this run's {u}s are not the card's H/M/L/X: does not apply"
        elif d["low"]:
            found = "below expectation: " + SEP.join(f"{n} {pct(v)} (expected ~{e:.0%}+)" for n, v, e in d["low"])
        else:
            found = "every bin at or above its expected share"
        return ["Expected training shares", "H ~30%+ · M ~30%+ · L ~20%+ · X ~10%+", found]
    if s.kind == "check_ceilings":
        if not d["applies"]:
            found = ("simulated data: not compared (the ceilings were estimated for the real BOSZ data)" if d["simulated"]
                     else f"this run's {u}s are not the card's H/M/L/X: does not apply")
        elif d["above"]:
            found = "⚠️ " + SEP.join(
                f"{'the expert' if m == 'expert' else 'Global Ridge'} in {u} {n} {format_r2(v)}"
                + (f" {format_ci(ci, signed=False)}" if ci else " (no interval)") + f" above its ceiling {c:g}"
                for n, m, v, ci, c in d["above"]) + ": the data or the evaluation may be wrong (a leak?); check"
        else:
            found = "no model's R² interval lies above its ceiling"
        return ["R² above the Fisher ceiling R²_max", "H 0.89 · M 0.74 · L 0.37 · X 0", found]
    raise KeyError(s.kind)


REPAIR_LABELS = {"flux_negative": "flux < 0 → 0", "error_nan": "error NaN → nearest pixel", "error_nonpositive": "error ≤ 0 → 1e-6",
                 "flux_absurd": "flux > 10⁶ × its row's typical → nearest pixel",
                 "error_absurd": "error > 10⁶ × its row's typical → nearest pixel"}


def repairs_line(name: str, counts: dict[str, int], pixels: int) -> str:
    total = sum(counts.values())
    kinds = "; ".join(f"{REPAIR_LABELS.get(k, k)} {format_count(n)}" for k, n in counts.items())
    label = "training" if name == "train" else "test"
    return (f"> ⚠️ Repairs on read changed {format_count(total)} of the {format_count(pixels)} {label} pixels "
            f"({pct(total / pixels)}): {kinds}.")


# ----------------------------------------------------------------------------- sections
def goal(f: Facts) -> list[str]:
    threshold_text = f"{f.threshold:g}"
    lines = ["Measure how much headroom **one expert per SNR bin** gives under oracle routing:", "",
             "- Core question: is an SNR-based MoE worth building?",
             f"- Acceptance: **Oracle ΔR² ≥ {threshold_text}** relative to one global model",
             f"- If ΔR² < {threshold_text}: the MoE is not worth it; move to whitening/conditional models (Gate-4)",
             "- Oracle routing uses each test spectrum's true SNR: ΔR² measures the headroom under perfect routing, "
             "not what a deployable model achieves, nor necessarily an upper bound for one (soft routing may beat it)"]
    if not f.snr_partition:
        lines.append(f"- This run splits the experts by the params column `{f.split}`, not by SNR; ΔR² is then the "
                     f"headroom of {f.split} experts")
    return lines


def source_cell(f: Facts) -> str:
    parts = [f"files: {code(s)} ({n} files)" for s, n in f.named_sources]
    if f.unnamed_files:
        parts.append(f"{f.unnamed_files} files carry no source attribute (real data files do not)")
    if f.configured_source is not None:
        parts.append(f"config data.source: {code(f.configured_source)}"
                     + (" (⚠️ not what the files say; the numbers come from the files)" if f.source_mismatch else ""))
    return "; ".join(parts) or "not recorded"


def data_rows(f: Facts, target: str) -> list[list[str]]:
    data = f.results.data
    files = len(data.train_files)
    spread = f.target
    target_text = f"`{target}`" + (f" (training range {spread.train_min:.2f}–{spread.train_max:.2f} dex)"
                                   if spread.train_min is not None else "")
    return [["Source", source_cell(f)],
            ["Train", f"{format_count(f.n_train)} spectra" + (f" in {files} shards (paths in the appendix)" if files else "")],
            ["Test", f"{format_count(f.n_test)} spectra" + (f"; {format_count(data.pixels)} pixels per spectrum" if data.pixels else "")],
            ["Target", target_text]]


def snr_lines(f: Facts) -> list[str]:
    snr = f.results.snr
    method = {"norm": "SNR = ‖flux‖ / ‖error × noise_level‖ (L2 norms over pixels, noise-free flux: oracle SNR)",
              "median": "SNR = median(flux / error) (noise-free flux: oracle SNR)"}.get(snr.method, f"method `{snr.method}`")
    lines = [f"- {method}; train median {_num(snr.train_median)}, max {_num(snr.train_max)}; test median "
             f"{_num(snr.test_median)}, max {_num(snr.test_max)}"]
    if f.snr_partition:
        lines.append("- Bins are half-open, low ≤ SNR < high, as in the card's Step 1 code (`low <= snr < high`); the "
                     "card's table writes 4 < SNR ≤ 7, which differs only for an SNR exactly on an edge")
    else:
        lines.append(f"- Experts split by the params column(s) `{f.split}` ({len(f.bins)} {unit(f)}s); SNR is still "
                     f"computed, to describe the data")
    minimum = f.min_train
    lines.append(f"- An expert needs at least {format_count(minimum)} training spectra in its {unit(f)}"
                 if minimum is not None else f"- A {unit(f)} with too few training spectra gets no expert")
    return lines


def _num(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "n/a"


def expert_cell(b: BinFacts, f: Facts) -> str:
    if not b.skipped:
        return "✅ trained"
    why = f"{format_count(b.n_train)} < {format_count(f.min_train)}" if f.min_train is not None else "too few spectra"
    return f"— none ({why}); served by Global Ridge"


def model_rows(f: Facts) -> list[list[str]]:
    scaling = (f"{f.scaler} (one, fitted on all training spectra, shared by Global Ridge and every expert)"
               if f.shared_scaler else
               f"{f.scaler} (fitted per expert on its {unit(f)}'s training spectra; Global Ridge on all)")
    clip = "negative flux clipped to 0" if f.clips_flux else "flux not clipped"
    routing = ("oracle: each test spectrum goes to the expert of its true (noise-free) SNR bin; bins without an "
               "expert are served by Global Ridge" if f.snr_partition else
               f"oracle: each test spectrum goes to the expert of its true {f.split} {unit(f)} (params table)")
    if f.results.gate is not None:
        routing += "; a deployable gate is evaluated too (below)"
    alpha = f.alpha_shown
    if f.expert_alphas:
        alpha += " (experts: " + ", ".join(f"{n} {format_number(a)}" for n, a in f.expert_alphas.items()) + ")"
    if f.alpha_selected:
        alpha += "; chosen per model on the validation set, see “Alpha selection”"
    where = "overall and per bin" if f.per_bin else "overall only"
    return [["Model", f"Ridge: 1 Global Ridge + {f.n_experts} experts (one per {unit(f)})"], ["alpha", alpha],
            ["Preprocessing", f"{scaling}; {clip}"],
            ["Noise", f"heteroscedastic Gaussian, flux + N(0,1) × error × {f.config('noise.level', 1.0)}; drawn on "
                      f"the fly for training, once with a fixed seed for the test set" + (f" ({f.seeds})" if f.seeds else "")],
            ["Routing", routing],
            ["Evaluation", f"{', '.join(f.metric_names)}, {where}; baseline: Global Ridge"
                           + (", with 95% CIs" if f.delta_ci else "")]]


def marks_note(f: Facts) -> str:
    return (f"In Figure 2, ★ marks a {unit(f)} whose ΔR² interval has its lower bound at or above {f.threshold:g}; {f.threshold:g} is "
            f"the rule for the overall ΔR², so the {unit(f)} marks only describe and take no part in the decision.")


def captions(f: Facts) -> list[str]:
    u = unit(f)
    return [f"Test R² of Global Ridge and the Oracle MoE (error bars: 95% CIs); the dashed line is the decision "
            f"threshold, R²_Global + {f.threshold:g}.",
            f"Test R² of Global Ridge and the expert per {u}, with ΔR² and its CI above each pair; the tick labels give "
            f"each {u}'s range and counts.",
            "Predicted against true log g on the test set, coloured by bin; solid: least-squares fit, dashed: y = x, "
            "grey lines: the range of the training targets.",
            f"ΔR² heatmap: {u}s (and overall) along the x axis; the ΔR² row is coloured around the {f.threshold:g} "
            f"threshold (blue at or above, red below) and gives ΔR² with its CI; the two rows above give each model's R²."]


def finding(f: Facts, best: BinFacts | None, worse: list[BinFacts]) -> str:
    cmp_ = "≥" if f.decision == "PASS" else "<"
    text = f"By the card's rule, Gate-2 is **{VERDICT[f.decision]}** (ΔR² = {format_delta(f.delta)} {cmp_} {f.threshold:g})"
    if best is not None and f.per_bin:
        text += f"; ΔR² is largest in {unit(f)} {best.name} ({format_delta(best.delta)})"
        if worse:
            text += f", and the expert is worse than Global Ridge in {_plural(f, worse)} {names(worse)}"
    return text + "."


def implication(f: Facts, caveated: bool) -> str:
    lead = "If the premises above hold, " if caveated else ""
    if f.decision == "PASS":
        text = (f"splitting by {f.split} leaves usable headroom: next, build a deployable gate (MVP-2.0: predict the "
                f"{f.split} bin from error-vector statistics only, soft routing) and measure how much headroom it keeps "
                f"with ρ = (R²_deployed − R²_global) / (R²_oracle − R²_global).")
    else:
        text = (f"even perfect routing by {f.split} gains less than the threshold: an SNR-based MoE is not worth "
                f"pursuing; move to Gate-4 (whitening / conditional models) so that one model uses the noise "
                f"information directly.")
    return lead + (text if lead else text[0].upper() + text[1:])


QUICK = "See the key-number table in “⚡ Key results at a glance” and the numerical results in the appendix."
BIN_ROWS_NOTE = "Bin rows read “expert / Global Ridge”; the two agree in bins without an expert."
ROUNDING_NOTE = "ΔR² is computed from the unrounded R², so it may differ by 0.0001 from the difference of the rounded values."


def ci_definition(f: Facts) -> str:
    rob = f.robustness
    if rob is None:
        return "This run computed no confidence intervals (`evaluation.bootstrap: 0`)."
    return (f"Every CI is a 95% paired percentile bootstrap interval over the test spectra "
            f"({format_count(rob.resamples)} resamples) with the trained models held fixed; it leaves out the variation "
            f"from the training-noise draw.")


def provenance_lines(f: Facts, root: Any, files: list[tuple[str, str]]) -> list[str]:
    prov = f.results.provenance
    if prov is None:
        return ["Not recorded."]
    lines = []
    if files:
        where = f" (relative to data.root = `{root}`)" if root else ""
        lines.append(f"- Input files{where}: " + SEP.join(f"{name} ({size})" for name, size in files))
    if prov.packages:
        lines.append("- Software: " + ", ".join(f"{k} {v}" for k, v in prov.packages.items() if v))
    if prov.git_commit:
        lines.append(f"- git commit: `{prov.git_commit}`")
    if prov.seeds:
        lines.append("- Seeds: " + ", ".join(f"{k} = {v}" for k, v in prov.seeds.items()))
    return lines


# ----------------------------------------------------------------------------- optional sections
def gate_intro(fallback: str) -> str:
    return (f"Oracle routing uses the true SNR, which a deployed model does not have. The deployable gate predicts "
            f"the SNR bin from 10 statistics of the error vector alone (multinomial logistic regression); the "
            f"prediction is Σ_k p_k · expert_k (soft routing), falling back to Global Ridge where max_k p_k < "
            f"{fallback}. A second deployable baseline routes hard by the SNR measured on the noisy flux.")


GATE_ROWS = {"accuracy": "Gate accuracy (test set, argmax against the true bin)",
             "fallback": "Fallback rate (max p < {f} → Global Ridge)", "deployed": "Deployed MoE R²",
             "delta": "ΔR² (deployed − global)", "noisy": "Noisy-SNR hard routing R² (baseline)",
             "noisy_acc": "Noisy-SNR routing accuracy"}


def rho_text(rho: float | None, bar: float, why: str | None) -> str:
    if rho is None:
        return f"not defined (no oracle headroom: {why})"
    return f"{rho:.2f} ≥ the {bar:g} bar ✅" if rho >= bar else f"{rho:.2f} < the {bar:g} bar ❌"


def rho_undefined(ci: str | None, delta: str) -> str:
    return f"the ΔR² CI {ci} does not lie above 0" if ci else f"ΔR² = {delta} is not above 0"


def rho_bar(bar: float) -> str:
    return f"The owner's bar: ρ ≥ {bar:g}, i.e. the deployable gate keeps at least {bar:.0%} of the oracle's headroom."


GATE_FIGURE = ("### Figure 5: Gate confusion matrix", "The gate's confusion matrix: rows are the true SNR bin, columns "
               "the gate's bin; colours are row shares, cells give the count and share, the diagonal is framed.")


def alpha_intro(spec: str, val_file: str, fixed: str) -> str:
    return (f"`model.alpha: {spec}`: every model (Global Ridge and each expert) picks its alpha by R² on the validation "
            f"set `{val_file}`, solved from the statistics alone (no second pass over the training data). The fixed "
            f"alpha = {fixed} is always a candidate, so the validation gain is ≥ 0.")


def alpha_flag(kind: str, **v: Any) -> str:
    return {"global": f"only {v.get('n')} validation spectra: uses Global Ridge's alpha",
            "edge": "⚠️ at the edge of the candidate grid",
            "few": f"⚠️ chosen on only {v.get('n')} validation spectra"}[kind]


ALPHA_FIGURE = ("### Figure 6: Validation R² vs α", "Validation R² against the Ridge α per model (log axis); ★ marks the "
                "chosen α, the dashed line the fixed α; the y range follows most points, and points below it are drawn "
                "on its lower edge.")


# ----------------------------------------------------------------------------- scaling curve
def scaling_intro(points: int, splits: int) -> str:
    part = "sub-shards" if splits > 1 else "shards"
    text = (f"For k = 1..{points}, Global Ridge and every expert are solved again on the summed statistics of the "
            f"first k training {part} (in list order) and scored on the same test set. The points come from the "
            f"per-shard statistics of the one data pass; no extra pass.")
    return text + (f" Each shard was summed as {splits} sub-shards (cut on block edges) to give more points."
                   if splits > 1 else "")


def scaling_caption(bands: bool, fitted: bool) -> str:
    text = ("Left: test R² against the number of training spectra N (log axis) for Global Ridge, the Oracle MoE and "
            "each bin's expert; right: ΔR² against N with the threshold line.")
    if bands:
        text += " Bands are 95% CIs."
    if fitted:
        text += " Dotted: the extrapolated fit."
    return text


def scaling_trend(n0: int, n1: int, g: tuple, o: tuple, d: tuple, threshold: float) -> str:
    toward = abs(d[1] - threshold) < abs(d[0] - threshold)
    return (f"From {format_count(n0)} to {format_count(n1)} training spectra, Global Ridge's R² goes from "
            f"{format_r2(g[0])} to {format_r2(g[1])} and the Oracle MoE's from {format_r2(o[0])} to {format_r2(o[1])}; "
            f"ΔR² goes from {format_delta(d[0])} to {format_delta(d[1])}, "
            f"{'closer to' if toward else 'further from'} the {threshold:g} threshold.")


SCALING_NO_EXPERT = "no expert"
SCALING_EXPERT = "bin {name} expert R²"


def scaling_refused(points: int, needed: int) -> str:
    return f"Only {points} point(s), fewer than {needed}: no extrapolation."


def scaling_fit_form() -> str:
    return "Fit R²(N) = R²∞ − a·(N/N_max)^(−b); every limit in this table is an extrapolation."


def scaling_not_fitted(curves: list[str]) -> str:
    return f"The points do not pin the limit of these curves (flat or noisy), so they are not extrapolated: {SEP.join(curves)}."


def scaling_crossing(status: str | None, fit_status: str, threshold: float, n: float | None, n_ci: Any,
                     limit: float | None) -> str:
    if status in ("crosses", "falls below"):
        lo, hi = (n_ci or [None, None])
        interval = (f", 95% interval [{_n(lo)}, {_n(hi) if hi is not None else '∞'}" + ("]" if hi is not None else ")")
                    if n_ci else "")
        verb = "reaches" if status == "crosses" else "falls below"
        return f"Extrapolated: the overall ΔR² {verb} the threshold {threshold:g} at N ≈ {_n(n)}{interval}."
    if status == "above":
        return (f"Extrapolated: the overall ΔR² is above the threshold {threshold:g} at the largest N and the fitted "
                f"curve stays above it (ΔR²∞ = {limit:+.4f}).")
    if status == "does not cross":
        return (f"Extrapolated: the overall ΔR² does not cross the threshold {threshold:g} (fitted limit "
                f"ΔR²∞ = {limit:+.4f}).")
    why = {"undetermined": "the points do not pin the limit of the overall ΔR² (a flat or noisy curve)",
           "failed": "the fit did not converge"}.get(fit_status, "the overall ΔR² curve was not fitted")
    return f"No extrapolated threshold crossing: {why}."


def _n(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


SCALING_UNCERTAINTY = ("Uncertainty: the fit's covariance (scaled by the scatter of the points about the curve; Student t "
                       "with points − 3 degrees of freedom). It leaves out the test-set sampling error that all points "
                       "share (each point's own interval).")


# ----------------------------------------------------------------------------- small pieces of the template
SUMMARY = "One-sentence summary"


def spread_note(std: float) -> str:
    return f" (the test targets' standard deviation: {std:.4f} dex)"


def coverage_row(share: str, trained: int, total: int) -> list[str]:
    return ["Coverage", f"{share} ({format_count(trained)} of {format_count(total)} test spectra reach an expert)"]


def split_heading(split: str) -> str:
    return f"### 2. Experts by {split}"


def split_range(split: str) -> str:
    return f"{split} range"


def val_r2_fixed(fixed: str) -> str:
    return f"Val R² (α = {fixed})"


def timings_line(items: list[tuple[str, str, str]]) -> str:
    """'`pass` 6.4 s (training pass: …), ….' from (phase, time, what)."""
    return SEP.join(f"`{k}` {t} ({what})" for k, t, what in items) + "."


TRACK = {"threshold": "Threshold", "coverage": "Coverage", "no_expert": "no expert",
         "source": "Source", "h1": "H1 (Q1: does splitting by SNR leave headroom?)"}


def per_bin_delta(items: str) -> str:
    return f"Per-bin ΔR² (expert − global): {items}"


def q1_answer(passed: bool, caveated: bool, delta: str, step: str) -> str:
    return (f"> **Q1 answer**: {'yes' if passed else 'no'}{' (read with the premises below)' if caveated else ''} "
            f"(ΔR² = {delta}) → {step}")
