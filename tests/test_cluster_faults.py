"""Faults on a real cluster: a `dask scheduler` and two `dask worker` processes on 127.0.0.1.

A worker killed with SIGKILL mid-pass costs time, not results; a scheduler killed mid-run ends the
command with one line naming its address, and a rerun on a fresh cluster reads the shards cached so far.
The pass is made long enough to kill mid-way by many small blocks (16 rows); "mid-way" is observed,
not timed: the faults are injected when the first shard's statistics appear in the cache folder.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from snrmoe_dask.cli import main
from snrmoe_dask.errors import ConfigError
from snrmoe_dask.io.shards import PARAM_COLUMNS, write_shard

REPO = Path(__file__).resolve().parent.parent
DASK = Path(sys.executable).with_name("dask")
SHARDS, ROWS, PIXELS = 6, 2000, 64

pytestmark = pytest.mark.skipif(not DASK.exists(), reason=f"no dask CLI at {DASK}")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Shards whose SNR spreads over the card's four bins and whose log g depends on the flux."""
    root = tmp_path_factory.mktemp("cluster-data")
    rng = np.random.default_rng(5)
    wave = np.linspace(7100.0, 8850.0, PIXELS)
    for name, n in [*((f"train_{k}", ROWS) for k in range(SHARDS)), ("test", 400)]:
        flux = (1.0 + 0.2 * rng.standard_normal((n, PIXELS))).astype(np.float32)
        error = (rng.uniform(0.08, 2.0, (n, 1)) * (0.3 + 0.05 * rng.random((n, PIXELS)))).astype(np.float32)
        params = pd.DataFrame({c: rng.random(n) for c in PARAM_COLUMNS})
        params["log_g"] = flux[:, :8].sum(axis=1) + 0.1 * rng.standard_normal(n)
        write_shard(root / name / "dataset.h5", wave, flux, error, params, chunk_rows=16)
    return root


def run_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(REPO / "config" / "demo.yaml"), "-q", "--set", f"data.root={root}",
            "--set", 'data.train_shards=["train_*/dataset.h5"]', "--set", "data.val_file=null",
            "--set", "data.test_file=test/dataset.h5", "--set", f"data.feature_dim={PIXELS}",
            "--set", f"output.dir={out}", "--set", f"compute.cache_dir={out}.cache", "--set", "compute.cache_min_gflop=0", "--set", "compute.block_rows=16",
            "--set", "evaluation.bootstrap=0", "--set", "evaluation.min_bin_samples=50", "--set", "model.alpha=10",
            *extra]


def numbers(out: Path) -> dict:
    r = json.loads((out / "results.json").read_text())
    return {k: r[k] for k in ("decision", "delta_r2", "models", "bins", "snr", "repairs")}


@pytest.fixture(scope="module")
def threaded(data, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("threaded") / "res"
    assert main(run_args(data, out, "--set", "compute.cache=false")) == 0
    result = numbers(out)
    assert sum(b["n_train"] > 0 for b in result["bins"].values()) >= 3  # the pass splits into several bins
    return result


class Cluster:
    """A scheduler and single-threaded workers (by default two, without a nanny: a killed worker stays dead)."""

    def __init__(self, logs: Path, workers: int = 2, worker_args: tuple[str, ...] = ("--no-nanny",)):
        logs.mkdir(parents=True, exist_ok=True)
        # port 0: the scheduler binds a free port itself and writes its address to the file, so that
        # no other process (another pytest worker) can take a port between choosing and binding it
        self.scheduler = self._start(logs / "scheduler.log", "scheduler", "--host", "127.0.0.1", "--port", "0",
                                     "--no-dashboard", "--scheduler-file", str(logs / "scheduler.json"))
        self.address = self._address(logs / "scheduler.json")
        self.workers = [self._start(logs / f"worker{i}.log", "worker", self.address, "--nthreads", "1", *worker_args,
                                    "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{i}") for i in range(workers)]
        from distributed import Client

        with Client(self.address, timeout="30s") as client:
            client.wait_for_workers(workers, timeout=60)

    def _address(self, info: Path) -> str:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
                return json.loads(info.read_text())["address"]  # a partly written file fails to parse
            assert self.scheduler.poll() is None, "the scheduler exited; see scheduler.log"
            assert time.monotonic() < deadline, "the scheduler wrote no address within 60 s"
            time.sleep(0.05)

    @staticmethod
    def _start(log: Path, *argv: str) -> subprocess.Popen:
        return subprocess.Popen([str(DASK), *argv], stdout=subprocess.DEVNULL, stderr=log.open("w"))

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:  # workers first: they would wait for a lost scheduler
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture
def cluster_factory(tmp_path):
    started = []

    def start() -> Cluster:
        started.append(Cluster(tmp_path / f"logs{len(started)}"))
        return started[-1]
    yield start
    for cluster in started:
        cluster.stop()


def start_run(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "snrmoe_dask.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_first_entry(cache: Path, run: subprocess.Popen) -> int:
    """Block until the pass has cached its first shard; return how many shards are cached then."""
    deadline = time.monotonic() + 120
    while not list(cache.glob("*.h5")):
        assert run.poll() is None, run.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no shard was cached within 120 s"
        time.sleep(0.02)
    return len(list(cache.glob("*.h5")))


def test_worker_killed_mid_pass_costs_time_not_results(data, threaded, cluster_factory, tmp_path):
    cluster = cluster_factory()
    out = tmp_path / "res"
    run = start_run(run_args(data, out, "--scheduler", cluster.address))
    cached = wait_for_first_entry(Path(f"{out}.cache"), run)
    cluster.workers[0].send_signal(signal.SIGKILL)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err[-3000:]
    assert cached < SHARDS  # the worker died with shards left to sum
    assert cluster.workers[0].poll() == -signal.SIGKILL
    assert numbers(out) == threaded


def test_scheduler_killed_mid_run_is_one_line_and_rerun_resumes(data, threaded, cluster_factory, tmp_path):
    first = cluster_factory()
    out, cache = tmp_path / "res", Path(f"{tmp_path / 'res'}.cache")
    run = start_run(run_args(data, out, "--scheduler", first.address))
    cached = wait_for_first_entry(cache, run)
    first.scheduler.send_signal(signal.SIGKILL)
    _, err = run.communicate(timeout=120)
    errors = [line for line in err.splitlines() if line.startswith("snrmoe: error: ")]
    assert run.returncode == 2 and "Traceback" not in err, err[-3000:]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0]
    assert first.address in errors[0] and "lost the connection to the scheduler" in errors[0]
    assert not out.exists()
    first.stop()  # its workers may finish what they were running; then they are stopped

    done = sorted(p.name for p in cache.glob("*.h5"))
    assert cached <= len(done) <= SHARDS  # the workers finish what they ran when the scheduler died
    second = cluster_factory()
    rerun = start_run(run_args(data, out, "--scheduler", second.address))
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-3000:]
    assert f"train pass: {len(done)} shard(s) from the cache" in err
    assert f"{SHARDS - len(done)} to compute" in err
    assert numbers(out) == threaded
    assert set(done) <= {p.name for p in cache.glob("*.h5")}


def test_workers_that_keep_dying_are_one_line_naming_the_scheduler():
    # KilledWorker: distributed gives up on a task after allowed-failures worker deaths (out of memory...)
    from distributed.scheduler import KilledWorker

    from snrmoe_dask.engine.cluster import _cluster_errors
    from snrmoe_dask.errors import ConfigError

    with pytest.raises(ConfigError, match="workers of tcp://10.0.0.1:8786 died while running a task") as info:
        with _cluster_errors("tcp://10.0.0.1:8786"):
            raise KilledWorker("segment-0-0-abc", SimpleNamespace(address="tcp://10.0.0.2:40000"), 3)
    assert "4 workers ran 'segment-0-0-abc'" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="a task's own error"):  # anything else passes through unchanged
        with _cluster_errors("tcp://10.0.0.1:8786"):
            raise ValueError("a task's own error")


def test_relative_paths_reach_workers_in_another_folder(data, tmp_path, monkeypatch, capsys):
    """A relative compute.cache_dir (and data.root) was resolved in each worker's working directory: the
    entries landed there and the next run recomputed everything."""
    from distributed import LocalCluster

    from snrmoe_dask.engine.cluster import compute_context
    from snrmoe_dask.errors import ConfigError

    elsewhere, here = tmp_path / "workers-cwd", tmp_path / "here"
    elsewhere.mkdir()
    here.mkdir()
    (here / "data").symlink_to(data)
    monkeypatch.chdir(elsewhere)  # the workers start here and stay here
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        monkeypatch.chdir(here)
        argv = [*run_args(Path("data"), Path("res")), "--set", "compute.cache_dir=rel-cache", "--set",
                "compute.block_rows=512", "--set", 'data.train_shards=["train_{0..1}/dataset.h5"]',
                "--scheduler", cluster.scheduler_address]
        assert main(argv) == 0, capsys.readouterr().err[-3000:]
        # where the driver looks for them (the next run loads them), not in the workers' folder
        assert len(list((here / "rel-cache").glob("*.h5"))) == 2 + 1 and not list(elsewhere.rglob("*.h5"))
        # a path a worker does not see: one line naming it, before any task runs
        with pytest.raises(ConfigError) as err:
            with compute_context(cluster.scheduler_address, paths=[here / "data", tmp_path / "nowhere" / "cache"]):
                pass
    assert f"does not see {tmp_path / 'nowhere' / 'cache'} (1 of 2 paths" in str(err.value)
    assert "shared file system" in str(err.value)


# ----------------------------------------------------------------------------- addresses that are not a scheduler
@pytest.fixture
def listener():
    """A TCP listener on 127.0.0.1 that does ``behave(connection)`` with each connection it accepts."""
    import threading

    servers = []

    def start(behave) -> str:
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        servers.append(server)

        def serve():
            kept = []
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                kept.append(conn)
                behave(conn)
        threading.Thread(target=serve, daemon=True).start()
        return f"tcp://127.0.0.1:{server.getsockname()[1]}"
    yield start
    for server in servers:
        server.close()


def _http(conn) -> None:  # waits for a request, as the dashboard does
    pass


def _banner(conn) -> None:  # speaks first, as SSH does
    conn.sendall(b"SSH-2.0-OpenSSH_9.0\r\n")


def _hang_up(conn) -> None:
    conn.close()


@pytest.mark.parametrize("behave, words", [
    (_http, "sent no dask handshake within 1 s (compute.connect_timeout)"),
    (_banner, "is not a dask scheduler (its first bytes b'SSH-2.0-'"),
    (_hang_up, "closed the connection without a dask handshake"),
], ids=["silent (HTTP, dashboard)", "banner", "hangs up"])
def test_a_peer_that_is_not_a_scheduler_is_one_line_quickly(behave, words, listener):
    """An HTTP server hung the run for minutes; another service's bytes made distributed allocate 3 EiB."""
    from snrmoe_dask.engine.cluster import compute_context
    from snrmoe_dask.errors import ConfigError

    address = listener(behave)
    start = time.monotonic()
    with pytest.raises(ConfigError) as err:
        with compute_context(address, connect_timeout=1):
            pass
    assert time.monotonic() - start < 5
    assert str(err.value).startswith(f"compute.scheduler: {address} ") and words in str(err.value)


@pytest.fixture
def closed_port():
    """A port of 127.0.0.1 that refuses connections: bound, so that no other process takes it, but not listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def test_a_refused_connection_is_one_line_at_once(closed_port):
    """Issue 22: nothing listening took the whole compute.connect_timeout (37 s at 30 s) to say so."""
    from snrmoe_dask.engine.cluster import check_scheduler

    start = time.monotonic()
    with pytest.raises(ConfigError, match=f"cannot connect to tcp://127.0.0.1:{closed_port}: Connection refused$"):
        check_scheduler(f"tcp://127.0.0.1:{closed_port}", timeout=30)
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("address, words", [
    ("foo://bar", "compute.scheduler: foo://bar: unknown address scheme 'foo' (known schemes: "),
    ("tcp://127.0.0.1:{closed}", "compute.scheduler: cannot connect to tcp://127.0.0.1:{closed}: Connection refused"),
])
def test_unknown_scheme_or_closed_port_is_one_line(address, words, tmp_path, capsys, closed_port):
    argv = run_args(tmp_path, tmp_path / "res") + ["--scheduler", address.format(closed=closed_port),
                                                   "--set", "compute.connect_timeout=1"]
    from snrmoe_dask.io.simulate import simulate_set

    simulate_set(tmp_path, train=(1, 200), val=0, test=50, seed=1, pixels=PIXELS, progress=False)
    argv[argv.index('data.train_shards=["train_*/dataset.h5"]')] = 'data.train_shards=["train_200_0/dataset.h5"]'
    argv[argv.index("data.test_file=test/dataset.h5")] = "data.test_file=test_50_0/dataset.h5"
    start = time.monotonic()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("snrmoe: error: " + words.format(closed=closed_port)), err
    assert "Traceback" not in err and time.monotonic() - start < 30
    assert not (tmp_path / "res").exists()
