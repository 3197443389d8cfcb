"""Where the graph runs: the local threaded/process schedulers or a dask.distributed cluster.

``compute_context(scheduler, workers)`` yields a function that computes a dask object with a
progress bar (dask's on the local schedulers, distributed's on a cluster) on a terminal, and with
one log line about every 10 % or 30 s elsewhere (``io.progress``: nohup, pipes, ``--log``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

import dask
from dask.callbacks import Callback
from dask.utils import key_split

from ..errors import ConfigError
from ..io.progress import LineProgress, use_lines

log = logging.getLogger(__name__)

LOCAL_SCHEDULERS = ("threads", "processes", "sync")
DEFAULT_CONNECT_TIMEOUT_S = 30.0  # compute.connect_timeout


@contextlib.contextmanager
def compute_context(scheduler: str = "threads", workers: int = 2, progress: bool = True,
                    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
                    paths: Sequence[str | os.PathLike] = ()) -> Iterator[Callable]:
    """Yield ``compute(obj) -> result`` bound to the chosen scheduler (validated by the config).

    For a scheduler address: ``connect_timeout`` seconds to connect (and for a peer to show it is a
    dask scheduler, see :func:`check_scheduler`); ``paths`` (absolute) must exist on every worker,
    else one ConfigError names the first a worker does not see.
    """
    if scheduler in LOCAL_SCHEDULERS:
        # The threads are this context's own and are told to end with it, however it ends: a signal raised
        # in the main thread while a pool starts a worker (dask's pools are kept for the process) can leave
        # that worker unregistered, waiting for work for ever, and the interpreter's exit waiting on it.
        pool = _thread_pool(workers) if scheduler == "threads" else None
        options = {"pool": pool} if pool is not None else {}
        get = local_get(scheduler)

        def compute(obj):
            bar = _local_progress(obj) if progress else contextlib.nullcontext()
            with bar, _collector_spares_old_objects():  # each task runs on one BLAS thread itself (engine.segment)
                return dask.compute(obj, scheduler=get, num_workers=workers, **options)[0]
        try:
            yield compute
        finally:
            if pool is not None:  # a task still running (a signal) finishes; nothing waits for it here
                pool.shutdown(wait=False, cancel_futures=True)
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
            check_scheduler(scheduler, connect_timeout)
            try:
                client = stack.enter_context(Client(scheduler, timeout=connect_timeout))
            except (OSError, TimeoutError, ValueError) as exc:
                raise ConfigError(f"compute.scheduler: cannot connect to {scheduler}: {exc}") from None
        address = client.scheduler.address if scheduler == "local-cluster" else scheduler
        with _cluster_errors(address):
            log.info("dask dashboard: %s", client.dashboard_link)
            if scheduler != "local-cluster":  # a local cluster's workers share this machine's files
                _check_worker_paths(client, address, [os.fspath(p) for p in paths])

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


def local_get(scheduler: str) -> Callable:
    """dask's get function of a local scheduler ("threads", "processes" or "sync"). Given the function,
    ``dask.compute`` does not import distributed to look for a client first, as it does for a scheduler's
    name: half a second of imports, holding the GIL, at the start of a pass."""
    if scheduler == "threads":
        import dask.threaded

        return dask.threaded.get
    if scheduler == "processes":
        import dask.multiprocessing

        return dask.multiprocessing.get
    if scheduler == "sync":
        import dask.local

        return dask.local.get_sync
    raise ValueError(f"not a local scheduler: {scheduler!r}; expected one of {', '.join(LOCAL_SCHEDULERS)}")


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads like dask's own (contextvars, such as numpy's error state, reach the tasks)."""
    import dask.threaded

    kind = getattr(dask.threaded, "ContextAwareThreadPoolExecutor", ThreadPoolExecutor)
    return kind(workers, thread_name_prefix="snrmoe-task")


# The largest first message a scheduler sends (its handshake: a few hundred bytes); a peer whose
# first 8 bytes announce more is not one (distributed would try to allocate what they say).
MAX_HANDSHAKE_BYTES = 1 << 20


def check_scheduler(address: str, timeout: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
    """Raise one ConfigError unless a dask scheduler may be listening at ``address``, within ``timeout`` s.

    An unknown scheme is refused at once. For ``tcp://`` the peer must send, unasked, a message of
    dask's framing within the timeout, as a scheduler does with its handshake on every connection:
    an HTTP server (the dashboard's port) waits for a request, another service answers with bytes
    that announce an absurd size. distributed itself would wait for ever on the first and try to
    allocate exabytes on the second. (A scheduler logs the probe as a connection closed early.)
    """
    from distributed.comm import registry
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address, strict=True)
        registry.get_backend(scheme)
        if scheme != "tcp":
            return  # TLS and the others speak first from the client: nothing to read before the handshake
        host, port = parse_host_port(location)
    except ValueError as exc:
        raise ConfigError(f"compute.scheduler: {address}: {exc}") from None
    deadline = time.monotonic() + timeout
    late = (f"within {timeout:g} s (compute.connect_timeout); expected the address of a running dask scheduler, "
            "not its dashboard or another server")
    try:
        sock = _connect(host, port, deadline)
    except (socket.timeout, TimeoutError):
        raise ConfigError(f"compute.scheduler: cannot connect to {address} {late}") from None
    except OSError as exc:
        raise ConfigError(f"compute.scheduler: cannot connect to {address}: {exc.strerror or exc}") from None
    head = b""
    with sock:
        try:
            while len(head) < 8:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(8 - len(head))
                if not chunk:
                    raise ConfigError(f"compute.scheduler: {address} closed the connection without a dask "
                                      "handshake; expected the address of a dask scheduler")
                head += chunk
        except (socket.timeout, TimeoutError):
            raise ConfigError(f"compute.scheduler: {address} sent no dask handshake {late}") from None
        except OSError as exc:
            raise ConfigError(f"compute.scheduler: {address}: {exc.strerror or exc} before a dask handshake; "
                              "expected the address of a dask scheduler") from None
    (size,) = struct.unpack("Q", head)  # distributed's framing: the message's length first, native order
    if not 0 < size <= MAX_HANDSHAKE_BYTES:
        raise ConfigError(f"compute.scheduler: {address} is not a dask scheduler (its first bytes {head!r} "
                          "are not a dask message); expected the address of a dask scheduler")


def _connect(host: str, port: int, deadline: float) -> socket.socket:
    """A TCP connection by ``deadline``. A refusal (nothing listens there) is final at once: waiting the
    whole timeout for a scheduler that may be starting cost every mistyped port half a minute."""
    return socket.create_connection((host, port), timeout=max(0.01, deadline - time.monotonic()))


def _check_worker_paths(client, address: str, paths: list[str]) -> None:
    """Raise one ConfigError naming the first of ``paths`` that a worker of ``client`` does not see."""
    if not paths:
        return

    def missing(paths: list[str]) -> list[str]:
        return [p for p in paths if not os.path.exists(p)]
    for worker, gone in sorted(client.run(missing, paths).items()):
        if gone:
            raise ConfigError(f"compute.scheduler: worker {worker} of {address} does not see {gone[0]} "
                              f"({len(gone)} of {len(paths)} paths the run reads or writes); expected the data and "
                              "the cache folder at the same paths on every worker (a shared file system)")


@contextlib.contextmanager
def _collector_spares_old_objects() -> Iterator[None]:
    """Python's garbage collector leaves alone what exists before the pass (modules, the graph) while the
    pass runs: its full collections would walk them again and again, though nothing there is garbage."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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
