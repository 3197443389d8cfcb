"""Progress that a person can follow: a live bar on a terminal, log lines anywhere else.

When stderr is a terminal (or in a Jupyter kernel), progress is a live bar (tqdm, dask's and
distributed's bars). When it is not (``nohup ... > log 2>&1 &``, a pipe, ``snrmoe run --log FILE``),
progress is one log line about every 10 % or 30 s, through the logger ``snrmoe_dask.progress``:

    pass: 12/40 tasks (30%), 1.9 tasks/s, ETA 15 s

:func:`set_mode` forces either ("lines" for ``--log``); :func:`use_lines` says which applies.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Callable

log = logging.getLogger("snrmoe_dask.progress")

MODES = ("auto", "lines", "bar")
_mode = "auto"


def set_mode(mode: str) -> None:
    """"lines" (log lines), "bar" (live bars) or "auto" (lines unless stderr is a terminal)."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"progress mode {mode!r}: expected one of {MODES}")
    _mode = mode


def use_lines() -> bool:
    """True when progress should be written as log lines rather than drawn as a live bar: in "auto"
    mode when stderr is not a terminal, unless this is a Jupyter kernel (its output redraws a bar)."""
    if _mode != "auto":
        return _mode == "lines"
    isatty = getattr(sys.stderr, "isatty", None)
    return not (isatty is not None and isatty()) and "ipykernel" not in sys.modules


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class LineProgress:
    """Counts work done and logs one line at every ``step`` of the total or every ``interval`` s.

    ``update(n)`` adds n done, ``set(done)`` sets the count (``total`` may change meanwhile, as a
    scheduler learns it), ``close()`` logs the final line once. Usable as a context manager.
    """

    def __init__(self, total: int, unit: str, desc: str, step: float = 0.1, interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.unit, self.desc = int(total), unit, desc
        self.step, self.interval, self.clock = step, interval, clock
        self.done = 0
        self.start = self.last_time = clock()
        self.last_fraction = 0.0
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.set(self.done + int(n))

    def set(self, done: int) -> None:
        self.done = int(done)
        now = self.clock()
        fraction = self.done / self.total if self.total > 0 else 1.0
        if fraction >= 1.0:
            self.close()
        elif fraction - self.last_fraction >= self.step - 1e-12 or now - self.last_time >= self.interval:
            self._line(now, fraction)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        elapsed = self.clock() - self.start
        log.info("%s: %s %s done in %s", self.desc, f"{self.done:,}", self.unit, _duration(elapsed))

    def _line(self, now: float, fraction: float) -> None:
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else math.nan
        eta = (self.total - self.done) / rate if rate > 0 else math.nan
        rate_text = f"{rate:,.1f}" if rate < 100 else f"{rate:,.0f}"
        log.info("%s: %s/%s %s (%d%%), %s %s/s, ETA %s", self.desc, f"{self.done:,}", f"{self.total:,}", self.unit,
                 math.floor(100 * fraction + 1e-9), rate_text, self.unit, _duration(eta))
        # the next line comes at the next whole step, however far this update jumped
        self.last_fraction = math.floor(fraction / self.step + 1e-9) * self.step
        self.last_time = now

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def counter(total: int, unit: str, desc: str, enabled: bool = True):
    """A progress counter with ``update(n)`` and context-manager use: log lines (:class:`LineProgress`)
    when :func:`use_lines`, else a tqdm bar on stderr; disabled -> a tqdm that draws nothing."""
    if enabled and use_lines():
        return LineProgress(total, unit, desc)
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled)
