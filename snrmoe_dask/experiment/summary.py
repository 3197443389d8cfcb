"""The summary a run prints: the card's decision with its robustness beside it, then the table."""

from __future__ import annotations

from pathlib import Path

from ..core.card_defaults import RHO_BAR
from .verdict import describe

METRIC_TITLES = {"r2": "R2", "mae": "MAE[dex]", "rmse": "RMSE[dex]"}


def robustness_line(results: dict) -> str:
    """The robustness verdict in words (``verdict.describe``), or why there is none."""
    rob = results.get("robustness")
    if not rob:
        return "no interval (evaluation.bootstrap: 0), so no robustness verdict"
    return describe(rob, results["threshold"])


def shown_metrics(results: dict) -> list[str]:
    """The results keys of the metrics to show ("r2", "mae", "rmse"): ``evaluation.metrics`` of the
    run's config, R² always (the decision is on it); all three when the config does not say."""
    chosen = ((results.get("config") or {}).get("evaluation") or {}).get("metrics") or ["R2", "MAE", "RMSE"]
    keys = {str(m).lower().replace("²", "2") for m in chosen}
    return [k for k in METRIC_TITLES if k == "r2" or k in keys]


def print_summary(results: dict, wall_s: float | None = None) -> None:
    """The lines users read first: the decision (the card's rule) and its robustness, the models' table
    (per-bin rows unless evaluation.per_bin is false), then the deployable gate, the noisy-SNR
    baseline and the chosen alphas when the run has them. wall_s: the whole command's wall time
    (default: the run's ``timings_s.total``, which ends once the results folder is written)."""

    def fmt(v, spec="{:.4f}"):
        return "   n/a" if v is None else spec.format(v)

    models = results["models"]
    g, o = models["global"], models["oracle"]
    metrics = [(key, METRIC_TITLES[key]) for key in shown_metrics(results)]
    per_bin = ((results.get("config") or {}).get("evaluation") or {}).get("per_bin", True) is not False
    w = max(14, *(len(f"- bin {name} *") + 1 for name in results["bins"]))  # grid cells have long names
    cw = [max(8, len(title) + 1) for _, title in metrics]

    def row(label: str, scores: dict, n_train: int, n_test: int) -> str:
        return (f"{label:<{w}}" + "".join(f"{fmt(scores[k]):>{c}}" for (k, _), c in zip(metrics, cw))
                + f"{n_train:>11,}{n_test:>8,}")

    lines = [f"{results['experiment']}: {results['decision']} (the card's rule)  "
             f"dR2 = {results['delta_r2']:+.4f} (threshold {results['threshold']})",
             f"robustness: {robustness_line(results)}",
             f"{'model':<{w}}" + "".join(f"{title:>{c}}" for (_, title), c in zip(metrics, cw))
             + f"{'N_train':>11}{'N_test':>8}",
             row("Global Ridge", g, g["n_train"], g["n_test"]),
             row("Oracle MoE", o, o["n_train"], o["n_test"])]
    if per_bin:
        for name, b in results["bins"].items():
            label = f"- bin {name}" + (" *" if b["skipped"] else "")
            lines.append(row(label, b["expert"], b["n_train"], b["n_test"])
                         + f"   global R2 {fmt(b['global']['r2'])}   dR2 {fmt(b['delta_r2'], '{:+.4f}')}")
        if results.get("skipped_bins"):
            lines.append("* no expert (too few training spectra): served by the global model")
    gate = results.get("gate")
    if gate and "deployed" in models:
        d = models["deployed"]
        ci = d.get("r2_ci")
        rho = gate.get("rho")
        lines.append(f"deployed gate: R2 {fmt(d['r2'])}"
                     + (f" (95% CI [{ci[0]:.4f}, {ci[1]:.4f}])" if ci else "")
                     + (f"  rho {rho:.2f} (bar {RHO_BAR:g})" if rho is not None
                        else "  rho not defined (no oracle headroom)")
                     + f"  accuracy {fmt(gate.get('accuracy'), '{:.1%}')}"
                     f"  fallback rate {fmt(gate.get('fallback_rate'), '{:.1%}')}")
    if "noisy_snr_routed" in models:
        line = f"noisy-SNR hard routing: R2 {fmt(models['noisy_snr_routed']['r2'])}"
        if gate and gate.get("noisy_snr_accuracy") is not None:
            line += f"  routing accuracy {gate['noisy_snr_accuracy']:.1%}"
        lines.append(line)
    choice = results.get("alpha")
    if choice:
        chosen = [("global", choice["global"])] + list((choice.get("experts") or {}).items())
        lines.append("alpha chosen on validation: " + ", ".join(f"{n} {m['alpha']:g}" for n, m in chosen)
                     + (f" (fixed {choice['fixed_alpha']:g})" if choice.get("fixed_alpha") is not None else ""))
    if results.get("scaling"):
        from .scaling import summary_line

        lines.append(summary_line(results["scaling"]))
    lines += repair_lines(results)
    lines.append(f"next step: {results['next_step']}")
    wall = f"wall time {wall_s:.1f} s (the whole command)" if wall_s is not None else \
        f"wall time {results['timings_s']['total']:.1f} s (the run, imports and start-up aside)"
    lines.append(f"{wall}; report: {Path(results.get('output_dir', '.')) / 'report.md'}")
    print("\n".join(lines))


def repair_lines(results: dict) -> list[str]:
    """A line per set (training, test) whose repairs on read changed more than 0.1 % of its pixels."""
    from ..core.repair import REPAIR_LABELS, notable_repairs

    data, lines = results.get("data") or {}, []
    for name, key, rows in (("training", "repairs", "n_train"), ("test", "test_repairs", "n_test")):
        pixels = data.get(rows, 0) * data.get("pixels", 0)
        counts = notable_repairs(results.get(key), pixels)
        if counts:
            total = sum(counts.values())
            lines.append(f"repairs: {total:,} of {pixels:,} {name} pixels ({total / pixels:.1%}) changed on read: "
                         + ", ".join(f"{REPAIR_LABELS.get(kind, kind)} {n:,}" for kind, n in counts.items()))
    return lines
