"""Nothing lost, ever (issue 12): output.dir never deletes what the tool did not write, one run per
results folder, SIGTERM like SIGINT, leftovers of killed runs removed by the next run."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import dask
import h5py
import pytest

from snrmoe_dask.cli import Terminated, _ending, main
from snrmoe_dask.experiment import output_dir
from snrmoe_dask.io.simulate import simulate_set

REPO = Path(__file__).resolve().parent.parent
PIXELS = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    simulate_set(root, train=(2, 300), val=0, test=200, seed=5, pixels=PIXELS, progress=False)
    return root


def run_args(data: Path, out, *extra: str, config: Path = REPO / "config" / "demo.yaml") -> list[str]:
    return ["run", str(config), "-q", "--set", f"data.root={data}",
            "--set", 'data.train_shards=["train_300_{0..1}/dataset.h5"]', "--set", "data.val_file=null",
            "--set", "data.test_file=test_200_0/dataset.h5", "--set", f"data.feature_dim={PIXELS}",
            "--set", "evaluation.bootstrap=0", "--set", "compute.block_rows=128", "--set", f"output.dir={out}",
            "--set", "compute.cache_min_gflop=0", "--set", "compute.cache_max_ratio=100", *extra]  # cache even these tiny shards


def cli(*args: str, **popen) -> subprocess.Popen:
    """``snrmoe ARGS`` in a new process."""
    return subprocess.Popen([sys.executable, "-m", "snrmoe_dask.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def patched(preamble: str, *args: str, **popen) -> subprocess.Popen:
    """``snrmoe ARGS`` in a new process that first runs ``preamble`` (to pause, kill or signal it mid-run)."""
    # a process that hangs dumps every thread's stack and ends, so that the test fails saying where
    script = "import faulthandler; faulthandler.dump_traceback_later(100, exit=True)\n" \
             f"import os, signal, sys, time\nfrom pathlib import Path\n{preamble}\n" \
             "from snrmoe_dask.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every path under the roots (roots included): type, permissions, mtime, file bytes, link target."""
    state = {}
    for root in roots:
        for here, dirs, files in os.walk(root):
            for path in [here, *(os.path.join(here, name) for name in dirs + files)]:
                st = os.lstat(path)
                content = (Path(path).read_bytes() if stat.S_ISREG(st.st_mode)
                           else os.readlink(path) if stat.S_ISLNK(st.st_mode) else None)
                state[path] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_mtime_ns, content)
    return state


def hidden_leftovers(out: Path) -> list[str]:
    """The run's hidden siblings of ``out`` (partial, old, lock)."""
    return sorted(p.name for p in out.parent.glob(f".{out.name}.*"))


@pytest.fixture
def no_pass(monkeypatch):
    """Any dask computation (the training pass) fails the test: refusals must come before it."""
    def started(*a, **k):
        raise AssertionError("the training pass started before output.dir was refused")
    monkeypatch.setattr(dask, "compute", started)


# ----------------------------------------------------------------------------- 1. output.dir
def _user_folder(w: Path) -> Path:
    (w / "thesis" / "sub").mkdir(parents=True)
    (w / "thesis" / "thesis.tex").write_text("\\documentclass{article} years of work")
    (w / "thesis" / "sub" / "x.dat").write_bytes(b"\x00\x01 measurements")
    return w / "thesis"


def _config_copy(w: Path) -> Path:
    (w / "conf").mkdir()
    return Path(shutil.copy(REPO / "config" / "demo.yaml", w / "conf" / "exp.yaml"))


def _link(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


def _file(path: Path) -> Path:
    path.write_text("mine")
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _marked(w: Path, marker: str, *extra: str) -> Path:
    """A folder with a results.json, the given marker text, and extra empty files."""
    folder = _folder(w / "old")
    for name in ("results.json", *extra):
        (folder / name).write_text("{}")
    (folder / output_dir.MARKER).write_text(marker)
    return folder


# name -> setup(workspace = cwd, data root): output.dir, extra run arguments (a config path first
# when not demo.yaml), words the error line must hold
REFUSED = {
    "a user's folder (the reported case)": lambda w, d: (_user_folder(w), [], "without a valid .snrmoe-results"),
    "an empty folder it did not make": lambda w, d: (_folder(w / "empty"), [], "without a valid .snrmoe-results"),
    "data.root": lambda w, d: (d, [], "is data.root"),
    "data.root through a symlink": lambda w, d: (d, ["--set", f"data.root={_link(w / 'data-link', d)}"],
                                                 "is data.root"),
    "a training shard's folder": lambda w, d: (d / "train_300_1", [], "contains a shard"),
    "the test file's folder": lambda w, d: (d / "test_200_0", [], "contains a shard"),
    "a shard file": lambda w, d: (d / "train_300_0" / "dataset.h5", [], "is a shard"),
    "a parent of data.root": lambda w, d: (d.parent, [], "contains data.root"),
    "the cache folder": lambda w, d: (w / "c", ["--set", f"compute.cache_dir={w / 'c'}"], "is the cache folder"),
    "a folder holding the cache": lambda w, d: (w / "store", ["--set", f"compute.cache_dir={w / 'store' / 'c'}"],
                                                "contains the cache folder"),
    "the default cache folder": lambda w, d: ("res/.snrmoe-cache", [], "is the cache folder"),
    "the config file's folder": lambda w, d: (w / "conf", [_config_copy(w)], "contains the config file"),
    "the config file": lambda w, d: (w / "conf" / "exp.yaml", [_config_copy(w)], "is the config file"),
    "a symlink to a user's folder": lambda w, d: (_link(w / "link", _user_folder(w)).name, [], "is a symbolic link"),
    "a dangling symlink": lambda w, d: (_link(w / "gone", w / "nowhere"), [], "is a symbolic link"),
    "a regular file": lambda w, d: (_file(w / "notes.txt"), [], "is a regular file"),
    "a path under a regular file": lambda w, d: (_file(w / "notes.txt") / "sub" / "res", [], "lies under"),
    "a FIFO": lambda w, d: (os.mkfifo(w / "pipe") or "pipe", [], "is a FIFO"),
    ".": lambda w, d: (".", [], "is the current directory"),
    "x/..": lambda w, d: (_folder(w / "x") and "x/..", [], "is the current directory"),
    "missing/..": lambda w, d: ("missing/..", [], "is the current directory"),
    "..": lambda w, d: ("..", [], "contains"),
    "a folder with an invalid marker": lambda w, d: (_marked(w, "not json"), [], "without a valid .snrmoe-results"),
    "a marked folder holding a file it does not list": lambda w, d: (
        _marked(w, json.dumps({"format": "snrmoe-results", "files": ["results.json"]}), "thesis.tex"), [],
        "holds thesis.tex, which snrmoe did not write"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_output_dir_touches_nothing(case, data, tmp_path, monkeypatch, capsys, no_pass):
    monkeypatch.chdir(tmp_path)
    out, extra, expected = REFUSED[case](tmp_path, data)
    config = extra.pop(0) if extra and isinstance(extra[0], Path) else REPO / "config" / "demo.yaml"
    before = snapshot(tmp_path, data)
    assert main(run_args(data, out, *extra, config=config)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"snrmoe: error: output.dir {out}") and expected in err[-1], err[-1]
    assert "Traceback" not in "".join(err)
    assert snapshot(tmp_path, data) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_parent_is_one_line(data, tmp_path, capsys, no_pass):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        for out in (tmp_path / "ro" / "res", tmp_path / "ro" / "deeper" / "res"):
            before = snapshot(tmp_path)
            assert main(run_args(data, out, "--set", f"compute.cache_dir={tmp_path / 'cache'}")) == 2
            err = capsys.readouterr().err.strip().splitlines()[-1]
            assert err.startswith(f"snrmoe: error: output.dir {out}: cannot ") and "Permission denied" in err
            assert snapshot(tmp_path) == before
    finally:
        (tmp_path / "ro").chmod(0o755)


@pytest.mark.parametrize("errno_", [errno.EACCES, errno.EROFS])  # a read-only folder, file system
@pytest.mark.parametrize("where", ["the lock file", "the parent folder"])
def test_unwritable_output_location_is_one_line(errno_, where, data, tmp_path, monkeypatch, capsys, no_pass):
    # root passes permission checks and tests cannot mount a read-only file system: make the call fail
    out = tmp_path / ("ro" if where == "the lock file" else "ro/deeper") / "res"
    (tmp_path / "ro").mkdir()
    error = OSError(errno_, os.strerror(errno_))
    real_open, real_mkdir = os.open, Path.mkdir

    def failing_open(path, *a, **k):
        if str(path).endswith(".res.lock"):
            raise error
        return real_open(path, *a, **k)

    def failing_mkdir(self, *a, **k):
        if self == tmp_path / "ro" / "deeper":
            raise error
        return real_mkdir(self, *a, **k)
    monkeypatch.setattr(os, "open", failing_open)
    monkeypatch.setattr(Path, "mkdir", failing_mkdir)
    before = snapshot(tmp_path)
    assert main(run_args(data, out, "--set", f"compute.cache_dir={tmp_path / 'cache'}")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"snrmoe: error: output.dir {out}: cannot ") and os.strerror(errno_) in err, err
    assert snapshot(tmp_path) == before


def test_previous_results_folder_is_replaced_only_when_all_ours(data, tmp_path, capsys):
    out = tmp_path / "res"
    assert main(run_args(data, out, "--set", "model.alpha=10")) == 0
    marker = json.loads((out / output_dir.MARKER).read_text())
    assert marker["format"] == "snrmoe-results" and marker["experiment"] == "LOGG-SNR-ORACLE-01-demo"
    assert {"results.json", "predictions.csv", "models.h5", "metrics.nc", "report.md", "img",
            "img/snr_oracle_moe_comparison.png"} <= set(marker["files"])
    assert marker["pid"] == os.getpid() and marker["created"].startswith("20")

    # a file of the user's inside the results folder: refused, nothing changed
    (out / "img" / "notes.md").write_text("my notes")
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(run_args(data, out, "--set", "model.alpha=1000")) == 2
    assert "holds img/notes.md, which snrmoe did not write" in capsys.readouterr().err
    assert snapshot(tmp_path) == before

    # all ours: replaced in one rename, no hidden leftovers
    (out / "img" / "notes.md").unlink()
    assert main(run_args(data, out, "--set", "model.alpha=1000")) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["model"]["alpha"] == 1000
    assert hidden_leftovers(out) == []
    assert {p.name for p in tmp_path.iterdir()} - {".snrmoe-cache"} == {"res"}  # the cache: tiny runs skip it


# ----------------------------------------------------------------------------- 2. one run per folder
PAUSE = """
from snrmoe_dask.engine import graph
segment_pass = graph.segment_pass
def paused(*a, **k):  # the first task of the pass waits until the test says go (or gives up: no orphan)
    Path(os.environ["READY"]).touch()
    give_up = time.time() + 600
    while not Path(os.environ["GO"]).exists() and time.time() < give_up:
        time.sleep(0.05)
    return segment_pass(*a, **k)
graph.segment_pass = paused
"""


def _alpha_of_folder(out: Path) -> float:
    """The alpha of the run that wrote ``out``, checked in every file it wrote."""
    alpha = json.loads((out / "results.json").read_text())["config"]["model"]["alpha"]
    with h5py.File(out / "models.h5") as f:
        assert {float(f[g].attrs["alpha"]) for g in f} == {alpha}
    assert f'"alpha": {alpha},' in (out / "report.md").read_text()  # the config the report reproduces
    return alpha


@pytest.fixture(scope="module")
def references(data, tmp_path_factory) -> dict[float, Path]:
    base = tmp_path_factory.mktemp("references")
    for alpha in (10.0, 1000.0):
        assert main(run_args(data, base / f"alpha{alpha:g}", "--set", f"model.alpha={alpha:g}")) == 0
    return {alpha: base / f"alpha{alpha:g}" for alpha in (10.0, 1000.0)}


def _is_one_runs(out: Path, references: dict[float, Path]) -> float:
    """Assert every file of ``out`` comes from one run; returns its alpha."""
    alpha = _alpha_of_folder(out)
    ref = references[alpha]
    assert (out / "predictions.csv").read_bytes() == (ref / "predictions.csv").read_bytes()
    with h5py.File(out / "models.h5") as f, h5py.File(ref / "models.h5") as g:
        assert sorted(f) == sorted(g) and all((f[m]["coef"][()] == g[m]["coef"][()]).all() for m in f)
    results, expected = (json.loads((folder / "results.json").read_text()) for folder in (out, ref))
    for key in ("decision", "delta_r2", "models", "bins"):
        assert results[key] == expected[key], key
    return alpha


def test_timings_are_final_in_the_folder(references):
    out = references[10.0]
    timings = json.loads((out / "results.json").read_text())["timings_s"]
    assert timings["total"] >= timings["pass"] + timings["solve"] + timings["test"]
    report = (out / "report.md").read_text()
    assert f"`total` {timings['total']:.1f} s" in report  # report and results.json agree


def test_second_run_is_refused_naming_the_first(data, tmp_path, references):
    out, env = tmp_path / "res", dict(os.environ, READY=str(tmp_path / "ready"), GO=str(tmp_path / "go"))
    first = patched(PAUSE, *run_args(data, out, "--set", "model.alpha=10"), env=env)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "ready").exists():
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.05)
        second = cli(*run_args(data, out, "--set", "model.alpha=1000"))
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert err.strip().splitlines()[-1] == (f"snrmoe: error: output.dir {out}: another snrmoe run (PID "
                                                f"{first.pid}) is writing it; wait for it to finish or choose "
                                                "another folder")
    finally:
        (tmp_path / "go").touch()
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert _is_one_runs(out, references) == 10.0
    assert json.loads((out / output_dir.MARKER).read_text())["pid"] == first.pid
    assert hidden_leftovers(out) == []


def test_racing_runs_leave_one_runs_folder(data, tmp_path, references):
    """Two runs started together (the reported case): each ends 0, or 2 naming the other's PID; the
    folder is wholly one run's."""
    out = tmp_path / "res"
    runs = {alpha: cli(*run_args(data, out, "--set", f"model.alpha={alpha:g}")) for alpha in (10.0, 1000.0)}
    codes = {}
    for alpha, proc in runs.items():
        _, err = proc.communicate(timeout=300)
        codes[alpha] = proc.returncode
        if proc.returncode == 2:
            other = runs[1000.0 if alpha == 10.0 else 10.0]
            assert f"another snrmoe run (PID {other.pid})" in err.strip().splitlines()[-1]
        else:
            assert proc.returncode == 0, err
    alpha = _is_one_runs(out, references)
    assert codes[alpha] == 0
    assert json.loads((out / output_dir.MARKER).read_text())["pid"] == runs[alpha].pid
    assert hidden_leftovers(out) == []


# ----------------------------------------------------------------------------- 4. signals and leftovers
KILL_IN_CACHE_WRITE = """
from snrmoe_dask.io.cache import store
write = store._write
def dying(path, *a, **k):  # SIGKILL once the first cache entry's temporary file is written
    write(path, *a, **k)
    os.kill(os.getpid(), signal.SIGKILL)
store._write = dying
"""
SIGNAL_IN_RESULTS_WRITE = """
from snrmoe_dask.experiment import write_results
write_json = write_results.write_json
def interrupted(*a, **k):  # the signal comes once results.json is in the hidden folder
    write_json(*a, **k)
    os.kill(os.getpid(), signal.{signal})
    time.sleep(5)
write_results.write_json = interrupted
"""


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_killed_runs_leftovers_are_removed_by_the_next_run(data, tmp_path, capsys):
    out, cache = tmp_path / "res", tmp_path / "cache"
    # one run killed in the pass, while it writes a cache entry; one killed while writing the results
    killed = []
    for preamble, cache_dir in ((KILL_IN_CACHE_WRITE, cache),
                                (SIGNAL_IN_RESULTS_WRITE.format(signal="SIGKILL"), tmp_path / "other-cache")):
        killed.append(patched(preamble, *run_args(data, out, "--set", f"compute.cache_dir={cache_dir}")))
        _, err = killed[-1].communicate(timeout=120)
        assert killed[-1].returncode == -signal.SIGKILL, err
    in_pass, in_write = killed
    temps = [p.name for p in cache.iterdir() if p.name.endswith(".tmp")]
    assert temps and all(f".{in_pass.pid}." in name for name in temps)
    assert (tmp_path / f".res.partial-{in_write.pid}" / "results.json").is_file()
    assert (tmp_path / ".res.lock").read_text().strip() == str(in_write.pid)  # flock died with it
    assert not out.exists()
    assert main(["cache", "ls", "--dir", str(cache)]) == 0
    listing = capsys.readouterr().out
    assert f"temporary file of PID {in_pass.pid}" in listing and "its run has ended" in listing

    # beside them: a live run's hidden folders and temporary file, and names that are not ours
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        kept = [tmp_path / f".res.partial-{live.pid}", tmp_path / f".res.old-{live.pid}",
                tmp_path / ".res.partial-12x", tmp_path / ".res.partial-", tmp_path / f"res.partial-{in_write.pid}",
                tmp_path / f".other.partial-{in_write.pid}", tmp_path / f".res.partial-{in_write.pid}.bak"]
        for folder in kept:
            folder.mkdir()
            (folder / "results.json").write_text("{}")
        kept += [_file(cache / f".{'ab' * 32}.{live.pid}.{'0' * 32}.tmp"), _file(cache / "mine.tmp"),
                 _file(cache / f".{'ab' * 32}.{'0' * 32}.tmp")]  # no PID (older versions): young, kept
        kept.append(_link(tmp_path / f".res.partial-{_dead_pid()}", tmp_path / "thesis"))
        _user_folder(tmp_path)
        before = snapshot(*kept, tmp_path / "thesis")
        assert main(run_args(data, out, "--set", f"compute.cache_dir={cache}")) == 0
        assert snapshot(*kept, tmp_path / "thesis") == before
        assert not (tmp_path / f".res.partial-{in_write.pid}").exists()
        assert not [p for p in cache.iterdir() if f".{in_pass.pid}." in p.name]
        assert hidden_leftovers(out) == sorted(p.name for p in kept if p.name.startswith(".res."))
    finally:
        live.kill()
        live.wait()


def test_cache_ls_and_clear_show_and_remove_dead_temporary_files(tmp_path, capsys):
    dead = _dead_pid()
    dead_tmp = _file(tmp_path / f".{'cd' * 32}.{dead}.{'1' * 32}.tmp")
    live_tmp = _file(tmp_path / f".{'ef' * 32}.{os.getpid()}.{'2' * 32}.tmp")
    assert main(["cache", "ls", "--dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"cache {tmp_path} is empty"
    assert lines[1].startswith("cd" * 6) and f"temporary file of PID {dead}," in lines[1] and "ended" in lines[1]
    assert lines[2].startswith("ef" * 6) and f"of PID {os.getpid()}," in lines[2] and "still writing" in lines[2]
    assert main(["cache", "clear", "--dir", str(tmp_path)]) == 0
    assert "removed 1 cache files" in capsys.readouterr().out
    assert sorted(tmp_path.iterdir()) == [live_tmp] and not dead_tmp.exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])  # a hang-up ended with rc 129, .lock left
def test_sigterm_mid_pass_is_one_line_and_exit_143(sig, data, tmp_path):
    out, ready, go = tmp_path / "res", tmp_path / "ctl" / "ready", tmp_path / "ctl" / "go"
    ready.parent.mkdir()
    assert main(run_args(data, out, "--set", "compute.cache=false")) == 0  # a previous results folder
    before = snapshot(out), sorted(os.listdir(tmp_path))
    proc = patched(PAUSE, *run_args(data, out, "--set", "model.alpha=10", "--set", "compute.cache=false"),
                   env=dict(os.environ, READY=str(ready), GO=str(go)))
    deadline = time.time() + 120
    while not ready.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    assert (tmp_path / ".res.lock").exists()
    proc.send_signal(sig)
    while (tmp_path / ".res.lock").exists():  # the main thread cleans up while a task is still running
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    go.touch()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert err.strip().splitlines()[-1] == f"snrmoe: terminated ({sig.name})" and "Traceback" not in err
    assert (snapshot(out), sorted(os.listdir(tmp_path))) == before  # no hidden folder, no lock file left


@pytest.mark.parametrize("name, code, line", [("SIGTERM", 143, "snrmoe: terminated (SIGTERM)"),
                                              ("SIGINT", 130, "snrmoe: interrupted")])
def test_signal_while_writing_removes_the_hidden_folder(name, code, line, data, tmp_path):
    out = tmp_path / "res"
    assert main(run_args(data, out, "--set", "compute.cache=false")) == 0
    before = snapshot(out), sorted(os.listdir(tmp_path))
    proc = patched(SIGNAL_IN_RESULTS_WRITE.format(signal=name),
                   *run_args(data, out, "--set", "model.alpha=10", "--set", "compute.cache=false"))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == line and "Traceback" not in err
    assert (snapshot(out), sorted(os.listdir(tmp_path))) == before  # previous results untouched, no hidden folder


SIGNAL_AFTER_PUBLICATION = """
from snrmoe_dask.experiment import summary
def late(*a, **k):  # the signal comes once the results folder is published, before the summary
    os.kill(os.getpid(), signal.{signal})
    time.sleep(5)
summary.print_summary = late
"""


def test_signal_after_publication_says_the_results_are_complete(data, tmp_path):
    """A SIGTERM after the rename returned 143 with no word on the results, which were complete."""
    out = tmp_path / "res"
    proc = patched(SIGNAL_AFTER_PUBLICATION.format(signal="SIGTERM"),
                   *run_args(data, out, "--set", "model.alpha=10", "--set", "compute.cache=false"))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"snrmoe: terminated (SIGTERM); the results are complete in {out} "), err
    assert "Traceback" not in err
    assert json.loads((out / output_dir.MARKER).read_text())["pid"] == proc.pid
    assert _alpha_of_folder(out) == 10.0 and hidden_leftovers(out) == []


@pytest.mark.parametrize("exc, line, code", [
    (Terminated(signal.SIGHUP), "terminated (SIGHUP)", 129), (KeyboardInterrupt(), "interrupted", 130),
    (Terminated(signal.SIGTERM), "terminated (SIGTERM)", 143)])
def test_every_signal_says_whether_the_results_are_complete(exc, line, code, tmp_path):
    assert _ending(exc) == (line, code)
    exc.published = tmp_path
    assert _ending(exc) == (f"{line}; the results are complete in {tmp_path} (the steps after them, such as "
                                "the owner's copies, tracking blocks and summary, may be missing)", code)


# ----------------------------------------------------------------------------- 5. after the pass, the results first
DEMO_BLOCK = "<!-- snrmoe:LOGG-SNR-ORACLE-01-demo:begin -->"  # a tracking block of the runs here


def full_disk_at(monkeypatch, *folders: Path) -> None:
    """Atomic writes (a temporary file beside the target) into ``folders`` fail as on a full disk."""
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*a, dir=None, **k):
        if dir is not None and any(Path(dir).resolve().is_relative_to(f.resolve()) for f in folders):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*a, dir=dir, **k)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def last_line(capsys, code: int) -> str:
    """The run's last line on stderr; ``capsys`` may also be output already read (``capsys.readouterr()``)."""
    err = (capsys.readouterr() if hasattr(capsys, "readouterr") else capsys).err
    assert "Traceback" not in err and "Logging error" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("snrmoe: "), err
    return line


def assert_published(out: Path, *, figures: bool = True) -> None:
    marker = json.loads((out / output_dir.MARKER).read_text())
    expected = {"results.json", "predictions.csv", "models.h5", "metrics.nc"}
    assert expected <= set(marker["files"]) and all((out / f).is_file() for f in expected)
    assert ("report.md" in marker["files"] and (out / "img").is_dir()) == figures
    assert hidden_leftovers(out) == []


def test_owner_copies_on_a_full_disk_still_publish_the_results(data, tmp_path, monkeypatch, capsys):
    """output.report on a full file system ended in a traceback and no results folder."""
    out, owner = tmp_path / "res", tmp_path / "owner"
    owner.mkdir()
    hub = tmp_path / "hub.md"
    full_disk_at(monkeypatch, owner)
    code = main(run_args(data, out, "--set", f"output.report={owner}/exp_{{date}}.md", "--hub", str(hub)))
    printed = capsys.readouterr()
    assert "owner's layout" not in printed.out  # the summary names no file that was not written
    line = last_line(printed, code)
    assert code == 3
    assert line.startswith(f"snrmoe: error: the results are complete in {out}, but not written: 4 figures in "
                           f"{owner / 'img'} (No space left on device); {owner}/exp_"), line
    assert_published(out)
    assert DEMO_BLOCK in hub.read_text()  # the steps after the failure still ran
    assert list(owner.rglob("*")) == [owner / "img"]  # no temporary files, nothing half-written


def test_summary_names_the_owner_copy_only_when_it_was_written(tmp_path):
    from snrmoe_dask.report.render import renderer

    render = renderer("en", tmp_path / "exp.md")
    assert render.owner_line() is None  # nothing written yet (the figures failed: never written)
    render._attempt(render.report, lambda path: path.write_text("x"))
    assert render.owner_line() == f"report in the owner's layout: {render.report} (figures in {tmp_path / 'img'})"
    render.not_written[f"2 figures in {render.img_dir}"] = "No space left on device"
    assert render.owner_line() == f"report in the owner's layout: {render.report}"
    render._attempt(render.report, lambda path: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    assert render.owner_line() is None


def test_tracking_block_on_a_full_disk_is_named_after_the_results(data, tmp_path, monkeypatch, capsys):
    out, full = tmp_path / "res", tmp_path / "full"
    full.mkdir()
    flag, other = "--roadmap", "--hub"
    (full / "t.md").write_text("# mine\n")
    full_disk_at(monkeypatch, full)
    code = main(run_args(data, out, flag, str(full / "t.md"), other, str(tmp_path / "other.md")))
    line = last_line(capsys, code)
    assert code == 3 and line.endswith(f"but not written: {flag} {full / 't.md'} (No space left on device)"), line
    assert (full / "t.md").read_text() == "# mine\n" and sorted(full.iterdir()) == [full / "t.md"]
    assert DEMO_BLOCK in (tmp_path / "other.md").read_text()
    assert_published(out)


def test_figures_that_fail_leave_the_data_files_published(data, tmp_path, monkeypatch, capsys):
    """A full disk while the figures are drawn (a figure that cannot be drawn takes the same path)."""
    from snrmoe_dask.report import plots

    out = tmp_path / "res"

    def failing(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    real = plots.draw_figures
    monkeypatch.setattr(plots, "draw_figures", failing)  # render imports it from plots when it draws
    code = main(run_args(data, out))
    line = last_line(capsys, code)
    why = "No space left on device"
    assert code == 3 and line == (f"snrmoe: error: the results are complete in {out}, but not written: the "
                                  f"figures and report.md of {out} ({why}; `snrmoe report {out}` draws them "
                                  "from the results)"), line
    assert_published(out, figures=False)
    assert not (out / "report.md").exists() and not (out / "img").exists()
    monkeypatch.setattr(plots, "draw_figures", real)
    assert main(["report", str(out), "--lang", "en"]) == 0  # as the line says
    assert (out / "report.md").is_file() and len(list((out / "img").glob("*.png"))) == 4


def test_results_that_cannot_be_written_are_one_line_and_leave_the_previous_folder(data, tmp_path, monkeypatch,
                                                                                       capsys):
    from snrmoe_dask import BinnedRidge

    out = tmp_path / "res"
    assert main(run_args(data, out, "--set", "compute.cache=false")) == 0
    before = snapshot(out), sorted(os.listdir(tmp_path))

    def full(self, path, *a, **k):
        Path(path).write_bytes(b"\x89HDF")  # half a file: it must go with the hidden folder
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(BinnedRidge, "save", full)
    assert main(run_args(data, out, "--set", "model.alpha=10", "--set", "compute.cache=false")) == 2
    assert last_line(capsys, 2) == (f"snrmoe: error: output.dir {out}: cannot write the results (No space left on "
                                    "device); nothing was published")
    assert (snapshot(out), sorted(os.listdir(tmp_path))) == before


def test_lock_file_on_a_full_disk_is_one_line_and_removed(data, tmp_path, monkeypatch, capsys, no_pass):
    """At 0 bytes free the lock file is created but cannot hold the PID: it was left empty, with a traceback."""
    def full(*a):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "ftruncate", full)
    out = tmp_path / "res"
    assert main(run_args(data, out)) == 2
    assert last_line(capsys, 2) == (f"snrmoe: error: output.dir {out}: cannot write the lock file "
                                    f"{tmp_path / '.res.lock'} (No space left on device)")
    assert hidden_leftovers(out) == [] and not out.exists()


@pytest.mark.parametrize("place", ["output.dir", "output.report", "--roadmap", "--log"])
def test_too_little_free_space_is_refused_before_the_pass(place, data, tmp_path, monkeypatch, capsys, no_pass):
    out, small = tmp_path / "res", tmp_path / "small"
    small.mkdir()
    where = {"output.dir": ("--set", f"output.dir={small / 'res'}"),
             "output.report": ("--set", f"output.report={small / 'r.md'}"),
             "--roadmap": ("--roadmap", str(small / "r.md")), "--log": ("--log", str(small / "run.log"))}[place]
    real = shutil.disk_usage

    def usage(path):
        total, used, free = real(path)
        return type(real(path))(total, used, 1000 if Path(path).resolve() == small.resolve() else free)
    monkeypatch.setattr(shutil, "disk_usage", usage)
    assert main(run_args(data, out, *where)) == 2
    line = last_line(capsys, 2)
    assert line.startswith(f"snrmoe: error: {place} {small}/") and f"0.0 MB free on its file system ({small})" in line
    assert not out.exists() and sorted(p.name for p in small.iterdir()) == (["run.log"] if place == "--log" else [])


@pytest.mark.parametrize("errno_", [errno.EACCES, errno.EROFS])
@pytest.mark.parametrize("place", ["output.report", "--roadmap"])
def test_owner_places_that_cannot_be_written_are_refused_before_the_pass(errno_, place, data, tmp_path, monkeypatch,
                                                                         capsys, no_pass):
    ro = tmp_path / "ro"
    ro.mkdir()
    where = {"output.report": ("--set", f"output.report={ro / 'deeper' / 'r.md'}"),
             "--roadmap": ("--roadmap", str(ro / "r.md"))}[place]
    real_access, real_statvfs = os.access, os.statvfs
    monkeypatch.setattr(os, "access", lambda path, mode, **k: Path(path) != ro and real_access(path, mode, **k))

    class ReadOnly:  # statvfs of a read-only mount
        def __init__(self, path):
            self.f_flag = real_statvfs(path).f_flag | (os.ST_RDONLY if errno_ == errno.EROFS else 0)
    monkeypatch.setattr(os, "statvfs", ReadOnly)
    assert main(run_args(data, tmp_path / "res", *where)) == 2
    line = last_line(capsys, 2)
    assert line.startswith(f"snrmoe: error: {place} {ro}/") and f"cannot write in {ro} ({os.strerror(errno_)})" in line
    assert list(ro.iterdir()) == [] and not (tmp_path / "res").exists()


def test_log_on_a_full_disk_is_one_line_not_a_traceback_per_record(data, tmp_path, capsys):
    """--log on a full disk printed a "--- Logging error ---" traceback per record."""
    out = tmp_path / "res"
    assert main(run_args(data, out, "--log", "/dev/full")) == 3
    err = capsys.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err, err
    *warnings, last = err.strip().splitlines()  # -q --log: warnings on stderr, then the one line
    assert all(" WARNING " in line for line in warnings), err
    assert last.startswith("snrmoe: error: the command finished, but not written: --log /dev/full from ")
    assert last.endswith("on (No space left on device)")
    assert_published(out)


class FullStdout:
    """A stdout on a full disk, as ``> /dev/full`` gives."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        raise OSError(errno.EBADF, "no file descriptor")


def test_summary_on_a_full_stdout_is_named_after_the_results(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", FullStdout())
    assert main(run_args(data, tmp_path / "res")) == 3
    assert last_line(capsys, 3) == (f"snrmoe: error: the results are complete in {tmp_path / 'res'}, but not "
                                    "written: the summary on standard output (No space left on device)")
    assert_published(tmp_path / "res")


def test_stdout_to_dev_full_is_one_line(tmp_path):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "snrmoe_dask.cli", "cache", "ls", "--dir", str(tmp_path)],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("snrmoe: error: standard output: cannot write the command's "
                                                    "output (No space left on device)")
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
