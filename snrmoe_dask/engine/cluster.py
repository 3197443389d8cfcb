"""Where the graph runs: the local threaded/process schedulers or a dask.distributed cluster.

``compute_context(scheduler, workers)`` yields a function that computes a dask object with a
progress bar (dask's on the local schedulers, distributed's on a cluster).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Callable, Iterator

import dask
from threadpoolctl import threadpool_limits

from ..errors import ConfigError

log = logging.getLogger(__name__)

LOCAL_SCHEDULERS = ("threads", "processes", "sync")
# One BLAS thread per task, on every scheduler: a product's bits can depend on how many threads
# BLAS splits it over, and the numbers must not depend on the worker count. Each task is GEMMs
# between numpy work BLAS does not thread (reads, noise), so one worker per core keeps every core
# busy anyway. Cluster workers are set once when the client connects (they may have been started
# by someone else, with other settings).
BLAS_THREADS = 1


def _limit_blas() -> None:
    """Run on every cluster worker: BLAS_THREADS for the rest of the worker's life."""
    threadpool_limits(BLAS_THREADS)


@contextlib.contextmanager
def compute_context(scheduler: str = "threads", workers: int = 2, progress: bool = True) -> Iterator[Callable]:
    """Yield ``compute(obj) -> result`` bound to the chosen scheduler (validated by the config)."""
    if scheduler in LOCAL_SCHEDULERS:
        def compute(obj):
            bar = _local_progress() if progress else contextlib.nullcontext()
            with bar, threadpool_limits(BLAS_THREADS), _environ(OPENBLAS_NUM_THREADS=BLAS_THREADS,
                                                                OMP_NUM_THREADS=BLAS_THREADS):
                return dask.compute(obj, scheduler=scheduler, num_workers=workers)[0]
        yield compute
        return

    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if scheduler == "local-cluster":
            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                       dashboard_address=":0"))
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout="20s"))
            except (OSError, TimeoutError) as exc:
                raise ConfigError(f"compute.scheduler: cannot connect to {scheduler}: {exc}") from None
        client.run(_limit_blas)
        print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)

        def compute(obj):
            future = client.compute(obj)
            if progress:
                from distributed import progress as dist_progress
                dist_progress(future, notebook=False)  # a text bar: works without ipywidgets
            return future.result()
        yield compute


@contextlib.contextmanager
def _environ(**values: int) -> Iterator[None]:
    """Set environment variables for child processes spawned inside the block (processes scheduler)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _local_progress():
    from dask.diagnostics import ProgressBar
    return ProgressBar(out=sys.stderr, minimum=1.0)
