"""The whole experiment, cold, against this machine's bound; and against scikit-learn and dask.

    python benchmarks/bench_full.py [--train 5x200000] [--test 1000] [--workdir bench-data/full]
        [--pixels 4096] [--block-rows 4096] [--workers CORES] [--compare-rows N|auto] [--skip-compare]
        [--memory-block-rows 16384] [--dask-ml-solver lbfgs] [--dask-ml-max-iter 100]
        [--lstsq-chunk-rows max(block rows, 4 D)] [--set KEY=VALUE]... [--resolve]

1. Simulates the set (K training shards of N spectra, one test shard) into
   ``WORKDIR/set-<K>x<N>-test<T>-<D>px/`` once, after checking the free disk space; reused after
   (a COMPLETE marker records what was simulated).
2. Measures gemm_rate and rng_rate (``machine.py``) in this run, and
   bound_s = 2 N D^2 / gemm_rate + N D / (rng_rate * cores) for the total N.
3. Runs LOGG-SNR-ORACLE-01 cold: ``run_experiment(load_config("config/oracle_snr.yaml", ...))`` on
   the set with ``compute.cache=false``, after fsync + posix_fadvise(DONTNEED) on every file of the
   set (page-cache residency is measured with mmap + mincore before and after the drop, and after
   the run). Wall time, peak RSS (``machine.PeakRSS``) and the run's own phase timings.
4. Prints a table, and as its last line one JSON object (wall_s, peak_rss_gb, bound_s, ratio =
   wall_s / bound_s, n_train, pixels, gemm_rate, rng_rate, ... and the comparisons). The same object
   is kept up to date in WORKDIR/bench_full.json after the run and after every comparison, so that
   a crash in a comparison loses nothing measured before it.
5. With --resolve: fills a statistics cache of the set (one run with the cache on, into
   WORKDIR/resolve-cache), then times the whole command ``snrmoe run ... --set model.alpha=ALPHA/2``
   in a fresh process, as a user re-solving would run it (resolve_s, resolve_timings_s: its phases).
6. Unless --skip-compare, on the first N training rows (N = --compare-rows, or the largest that fits
   in memory: ``bench_stats.sklearn_rows``) materialises the noisy matrix exactly as the pass sees
   it and times, each with its peak memory above the RSS just before it:
     a. ours on that same matrix: per-bin Gram sums over blocks of --memory-block-rows rows
        (--workers threads, one BLAS thread each) + the global model and every expert;
     b. scikit-learn make_pipeline(StandardScaler(), Ridge(alpha)) fit (one global model), with the
        time of each step;
     c. numpy's X.T @ X alone on the matrix (BLAS syrk, all cores): the product inside Ridge's
        cholesky solver, which any exact method must match, shown for scale;
     d. dask-ml LinearRegression(penalty="l2", C=1/(2 alpha)) on a dask array of the matrix;
     e. dask.array.linalg.lstsq (TSQR) on [X_scaled; sqrt(alpha) I], [y - mean(y); 0], one column
        chunk, blocks of max(block rows, 4 D) rows (square blocks: twice the time, 3x the memory);
     f. ours from the shard files, cold (page cache dropped; reading and noise included) + all models.
   Ratios are against (a), and ours / scikit-learn is printed for (a) and (f); max |prediction -
   ours| / std(y) on 1000 training rows checks each fit. scikit-learn and (c) run with BLAS's own
   threads on all cores; ours runs --workers threads of one BLAS thread each, and the dask fits
   (d, e) --workers dask threads with cores // workers BLAS threads each (BLAS threads under every
   dask thread oversubscribe the cores: dask's lstsq ran 6-10x slower that way on 2 cores).
   A fit whose expected memory (NEED_BYTES_PER_ND, measured) exceeds 85 % of the available memory is
   skipped with a message naming a --compare-rows that would fit: lstsq needs about 6x the matrix,
   so at the auto N (sized for scikit-learn) it is usually skipped on a big run.

dask-ml's objective is sum (y - X b)^2 + (1/C) ||b||^2 / 2 (dask_glm Normal family + L2
regulariser), so C = 1 / (2 alpha) is scikit-learn's Ridge(alpha). Its solvers standardise X
themselves (dask_glm ``normalize``, ddof 0, as StandardScaler) and penalise the intercept too, so it
is fitted to y - mean(y), for which the optimal intercept is 0 either way.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import resource
import shutil
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import psutil
from machine import (
    usable_cores,
    PeakRSS,
    blas_kernel,
    cpu_model,
    bound_s,
    drop_page_cache,
    gemm_rate,
    resident_bytes,
    rng_rate,
    trim_heap,
)
from threadpoolctl import threadpool_limits

from snrmoe_dask.errors import ConfigError

try:
    from snrmoe_dask.core.card_defaults import ALPHA as CARD_ALPHA
    from snrmoe_dask.experiment.config_file import load_config
except ImportError:  # the release before 2026-12 (e1ebf4f), for alternating runs against it
    from snrmoe_dask.core.card import ALPHA as CARD_ALPHA
    from snrmoe_dask.experiment.config import load_config
from snrmoe_dask.io.simulate import count_label, simulate_set

ROOT = Path(__file__).resolve().parent.parent
GB = 1024 ** 3
SEED = 7  # the simulated set's seed (as bench_stats)
PREDICT_ROWS = 1000  # rows on which every method's predictions are compared with ours
# Peak memory above the resident matrix, in bytes per N x D, measured here (D = 1024, N = 8k..64k; and
# N = 20k, D = 4096) with some margin: a fit that would not fit in the available memory is skipped.
NEED_BYTES_PER_ND = {"sklearn": 10, "dask_ml": 8, "dask_lstsq": 24}


# ----------------------------------------------------------------------------- arguments
def parse_train(text: str) -> tuple[int, int]:
    """'5x200000' or '5x200k' -> (5, 200000)."""
    try:
        k, _, n = text.lower().partition("x")
        n = n.strip()
        rows = int(float(n[:-1]) * 1000) if n.endswith("k") else int(n)
        shards = int(k)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--train {text!r}: expected SHARDSxROWS, e.g. 5x200000") from None
    if shards < 1 or rows < 1:
        raise argparse.ArgumentTypeError(f"--train {text!r}: shards and rows must be >= 1")
    return shards, rows


def parse_compare(text: str) -> int | None:
    if text.strip().lower() == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--compare-rows {text!r}: expected a number of rows or 'auto'") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"--compare-rows {text!r}: must be >= 1")
    return n


# ----------------------------------------------------------------------------- the data set
def set_paths(root: Path, shards: int, rows: int, test: int) -> tuple[list[Path], Path]:
    train = [root / f"train_{count_label(rows)}_{i}" / "dataset.h5" for i in range(shards)]
    return train, root / f"test_{count_label(test)}_0" / "dataset.h5"


def set_bytes(shards: int, rows: int, test: int, pixels: int) -> int:
    """Bytes the set takes on disk: flux + error float32, uncompressed, plus the params table and slack."""
    spectra = shards * rows + test
    return int((spectra * pixels * 8 + spectra * 80 + (shards + 1) * 2 ** 20) * 1.02)


def free_bytes(path: Path) -> int:
    probe = path.resolve()
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def ensure_set(workdir: Path, shards: int, rows: int, test: int, pixels: int) -> tuple[Path, list[Path], Path]:
    """Simulate the set once into WORKDIR/set-...; reuse it when its COMPLETE marker matches."""
    root = workdir / f"set-{shards}x{count_label(rows)}-test{count_label(test)}-{pixels}px"
    train, test_path = set_paths(root, shards, rows, test)
    want = {"train": [shards, rows], "test": test, "pixels": pixels, "seed": SEED}
    marker = root / "COMPLETE"
    if marker.exists() and all(p.exists() for p in (*train, test_path)):
        try:
            if json.loads(marker.read_text()) == want:
                print(f"data: reusing {root} ({sum(p.stat().st_size for p in (*train, test_path)) / GB:.2f} GB)")
                return root, train, test_path
        except (OSError, json.JSONDecodeError):
            pass
    need = set_bytes(shards, rows, test, pixels)
    present = sum(p.stat().st_size for p in (*train, test_path) if p.exists())  # overwritten in place
    free = free_bytes(workdir)
    if need - present > free:
        fit = max(0, int(0.9 * (free + present) / 1.02 / (pixels * 8 + 80)) - test)  # leave 10 % free
        per = fit // shards
        hint = (f"e.g. --train {shards}x{per // 1000 * 1000 or per}" if per >= 1 else "free some space")
        raise SystemExit(f"bench_full: the set {shards}x{rows:,} + {test:,} test spectra of {pixels} pixels needs "
                         f"{need / GB:.1f} GB but {root.parent} has {(free + present) / GB:.1f} GB free "
                         f"(incl. {present / GB:.1f} GB of an incomplete earlier set); use a smaller --train, "
                         f"{hint}, or another --workdir")
    print(f"data: simulating {shards} x {rows:,} train + {test:,} test spectra of {pixels} pixels into {root} "
          f"({need / GB:.2f} GB; {free / GB:.1f} GB free) ...", flush=True)
    marker.unlink(missing_ok=True)
    start = time.perf_counter()
    simulate_set(root, train=(shards, rows), val=0, test=test, seed=SEED, pixels=pixels,
                 workers=usable_cores(), progress=True)
    marker.write_text(json.dumps(want) + "\n")
    print(f"data: simulated in {time.perf_counter() - start:.1f} s")
    return root, train, test_path


# ----------------------------------------------------------------------------- the experiment
CONFIG = ROOT / "config" / "oracle_snr.yaml"


def set_overrides(root: Path, shards: int, rows: int, test: int, pixels: int, block_rows: int, workers: int,
                  out: Path) -> list[str]:
    """The --set overrides that point config/oracle_snr.yaml at the simulated set."""
    return [
        f"data.root={json.dumps(str(root))}",
        f"data.train_shards={json.dumps([f'train_{count_label(rows)}_{{0..{shards - 1}}}/dataset.h5'])}",
        f"data.test_file={json.dumps(f'test_{count_label(test)}_0/dataset.h5')}",
        "data.val_file=null",
        f"data.feature_dim={pixels}",
        f"output.dir={json.dumps(str(out))}",
        f"compute.block_rows={block_rows}",
        f"compute.workers={workers}",
    ]


def experiment_config(root: Path, shards: int, rows: int, test: int, pixels: int, block_rows: int, workers: int,
                      out: Path, extra: list[str] = ()):
    """config/oracle_snr.yaml pointed at the simulated set, then the ``extra`` overrides (e.g.
    evaluation.scaling=true), cache off. Returns (cfg, cache_note)."""
    overrides = [*set_overrides(root, shards, rows, test, pixels, block_rows, workers, out), *extra,
                 "compute.cache=false"]
    path = CONFIG
    try:
        return load_config(path, overrides), "compute.cache=false"
    except ConfigError as exc:
        if "compute.cache" not in str(exc) or "unknown key" not in str(exc):
            raise
    # a version of the package without the compute.cache key: the cache is on only with compute.cache_dir
    cfg = load_config(path, overrides[:-1])
    if cfg.compute.cache_dir:
        raise SystemExit(f"bench_full: this version has no compute.cache key and compute.cache_dir is "
                         f"{cfg.compute.cache_dir!r}: the run would not be cold")
    return cfg, "compute.cache_dir=null (this version has no compute.cache key)"


def residency(paths: list[Path]) -> str:
    r = resident_bytes(paths)
    if r is None:
        return "n/a (mincore unavailable)"
    return f"{r[0] / GB:.2f} of {r[1] / GB:.2f} GB ({100 * r[0] / max(r[1], 1):.0f} %)"


def cold(paths: list[Path]) -> dict:
    """Drop the files' pages from the page cache; say what was resident before and after."""
    before = residency(paths)
    problems = drop_page_cache(paths)
    after = residency(paths)
    return {"fadvise_dontneed": "issued" if not problems else "failed: " + "; ".join(problems),
            "resident_before": before, "resident_after_drop": after}


def snrmoe_run(overrides: list[str]) -> list[str]:
    """The ``snrmoe run`` command line of CONFIG with ``--set`` overrides, in a fresh interpreter that
    imports the package PYTHONPATH names (``-P``: not one in the working folder, which ``-m`` would put
    first, so that runs of another release's checkout measure that release)."""
    return [sys.executable, "-P", "-m", "snrmoe_dask.cli", "run", str(CONFIG), "-q",
            *(arg for o in overrides for arg in ("--set", o))]


def run_command(overrides: list[str], files: list[Path], out: Path) -> dict:
    """The whole ``snrmoe run`` command in a fresh process, cold, timed from its start to its exit as a
    user times it (interpreter, imports, the run, figures, report); its peak RSS and its results."""
    page = cold(files)
    cmd = snrmoe_run([*overrides, "compute.cache=false"])
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, child = 0, psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, child.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench_full: snrmoe run exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
    page["resident_after_run"] = residency(files)
    results = json.loads((out / "results.json").read_text())
    return {"wall_s": wall, "peak_rss": peak, "base_rss": 0, "results": results, "page_cache": page}


def run_cold(cfg, files: list[Path]) -> dict:
    from snrmoe_dask.experiment.driver import run_experiment
    from snrmoe_dask.report.render import renderer

    page = cold(files)
    print(f"cold: posix_fadvise(DONTNEED) {page['fadvise_dontneed']} on {len(files)} files; resident before "
          f"{page['resident_before']}, after {page['resident_after_drop']}", flush=True)
    gc.collect()
    trim_heap()
    base = psutil.Process().memory_info().rss
    with PeakRSS(children=cfg.compute.scheduler not in ("threads", "sync")) as rss:
        start = time.perf_counter()
        results = run_experiment(cfg, render=renderer("zh"), progress=False)
        wall = time.perf_counter() - start
    page["resident_after_run"] = residency(files)
    return {"wall_s": wall, "peak_rss": rss.peak, "base_rss": base, "results": results, "page_cache": page}


# ----------------------------------------------------------------------------- the comparisons
def resolve(overrides: list[str], files: list[Path], workdir: Path, alpha: float) -> dict:
    """Re-solve from the cache: fill a cache of this set (a run with compute.cache on, into
    WORKDIR/resolve-cache, emptied first), then time the whole ``snrmoe run`` command with a new
    model.alpha in a fresh process: interpreter start, imports, cache load, solves, test, figures,
    report. Returns fill_s and its peak RSS, resolve_s, and the phase tables of both."""
    from snrmoe_dask.io.cache import clear_cache

    cache = workdir / "resolve-cache"
    clear_cache(cache)
    common = [*overrides, "compute.cache=true", f"compute.cache_dir={json.dumps(str(cache))}"]
    out = {}
    for step, extra in (("fill", []), ("resolve", [f"model.alpha={alpha:g}"])):
        drop_page_cache(files)
        cmd = snrmoe_run([*common, *extra, f"output.dir={json.dumps(str(workdir / 'results' / step))}"])
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        out[f"{step}_s"] = round(time.perf_counter() - start, 3)
        if proc.returncode != 0:
            return {**out, "error": f"{step}: exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}
        results = json.loads((workdir / "results" / step / "results.json").read_text())
        out[f"{step}_timings_s"] = results.get("timings_s", {})
        if "total" in out[f"{step}_timings_s"]:  # the command's time outside the pipeline's own phases
            out[f"{step}_dead_s"] = round(out[f"{step}_s"] - out[f"{step}_timings_s"]["total"], 3)
        if step == "fill":  # the largest child so far: the fill run (peak RSS with the cache on)
            out["fill_peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / GB, 3)
    print(f"re-solve from the cache (model.alpha={alpha:g}), whole command: {out['resolve_s']:.2f} s; "
          f"phases {out['resolve_timings_s']} (filling the cache took {out['fill_s']:.1f} s, peak RSS "
          f"{out['fill_peak_rss_gb']:.2f} GB)", flush=True)
    return out


def first_rows(train_paths: list[Path], n: int, target: str):
    """ShardInfos of the first n training rows, in shard order (the last one cut short)."""
    from snrmoe_dask.io.shards import inspect_shards

    out, left = [], n
    for info in inspect_shards(train_paths, target):
        if left <= 0:
            break
        m = min(info.n, left)
        out.append(info if m == info.n else
                   dataclasses.replace(info, n=m, params=info.params.iloc[:m].reset_index(drop=True)))
        left -= m
    return out


def materialise(infos, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The noisy training matrix (N, D) float32, target (N,) float64 and bin of every row (N,), exactly
    as the pass sees them: read, repair (clip), SNR of the noise-free flux, noise from (noise.seed,
    shard position k, row)."""
    from snrmoe_dask.core.noise import add_noise
    from snrmoe_dask.core.repair import repair_block
    from snrmoe_dask.core.snr import compute_snr
    from snrmoe_dask.io.shards import read_rows

    if cfg.noise.mode != "sample" or not cfg.partition.is_snr:
        raise ValueError("the comparisons need sampled noise and an SNR partition")
    n, d = sum(i.n for i in infos), infos[0].d
    x = np.empty((n, d), dtype=np.float32)
    y = np.empty(n, dtype=np.float64)
    bins = np.empty(n, dtype=np.intp)
    row = 0
    for k, info in enumerate(infos):
        table_snr = info.params["snr"].to_numpy(np.float64) if "snr" in info.params else None
        for start in range(0, info.n, 8192):
            stop = min(info.n, start + 8192)
            flux, error = read_rows(info.path, start, stop)
            repair_block(flux, error, clip_flux=cfg.preprocessing.clip_flux)
            snr = compute_snr(cfg.snr.method, flux, error, cfg.noise.level,
                              None if table_snr is None else table_snr[start:stop])
            bins[row + start:row + stop] = cfg.partition.assign(snr)
            add_noise(flux, error, cfg.noise.level, seed=cfg.noise.seed, shard=k, row0=start,
                      out=x[row + start:row + stop])
        y[row:row + info.n] = info.params[cfg.data.target].to_numpy(np.float64)
        row += info.n
    return x, y, bins


def measured(fn):
    """(result, seconds, peak RSS above the RSS just before) of fn(); the heap is trimmed first so that
    memory freed by an earlier fit but kept by malloc does not hide this fit's growth."""
    gc.collect()
    trim_heap()
    base = psutil.Process().memory_info().rss
    with PeakRSS() as rss:
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
    return out, seconds, max(0, rss.peak - base)


def fit_sklearn(x, y, alpha, parts: dict):
    """make_pipeline(StandardScaler(), Ridge(alpha)).fit, step by step; parts gets each step's seconds."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), Ridge(alpha=alpha))
    start = time.perf_counter()
    scaled = model[0].fit_transform(x)
    parts["scaler_s"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    model[1].fit(scaled, y)
    parts["ridge_s"] = round(time.perf_counter() - start, 3)
    return model.predict


def gram_only(x):
    """numpy's X.T @ X (BLAS syrk, all cores): the product inside Ridge's cholesky solver, alone."""
    x.T @ x
    return None


def fit_ours_in_memory(x, y, bins, names, alpha, workers: int, block_rows: int):
    """Our statistics of the in-memory matrix (per-bin Gram sums, ``workers`` threads of one BLAS thread,
    one contiguous segment each, summed in order) + the global model and every expert.

    block_rows: rows per BinStats.add_block call. In memory there are no read buffers to keep small, so
    blocks can be larger than the pass's: each bin's product then runs over more rows (16,384-row
    blocks made the products 8 % faster than 4096-row ones here)."""
    from concurrent.futures import ThreadPoolExecutor

    from snrmoe_dask.core.ridge import solve_ridge
    from snrmoe_dask.core.stats import BinStats

    n = len(y)
    c, y0 = x[:1024].mean(axis=0, dtype=np.float64), float(y[:1024].mean())

    def segment(a: int, b: int) -> BinStats:
        stats = BinStats.zeros(names, c, y0)
        for i in range(a, b, block_rows):
            j = min(b, i + block_rows)
            stats.add_block(x[i:j], y[i:j], bins[i:j], mirror=False)
        stats.mirror()
        return stats

    edges = np.linspace(0, n, workers + 1).astype(int)
    with threadpool_limits(1), ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(segment, edges[:-1], edges[1:]))
    total = parts[0]
    for part in parts[1:]:
        total += part
    global_model = solve_ridge(total.total(), alpha)
    experts = [solve_ridge(total, alpha, k) for k in range(total.n_bins) if total.n[k] > 0]
    return global_model.predict, len(experts)


def fit_dask_ml(x, y, alpha, block_rows, solver, max_iter):
    import dask.array as da
    from dask_ml.linear_model import LinearRegression

    ybar = float(y.mean())
    X = da.from_array(x, chunks=(block_rows, x.shape[1]))
    Y = da.from_array(y - ybar, chunks=(block_rows,))
    model = LinearRegression(penalty="l2", C=1.0 / (2.0 * alpha), fit_intercept=True, solver=solver,
                             max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # dask_glm sets a deprecated dask key
        model.fit(X, Y)
    coef, intercept = np.asarray(model.coef_, dtype=np.float64), float(model.intercept_)
    return lambda rows: rows.astype(np.float64) @ coef + intercept + ybar


def fit_lstsq(x, y, alpha, block_rows, chunk_rows):
    """chunk_rows: rows per TSQR block (one column chunk). Blocks much taller than wide keep the
    stacked R factors small: at 4 D rows the fit took half the time and a third of the memory of
    square blocks (D = 1024, N = 32768)."""
    import dask.array as da

    n, d = x.shape
    ybar = float(y.mean())
    X = da.from_array(x, chunks=(block_rows, d))
    mean, std = da.compute(X.mean(axis=0, dtype=np.float64), X.astype(np.float64).std(axis=0))
    scale = np.where(std < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0), 1.0, std)
    Xs = (X.astype(np.float64) - mean) / scale
    A = da.concatenate([Xs, math.sqrt(alpha) * da.eye(d, chunks=d, dtype=np.float64)], axis=0)
    b = da.concatenate([da.from_array(y - ybar, chunks=(block_rows,)), da.zeros(d, chunks=d)])
    A = A.rechunk({0: max(chunk_rows, d), 1: -1})  # TSQR: one column chunk, blocks at least as tall as wide
    b = b.rechunk({0: A.chunks[0]})
    w = da.linalg.lstsq(A, b)[0].compute()
    coef = w / scale
    intercept = ybar - float(mean @ coef)
    return lambda rows: rows.astype(np.float64) @ coef + intercept


def our_fit(cfg, infos, workers: int):
    """The pass over ``infos`` (page cache dropped first) + the global model and every expert."""
    from snrmoe_dask import BinnedRidge, bin_statistics, open_shards
    from snrmoe_dask.engine.cluster import compute_context
    from snrmoe_dask.experiment import plan

    ds = open_shards([i.path for i in infos], target=cfg.data.target, block_rows=cfg.compute.block_rows,
                     max_rows=sum(i.n for i in infos))
    with compute_context("threads", workers, progress=False) as compute:
        train = compute(bin_statistics(ds, **plan.pass_options(cfg)))
    model = BinnedRidge(**plan.model_options(cfg)).fit(train)
    return model.global_.predict, sum(e is not None for e in model.experts_.values())


def compare(cfg, train_paths: list[Path], n: int, args, save=lambda out: None) -> dict:
    """The four fits on the first n training rows; every failure is reported, none is fatal.
    save(partial result) is called after each fit."""
    import dask

    alpha = cfg.model.alpha
    if not isinstance(alpha, float):
        return {"error": f"model.alpha={alpha!r}: the comparisons need one fixed alpha"}
    start = time.perf_counter()
    try:
        infos = first_rows(train_paths, n, cfg.data.target)
        x, y, bins = materialise(infos, cfg)
    except (Exception, MemoryError) as exc:  # noqa: BLE001
        traceback.print_exc(limit=3, file=sys.stderr)
        return {"n": n, "error": f"materialising the matrix failed: {type(exc).__name__}: {exc}".splitlines()[0]}
    out: dict = {"n": n, "materialise_s": round(time.perf_counter() - start, 3),
                 "matrix_gb": round(x.nbytes / GB, 3), "std_y": float(y.std())}
    rows, ystd = x[:PREDICT_ROWS].copy(), float(y.std())
    d = x.shape[1]
    lstsq_rows = args.lstsq_chunk_rows or max(args.block_rows, 4 * d)
    out["lstsq_chunk_rows"] = lstsq_rows
    sk_parts: dict = {}
    methods = [
        ("ours_memory", "ours: same matrix, global + experts",
         lambda: fit_ours_in_memory(x, y, bins, cfg.partition.names, alpha, args.workers, args.memory_block_rows)),
        ("sklearn", "scikit-learn StandardScaler+Ridge", lambda: fit_sklearn(x, y, alpha, sk_parts)),
        ("gram", "numpy X.T @ X alone (inside Ridge's solver)", lambda: gram_only(x)),
        ("dask_ml", f"dask-ml LinearRegression l2 ({args.dask_ml_solver})",
         lambda: fit_dask_ml(x, y, alpha, args.block_rows, args.dask_ml_solver, args.dask_ml_max_iter)),
        ("dask_lstsq", "dask.array.linalg.lstsq (TSQR)",
         lambda: fit_lstsq(x, y, alpha, args.block_rows, lstsq_rows)),
    ]
    preds = {}
    blas = max(1, usable_cores() // max(1, args.workers))
    with dask.config.set(scheduler="threads", num_workers=args.workers):
        for key, label, fn in methods:
            print(f"compare: {label} on N={n:,} ...", flush=True)
            # the dask fits get the BLAS threads per worker that our pass gets: with BLAS's own threads
            # under every dask thread, OpenBLAS oversubscribes the cores (lstsq 6-10x slower here)
            limit = None if key in ("sklearn", "gram", "ours_memory") else blas
            need, free = NEED_BYTES_PER_ND.get(key, 0) * n * d, psutil.virtual_memory().available
            if need > 0.85 * free:  # an OOM kill would lose every result: skip instead
                fits = int(0.85 * free / ((NEED_BYTES_PER_ND[key] + 4) * d))
                out[key] = {"label": label, "error": f"skipped: needs about {need / GB:.1f} GB on top of the "
                            f"matrix, {free / GB:.1f} GB available; --compare-rows {fits} would fit"}
                print(f"compare: {out[key]['error']}", flush=True)
                save(out)
                continue
            try:
                with threadpool_limits(limit):
                    fitted, seconds, peak = measured(fn)
                predict, n_experts = fitted if isinstance(fitted, tuple) else (fitted, None)
                if predict is not None:
                    preds[key] = predict(rows)
                out[key] = {"label": label if n_experts is None else label.replace("experts", f"{n_experts} experts"),
                            "time_s": round(seconds, 3), "peak_gb": round(peak / GB, 3), "peak_bytes": int(peak)}
                if key == "sklearn":
                    out[key].update(sk_parts)
            except BaseException as exc:  # noqa: BLE001 - report, never crash (MemoryError included)
                if isinstance(exc, KeyboardInterrupt):
                    raise
                out[key] = {"label": label, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
                traceback.print_exc(limit=3, file=sys.stderr)
            gc.collect()
            save(out)
    del x, y, bins
    gc.collect()
    print(f"compare: ours (pass from the files + all models, cold) on N={n:,} ...", flush=True)
    paths = sorted({i.path for i in infos})
    try:
        page = cold(paths)
        (predict, n_experts), seconds, peak = measured(lambda: our_fit(cfg, infos, args.workers))
        preds["ours_cold"] = predict(rows)
        out["ours_cold"] = {"label": f"ours: files, cold (noise + pass) + {n_experts} experts",
                            "time_s": round(seconds, 3), "peak_gb": round(peak / GB, 3), "peak_bytes": int(peak),
                            "page_cache": page}
    except Exception as exc:  # noqa: BLE001
        out["ours_cold"] = {"label": "ours: files, cold", "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
        traceback.print_exc(limit=3, file=sys.stderr)
    ours = out["ours_memory"]
    for key in ("ours_cold", "sklearn", "gram", "dask_ml", "dask_lstsq"):
        r = out[key]
        if "error" in r or "error" in ours:
            continue
        r["time_ratio"] = round(r["time_s"] / ours["time_s"], 3) if ours["time_s"] > 0 else None
        # None: ours grew the RSS by under 1 MiB (nothing measurable at 20 ms sampling)
        r["mem_ratio"] = round(r["peak_bytes"] / ours["peak_bytes"], 3) if ours["peak_bytes"] >= 2 ** 20 else None
        if key in preds:
            r["max_dpred_over_std_y"] = float(np.abs(preds[key] - preds["ours_memory"]).max() / ystd)
    sk = out["sklearn"]
    if "error" not in sk:
        for key in ("ours_memory", "ours_cold"):
            if "error" not in out[key]:
                out[f"{key}_over_sklearn"] = round(out[key]["time_s"] / sk["time_s"], 3)
    return out


# ----------------------------------------------------------------------------- output
def fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def print_table(summary: dict) -> None:
    s = summary
    print()
    print(f"machine: {s['cpu']}, {s['cores']} cores, gemm_rate {s['gemm_rate'] / 1e9:.1f} GFLOP/s (float32 X.T@X on "
          f"{s['block_rows']}x{s['pixels']}), rng_rate {s['rng_rate'] / 1e6:.0f} M/s (float32, 1 thread); "
          f"BLAS {s['blas']}")
    if s.get("whole_command"):
        print(f"whole command (start to exit): {s['wall_s']:.2f} s, of which outside the pipeline's own "
              f"timings_s.total: {s['dead_s']:.2f} s")
    head = f"{'N':>12} {'D':>6} {'wall_s':>9} {'bound_s':>9} {'wall/bound':>10} {'peak_RSS_GB':>11} {'us/spectrum':>11}"
    print(head)
    print(f"{s['n_train']:>12,} {s['pixels']:>6} {s['wall_s']:>9.2f} {s['bound_s']:>9.2f} {s['ratio']:>10.2f} "
          f"{s['peak_rss_gb']:>11.2f} {s['us_per_spectrum']:>11.1f}")
    phases = "  ".join(f"{k} {v:.2f}" for k, v in s["timings_s"].items())
    print(f"phases (s): {phases}")
    if "pass" in s["timings_s"]:
        p = s["timings_s"]["pass"]
        print(f"pass: {p:.2f} s = {1e6 * p / s['n_train']:.1f} us/spectrum; bound/pass = {s['bound_s'] / p:.3f}")
    pc = s["page_cache"]
    print(f"cold: fadvise DONTNEED {pc['fadvise_dontneed']}; set resident before drop {pc['resident_before']}, "
          f"after drop {pc['resident_after_drop']}, after run {pc['resident_after_run']}; cache: {s['cache']}")
    print(f"experiment: {s['decision']}  dR2 = {fmt(s['delta_r2'], '+.4f')}; results in {s['output_dir']}")
    c = s.get("compare")
    if not c:
        return
    print()
    if "error" in c and "ours" not in c:
        print(f"comparisons: {c['error']}")
        return
    print(f"comparisons on the first N={c['n']:,} training rows (matrix {c['matrix_gb']:.2f} GB in memory, "
          f"materialised in {c['materialise_s']:.1f} s, not counted); peak = RSS above the RSS before the fit")
    print(f"{'method':<50} {'time_s':>9} {'time/ours':>9} {'peak_GB':>8} {'mem/ours':>8} {'max|dpred|/std(y)':>17}")
    print(f"{'':<50} {'':>9} {'':>9} {'(+RSS)':>8}")
    for key in ("ours_memory", "ours_cold", "sklearn", "gram", "dask_ml", "dask_lstsq"):
        r = c.get(key, {})
        if "error" in r:
            print(f"{r.get('label', key):<50} error: {r['error']}")
            continue
        ours = key == "ours_memory"
        print(f"{r['label']:<50} {r['time_s']:>9.2f} {'1' if ours else fmt(r.get('time_ratio'), '.2f'):>9} "
              f"{r['peak_gb']:>8.3f} {'1' if ours else fmt(r.get('mem_ratio'), '.2f'):>8} "
              f"{'-' if ours or 'max_dpred_over_std_y' not in r else fmt(r['max_dpred_over_std_y'], '.1e'):>17}")
    sk = c.get("sklearn", {})
    if "scaler_s" in sk:
        print(f"scikit-learn's steps: StandardScaler.fit_transform {sk['scaler_s']:.2f} s, Ridge.fit {sk['ridge_s']:.2f} s")
    for key, what in (("ours_memory_over_sklearn", "ours (same matrix)"), ("ours_cold_over_sklearn", "ours (files, cold)")):
        if key in c:
            print(f"{what} / scikit-learn = {c[key]:.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=parse_train, default=(5, 200_000), help="SHARDSxROWS (5x200000)")
    ap.add_argument("--test", type=int, default=1000, help="test spectra (1000)")
    ap.add_argument("--workdir", type=Path, default=ROOT / "bench-data" / "full",
                    help="holds the simulated set (reused) and results/cold (bench-data/full)")
    ap.add_argument("--pixels", type=int, default=4096)
    ap.add_argument("--block-rows", type=int, default=4096, help="compute.block_rows, and the dask chunks (4096)")
    ap.add_argument("--workers", type=int, default=usable_cores(), help="compute.workers (default: cores)")
    ap.add_argument("--compare-rows", type=parse_compare, default=None,
                    help="N for the comparisons, or 'auto' (default): the largest that fits in memory")
    ap.add_argument("--skip-compare", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for the experiment run, e.g. evaluation.scaling=true (repeatable)")
    ap.add_argument("--command", action="store_true",
                    help="run the experiment as the whole `snrmoe run` command in a fresh process: wall_s from its "
                         "start to its exit, beside its own timings_s.total (dead_s: the difference)")
    ap.add_argument("--resolve", action="store_true",
                    help="also time a re-solve from the cache with a new model.alpha, whole command (resolve_s)")
    ap.add_argument("--memory-block-rows", type=int, default=16384,
                    help="rows per block of ours on the in-memory matrix (16384)")
    ap.add_argument("--dask-ml-solver", default="lbfgs",
                    choices=["lbfgs", "admm", "proximal_grad", "gradient_descent", "newton"])
    ap.add_argument("--dask-ml-max-iter", type=int, default=100)
    ap.add_argument("--lstsq-chunk-rows", type=int, default=None,
                    help="rows per TSQR block of the lstsq comparison (default: max(block rows, 4 x pixels))")
    # lbfgs, not dask-ml's default admm: admm took 321 s on 12,000 x 512 and missed the Ridge solution by
    # 0.2 std(y); lbfgs took ~1 s and matched scikit-learn to 2e-6 std(y)
    args = ap.parse_args()
    shards, rows = args.train
    n_total = shards * rows

    root, train_paths, test_path = ensure_set(args.workdir, shards, rows, args.test, args.pixels)
    out = args.workdir / "results" / "cold"
    overrides = set_overrides(root, shards, rows, args.test, args.pixels, args.block_rows, args.workers, out)
    cfg, cache_note = experiment_config(root, shards, rows, args.test, args.pixels, args.block_rows, args.workers,
                                        out, args.set)

    gemm, rng = gemm_rate(args.block_rows, args.pixels), rng_rate()
    bound = bound_s(n_total, args.pixels, gemm, rng)
    gc.collect()
    print(f"machine: gemm_rate {gemm / 1e9:.1f} GFLOP/s, rng_rate {rng / 1e6:.0f} M/s; bound for "
          f"N={n_total:,} x D={args.pixels}: {bound:.2f} s", flush=True)
    print(f"run: {CONFIG} cold ({cache_note}), workers {args.workers}, "
          f"block_rows {args.block_rows} -> {out}", flush=True)
    run = (run_command([*overrides, *args.set], [*train_paths, test_path], out) if args.command
           else run_cold(cfg, [*train_paths, test_path]))
    results = run["results"]
    n_train = int(results.get("data", {}).get("n_train", n_total))
    summary = {
        "wall_s": round(run["wall_s"], 3), "peak_rss_gb": round(run["peak_rss"] / GB, 3),
        "bound_s": round(bound, 3), "ratio": round(run["wall_s"] / bound, 3),
        "n_train": n_train, "n_test": args.test, "shards": shards, "pixels": args.pixels,
        "gemm_rate": gemm, "rng_rate": rng, "cpu": cpu_model(), "blas": blas_kernel(), "cores": usable_cores(),
        "workers": args.workers, "whole_command": args.command,
        "dead_s": (round(run["wall_s"] - results["timings_s"]["total"], 3)
                   if args.command and "total" in results.get("timings_s", {}) else None),
        "block_rows": args.block_rows, "us_per_spectrum": round(1e6 * run["wall_s"] / n_train, 2),
        "base_rss_gb": round(run["base_rss"] / GB, 3), "timings_s": results.get("timings_s", {}),
        "page_cache": run["page_cache"], "cache": cache_note, "decision": results.get("decision"),
        "delta_r2": results.get("delta_r2"), "output_dir": str(out),
    }
    record = args.workdir / "bench_full.json"  # survives a crash (or an OOM kill) in the comparisons

    def save(compare_out=None) -> None:
        if compare_out is not None:
            summary["compare"] = compare_out
        record.write_text(json.dumps(summary, default=float, indent=1) + "\n")

    save()
    if args.resolve:
        alpha = cfg.model.alpha / 2 if isinstance(cfg.model.alpha, (int, float)) else CARD_ALPHA / 2
        summary.update(resolve([*overrides, *args.set], [*train_paths, test_path], args.workdir, alpha))
        save()
    if not args.skip_compare:
        if args.compare_rows is None:
            from bench_stats import sklearn_rows

            n_cmp = min(sklearn_rows(args.pixels), n_total)
        else:
            n_cmp = min(args.compare_rows, n_total)
            need = 3 * n_cmp * args.pixels * 4  # the matrix, the scaler's copy, Ridge's centred copy
            if need > psutil.virtual_memory().available:
                print(f"warning: --compare-rows {n_cmp:,} needs about {need / GB:.1f} GB for scikit-learn, "
                      f"{psutil.virtual_memory().available / GB:.1f} GB available", flush=True)
        if n_cmp < max(args.pixels // 4, 100):
            summary["compare"] = {"error": f"N={n_cmp:,} rows fit in memory here: too few to compare"}
        else:
            summary["compare"] = compare(cfg, train_paths, n_cmp, args, save)
    save()
    print_table(summary)
    print(json.dumps(summary, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
