"""Progress as log lines when stderr is not a terminal: one line per 10 % or 30 s, with rate and ETA."""

from __future__ import annotations

import io
import logging
import re

import dask
import pytest

from snrmoe_dask.engine.cluster import compute_context
from snrmoe_dask.io import progress
from snrmoe_dask.io.progress import LineProgress, counter, set_mode, use_lines

LINE = re.compile(r"^(?P<desc>[\w-]+): (?P<done>[\d,]+)/(?P<total>[\d,]+) (?P<unit>\w+) \((?P<pct>\d+)%\), "
                  r"[\d,.]+ (?P=unit)/s, ETA ")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.INFO, logger="snrmoe_dask.progress")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "snrmoe_dask.progress"]


@pytest.fixture(autouse=True)
def auto_mode():
    yield
    set_mode("auto")


def test_one_line_per_tenth_however_small_the_updates(lines):
    clock = Clock()
    with LineProgress(1000, "rows", "pass", clock=clock) as bar:
        for _ in range(1000):
            clock.now += 0.01
            bar.update(1)
    got = lines()
    assert [int(LINE.match(m)["pct"]) for m in got[:-1]] == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert got[0] == "pass: 100/1,000 rows (10%), 100.0 rows/s, ETA 9 s"
    assert got[-1] == "pass: 1,000 rows done in 10 s"


def test_a_slow_stretch_gets_a_line_every_30_s_and_big_jumps_one_line(lines):
    clock = Clock()
    bar = LineProgress(100, "tasks", "train-total", clock=clock)
    clock.now = 31.0
    bar.set(1)       # 1 % but 31 s without a line
    clock.now = 40.0
    bar.set(2)       # nothing new to say
    clock.now = 45.0
    bar.set(57)      # one jump over five tenths: one line, and the next at 60 %
    bar.set(59)
    bar.set(60)
    bar.set(100)
    bar.close()      # closing twice says nothing more
    got = lines()
    assert [int(LINE.match(m)["pct"]) for m in got[:-1]] == [1, 57, 60]
    assert got[1].endswith("ETA 34 s") and got[-1] == "train-total: 100 tasks done in 45 s"


def test_mode_follows_the_terminal(monkeypatch):
    class Stream(io.StringIO):
        def __init__(self, tty: bool) -> None:
            super().__init__()
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.delitem(progress.sys.modules, "ipykernel", raising=False)  # the notebook test may import it
    monkeypatch.setattr(progress.sys, "stderr", Stream(True))
    assert not use_lines() and not isinstance(counter(10, "rows", "x"), LineProgress)
    monkeypatch.setattr(progress.sys, "stderr", Stream(False))
    assert use_lines() and isinstance(counter(10, "rows", "x"), LineProgress)
    monkeypatch.setitem(progress.sys.modules, "ipykernel", object())  # a notebook redraws the bar
    assert not use_lines()
    monkeypatch.delitem(progress.sys.modules, "ipykernel")
    assert not isinstance(counter(10, "rows", "x", enabled=False), LineProgress)
    set_mode("bar")
    assert not use_lines()
    with pytest.raises(ValueError):
        set_mode("loud")


@pytest.mark.parametrize("scheduler", ["threads", "local-cluster"])
def test_schedulers_report_finished_tasks_as_lines(scheduler, lines):
    set_mode("lines")
    parts = [dask.delayed(lambda i: i * i)(i) for i in range(20)]
    with compute_context(scheduler, workers=1, progress=True) as compute:
        total = dask.delayed(sum)(parts, dask_key_name="squares-total-0123abcd")
        assert compute(total) == sum(i * i for i in range(20))
    got = [m for m in lines() if m.startswith("squares-total")]
    assert got and got[-1].startswith("squares-total: 21 tasks done in ")
    assert all(LINE.match(m) for m in got[:-1]) and len(got) <= 11
