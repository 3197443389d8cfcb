"""The cache's files: an entry's HDF5 layout, writing and reading it with its checksum, and the
names of the entry and temporary files in the cache folder.

An entry is ``<root>/<key>.h5``, of kind "shard" (one shard's result) or "merged" (the sum of a
shard list's results in list order). Layout of a file:

    attrs        format, version, key, kind ("shard" | "merged"), checksum (XXH3-128 over every
                 stored value), source (the first shard, for ls), rows, bins, created,
                 package_version, meta (JSON: key facts, parts...), repairs.<field> per RepairCounts field
    stats/       attrs names, y0; datasets c (D,), n (K,), s (K, D), t, u, q (K,), and
                 S_upper (K, D(D+1)/2): the upper triangle of each symmetric S_k, row by row
    snr          (N,) the SNR of every row, in row order
    features     (N, F) the quality features, only when the result had any
    content/     attrs files (JSON list of shard paths), file_digests (JSON list: each file's block
                 digests combined in order, ``io.digest.shard_digest``); datasets blocks (B, 3) int64
                 (file index, first row, rows) and digests (B, 16) uint8: every block the pass read, in order

A file is written under a temporary name ``.{key}.{pid}.{uuid}.tmp`` in the same folder (the store
fsyncs it and renames it into place); :func:`_read` checks the format, version, key and checksum and
raises :class:`_Invalid` saying why a file cannot be used. No pickle.

Bump rule for :data:`CACHE_VERSION`: increase it whenever the same inputs could produce different
stored numbers or a different file layout -- a change to the noise generator, the repairs, the SNR
formulas, the binning, the order or precision of the block products, the meaning of a PassSpec
field, the content digest, or what this module writes. Old files then simply stop matching any key
(they are evicted first, being the least recently used; ``snrmoe cache clear`` removes them).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np
import xxhash

from ..._version import __version__
from ...core import small_pages
from ...core.block_pass import PassResult
from ...core.repair import RepairCounts
from ...core.stats import BinStats, GramTiles
from ...errors import InputError
from ..digest import DIGEST_BYTES, shard_digest

CACHE_FORMAT = "snrmoe_dask.ShardCache"
# see the bump rule in the module docstring (6: absurd values repaired, wide blocks multiplied in
# float64, two more repair counts)
CACHE_VERSION = 6

HDF5_OVERHEAD = 64 * 1024  # bytes of an entry besides its arrays, generously (~20 kB)

_ENTRY = re.compile(r"[0-9a-f]{64}\.h5")
# A temporary file ``.{key}.{pid}.{uuid}.tmp``; files of versions before the PID have none.
_TEMP = re.compile(r"\.[0-9a-f]{64}\.(?:(\d+)\.)?[0-9a-f]{32}\.tmp")


def _temp_path(root: Path, key: str) -> Path:
    """A fresh temporary name for writing the entry ``key`` under ``root`` (matches ``_TEMP``)."""
    return root / f".{key}.{os.getpid()}.{uuid.uuid4().hex}.tmp"  # the PID: see remove_dead_temp_files


class _Invalid(Exception):
    """A cache file that exists but cannot be trusted; the message says why."""


# ----------------------------------------------------------------------------- stored values
@dataclass(frozen=True)
class Content:
    """Where a result's rows were read: shard ``files`` and, for every block read in order,
    ``blocks`` (B, 3) int64 rows (index into files, first row, rows); the result's ``digests`` hold
    one content digest per block."""

    files: tuple[str, ...]
    blocks: np.ndarray

    def __post_init__(self) -> None:
        blocks = np.asarray(self.blocks, dtype=np.int64).reshape(-1, 3)
        object.__setattr__(self, "blocks", blocks)
        object.__setattr__(self, "files", tuple(str(f) for f in self.files))

    def digest(self, digests: Sequence[bytes], part: int) -> str:
        """The content digest of file ``part``: its block digests combined in order."""
        return shard_digest(d for d, k in zip(digests, self.blocks[:, 0]) if k == part)


class _PackedUpper:
    """The upper triangles of every S_k in the stored layout ((K, D(D+1)/2) float64, see
    ``core.stats.packed_start``), made a few rows at a time as they are written: saving a result
    never holds the whole packed copy (268 MB at 4 bins and D = 4096) nor makes the result dense."""

    dtype = np.dtype(np.float64)

    def __init__(self, stats: BinStats) -> None:
        self.stats = stats
        self.shape = (stats.n_bins, stats.d * (stats.d + 1) // 2)
        self.nbytes = self.shape[0] * self.shape[1] * self.dtype.itemsize

    def pieces(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """(bin, start, values) in the stored order."""
        for b in range(self.shape[0]):
            for start, values in self.stats.packed_upper(b):
                yield b, start, values


def _stored(result: PassResult, content: Content | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(head, arrays): everything an entry stores, as the checksum sees it; arrays by dataset name
    (``stats/S_upper`` a :class:`_PackedUpper`, made as it is written)."""
    stats = result.stats
    arrays = {"stats/c": stats.c, "stats/n": stats.n, "stats/s": stats.s, "stats/S_upper": _PackedUpper(stats),
              "stats/t": stats.t, "stats/u": stats.u, "stats/q": stats.q,
              "snr": np.concatenate(result.snr) if result.snr else np.empty(0)}
    if result.features:
        arrays["features"] = np.concatenate(result.features)
    head = {"names": list(stats.names), "y0": repr(stats.y0), "repairs": result.repairs.to_dict(), "files": None}
    if content is not None:
        arrays["content/blocks"] = content.blocks
        arrays["content/digests"] = np.frombuffer(b"".join(result.digests), np.uint8).reshape(-1, DIGEST_BYTES)
        head["files"] = list(content.files)
    return head, {name: a if isinstance(a, _PackedUpper) else np.ascontiguousarray(a) for name, a in arrays.items()}


def _head_digest(head: dict[str, Any], arrays: dict[str, Any]):
    """XXH3-128 over the head's JSON and every array's name, dtype and shape; the values follow."""
    return xxhash.xxh3_128(json.dumps([head, [[n, a.dtype.str, list(a.shape)] for n, a in arrays.items()]],
                                      sort_keys=True).encode())


def _checksum(head: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    """XXH3-128 over the head's JSON and every array's name, dtype, shape and bytes."""
    digest = _head_digest(head, arrays)
    for a in arrays.values():
        digest.update(memoryview(np.ascontiguousarray(a)).cast("B"))  # no copy: all are contiguous
    return digest.hexdigest()


def _check_rows(result: PassResult, arrays: dict[str, np.ndarray], content: Content | None) -> str | None:
    """Why the stored values disagree with each other, or None when they agree."""
    rows = int(result.stats.n.sum())
    snr, features = arrays["snr"], arrays.get("features")
    if snr.shape != (rows,):
        return f"snr has shape {snr.shape} but the statistics count {rows} rows"
    if features is not None and (features.ndim != 2 or features.shape[0] != rows):
        return f"features have shape {features.shape}; expected ({rows}, F)"
    if content is not None:
        if len(result.digests) != len(content.blocks):
            return f"{len(result.digests)} block digests for {len(content.blocks)} blocks"
        if int(content.blocks[:, 2].sum()) != rows:
            return f"the blocks hold {int(content.blocks[:, 2].sum())} rows, the statistics {rows}"
    return None


def _write(path: Path, key: str, kind: str, head: dict[str, Any], arrays: dict[str, Any],
           repairs: RepairCounts, meta: dict[str, Any]) -> None:
    """Write the whole cache file at ``path`` (a temporary name; the caller publishes it)."""
    digest = _head_digest(head, arrays)  # the checksum of _checksum, over the values as they are written
    with h5py.File(path, "w") as f:
        for name, values in arrays.items():
            if isinstance(values, _PackedUpper):
                dataset = f.create_dataset(name, shape=values.shape, dtype=values.dtype)
                for b, start, piece in values.pieces():
                    dataset[b, start:start + piece.size] = piece
                    digest.update(memoryview(piece).cast("B"))
            else:
                f.create_dataset(name, data=values)
                digest.update(memoryview(values).cast("B"))
        f["stats"].attrs["names"] = head["names"]
        f["stats"].attrs["y0"] = float(head["y0"])
        if head["files"] is not None:
            f["content"].attrs["files"] = json.dumps(head["files"])
            content = Content(tuple(head["files"]), arrays["content/blocks"])
            digests = [bytes(row) for row in arrays["content/digests"]]
            f["content"].attrs["file_digests"] = json.dumps([content.digest(digests, i) for i in range(len(head["files"]))])
        for name, count in repairs.to_dict().items():
            f.attrs[f"repairs.{name}"] = count
        f.attrs["source"] = str(meta.get("source", ""))
        f.attrs["rows"] = int(arrays["snr"].shape[0])
        f.attrs["pixels"] = int(arrays["stats/c"].shape[0])
        f.attrs["bins"] = ",".join(head["names"])
        f.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        f.attrs["package_version"] = __version__
        f.attrs["meta"] = json.dumps(meta, sort_keys=True, default=str)
        f.attrs["kind"] = kind
        f.attrs["key"] = key
        f.attrs["checksum"] = digest.hexdigest()
        f.attrs["version"] = CACHE_VERSION
        f.attrs["format"] = CACHE_FORMAT


def _fsync(path: Path) -> None:
    """Flush a file (or, where the OS allows, a folder entry) to disk before trusting it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # folders cannot be opened on some platforms; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_ORDER = ("stats/c", "stats/n", "stats/s", "stats/S_upper", "stats/t", "stats/u", "stats/q", "snr", "features",
          "content/blocks", "content/digests")  # the datasets of an entry, in the order _stored makes them


def _read(path: Path, key: str) -> tuple[PassResult, Content | None]:
    """Read and verify one cache file; raise _Invalid saying why it cannot be used.

    The packed upper triangles become the held tiles of a pass's result (about half of K x D x D,
    never the dense S): what the solvers read, and what later sums add.
    """
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            if attrs.get("format") != CACHE_FORMAT:
                raise _Invalid(f"not a snrmoe cache file (attribute format != {CACHE_FORMAT!r})")
            if attrs.get("version") != CACHE_VERSION or attrs.get("key") != key:
                raise _Invalid(f"written for version {attrs.get('version')} key {attrs.get('key')}, "
                               f"expected version {CACHE_VERSION} key {key}")
            arrays = {name: f[name][()] for name in _ORDER if name in f and name != "stats/S_upper"}
            packed = f["stats/S_upper"]
            k, d = packed.shape[0], arrays["stats/c"].shape[0]
            if packed.shape != (k, d * (d + 1) // 2):
                raise _Invalid(f"stats/S_upper has shape {packed.shape}; expected ({k}, {d * (d + 1) // 2})")
            arrays["stats/S_upper"] = upper = small_pages.empty(packed.shape)
            packed.read_direct(upper)
            names = [_text(n) for n in f["stats"].attrs["names"]]
            y0 = float(f["stats"].attrs["y0"])
            files = json.loads(f["content"].attrs["files"]) if "content" in f else None
            repairs = RepairCounts(**{name: int(attrs[f"repairs.{name}"]) for name in RepairCounts().to_dict()})
    except _Invalid:
        raise
    except Exception as exc:  # h5py/HDF5 raise OSError, KeyError, ValueError... for damaged files
        raise _Invalid(f"unreadable ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    arrays = {name: arrays[name] for name in _ORDER if name in arrays}
    head = {"names": names, "y0": repr(y0), "repairs": repairs.to_dict(), "files": files}
    if _checksum(head, arrays) != attrs.get("checksum"):
        raise _Invalid("checksum mismatch (the stored values changed after writing)")
    S = GramTiles.from_packed(upper, d)
    del arrays["stats/S_upper"], upper  # the packed copy goes before anything else is made
    try:
        stats = BinStats(tuple(names), arrays["stats/c"], y0, arrays["stats/n"], arrays["stats/s"], S,
                         arrays["stats/t"], arrays["stats/u"], arrays["stats/q"])
    except (KeyError, ValueError, InputError) as exc:
        raise _Invalid(f"inconsistent arrays: {exc}") from None
    content = None if files is None else Content(tuple(files), arrays["content/blocks"])
    digests = [] if content is None else [bytes(row) for row in arrays["content/digests"]]
    result = PassResult(stats, repairs, [arrays["snr"]], [arrays["features"]] if "features" in arrays else [],
                        digests=digests)
    why = _check_rows(result, arrays, content)
    if why:
        raise _Invalid(why)
    return result, content


# ----------------------------------------------------------------------------- the folder's entries
def _entry_attrs(path: Path) -> dict[str, Any] | None:
    """The attributes of one of our cache files, None for another HDF5 file; raises OSError if unreadable."""
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
    return attrs if attrs.get("format") == CACHE_FORMAT else None


def _entries(root: Path) -> list[tuple[Path, dict[str, Any] | None]]:
    """Our cache files under root: (path, attrs), attrs None for a damaged file named like a key.

    Readable HDF5 files without our format attribute are not ours and are skipped.
    """
    out = []
    for path in sorted(root.glob("*.h5")) if root.is_dir() else []:
        if not path.is_file():
            continue
        try:
            attrs = _entry_attrs(path)
        except OSError:
            if _ENTRY.fullmatch(path.name):
                out.append((path, None))
            continue
        if attrs is not None:
            out.append((path, attrs))
    return out


def _stats(paths) -> list[tuple[Path, os.stat_result]]:
    """(path, stat) of each path that still exists: another run may evict an entry at any time."""
    out = []
    for path in paths:
        try:
            out.append((path, path.stat()))
        except FileNotFoundError:
            pass
    return out

