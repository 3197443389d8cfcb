"""Where the graph runs: the local threaded/process schedulers or a dask.distributed cluster.

``compute_context(scheduler, workers)`` yields a function that computes a dask object with a
progress bar (dask's on the local schedulers, distributed's on a cluster) on a terminal, and with
one log line about every 10 % or 30 s elsewhere (``io.progress``: nohup, pipes, ``--log``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import Callable, Iterator

import dask
from dask.callbacks import Callback
from dask.utils import key_split

from ..errors import ConfigError
from ..io.progress import LineProgress, use_lines

log = logging.getLogger(__name__)

LOCAL_SCHEDULERS = ("threads", "processes", "sync")


@contextlib.contextmanager
def compute_context(scheduler: str = "threads", workers: int = 2, progress: bool = True) -> Iterator[Callable]:
    """Yield ``compute(obj) -> result`` bound to the chosen scheduler (validated by the config)."""
    if scheduler in LOCAL_SCHEDULERS:
        def compute(obj):
            bar = _local_progress(obj) if progress else contextlib.nullcontext()
            with bar:  # each task of the pass runs on one BLAS thread itself (engine.segment)
                return dask.compute(obj, scheduler=scheduler, num_workers=workers)[0]
        yield compute
        return

    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        quiet = _ConnectionTracebacks()
        client_log = logging.getLogger("distributed.client")
        client_log.addFilter(quiet)
        stack.callback(client_log.removeFilter, quiet)
        if scheduler == "local-cluster":
            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                       dashboard_address=":0"))
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout="20s"))
            except (OSError, TimeoutError) as exc:
                raise ConfigError(f"compute.scheduler: cannot connect to {scheduler}: {exc}") from None
        address = client.scheduler.address if scheduler == "local-cluster" else scheduler
        with _cluster_errors(address):
            log.info("dask dashboard: %s", client.dashboard_link)

        def compute(obj):
            with _cluster_errors(address):
                future = client.compute(obj)
                if progress and use_lines():
                    _cluster_lines(future, _label(obj))
                elif progress:
                    from distributed import progress as dist_progress
                    dist_progress(future, notebook=False)  # a text bar: works without ipywidgets
                return future.result()
        yield compute


class _ConnectionTracebacks(logging.Filter):
    """Drops distributed.client's tracebacks of a lost connection: :func:`_cluster_errors` says it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        from distributed import CancelledError

        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, (OSError, CancelledError, asyncio.CancelledError))


@contextlib.contextmanager
def _cluster_errors(address: str) -> Iterator[None]:
    """The cluster failures a user must act on, as one ConfigError naming the scheduler.

    A lost scheduler cancels every future (or closes the client's connection); a task whose
    workers died ``distributed.scheduler.allowed-failures`` times fails with KilledWorker. A lost
    worker alone is not an error: its tasks run again elsewhere. Errors raised by the tasks
    themselves (InputError, ...) pass through unchanged.
    """
    from distributed import CancelledError, KilledWorker
    from distributed.comm.core import CommClosedError

    try:
        yield
    except (CancelledError, CommClosedError) as exc:
        raise ConfigError(f"compute.scheduler: lost the connection to the scheduler at {address} during the run "
                          f"({type(exc).__name__}); shards already in the cache are reused by the next run") from None
    except KilledWorker as exc:
        raise ConfigError(f"compute.scheduler: the workers of {address} died while running a task "
                          f"({exc.allowed_failures + 1} workers ran {exc.task!r} and died); expected workers that stay "
                          "up (enough memory per task: see the README)") from None


def _label(obj) -> str:
    """What is computed, for progress lines: the graph's output key without its token ('train-total')."""
    key = getattr(obj, "key", None)
    return key_split(key) if key is not None else "compute"


def _local_progress(obj):
    if use_lines():
        return _LocalLines(_label(obj))
    from dask.diagnostics import ProgressBar
    return ProgressBar(out=sys.stderr, minimum=1.0)


class _LocalLines(Callback):
    """The local schedulers' finished-task count as :class:`io.progress.LineProgress` lines."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label
        self.lines: LineProgress | None = None

    def _start_state(self, dsk, state) -> None:
        total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
        self.lines = LineProgress(total, "tasks", self.label)

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        self.lines.set(len(state["finished"]))

    def _finish(self, dsk, state, errored) -> None:
        if self.lines is not None and not errored:
            self.lines.close()


def _cluster_lines(future, label: str) -> None:
    """Block until ``future`` is done, logging distributed's progress feed (every task of its graph,
    as the scheduler counts them) as :class:`io.progress.LineProgress` lines."""
    from distributed.diagnostics.progressbar import TextProgressBar

    lines = LineProgress(1, "tasks", label)

    class Lines(TextProgressBar):
        def _draw_bar(self, remaining, all, **kwargs) -> None:
            lines.total = all
            lines.set(all - remaining)

        def _draw_stop(self, **kwargs) -> None:
            if kwargs.get("status") == "finished":
                lines.close()

    Lines([future])
