"""The driver: one pass over the training shards, every model solved, the test set routed and scored,
results, figures and report written atomically."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..core.fold import PassResult
from ..core.metrics import check_r2_defined
from ..core.ridge import RidgeModel, solve_ridge
from ..engine.cluster import compute_context
from ..errors import InputError
from ..io.shards import ShardInfo, check_same_grid, inspect_shard, refuse_duplicates, resolve_shards
from .config import ExperimentConfig, check_feature_dim, config_to_dict
from .evaluation import evaluate, load_test_set
from .outputs import Render, atomic_dir, provenance, write_json, write_outputs
from .training import VAL_SHARD_INDEX, pass_spec, run_pass

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- phases
class Timer:
    """Phase timings for the log and results.json."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.timings: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 3)
        log.info("phase %s: %.2f s", name, self.timings[name])

    def finish(self) -> dict[str, float]:
        self.timings["total"] = round(time.perf_counter() - self.t0, 3)
        return self.timings


def cache_dir(cfg: ExperimentConfig) -> Path | None:
    """Where the per-shard statistics live: compute.cache_dir, by default beside the results."""
    if not cfg.compute.cache:
        return None
    return Path(cfg.compute.cache_dir) if cfg.compute.cache_dir else cfg.output_dir.parent / ".snrmoe-cache"


def solve_models(cfg: ExperimentConfig, train: PassResult, val: PassResult | None) -> tuple[
        RidgeModel, dict[str, RidgeModel | None], dict | None]:
    """The global model and one expert per bin with enough training spectra (None otherwise).

    A fixed alpha is used as is; ``auto`` or a list picks one alpha per model by R² on the
    validation statistics (no pass over the training data). Returns (global, experts, alpha report).
    """
    stats, names = train.stats, list(cfg.partition.names)
    alphas, report = dict.fromkeys(["global", *names], cfg.model.alpha), None
    if not isinstance(cfg.model.alpha, float):
        from ..core.alpha import CARD_ALPHA, alpha_grid, select_alpha

        choice = select_alpha(stats, val.stats, alpha_grid(cfg.model.alpha), CARD_ALPHA,
                              cfg.evaluation.min_bin_samples)
        alphas, report = {"global": choice.global_model.alpha, **choice.expert_alphas()}, choice.to_dict()
    global_model = solve_ridge(stats.total(), alphas["global"])
    experts: dict[str, RidgeModel | None] = {}
    for k, name in enumerate(names):
        if stats.n[k] >= max(cfg.evaluation.min_bin_samples, 1):
            experts[name] = solve_ridge(stats, alphas[name], k)
        else:
            experts[name] = None
            log.warning("bin %s: %d training spectra < min_bin_samples=%d, no expert; the global model serves it",
                        name, stats.n[k], cfg.evaluation.min_bin_samples)
    return global_model, experts, report


def _open(cfg: ExperimentConfig) -> tuple[list[ShardInfo], ShardInfo, ShardInfo | None]:
    """Inspect the training, test and (when alpha is chosen on it) validation shards: layout, dtypes,
    the params columns the run reads, and no file named twice; all before any pass."""
    train_paths = resolve_shards(cfg.data.root, cfg.data.train_shards)
    test_path = _one_file(cfg.data.root, cfg.data.test_file, "data.test_file")
    val_paths = []
    if not isinstance(cfg.model.alpha, float):
        if not cfg.data.val_file:
            raise InputError(f"model.alpha: {cfg.model.alpha!r} chooses alpha on a validation set; set data.val_file")
        val_paths = [_one_file(cfg.data.root, cfg.data.val_file, "data.val_file")]
    refuse_duplicates({"data.train_shards": train_paths, "data.test_file": [test_path], "data.val_file": val_paths})
    partition, target = cfg.partition, cfg.data.target
    columns = [] if partition.is_snr else list(partition.columns)  # routing columns of the table
    train_columns = columns + ["snr"] * (cfg.snr.method == "column")
    test_columns = train_columns + ["snr"] * (cfg.noise.test == "pre_noised")
    train = [inspect_shard(p, target, train_columns) for p in train_paths]
    test = inspect_shard(test_path, target, test_columns)
    val = [inspect_shard(p, target, train_columns) for p in val_paths]
    check_same_grid([*train, test, *val])
    check_feature_dim(cfg, train[0].d)
    for info, key in ((test, "data.test_file"), *((v, "data.val_file") for v in val)):
        check_r2_defined(info.params[target].to_numpy(), f"{info.path} ({key}, column {target!r})")
    return train, test, (val[0] if val else None)


def _one_file(root: str, pattern: str, key: str) -> Path:
    paths = resolve_shards(root, [pattern])
    if len(paths) != 1:
        raise InputError(f"{key}: {pattern!r} names {len(paths)} files ({paths[0]}, {paths[1]}, ...); expected one")
    return paths[0]


def run_experiment(cfg: ExperimentConfig, render: Render | None = None, progress: bool = True) -> dict:
    """Run the whole experiment of ``cfg``; returns the results dict also written to results.json.

    render: writes the human-readable outputs (figures, report) into the folder before it is
    published, e.g. ``snrmoe_dask.report.render.renderer("zh")``; None writes the data files only.
    """
    timer = Timer()
    with timer.phase("open"):
        train_infos, test_info, val_info = _open(cfg)
        spec = pass_spec(cfg, train_infos)
        log.info("training on %d shards, %s spectra x %d pixels", len(train_infos),
                 f"{sum(i.n for i in train_infos):,}", train_infos[0].d)
    cache = cache_dir(cfg)
    with compute_context(cfg.compute.scheduler, cfg.compute.workers, progress) as compute:
        with timer.phase("pass"):
            train = run_pass(cfg, spec, train_infos, compute, cache)
        val = None
        if val_info is not None:
            with timer.phase("validation pass"):
                val = run_pass(cfg, spec, [val_info], compute, cache, [VAL_SHARD_INDEX], label="validation")
    with timer.phase("solve"):
        global_model, experts, alpha_report = solve_models(cfg, train, val)
    with timer.phase("test"):
        test = load_test_set(cfg, test_info)
        results, predictions = evaluate(cfg, experts, global_model, train, test)
    if alpha_report is not None:
        results["alpha"] = alpha_report
    files = [i.path for i in (*train_infos, test_info, *([val_info] if val_info else []))]
    results["data"] = {"n_train": int(train.stats.n.sum()), "n_test": len(test.y), "pixels": train_infos[0].d,
                       "train_files": [str(i.path) for i in train_infos], "test_file": str(test_info.path),
                       "val_file": str(val_info.path) if val_info else None}
    results["config"] = config_to_dict(cfg)
    results["provenance"] = provenance(cfg, files)
    results["output_dir"] = str(cfg.output_dir)
    with timer.phase("write"), atomic_dir(cfg.output_dir) as partial:
        results["timings_s"] = dict(timer.timings)
        write_outputs(partial, results, predictions, global_model, experts, render)
    results["timings_s"] = timer.finish()
    write_json(cfg.output_dir / "results.json", results)
    log.info("results in %s", cfg.output_dir)
    return results


DEMO_TRAIN = (5, 20000)
DEMO_VAL = DEMO_TEST = 1000
DEMO_SEED = 20251226
DEMO_PIXELS = 4096


def demo_config_path() -> Path:
    return Path(__file__).resolve().parents[2] / "config" / "demo.yaml"


def ensure_demo_data(data_dir: Path = Path(".demo-data"), progress: bool = True) -> Path:
    """The demo set's root ``data_dir/demo``, simulated there once (5 x 20,000 train, 1,000 val,
    1,000 test, 4096 pixels); a ``COMPLETE`` marker, written last, says a finished set is there."""
    from ..io.simulate import simulate_set

    root = Path(data_dir) / "demo"
    marker = root / "COMPLETE"
    if not marker.exists():
        log.info("simulating the demo set into %s (once)", root)
        simulate_set(root, train=DEMO_TRAIN, val=DEMO_VAL, test=DEMO_TEST, seed=DEMO_SEED, pixels=DEMO_PIXELS,
                     progress=progress)
        marker.write_text("simulated by snrmoe demo\n")
    return root


def print_summary(results: dict) -> None:
    """The table users read first; then the deployable gate, the noisy-SNR baseline and the chosen
    alphas when the run has them."""
    from ..core.card import RHO_BAR

    def fmt(v, spec="{:.4f}"):
        return "   n/a" if v is None else spec.format(v)

    models = results["models"]
    g, o = models["global"], models["oracle"]
    w = max(14, *(len(f"- bin {name} *") + 1 for name in results["bins"]))  # grid cells have long names
    lines = [f"{results['experiment']}: {results['decision']}  "
             f"dR2 = {results['delta_r2']:+.4f} (threshold {results['threshold']})"
             + (f"  95% CI [{results['delta_r2_ci'][0]:+.4f}, {results['delta_r2_ci'][1]:+.4f}]"
                if results.get("delta_r2_ci") else ""),
             f"{'model':<{w}}{'R2':>8}{'MAE':>8}{'RMSE':>8}{'N_train':>11}{'N_test':>8}",
             f"{'Global Ridge':<{w}}{fmt(g['r2']):>8}{fmt(g['mae']):>8}{fmt(g['rmse']):>8}{g['n_train']:>11,}{g['n_test']:>8,}",
             f"{'Oracle MoE':<{w}}{fmt(o['r2']):>8}{fmt(o['mae']):>8}{fmt(o['rmse']):>8}{o['n_train']:>11,}{o['n_test']:>8,}"]
    for name, b in results["bins"].items():
        label = f"- bin {name}" + (" *" if b["skipped"] else "")
        lines.append(f"{label:<{w}}{fmt(b['expert']['r2']):>8}{fmt(b['expert']['mae']):>8}{fmt(b['expert']['rmse']):>8}"
                     f"{b['n_train']:>11,}{b['n_test']:>8,}   global R2 {fmt(b['global']['r2'])}"
                     f"   dR2 {fmt(b['delta_r2'], '{:+.4f}')}")
    if results.get("skipped_bins"):
        lines.append("* no expert (too few training spectra): served by the global model")
    gate = results.get("gate")
    if gate and "deployed" in models:
        d = models["deployed"]
        ci = d.get("r2_ci")
        headroom = g["r2"] is not None and o["r2"] is not None and o["r2"] > g["r2"]
        lines.append(f"deployed gate: R2 {fmt(d['r2'])}"
                     + (f" (95% CI [{ci[0]:.4f}, {ci[1]:.4f}])" if ci else "")
                     + f"  rho {fmt(gate.get('rho'), '{:.2f}')} (bar {RHO_BAR:g}"
                     + (")" if headroom else "; no oracle headroom, rho not meaningful)")
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
    lines += _repair_lines(results)
    lines.append(f"next step: {results['next_step']}")
    lines.append(f"wall time {results['timings_s']['total']:.1f} s; report: "
                 f"{Path(results.get('output_dir', '.')) / 'report.md'}")
    print("\n".join(lines))


def _repair_lines(results: dict) -> list[str]:
    """A line per set (training, test) whose repairs changed more than 0.1 % of its pixels."""
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
