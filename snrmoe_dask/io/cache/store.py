"""The cache store: :class:`ShardCache` loads and saves pass results under its folder, decides which
results are worth an entry, and keeps the folder under its size cap and the disk above its margin.

It keeps two kinds of entries as ``<root>/<key>.h5`` (layout: ``entry_file``): one per shard (resume
after a kill, add a shard for one shard's pass) and one *merged* entry per shard list holding the
sum of its shards in list order (a re-solve loads one file). Files are written atomically
(temporary file in the same folder, fsync, ``os.replace``); a file that fails its checksum is
logged, deleted and reported as a miss, so the caller recomputes. The cache keeps its folder under
``max_bytes`` by evicting the least recently used entries (the file's mtime is its last use: set
on write and on every hit), never one that the current run uses, and skips a write (with a
warning) that would leave the file system short of space. Which results get an entry at all:
:meth:`ShardCache.worth_storing` (docs/cache.md).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import h5py

from ...core.block_pass import PassResult
from .entry_file import (HDF5_OVERHEAD, Content, _check_rows, _entries, _fsync, _Invalid, _read, _stats, _stored,
                         _temp_path, _text, _write)
from .keys import _KEY, IDENTITY

log = logging.getLogger(__name__)

# compute.cache_max_gb: about 70 entries of 4 bins at D = 4096 (270 MB each), i.e. a dozen runs of
# five shards, each with its merged entry, kept on a laptop disk
DEFAULT_MAX_GB = 20.0
# compute.cache_min_gflop: a result whose pass multiplies fewer than rows x pixels² = 1e9 is not cached:
# such a pass costs about what loading its entry does (docs/cache.md)
DEFAULT_MIN_GFLOP = 1.0
# compute.cache_max_ratio: an entry is kept only when it is at most this fraction of the spectra it sums
# (flux and error as float32, rows x pixels x 8 bytes). An entry holds K x D (D + 1) / 2 float64 sums
# whatever the rows, so a small shard's entry would outgrow its data (4 bins, D = 4096: 269 MB; a
# quarter of the data from 32,776 spectra on)
DEFAULT_MAX_RATIO = 0.25
# A write must leave this much of the file system free: 1 GiB, or 2 % of its size if more.
FREE_MARGIN_BYTES = 1 << 30
FREE_MARGIN_FRACTION = 0.02


def entry_bytes(rows: int, pixels: int, bins: int) -> int:
    """About the bytes of an entry: K upper triangles of D x D float64 sums, and a float64 SNR per row."""
    return bins * pixels * (pixels + 1) // 2 * 8 + rows * 8


def data_bytes(rows: int, pixels: int) -> int:
    """The bytes of the spectra an entry sums: flux and error, float32."""
    return rows * pixels * 8


class ShardCache:
    """Pass results under ``root`` (created on the first save), one HDF5 file per key.

    max_gb: the folder's size cap (least recently used entries are evicted to stay under it);
    min_gflop: results of smaller passes are not worth caching (see :meth:`worth_storing`). ``in_use`` holds
    the keys the current run needs (:meth:`mark_in_use`): they are never evicted by this object.
    """

    def __init__(self, root: str | os.PathLike, max_gb: float = DEFAULT_MAX_GB,
                 min_gflop: float = DEFAULT_MIN_GFLOP, max_ratio: float = DEFAULT_MAX_RATIO):
        self.root = Path(root).absolute()  # used in tasks: a worker resolves a relative path in its own folder
        self.max_bytes = int(max_gb * 1e9)
        self.min_gflop = float(min_gflop)
        self.max_ratio = float(max_ratio)
        self.in_use: set[str] = set()
        self._metas: tuple[int, list[tuple[str, dict[str, Any]]]] | None = None

    def path(self, key: str) -> Path:
        """``root / f"{key}.h5"``; the key must be a :func:`shard_key` digest (no path tricks)."""
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(f"cache key {key!r}: expected a 64-character lowercase hex digest from shard_key")
        return self.root / f"{key}.h5"

    def worth_storing(self, rows: int, pixels: int, bins: int) -> bool:
        """Whether the result of a pass over ``rows`` spectra of ``pixels`` in ``bins`` bins is worth an
        entry: the pass's Gram products (rows x pixels² flops) reach ``min_gflop`` (below, a pass costs
        about what loading the entry does), and the entry is at most ``max_ratio`` of the spectra it sums
        (the data's own size bounds what the cache may take)."""
        return (rows * pixels ** 2 >= self.min_gflop * 1e9
                and entry_bytes(rows, pixels, bins) <= self.max_ratio * data_bytes(rows, pixels))

    def mark_in_use(self, *keys: str | None) -> None:
        """Mark entries as needed by the current run: this object never evicts them."""
        self.in_use.update(k for k in keys if k)

    def load(self, key: str) -> PassResult | None:
        """The cached result (snr and features as one block each), or None on a miss.

        A hit marks the entry (and, for a merged entry, its parts) as just used, for the eviction
        order. A file that is truncated, not HDF5, not ours, or fails its checksum is logged as a
        warning, deleted and reported as a miss, so the caller recomputes.
        """
        path = self.path(key)
        if not path.is_file():
            if path.exists():
                log.warning("%s: not a cache file (something else has its name): left alone; the shard is "
                            "recomputed", path)
            return None
        try:
            result, _ = _read(path, key)
        except _Invalid as why:
            log.warning("%s: cache file discarded, the shard will be recomputed: %s", path, why)
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("%s: could not delete the damaged cache file: %s", path, exc)
            return None
        for used in [key, *self._parts(path)]:
            try:
                os.utime(self.path(used))  # last use = mtime: atime depends on how the disk is mounted
            except OSError:
                pass
        log.debug("%s: cache hit (%d rows)", path, len(result.snr[0]))
        return result

    def _parts(self, path: Path) -> list[str]:
        try:
            with h5py.File(path, "r") as f:
                return list(json.loads(f.attrs.get("meta", "{}")).get("parts", []))
        except (OSError, ValueError):
            return []

    def metas(self) -> list[tuple[str, dict[str, Any]]]:
        """(key, meta) of every readable entry, from the file attributes only (no arrays read);
        remembered until the folder changes."""
        try:
            stamp = self.root.stat().st_mtime_ns
        except OSError:
            return []
        if self._metas is None or self._metas[0] != stamp:
            found = [(_text(attrs.get("key", "")), json.loads(attrs.get("meta", "{}")))
                     for _, attrs in _entries(self.root) if attrs is not None]
            self._metas = (stamp, found)
        return self._metas[1]

    def why_missed(self, facts: dict[str, Any]) -> str | None:
        """Why an entry of the same shard file and pass no longer matches ``facts``, or None when
        there is none: the identity fields or per-row values that changed."""
        for key, meta in self.metas():
            old = meta.get("facts")
            if not old or old.get("recipe") != facts["recipe"] or old["file"]["path"] != facts["file"]["path"]:
                continue
            changed = [name for name in IDENTITY if old["file"].get(name) != facts["file"][name]]
            if old.get("values") != facts["values"]:
                changed.append("the target, SNR-column or bin values of its rows")
            if changed:
                return f"entry {key[:12]} was cached from it before its {', '.join(changed)} changed"
        return None

    def save(self, key: str, result: PassResult, meta: dict[str, Any] | None = None,
             content: Content | None = None) -> Path | None:
        """Store ``result`` under ``key`` atomically and return the file's path, or None when the
        write was skipped (logged as a warning): the size cap cannot be met without evicting an entry
        in use, or the file system would be left with less than its free-space margin.

        meta: small JSON-able facts (``meta["source"]`` is the shard path that ``snrmoe cache ls``
        shows; ``meta["parts"]``, the keys a merged entry sums). content: where the rows were read,
        one block per digest in ``result.digests``. On a write error the temporary file is removed
        and the error raised; an existing file for ``key`` is left untouched.
        """
        meta = dict(meta or {})
        path = self.path(key)
        if path.exists() and not path.is_file():
            log.warning("%s: not a cache file (something else has its name): left alone; this shard's result is "
                        "not cached", path)
            return None
        head, arrays = _stored(result, content)
        why = _check_rows(result, arrays, content)
        if why:
            raise ValueError(f"cache save {key[:12]}: {why}")
        need = sum(a.nbytes for a in arrays.values()) + HDF5_OVERHEAD
        self.root.mkdir(parents=True, exist_ok=True)
        short = self._make_room(need, path) or self._short_of_space(need)
        if short:
            log.warning("%s: statistics of %s not cached (the run goes on): %s", self.root,
                        meta.get("source", key[:12]), short)
            return None
        tmp = _temp_path(self.root, key)
        try:
            _write(tmp, key, "merged" if "parts" in meta else "shard", head, arrays, result.repairs, meta)
            _fsync(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync(self.root)  # makes the rename itself durable
        log.debug("%s: cached %d rows of %s", path, arrays["snr"].shape[0], meta.get("source", "?"))
        return path

    def _make_room(self, need: int, path: Path) -> str | None:
        """Evict least recently used entries not in use until ``need`` more bytes fit under the cap;
        None when they fit, else why not (and then nothing is evicted)."""
        entries = [(p, st) for p, st in _stats(p for p, _ in _entries(self.root)) if p != path]
        total = sum(st.st_size for _, st in entries)
        evictable = sorted((e for e in entries if e[0].stem not in self.in_use), key=lambda e: e[1].st_mtime_ns)
        kept = total - sum(st.st_size for _, st in evictable)
        if kept + need > self.max_bytes:
            return (f"{need / 1e6:.0f} MB more would exceed the cap compute.cache_max_gb = {self.max_bytes / 1e9:g} "
                    f"GB, with {kept / 1e6:.0f} MB held by entries this run uses")
        for victim, st in evictable:
            if total + need <= self.max_bytes:
                break
            victim.unlink(missing_ok=True)
            total -= st.st_size
            log.info("%s: evicted (least recently used, %.0f MB) to stay under the cap of %.1f GB", victim,
                     st.st_size / 1e6, self.max_bytes / 1e9)
        return None

    def _short_of_space(self, need: int) -> str | None:
        usage = shutil.disk_usage(self.root)
        margin = max(FREE_MARGIN_BYTES, int(FREE_MARGIN_FRACTION * usage.total))
        if usage.free - need < margin:
            return (f"only {usage.free / 1e9:.1f} GB free on its file system; writing {need / 1e6:.0f} MB would "
                    f"leave less than the margin of {margin / 1e9:.1f} GB")
        return None
