"""What this machine can do, measured in the same run as a benchmark: the bound of every benchmark.

    bound_s = 2 N D^2 / gemm_rate + N D / (rng_rate * cores)

gemm_rate: a plain float32 ``X.T @ X`` on one block (rows x D), counted as 2 rows D^2 flops, with
all cores; rng_rate: numpy's single-thread float32 ``standard_normal`` (draws per second).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import psutil
from threadpoolctl import threadpool_info, threadpool_limits


def blas_kernel() -> str:
    """Which BLAS and which CPU kernel numpy runs, e.g. 'openblas 0.3.31 SkylakeX', and any
    OPENBLAS_CORETYPE that forces the kernel (it changes every GEMM time, ours and the bound's alike)."""
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    # scipy may load a BLAS of its own beside numpy's; numpy's runs our products and the bound's
    info = next((i for i in blas if "numpy" in str(i.get("filepath", ""))), blas[0] if blas else {})
    text = " ".join(str(info.get(k, "")) for k in ("internal_api", "version", "architecture")).strip() or "unknown"
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return text + (f" (forced by OPENBLAS_CORETYPE={forced})" if forced else "")


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), e.g. 'AMD EPYC', and whether it has AVX-512."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return "unknown"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                "unknown")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return f"{name} ({'AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags else 'no AVX2'})"


def best_time(fn, repeat: int = 3) -> float:
    """The fastest of ``repeat`` calls of fn(), in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity: taskset, cgroups), not all the machine's."""
    return len(os.sched_getaffinity(0)) or 1


def gemm_rate(rows: int, d: int) -> float:
    """flop/s of float32 X.T @ X on an X of (rows, d), all cores, counted as 2 rows d^2."""
    x = np.random.default_rng(0).standard_normal((rows, d), dtype=np.float32)
    x.T @ x  # warm up: first-touch pages and BLAS buffers are not the machine's rate
    return 2.0 * rows * d * d / best_time(lambda: x.T @ x, repeat=5)


def rng_rate(count: int = 1 << 24) -> float:
    """float32 standard normal draws per second, one thread."""
    rng = np.random.default_rng(0)
    out = np.empty(count, dtype=np.float32)
    with threadpool_limits(1):
        return count / best_time(lambda: rng.standard_normal(out=out, dtype=np.float32))


def bound_s(n: int, d: int, gemm: float, rng: float, cores: int | None = None) -> float:
    """Seconds this machine needs at least for the products and the noise of n spectra of d pixels."""
    cores = cores or usable_cores()
    return 2.0 * n * d * d / gemm + n * d / (rng * cores)


class PeakRSS:
    """Peak resident memory of this process, and of its children if ``children``, while the ``with``
    block runs (bytes).

    This process's peak is the kernel's own high-water mark (VmHWM, reset on entry through
    /proc/self/clear_refs): exact, and no sampler thread in the process it measures (a second thread
    there keeps the run from forking its figures, as a single-threaded command does). Where the mark
    cannot be reset, or with ``children`` (process schedulers, local clusters), a thread samples
    /proc/self/statm every 20 ms, and the children every 2 s through psutil, whose walk over every
    process of the machine would otherwise take a measurable share of a core from the run it measures.
    """

    def __init__(self, children: bool = False, interval: float = 0.02, children_every: float = 2.0) -> None:
        self.interval, self.children_every, self.peak = interval, children_every, 0
        self._proc, self._stop = psutil.Process(), threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._thread: threading.Thread | None = None
        self._sample_children = children

    def _own(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _children(self) -> int:
        total = 0
        for child in self._proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _sample(self) -> None:
        children, next_children = 0, 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if self._sample_children and now >= next_children:
                children, next_children = self._children(), now + self.children_every
            self.peak = max(self.peak, self._own() + children)
            self._stop.wait(self.interval)

    @staticmethod
    def _reset_high_water_mark() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    @staticmethod
    def _high_water_mark() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

    def __enter__(self) -> "PeakRSS":
        self._kernel_mark = self._reset_high_water_mark()
        if self._sample_children or not self._kernel_mark:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        if self._kernel_mark:
            self.peak = max(self.peak, self._high_water_mark())


def drop_page_cache(paths) -> list[str]:
    """Ask the kernel to drop the page-cache pages of each file: fsync, then posix_fadvise DONTNEED.

    Needs no root: clean pages of a file are dropped for any reader (pages mapped by another process
    stay). Returns one 'path: why' line per file where it could not be issued (empty list: all issued).
    """
    problems = []
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            problems.append(f"{path}: {exc}")
            continue
        try:
            try:
                os.fsync(fd)  # dirty pages (a freshly written file) are not dropped until written back
            except OSError:
                pass
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except (OSError, AttributeError) as exc:
            problems.append(f"{path}: {exc}")
        finally:
            os.close(fd)
    return problems


def resident_bytes(paths) -> tuple[int, int] | None:
    """(bytes of the files in the page cache, total bytes), by mmap + mincore; None where unsupported.

    Touches no page: mincore only reports, so measuring does not warm the cache.
    """
    import ctypes
    import ctypes.util
    import mmap

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    page, failed = mmap.PAGESIZE, ctypes.c_void_p(-1).value
    resident = total = 0
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            total += size
            if size == 0:
                continue
            addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if addr is None or addr == failed:
                return None
            try:
                vec = np.zeros((size + page - 1) // page, dtype=np.uint8)
                if libc.mincore(addr, size, vec.ctypes.data) != 0:
                    return None
                resident += min(size, int(np.count_nonzero(vec & 1)) * page)
            finally:
                libc.munmap(addr, size)
        finally:
            os.close(fd)
    return resident, total


def trim_heap() -> bool:
    """Give the C heap's free memory back to the OS (glibc malloc_trim), so that the RSS measured next is
    what is live, not what earlier work freed but the allocator kept. False where unavailable."""
    import ctypes
    import ctypes.util

    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False
