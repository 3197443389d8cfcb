"""The driver: one pass over the training shards, every model solved, the test set routed and scored,
results, figures and report written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from .blockwork import PassResult, PassSpec, load_block
from .blocks import Block
from .cluster import compute_context
from .config import ExperimentConfig, check_feature_dim, config_to_dict, load_config
from .errors import InputError
from .graph import shard_graphs, total_graph
from .io import ShardInfo, aligned_block_rows, inspect_shards, resolve_shards
from .metrics import decision_for, regression_metrics
from .noise import add_noise
from .ridge import RidgeModel, solve_ridge
from .routing import oracle_route
from .snr import compute_snr

log = logging.getLogger(__name__)

SEGMENT_ROWS = 65536
SHIFT_ROWS = 1024  # rows whose mean is the shift c; fixed, so c does not depend on the block size
PACKAGES = ("snrmoe-dask", "numpy", "dask", "distributed", "xarray", "h5py", "pandas", "tables", "scikit-learn",
            "scipy", "matplotlib", "pydantic")


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


def _shift(info: ShardInfo, clip_flux: bool) -> np.ndarray:
    """(D,) the mean repaired noise-free flux of the first rows: the fixed shift c of DESIGN.md."""
    flux, _, _ = load_block(Block(str(info.path), 0, 0, min(info.n, SHIFT_ROWS)), clip_flux)
    return flux.mean(axis=0, dtype=np.float64)


def training_pass(cfg: ExperimentConfig, infos: list[ShardInfo], compute: Callable) -> PassResult:
    """The one pass over every training shard: per-bin statistics, repairs, SNR of every row."""
    target = cfg.data.target
    spec = PassSpec(
        bins=cfg.bins, snr_method=cfg.snr.method, level=cfg.noise.level, seed=cfg.noise.seed,
        c=_shift(infos[0], cfg.preprocessing.clip_flux),
        y0=float(np.mean(np.concatenate([i.params[target].to_numpy(np.float64) for i in infos]))),
        clip_flux=cfg.preprocessing.clip_flux, precision=cfg.compute.precision, noise_mode=cfg.noise.mode,
    )
    block_rows = aligned_block_rows(cfg.compute.block_rows, infos[0].chunk_rows)
    parts = shard_graphs([i.path for i in infos], [i.params[target].to_numpy(np.float64) for i in infos],
                         [i.params["snr"].to_numpy(np.float64) if "snr" in i.params else None for i in infos],
                         spec, block_rows, SEGMENT_ROWS)
    return compute(total_graph(parts))


def load_test_set(cfg: ExperimentConfig, info: ShardInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The test set in memory: noisy flux (N, D) float32, target (N,), SNR (N,).

    ``noise.test: fixed`` noises it once with ``add_noise(..., seed=noise.test_seed, shard=0, row0=0)``
    and takes the SNR from the noise-free flux; ``pre_noised`` uses the file's flux as it is (not
    clipped: the noise is already in it) and the table's ``snr`` column.
    """
    pre_noised = cfg.noise.test == "pre_noised"
    flux, error, _ = load_block(Block(str(info.path), 0, 0, info.n), clip_flux=cfg.preprocessing.clip_flux and not pre_noised)
    y = info.params[cfg.data.target].to_numpy(np.float64)
    level = cfg.noise.level
    if pre_noised:
        if "snr" not in info.params:
            raise InputError(f"{info.path}: noise.test is pre_noised but the params table has no 'snr' column")
        snr = compute_snr("column", flux, error, level, info.params["snr"].to_numpy(np.float64))
        return flux, y, snr
    table_snr = info.params["snr"].to_numpy(np.float64) if "snr" in info.params else None
    snr = compute_snr(cfg.snr.method, flux, error, level, table_snr)
    noisy = add_noise(flux, error, level, seed=cfg.noise.test_seed, shard=0, row0=0, out=flux)
    return noisy, y, snr


# ----------------------------------------------------------------------------- results
def _metrics_or_none(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    return regression_metrics(y_true, y_pred) if len(y_true) else {"r2": None, "mae": None, "rmse": None}


def evaluate(cfg: ExperimentConfig, models: dict[str, RidgeModel | None], global_model: RidgeModel,
             train: PassResult, x_test: np.ndarray, y_test: np.ndarray, snr_test: np.ndarray) -> tuple[dict, pd.DataFrame]:
    """Route the test set, score both models overall and per bin, decide. Returns (results, predictions)."""
    bins = cfg.bins
    bin_test = bins.assign(snr_test)
    y_global = global_model.predict(x_test)
    y_oracle = oracle_route(x_test, bin_test, [models[n] for n in bins.names], fallback=y_global)
    n_train = train.stats.n
    results_bins = {}
    for k, name in enumerate(bins.names):
        sel = bin_test == k
        expert = _metrics_or_none(y_test[sel], y_oracle[sel])
        glob = _metrics_or_none(y_test[sel], y_global[sel])
        delta = None if expert["r2"] is None or glob["r2"] is None else expert["r2"] - glob["r2"]
        results_bins[name] = {
            "low": float(bins.low[k]), "high": None if np.isinf(bins.high[k]) else float(bins.high[k]),
            "n_train": int(n_train[k]), "n_test": int(sel.sum()), "skipped": models[name] is None,
            "delta_r2": delta, "expert": expert, "global": glob,
            "alpha": None if models[name] is None else models[name].alpha,
        }
    m_global = regression_metrics(y_test, y_global)
    m_oracle = regression_metrics(y_test, y_oracle)
    delta_r2 = m_oracle["r2"] - m_global["r2"]
    decision, next_step = decision_for(delta_r2, cfg.evaluation.threshold)
    snr_train = train.snr_values
    results = {
        "experiment": cfg.experiment.id, "date": date.today().isoformat(),
        "decision": decision, "next_step": next_step, "threshold": cfg.evaluation.threshold, "delta_r2": delta_r2,
        "models": {
            "global": {**m_global, "n_train": int(n_train.sum()), "n_test": len(y_test), "alpha": global_model.alpha},
            "oracle": {**m_oracle, "n_train": int(n_train.sum()), "n_test": len(y_test)},
        },
        "bins": results_bins,
        "skipped_bins": [n for n in bins.names if models[n] is None],
        "snr": {"method": cfg.snr.method, "train_median": float(np.median(snr_train)), "train_max": float(snr_train.max()),
                "test_median": float(np.median(snr_test)), "test_max": float(snr_test.max())},
        "repairs": train.repairs.to_dict(),
    }
    predictions = pd.DataFrame({"y_true": y_test, "snr": snr_test, "bin": np.asarray(bins.names)[bin_test],
                                "y_global": y_global, "y_oracle": y_oracle})
    return results, predictions


def provenance(cfg: ExperimentConfig, files: list[Path]) -> dict:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "packages": versions, "git_commit": commit,
        "files": [{"path": str(p), "bytes": p.stat().st_size} for p in files],
        "seeds": {"noise.seed": cfg.noise.seed, "noise.test_seed": cfg.noise.test_seed},
        "config": config_to_dict(cfg),
    }


def metrics_dataset(results: dict):
    """The metrics as an xarray Dataset (model x bin x metric) for notebooks and dashboards."""
    import xarray as xr

    bins = list(results["bins"]) + ["overall"]
    metrics = ["r2", "mae", "rmse"]
    value = np.full((2, len(bins), len(metrics)), np.nan)
    for i, (model, side) in enumerate((("global", "global"), ("oracle", "expert"))):
        for j, b in enumerate(bins):
            src = results["models"][model] if b == "overall" else results["bins"][b][side]
            value[i, j] = [np.nan if src[m] is None else src[m] for m in metrics]
    n_train = [results["bins"][b]["n_train"] for b in bins[:-1]] + [results["models"]["global"]["n_train"]]
    n_test = [results["bins"][b]["n_test"] for b in bins[:-1]] + [results["models"]["global"]["n_test"]]
    return xr.Dataset(
        {"value": (("model", "bin", "metric"), value), "n_train": ("bin", n_train), "n_test": ("bin", n_test)},
        coords={"model": ["global", "oracle"], "bin": bins, "metric": metrics},
        attrs={"experiment": results["experiment"], "decision": results["decision"], "delta_r2": results["delta_r2"]},
    )


def save_models(path: Path, global_model: RidgeModel, experts: dict[str, RidgeModel | None]) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        global_model.save(f.create_group("global"))
        for name, model in experts.items():
            if model is not None:
                model.save(f.create_group(name))


@contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a hidden sibling folder; on success it replaces ``out`` in one rename, on error it is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(partial, out)
    shutil.rmtree(old, ignore_errors=True)


def write_outputs(out_dir: Path, results: dict, predictions: pd.DataFrame, global_model: RidgeModel,
                  experts: dict[str, RidgeModel | None], lang: str) -> None:
    from .plots import make_figures
    from .report import write_report

    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=_json_default))
    predictions.to_csv(out_dir / "predictions.csv", index=False)
    save_models(out_dir / "models.h5", global_model, experts)
    metrics_dataset(results).to_netcdf(out_dir / "metrics.nc")
    make_figures(results, predictions, out_dir / "img")
    write_report(results, out_dir, lang=lang)


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ----------------------------------------------------------------------------- entry points
def run_experiment(cfg: ExperimentConfig, lang: str = "zh", roadmap: Path | None = None, hub: Path | None = None,
                   progress: bool = True) -> dict:
    """Run the whole experiment of ``cfg``; returns the results dict also written to results.json."""
    timer = Timer()
    with timer.phase("open"):
        train_paths = resolve_shards(cfg.data.root, cfg.data.train_shards)
        test_path = resolve_shards(cfg.data.root, [cfg.data.test_file])[0]
        infos = inspect_shards([*train_paths, test_path], cfg.data.target)
        check_feature_dim(cfg, infos[0].d)
        train_infos, test_info = infos[:-1], infos[-1]
        log.info("training on %d shards, %s spectra x %d pixels", len(train_infos),
                 f"{sum(i.n for i in train_infos):,}", infos[0].d)
    with compute_context(cfg.compute.scheduler, cfg.compute.workers, progress) as compute:
        with timer.phase("pass"):
            train = training_pass(cfg, train_infos, compute)
    with timer.phase("solve"):
        global_model = solve_ridge(train.stats.total(), cfg.model.alpha)
        experts = {name: (solve_ridge(train.stats, cfg.model.alpha, bin=name)
                          if train.stats.n[k] >= cfg.evaluation.min_bin_samples else None)
                   for k, name in enumerate(cfg.bins.names)}
        for name, model in experts.items():
            if model is None:
                log.warning("bin %s: %d training spectra < min_bin_samples=%d, no expert; the global model serves it",
                            name, train.stats.n[cfg.bins.names.index(name)], cfg.evaluation.min_bin_samples)
    with timer.phase("test"):
        x_test, y_test, snr_test = load_test_set(cfg, test_info)
        results, predictions = evaluate(cfg, experts, global_model, train, x_test, y_test, snr_test)
    results["data"] = {"n_train": int(train.stats.n.sum()), "n_test": len(y_test), "pixels": infos[0].d,
                       "train_files": [str(p) for p in train_paths], "test_file": str(test_path)}
    results["config"] = config_to_dict(cfg)
    results["provenance"] = provenance(cfg, [*train_paths, test_path])
    out_dir = cfg.output_dir
    with timer.phase("write"), atomic_dir(out_dir) as partial:
        results["timings_s"] = dict(timer.timings)
        write_outputs(partial, results, predictions, global_model, experts, lang)
    results["timings_s"] = timer.finish()
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=_json_default))
    _update_tracking(results, roadmap, hub)
    log.info("results in %s", out_dir)
    return results


def _update_tracking(results: dict, roadmap: Path | None, hub: Path | None) -> None:
    from .report import hub_block, roadmap_block, update_tracking_block

    if roadmap:
        update_tracking_block(roadmap, results["experiment"], roadmap_block(results))
    if hub:
        update_tracking_block(hub, results["experiment"], hub_block(results))


def rebuild_report(results_dir: Path, lang: str = "zh") -> Path:
    """Figures and report.md again from results.json and predictions.csv alone."""
    from .plots import make_figures
    from .report import write_report

    try:
        results = json.loads((results_dir / "results.json").read_text())
        predictions = pd.read_csv(results_dir / "predictions.csv")
    except FileNotFoundError as exc:
        raise InputError(f"{exc.filename}: not found; expected the output folder of `snrmoe run`") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{results_dir / 'results.json'}: not valid JSON ({exc})") from None
    make_figures(results, predictions, results_dir / "img")
    return write_report(results, results_dir, lang=lang)


DEMO_TRAIN = (5, 20000)


def demo_config_path() -> Path:
    return Path(__file__).resolve().parent.parent / "config" / "demo.yaml"


def run_demo(data_dir: Path = Path(".demo-data"), lang: str = "zh", progress: bool = True) -> dict:
    """Simulate the demo set once (5 x 20,000 train, 1,000 val, 1,000 test), then run config/demo.yaml."""
    from .simulate import simulate_set

    root = data_dir / "demo"
    marker = root / "COMPLETE"
    if not marker.exists():
        log.info("simulating the demo set into %s (once)", root)
        simulate_set(root, train=DEMO_TRAIN, val=1000, test=1000, seed=20251226, pixels=4096, progress=progress)
        marker.write_text("simulated by snrmoe demo\n")
    cfg = load_config(demo_config_path(), [f"data.root={root}"])
    results = run_experiment(cfg, lang=lang, progress=progress)
    print_summary(results)
    return results


def print_summary(results: dict) -> None:
    """The table users read first."""
    def fmt(v, spec="{:.4f}"):
        return "   n/a" if v is None else spec.format(v)

    g, o = results["models"]["global"], results["models"]["oracle"]
    lines = [f"{results['experiment']}: {results['decision']}  "
             f"dR2 = {results['delta_r2']:+.4f} (threshold {results['threshold']})"
             + (f"  95% CI [{results['delta_r2_ci'][0]:+.4f}, {results['delta_r2_ci'][1]:+.4f}]"
                if results.get("delta_r2_ci") else ""),
             f"{'model':<14}{'R2':>8}{'MAE':>8}{'RMSE':>8}{'N_train':>11}{'N_test':>8}",
             f"{'Global Ridge':<14}{fmt(g['r2']):>8}{fmt(g['mae']):>8}{fmt(g['rmse']):>8}{g['n_train']:>11,}{g['n_test']:>8,}",
             f"{'Oracle MoE':<14}{fmt(o['r2']):>8}{fmt(o['mae']):>8}{fmt(o['rmse']):>8}{o['n_train']:>11,}{o['n_test']:>8,}"]
    for name, b in results["bins"].items():
        label = f"- bin {name}" + (" *" if b["skipped"] else "")
        lines.append(f"{label:<14}{fmt(b['expert']['r2']):>8}{fmt(b['expert']['mae']):>8}{fmt(b['expert']['rmse']):>8}"
                     f"{b['n_train']:>11,}{b['n_test']:>8,}   global R2 {fmt(b['global']['r2'])}"
                     f"   dR2 {fmt(b['delta_r2'], '{:+.4f}')}")
    if results.get("skipped_bins"):
        lines.append("* no expert (too few training spectra): served by the global model")
    lines.append(f"next step: {results['next_step']}")
    lines.append(f"wall time {results['timings_s']['total']:.1f} s; report: "
                 f"{Path(results['config']['output']['dir'] or '.') / 'report.md'}")
    print("\n".join(lines))
