"""Many shards on a real cluster: a ``dask scheduler`` and W ``dask worker --nthreads 1 --memory-limit M``
processes on this machine run the card's experiment on a set of many small shards; against the threaded
run: wall (``main()``), the phase tables, bit-equality of the numbers and each worker's peak RSS.

    python benchmarks/bench_cluster.py [--train 400x250] [--pixels 512] [--workers 4] [--memory-limit 2GB]

Uses the test suite's cluster harness (tests/test_cluster_faults.py: port 0, a scheduler file).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_cluster_faults import Cluster  # noqa: E402

from snrmoe_dask.cli import main as snrmoe  # noqa: E402
from snrmoe_dask.io.simulate import count_label, simulate_set  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default="400x250", help="SHARDSxROWS")
    ap.add_argument("--pixels", type=int, default=512)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--workdir", type=Path, default=ROOT / "bench-data" / "cluster")
    args = ap.parse_args()
    shards, rows = (int(v) for v in args.train.split("x"))
    root = args.workdir / f"set-{args.train}-{args.pixels}px"
    if not (root / "COMPLETE").exists():
        simulate_set(root, train=(shards, rows), val=0, test=1000, seed=4, pixels=args.pixels, progress=False)
        (root / "COMPLETE").write_text("ok\n")

    def run(out: Path, *extra: str) -> float:
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        code = snrmoe(["run", str(ROOT / "config" / "oracle_snr.yaml"), "-q", "--set", f"data.root={root}",
                       "--set", f'data.train_shards=["train_{count_label(rows)}_{{0..{shards - 1}}}/dataset.h5"]',
                       "--set", "data.val_file=null", "--set", "data.test_file=test_1k_0/dataset.h5",
                       "--set", f"data.feature_dim={args.pixels}", "--set", f"output.dir={out}",
                       "--set", "compute.cache=false", "--set", "evaluation.bootstrap=0", *extra])
        if code != 0:
            raise SystemExit(f"bench_cluster: snrmoe run exited {code}")
        return time.perf_counter() - start

    threads = run(args.workdir / "threads")
    cluster = Cluster(args.workdir / "logs", workers=args.workers, worker_args=("--memory-limit", args.memory_limit))
    try:
        from distributed import Client

        with Client(cluster.address, timeout="30s") as client:
            before = set(client.scheduler_info()["workers"])
            wall = run(args.workdir / "cluster", "--scheduler", cluster.address)
            after = set(client.scheduler_info()["workers"])
            peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    finally:
        cluster.stop()

    def numbers(name: str) -> tuple[dict, dict]:
        r = json.loads((args.workdir / name / "results.json").read_text())
        return {k: r[k] for k in ("delta_r2", "models", "bins", "snr", "repairs")}, r["timings_s"]

    (a, ta), (b, tb) = numbers("threads"), numbers("cluster")
    print(json.dumps({"shards": shards, "rows": rows, "pixels": args.pixels, "equal": a == b,
                      "threads_wall_s": round(threads, 2), "cluster_wall_s": round(wall, 2),
                      "threads_timings_s": ta, "cluster_timings_s": tb, "no_worker_restarted": before == after,
                      "worker_peak_gb": sorted(round(v / 1e9, 3) for v in peaks.values())}))
    return 0 if a == b and before == after else 1


if __name__ == "__main__":
    sys.exit(main())
