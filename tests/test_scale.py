"""Scale out: a dask.distributed cluster gives the threaded numbers; the per-shard statistics cache
resumes a killed run, adds a shard for one shard's pass, re-solves without a pass, survives damage."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from snrmoe_dask.engine import graph
from snrmoe_dask.cli import main
from snrmoe_dask.io.simulate import simulate_set

REPO = Path(__file__).resolve().parent.parent
PIXELS = 64


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scale")
    simulate_set(root, train=(3, 1500), val=300, test=400, seed=11, pixels=PIXELS, progress=False)
    return root


def args(root: Path, out: Path, shards: str = "{0..2}", *extra: str) -> list[str]:
    return ["run", str(REPO / "config" / "demo.yaml"), "-q",
            "--set", f"data.root={root}", "--set", f'data.train_shards=["train_1500_{shards}/dataset.h5"]',
            "--set", "data.val_file=val_300/dataset.h5", "--set", "data.test_file=test_400_0/dataset.h5",
            "--set", f"data.feature_dim={PIXELS}", "--set", f"output.dir={out}", "--set", "compute.block_rows=256",
            "--set", "evaluation.bootstrap=200", "--set", "evaluation.min_bin_samples=50",
            "--set", "compute.cache_min_gflop=0", "--set", "compute.cache_max_ratio=100",
            *extra]  # shards this small are not cached by default


def numbers(out: Path) -> dict:
    """Everything in results.json that is a result (not a timing, a path or a date)."""
    r = json.loads((out / "results.json").read_text())
    return {k: r[k] for k in ("decision", "delta_r2", "delta_r2_ci", "models", "bins", "snr", "repairs")}


@pytest.fixture(scope="module")
def cold(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cold") / "res"
    assert main(args(data, out, "{0..2}", "--set", "compute.cache=false")) == 0
    return out


def test_local_cluster_equals_threads(data, cold, tmp_path):
    out = tmp_path / "cluster"
    assert main(args(data, out, "{0..2}", "--set", "compute.cache=false", "--scheduler", "local-cluster")) == 0
    assert numbers(out) == numbers(cold)


def test_killed_run_resumes_from_the_cache(data, cold, tmp_path):
    out, cache = tmp_path / "res", tmp_path / "cache"
    # A real SIGKILL right after the second shard's statistics are cached.
    killer = (
        "import os, signal, sys\n"
        "from snrmoe_dask.io import cache\n"
        "save, done = cache.ShardCache.save, []\n"
        "def dying(self, *a, **k):\n"
        "    path = save(self, *a, **k); done.append(path)\n"
        "    if len(done) == 2: os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return path\n"
        "cache.ShardCache.save = dying\n"
        "from snrmoe_dask.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    run = args(data, out, "{0..2}", "--set", f"compute.cache_dir={cache}", "--set", "compute.workers=1",
               "--scheduler", "sync")
    proc = subprocess.run([sys.executable, "-c", killer, *run], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert len(list(cache.glob("*.h5"))) == 2
    assert not out.exists()  # no half-written results folder that looks complete
    proc = subprocess.run([sys.executable, "-m", "snrmoe_dask.cli", *run], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "train pass: 2 shard(s) from the cache" in proc.stderr and "1 to compute ['train_1500_2']" in proc.stderr
    assert numbers(out) == numbers(cold)


def test_added_shard_costs_one_shard(data, cold, tmp_path, caplog):
    cache = tmp_path / "cache"
    assert main(args(data, tmp_path / "two", "{0..1}", "--set", f"compute.cache_dir={cache}")) == 0
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="snrmoe_dask.engine.cached_pass"):
        assert main(args(data, tmp_path / "three", "{0..2}", "--set", f"compute.cache_dir={cache}")) == 0
    assert "train pass: 2 shard(s) from the cache" in caplog.text and "1 to compute" in caplog.text
    assert numbers(tmp_path / "three") == numbers(cold)  # cold: the same three shards without a cache


def test_resolve_needs_no_data_pass(data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    assert main(args(data, tmp_path / "first", "{0..2}", "--set", f"compute.cache_dir={cache}")) == 0

    segment_pass = graph.segment_pass

    def no_training_pass(source, *a, **k):
        # alpha: auto reads the (small) validation set once; never the training shards
        assert "train_" not in source.name, "a training pass ran although every shard is cached"
        return segment_pass(source, *a, **k)
    monkeypatch.setattr(graph, "segment_pass", no_training_pass)
    for change in (["--set", "model.alpha=10"], ["--set", "evaluation.min_bin_samples=1000"],
                   ["--set", "model.alpha=auto"]):
        out = tmp_path / "again"
        assert main(args(data, out, "{0..2}", "--set", f"compute.cache_dir={cache}", *change)) == 0
        assert json.loads((out / "results.json").read_text())["models"]["global"]["n_train"] == 4500


def entries(cache: Path) -> dict[str, list[Path]]:
    """The cache files by kind ("shard", "merged")."""
    import h5py

    out = {"shard": [], "merged": []}
    for path in sorted(cache.glob("*.h5")):
        with h5py.File(path, "r") as f:
            out[f.attrs["kind"]].append(path)
    return out


# the store's detection of each damage is test_cache.py::test_damaged_file_is_logged_deleted_and_missed
# (merged and shard entries are read alike); here each fallback once, with each damage once
@pytest.mark.parametrize("victims, damage", [(("merged",), "truncate"), (("merged", "shard"), "garbage")])
def test_damaged_cache_is_detected_and_recomputed(data, cold, tmp_path, caplog, damage, victims):
    cache = tmp_path / "cache"
    assert main(args(data, tmp_path / "a", "{0..2}", "--set", f"compute.cache_dir={cache}")) == 0
    kinds = entries(cache)
    assert len(kinds["shard"]) == 3 and len(kinds["merged"]) == 1
    for victim in (kinds[kind][0] for kind in victims):
        raw = victim.read_bytes()
        victim.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"not an hdf5 file" * 100)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(args(data, tmp_path / "b", "{0..2}", "--set", f"compute.cache_dir={cache}")) == 0
    for kind in victims:  # the merged entry's loss falls back on the shards', a shard's on its pass
        assert kinds[kind][0].name in caplog.text
    assert numbers(tmp_path / "b") == numbers(tmp_path / "a") == numbers(cold)
    assert {k: len(v) for k, v in entries(cache).items()} == {"shard": 3, "merged": 1}  # recomputed, cached again


def test_cache_ls_and_clear(data, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(args(data, tmp_path / "a", "{0..1}", "--set", f"compute.cache_dir={cache}")) == 0
    capsys.readouterr()
    assert main(["cache", "ls", "--dir", str(cache)]) == 0
    listing = capsys.readouterr().out
    assert "train_1500_0" in listing and "train_1500_1" in listing
    assert main(["cache", "clear", "--dir", str(cache)]) == 0
    assert not list(cache.glob("*.h5"))


def test_merged_bins_resolve_from_finer_cached_bins(data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    assert main(args(data, tmp_path / "four", "{0..2}", "--set", f"compute.cache_dir={cache}")) == 0
    merged = ["--set", "snr.bins={HM: [4, .inf], L: [2, 4], X: [0, 2]}", "--set", "model.experts=3"]
    assert main(args(data, tmp_path / "cold", "{0..2}", "--set", "compute.cache=false", *merged)) == 0

    def no_pass(*a, **k):
        raise AssertionError("a data pass ran although finer bins are cached")
    monkeypatch.setattr(graph, "segment_pass", no_pass)
    assert main(args(data, tmp_path / "merged", "{0..2}", "--set", f"compute.cache_dir={cache}", *merged)) == 0
    four, cold, warm = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("four", "cold", "merged"))
    assert warm["bins"]["HM"]["n_train"] == four["bins"]["H"]["n_train"] + four["bins"]["M"]["n_train"]
    for name in ("HM", "L", "X"):  # same model as a fresh pass with the merged bins, to rounding
        assert warm["bins"][name]["expert"]["r2"] == pytest.approx(cold["bins"][name]["expert"]["r2"], rel=1e-6)
    assert warm["delta_r2"] == pytest.approx(cold["delta_r2"], rel=1e-6, abs=1e-9)


def test_shard_rewritten_in_place_is_recomputed_and_verify_drops_the_old_entries(data, tmp_path, caplog, capsys):
    """Issue 12's reproduction through the command: flux halved in place (same size and shape), atime
    and mtime restored to the nanosecond; the next run recomputes and says why."""
    import os
    import shutil

    import h5py

    from snrmoe_dask.io.shards import FLUX_KEY

    root, cache = tmp_path / "data", tmp_path / "cache"
    shutil.copytree(data, root)
    assert main(args(root, tmp_path / "before", "{0..2}", "--set", f"compute.cache_dir={cache}")) == 0
    victim = root / "train_1500_1" / "dataset.h5"
    st = victim.stat()
    with h5py.File(victim, "r+") as f:
        f[FLUX_KEY][...] = f[FLUX_KEY][...] / 2
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (victim.stat().st_size, victim.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(args(root, tmp_path / "after", "{0..2}", "--set", f"compute.cache_dir={cache}")) == 0
    assert f"{victim}: recomputing its statistics: entry " in caplog.text and "ctime_ns changed" in caplog.text
    assert "2 shard(s) from the cache ['train_1500_0', 'train_1500_2'], 1 to compute ['train_1500_1']" in caplog.text
    assert main(args(root, tmp_path / "cold", "{0..2}", "--set", "compute.cache=false")) == 0
    assert numbers(tmp_path / "after") == numbers(tmp_path / "cold") != numbers(tmp_path / "before")
    capsys.readouterr()
    assert main(["cache", "verify", "--dir", str(cache)]) == 1  # the entries made before the rewrite
    report = capsys.readouterr().out.splitlines()
    assert sum("changed" in line and str(victim) in line and "dropped" in line for line in report) == 2
    assert report[-1].startswith("verified 6 entries") and "4 ok, 2 changed (dropped)" in report[-1]
    assert main(["cache", "verify", "--dir", str(cache)]) == 0
    capsys.readouterr()
    assert main(["cache", "ls", "--dir", str(cache)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 5 and listing[-1].startswith("4 cache files, ") and "last used" in listing[0]
