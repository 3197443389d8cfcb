"""Identical re-solves from the statistics cache, each the whole ``snrmoe run`` command in a fresh process:
how steady the solve phase is, and the command's time outside its phases (``dead_s``).

    python benchmarks/bench_resolves.py [--train 2x50000] [--runs 5] [--workdir bench-data/full]

Simulates the set once as ``bench_full.py`` does, fills a cache with one run, then re-solves ``--runs``
times with the same ``model.alpha``; prints one JSON line per run and a summary line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import bench_full as bf
from machine import blas_kernel, cpu_model, usable_cores


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default="2x50000", help="SHARDSxROWS")
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--pixels", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=3.5, help="model.alpha of every re-solve")
    ap.add_argument("--workdir", type=Path, default=bf.ROOT / "bench-data" / "full")
    args = ap.parse_args()
    shards, rows = (int(v) for v in args.train.split("x"))
    root, _, _ = bf.ensure_set(args.workdir, shards, rows, args.test, args.pixels)
    cache, runs = args.workdir / "resolves-cache", []
    shutil.rmtree(cache, ignore_errors=True)
    for i in range(args.runs + 1):
        out = args.workdir / "results" / "resolves" / str(i)
        shutil.rmtree(out, ignore_errors=True)
        overrides = [*bf.set_overrides(root, shards, rows, args.test, args.pixels, 4096, usable_cores(), out),
                     "compute.cache=true", f"compute.cache_dir={json.dumps(str(cache))}", f"model.alpha={args.alpha:g}"]
        cmd = bf.snrmoe_run(overrides)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"bench_resolves: run {i} exited {proc.returncode}: {proc.stderr[-2000:]}")
        timings = json.loads((out / "results.json").read_text())["timings_s"]
        runs.append({"run": "fill" if i == 0 else f"resolve {i}", "wall_s": round(wall, 2),
                     "dead_s": round(wall - timings["total"], 2), "timings_s": timings})
        print(json.dumps(runs[-1]), flush=True)
    solves = [r["timings_s"]["solve"] for r in runs[1:]]
    print(json.dumps({"solve_min_s": min(solves), "solve_max_s": max(solves),
                      "solve_spread": round(max(solves) / min(solves), 3), "dead_s": [r["dead_s"] for r in runs[1:]],
                      "cpu": cpu_model(), "blas": blas_kernel()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
