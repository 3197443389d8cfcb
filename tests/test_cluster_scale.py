"""Many shards on a real cluster: a `dask scheduler` and four `dask worker --nthreads 1 --memory-limit 2GB`
processes run a 400-shard set; the numbers equal the threaded run's bit for bit and no worker outgrows its
limit (none is restarted by its nanny, none peaks above it)."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest
from test_cluster_faults import DASK, Cluster

from snrmoe_dask.cli import main
from snrmoe_dask.io.simulate import simulate_set

SHARDS, ROWS, PIXELS, WORKERS, LIMIT = 400, 20, 16, 4, 2e9

pytestmark = pytest.mark.skipif(not DASK.exists(), reason=f"no dask CLI at {DASK}")


def _args(root, out, *extra):
    return ["run", "config/demo.yaml", "-q", "--set", f"data.root={root}",
            "--set", f'data.train_shards=["train_{ROWS}_{{0..{SHARDS - 1}}}/dataset.h5"]', "--set", "data.val_file=null",
            "--set", "data.test_file=test_200_0/dataset.h5", "--set", f"data.feature_dim={PIXELS}",
            "--set", f"output.dir={out}", "--set", "compute.cache=false", "--set", "evaluation.bootstrap=0",
            "--set", "evaluation.min_bin_samples=20", "--set", "model.alpha=10", *extra]


def _numbers(out):
    r = json.loads((out / "results.json").read_text())
    return {k: r[k] for k in ("delta_r2", "models", "bins", "snr", "repairs")}


def test_400_shards_on_four_workers_equal_threads_within_memory_limits(tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).parents[1])
    root = tmp_path / "data"
    simulate_set(root, train=(SHARDS, ROWS), val=0, test=200, seed=4, pixels=PIXELS, progress=False)
    assert main(_args(root, tmp_path / "threads")) == 0
    cluster = Cluster(tmp_path / "logs", workers=WORKERS, worker_args=("--memory-limit", "2GB"))
    try:
        from distributed import Client

        with Client(cluster.address, timeout="30s") as client:
            before = set(client.scheduler_info()["workers"])
            assert main(_args(root, tmp_path / "cluster", "--scheduler", cluster.address)) == 0
            after = set(client.scheduler_info()["workers"])
            peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    finally:
        cluster.stop()
    assert _numbers(tmp_path / "cluster") == _numbers(tmp_path / "threads")
    assert before == after and len(after) == WORKERS  # no worker died or was restarted for its memory
    assert max(peaks.values()) < LIMIT, peaks
