"""Work shared with a forked copy of the process (io.forked): the plain loop's results and first error."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pandas as pd
import pytest

from snrmoe_dask.io import forked
from snrmoe_dask.io import shards as io

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
                                reason="forks only on Linux with two cores or more")


def _run(code: str) -> str:
    """Run ``code`` in a fresh single-threaded interpreter (pytest's workers have threads: no fork there)."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_forks_only_where_safe_and_gives_the_plain_loops_results():
    out = _run("""
        import os
        from snrmoe_dask.io import forked
        me = os.getpid()
        assert forked.fork_is_safe()
        import time

        def square(x):
            time.sleep(0.02)
            return x * x, os.getpid()

        got = forked.map_shared(square, list(range(11)), min_items=4)
        assert [v for v, _ in got] == [x * x for x in range(11)]
        pids = {p for _, p in got}
        assert len(pids) == 2 and me in pids  # both processes took items
        assert forked.map_shared(lambda x: os.getpid(), [1, 2, 3], min_items=4) == [me] * 3
        # more items than numbers in the pipe: runs of consecutive items
        assert forked.map_shared(lambda x: x + 1, list(range(3 * forked.MAX_TOKENS + 5)), min_items=2) == \
            list(range(1, 3 * forked.MAX_TOKENS + 6))
        import gc  # the parent's collector is as it was: nothing left frozen, nor unfrozen that was frozen
        assert gc.get_freeze_count() == 0
        gc.freeze()
        frozen = gc.get_freeze_count()
        assert forked.map_shared(lambda x: x, list(range(4)), min_items=2) == [0, 1, 2, 3]
        assert gc.get_freeze_count() == frozen > 0
        print("ok")
    """)
    assert out.strip() == "ok"
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:  # another thread might hold a lock at the fork: the plain loop
        assert not forked.fork_is_safe()
        assert forked.map_shared(lambda x: os.getpid(), [1, 2, 3, 4], min_items=1) == [os.getpid()] * 4
    finally:
        stop.set()
        other.join()


def test_the_first_error_in_list_order_is_raised_and_a_lost_child_costs_only_time():
    out = _run("""
        import os
        from snrmoe_dask.io import forked
        from snrmoe_dask.errors import InputError, InvalidParameterError

        def fail_at(bad, exc=InputError):
            def fn(x):
                if x in bad:
                    raise exc(f"item {x} is bad") if exc is InputError else exc(f"item {x} is bad", "p")
                return x
            return fn

        for bad in ([7], [2, 7], [9, 8]):
            try:
                forked.map_shared(fail_at(bad), list(range(10)), min_items=2)
            except InputError as exc:
                print(exc)
        try:  # an error that does not pickle back: the parent computes the half and raises it itself
            forked.map_shared(fail_at([6], InvalidParameterError), list(range(10)), min_items=2)
        except InvalidParameterError as exc:
            print(exc)
        me = os.getpid()
        def die_in_child(x):
            if os.getpid() != me:
                os._exit(3)
            return x
        print(forked.map_shared(die_in_child, list(range(6)), min_items=2))
    """)
    assert out.splitlines() == ["item 7 is bad", "item 2 is bad", "item 8 is bad", "item 6 is bad",
                                "[0, 1, 2, 3, 4, 5]"]


def test_spare_time_is_spent_here_while_the_child_takes_the_items():
    out = _run("""
        import os, time
        from snrmoe_dask.io import forked
        me, ran = os.getpid(), []

        def slow(x):
            time.sleep(0.01)
            return x, os.getpid()

        steps = [lambda: ran.append("a") or time.sleep(1.0), lambda: ran.append("b")]
        with forked.spare_time(steps):
            assert forked.map_shared(slow, [1, 2], min_items=4) == [(1, me), (2, me)]  # no fork: no step
            assert ran == []
            got = forked.map_shared(slow, list(range(20)), min_items=2)
        assert [x for x, _ in got] == list(range(20))
        # the child took every item (0.2 s) during step a (1 s); no item was left for step b
        assert ran == ["a"] and me not in {p for _, p in got}, (ran, got)
        assert forked._spare == []
        print("ok")
    """)
    assert out.strip() == "ok"


def test_shards_opened_by_two_processes_equal_those_opened_one_by_one(tmp_path):
    from snrmoe_dask import simulate_set

    simulate_set(tmp_path, train=(12, 30), val=0, test=0, seed=3, pixels=32, progress=False)
    paths = [str(tmp_path / f"train_30_{k}" / "dataset.h5") for k in range(12)]
    saved = tmp_path / "infos.pkl"
    _run(f"""
        import pickle
        from snrmoe_dask.io import forked, shards
        assert forked.fork_is_safe()
        shards.PARALLEL_OPEN_FILES = 4
        open({str(saved)!r}, "wb").write(pickle.dumps(shards.inspect_shards({paths!r}, columns=["snr"])))
    """)
    forked_infos = pickle.loads(saved.read_bytes())
    plain = [io.inspect_shard(p, columns=["snr"]) for p in paths]
    assert len(forked_infos) == len(plain) == 12
    for a, b in zip(forked_infos, plain):
        assert (a.path, a.n, a.d, a.chunk_rows, a.source, a.layout) == (b.path, b.n, b.d, b.chunk_rows, b.source,
                                                                        b.layout)
        np.testing.assert_array_equal(a.wave, b.wave)
        assert a.params.equals(b.params)


def test_a_signal_in_the_parent_ends_the_child_too(tmp_path):
    """A run stopped by a signal (snrmoe's handler raises) while the child opens its half: no child is left."""
    pids = tmp_path / "pids"
    out = _run(f"""
        import os, signal, time
        from snrmoe_dask.io import forked

        def stop(signum, frame):
            raise SystemExit(143)

        def slow(x):
            with open({str(pids)!r}, "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            time.sleep(0.1)
            return x

        signal.signal(signal.SIGTERM, stop)
        me = os.getpid()
        sender = os.fork()  # another process sends the signal: this one stays single-threaded
        if sender == 0:
            time.sleep(0.5)
            os.kill(me, signal.SIGTERM)
            os._exit(0)
        try:
            forked.map_shared(slow, list(range(40)), min_items=2)
        except SystemExit:
            print(me)
        os.waitpid(sender, 0)
    """)
    parent = int(out.strip())
    children = {int(p) for p in pids.read_text().split()} - {parent}
    assert len(children) == 1, "the second half ran in one child"
    child = children.pop()
    assert not os.path.exists(f"/proc/{child}"), "the child was killed and reaped"


def test_figures_drawn_by_two_processes_equal_those_drawn_one_by_one(tmp_path, monkeypatch):
    """make_figures in a single-threaded process draws half of the card's figures in a forked copy: the same
    files, byte for byte, in the same order."""
    from report_cases import make_predictions, make_results

    from snrmoe_dask.report.plots import make_figures

    results = make_results()
    predictions = make_predictions(results)
    (tmp_path / "results.json").write_text(__import__("json").dumps(results))
    predictions.to_csv(tmp_path / "predictions.csv", index=False)
    out = _run(f"""
        import json, os, pandas as pd
        from snrmoe_dask.io import forked
        from snrmoe_dask.report.plots import make_figures
        assert forked.fork_is_safe()
        results = json.load(open({str(tmp_path / "results.json")!r}))
        predictions = pd.read_csv({str(tmp_path / "predictions.csv")!r})
        print(" ".join(p.name for p in make_figures(results, predictions, {str(tmp_path / "forked")!r})))
    """)
    monkeypatch.setattr(forked, "fork_is_safe", lambda: False)  # here, one by one
    plain = make_figures(results, pd.read_csv(tmp_path / "predictions.csv"), tmp_path / "plain")
    assert out.split() == [p.name for p in plain]
    for p in plain:
        assert (tmp_path / "forked" / p.name).read_bytes() == p.read_bytes(), p.name
