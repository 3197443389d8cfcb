"""Cache of finished pass results (per-bin statistics, repairs, per-row SNR), one HDF5 file per key.

A training shard's :class:`~snrmoe_dask.core.fold.PassResult` depends only on the shard's content,
its position in the training list (it seeds the noise), the per-row values the pass takes from the
params table (target, SNR column, bins), the :class:`PassSpec` and the block cut. :func:`shard_key`
hashes what can be known without reading the spectra: the file's identity (resolved path, size,
mtime_ns, ctime_ns, inode, flux shape), those per-row values, the PassSpec and the block cut. The
spectra themselves are covered by a content digest (``io.digest``) that the pass takes of every
block it reads and that each entry stores; :func:`verify_cache` re-reads the shards to compare it.

:class:`ShardCache` keeps two kinds of entries as ``<root>/<key>.h5``: one per shard (resume
after a kill, add a shard for one shard's pass) and one *merged* entry per shard list holding the
sum of its shards in list order (a re-solve loads one file). Layout of a file:

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

Files are written atomically (temporary file in the same folder, fsync, ``os.replace``); a file
that fails its checksum is logged, deleted and reported as a miss, so the caller recomputes. The
cache keeps its folder under ``max_bytes`` by evicting the least recently used entries (the file's
mtime is its last use: set on write and on every hit), never one that the current run uses, and
skips a write (with a warning) that would leave the file system short of space. No pickle.

Bump rule for :data:`CACHE_VERSION`: increase it whenever the same inputs could produce different
stored numbers or a different file layout -- a change to the noise generator, the repairs, the SNR
formulas, the binning, the order or precision of the block products, the meaning of a PassSpec
field, the content digest, or what this module writes. Old files then simply stop matching any key
(they are evicted first, being the least recently used; ``snrmoe cache clear`` removes them).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import numbers
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np
import psutil
import xxhash

from .._version import __version__
from ..core import small_pages as pages
from ..core.block_pass import PassResult, PassSpec
from ..core.repair import RepairCounts
from ..core.stats import BinStats, GramTiles
from ..errors import InputError
from .digest import DIGEST_BYTES, block_digest, shard_digest
from .shards import FLUX_KEY, RowReader, ShardInfo

log = logging.getLogger(__name__)

CACHE_FORMAT = "snrmoe_dask.ShardCache"
# see the bump rule in the module docstring (6: absurd values repaired, wide blocks multiplied in
# float64, two more repair counts)
CACHE_VERSION = 6

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

HDF5_OVERHEAD = 64 * 1024  # bytes of an entry besides its arrays, generously (~20 kB)

_KEY = re.compile(r"[0-9a-f]{64}")  # a sha256 hex digest
_ENTRY = re.compile(r"[0-9a-f]{64}\.h5")
# A temporary file ``.{key}.{pid}.{uuid}.tmp``; files of versions before the PID have none.
_TEMP = re.compile(r"\.[0-9a-f]{64}\.(?:(\d+)\.)?[0-9a-f]{32}\.tmp")
# A temporary file younger than this may belong to a run that is writing it right now.
STALE_TEMP_S = 15 * 60
# The fields of a file's identity in the key, in the order a stale entry's log line names them.
IDENTITY = ("size", "mtime_ns", "ctime_ns", "inode", "shape")


def entry_bytes(rows: int, pixels: int, bins: int) -> int:
    """About the bytes of an entry: K upper triangles of D x D float64 sums, and a float64 SNR per row."""
    return bins * pixels * (pixels + 1) // 2 * 8 + rows * 8


def data_bytes(rows: int, pixels: int) -> int:
    """The bytes of the spectra an entry sums: flux and error, float32."""
    return rows * pixels * 8


def _temp_path(root: Path, key: str) -> Path:
    """A fresh temporary name for writing the entry ``key`` under ``root`` (matches ``_TEMP``)."""
    return root / f".{key}.{os.getpid()}.{uuid.uuid4().hex}.tmp"  # the PID: see remove_dead_temp_files


class _Invalid(Exception):
    """A cache file that exists but cannot be trusted; the message says why."""


# ----------------------------------------------------------------------------- keys
def _number(value: numbers.Real) -> list[str]:
    """A tagged exact text form: 1 and 1.0 agree (same arithmetic), 0.1 keeps all 17 digits."""
    value = float(value) if not isinstance(value, numbers.Integral) else int(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        value = int(value)
    return ["num", repr(value)]


def _array(value: np.ndarray, blobs: list[bytes]) -> dict[str, Any]:
    """Describe an array in the JSON and queue its bytes (canonical little-endian dtype) for the hash."""
    value = np.asarray(value)
    if value.dtype.kind == "f":
        value = value.astype("<f8")  # float32 -> float64 is exact, so equal values give equal keys
    elif value.dtype.kind in "iu":
        value = value.astype("<i8")
    value = np.ascontiguousarray(value)
    blobs.append(value.tobytes())
    return {"array": value.dtype.str, "shape": list(value.shape)}


def _canonical(value: Any, blobs: list[bytes]) -> Any:
    """A JSON-able canonical form of a PassSpec value; array bytes go to ``blobs`` in order.

    Unknown types raise TypeError so that a new PassSpec field can never be left out of the key.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):  # before numbers: True must not hash like 1
        return bool(value)
    if isinstance(value, numbers.Real):
        return _number(value)
    if isinstance(value, np.ndarray):
        return _array(value, blobs)
    if isinstance(value, np.dtype):
        return ["dtype", value.str]
    if isinstance(value, enum.Enum):
        return ["enum", type(value).__name__, _canonical(value.value, blobs)]
    if isinstance(value, (list, tuple)):
        return [_canonical(v, blobs) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v, blobs) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Bins lands here: names (user order, = bin indices) and the low/high edges (float64).
        fields = {f.name: _canonical(getattr(value, f.name), blobs) for f in dataclasses.fields(value)}
        return {"type": type(value).__name__, "fields": fields}
    raise TypeError(f"shard_key: cannot hash a {type(value).__name__} value {value!r}; extend cache._canonical")


def _file_identity(info_or_path: ShardInfo | str | os.PathLike) -> dict[str, Any]:
    """Resolved path, size, mtime_ns, ctime_ns, inode and flux shape (N, D) of a shard (the shape
    read from the file when only a path is given).

    ctime and inode cannot be set back by a user (``touch`` sets mtime, and sets ctime to now), so a
    file rewritten in place gets a new key even when its size and mtime are restored; a chmod, a
    rename, a copy or a move also give a new key (a recomputation, the safe direction).
    """
    if isinstance(info_or_path, ShardInfo):
        path, shape = Path(info_or_path.path), (int(info_or_path.n), int(info_or_path.d))
    else:
        path = Path(info_or_path)
        try:
            with h5py.File(path, "r") as f:
                shape = tuple(int(s) for s in f[FLUX_KEY].shape)
        except (OSError, KeyError) as exc:
            raise InputError(f"{path}: cannot read the shape of {FLUX_KEY} for the cache key: {exc}") from None
    try:
        st = path.stat()
    except OSError as exc:
        raise InputError(f"{path}: cannot stat the shard for the cache key: {exc}") from None
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns, "inode": st.st_ino, "shape": list(shape)}


def _sha256(head: Any, blobs: Sequence[bytes] = ()) -> str:
    """sha256 of canonical JSON, then of each blob (the JSON records each array's dtype and shape,
    so the blob lengths are unambiguous)."""
    digest = hashlib.sha256(json.dumps(head, sort_keys=True, separators=(",", ":")).encode())
    for blob in blobs:
        digest.update(blob)
    return digest.hexdigest()


def key_facts(info_or_path: ShardInfo | str | os.PathLike, spec: PassSpec, target: str, block_rows: int,
              segment_rows: int, shard_index: int, values: Sequence[np.ndarray | None] = ()) -> dict[str, Any]:
    """What a shard's key is made of, as JSON-able facts (stored in the entry to say why it went stale).

    ``file``: the file's identity (see :func:`_file_identity`); ``recipe``: sha256 of the shard's
    position in the training list (it seeds the noise), the target column name, every PassSpec field,
    block_rows and segment_rows (they fix the floating-point sum order; pass the values actually
    used) and :data:`CACHE_VERSION`; ``values``: sha256 of the per-row values the pass takes besides
    the spectra (the target, the SNR column, the bin of each row: (rows,) arrays or None), whose
    shapes also record how many rows of the file are used.
    """
    blobs: list[bytes] = []
    recipe = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "shard_index": int(shard_index),
              "target": str(target), "block_rows": int(block_rows), "segment_rows": int(segment_rows),
              "spec": _canonical(spec, blobs)}
    value_blobs: list[bytes] = []
    described = _canonical([None if v is None else np.asarray(v) for v in values], value_blobs)
    return {"file": _file_identity(info_or_path), "recipe": _sha256(recipe, blobs),
            "values": _sha256(described, value_blobs)}


def key_of(facts: dict[str, Any]) -> str:
    """The 64-character key of :func:`key_facts`' facts."""
    return _sha256({"format": CACHE_FORMAT, "version": CACHE_VERSION, "facts": facts})


def shard_key(info_or_path: ShardInfo | str | os.PathLike, spec: PassSpec, target: str, block_rows: int,
              segment_rows: int, shard_index: int, values: Sequence[np.ndarray | None] = ()) -> str:
    """The 64-character sha256 hex key of one training shard's pass result (see :func:`key_facts`)."""
    return key_of(key_facts(info_or_path, spec, target, block_rows, segment_rows, shard_index, values))


def merged_key(keys: Sequence[str]) -> str:
    """The key of the sum of the results of ``keys``, added in that order."""
    return _sha256({"format": CACHE_FORMAT, "version": CACHE_VERSION, "merged": list(keys)})


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
            arrays["stats/S_upper"] = upper = pages.empty(packed.shape)
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


# ----------------------------------------------------------------------------- the cache
class ShardCache:
    """Pass results under ``root`` (created on the first save), one HDF5 file per key.

    max_gb: the folder's size cap (least recently used entries are evicted to stay under it);
    min_gflop: results of smaller passes are not worth caching (see :meth:`worth`). ``in_use`` holds the
    keys the current run needs (:meth:`use`): they are never evicted by this object.
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

    def worth(self, rows: int, pixels: int, bins: int) -> bool:
        """Whether the result of a pass over ``rows`` spectra of ``pixels`` in ``bins`` bins is worth an
        entry: the pass's Gram products (rows x pixels² flops) reach ``min_gflop`` (below, a pass costs
        about what loading the entry does), and the entry is at most ``max_ratio`` of the spectra it sums
        (the data's own size bounds what the cache may take)."""
        return (rows * pixels ** 2 >= self.min_gflop * 1e9
                and entry_bytes(rows, pixels, bins) <= self.max_ratio * data_bytes(rows, pixels))

    def use(self, *keys: str | None) -> None:
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


# ----------------------------------------------------------------------------- ls / clear / verify
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


def _age(seconds: float) -> str:
    """A short duration: 40 s, 12 min, 5.0 h, 3.2 d."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def list_cache(root: str | os.PathLike) -> list[str]:
    """One line per cache file (key prefix, kind, source shard, rows, bins, size, age, last use) and a
    total line; the entries least recently used come first (they are the first to be evicted)."""
    root = Path(root)
    if not _cache_folder(root):
        return [f"no cache at {root} (folder does not exist)"]
    try:
        attrs = dict(_entries(root))
        strays = [f"{path.name[:12]}  not a file: not ours, left alone ({path})" for path in sorted(root.glob("*.h5"))
                  if _ENTRY.fullmatch(path.name) and not path.is_file()]
    except OSError as exc:
        raise InputError(f"{root}: cannot list the cache folder: {exc.strerror}") from None
    entries = sorted(((p, attrs[p], st) for p, st in _stats(attrs)), key=lambda e: e[2].st_mtime_ns)
    lines, total, now = strays, 0, time.time()
    for path, attrs, st in entries:
        total += st.st_size
        size = f"{st.st_size / 1e6:.1f} MB"
        if attrs is None:
            lines.append(f"{path.name[:12]}  damaged or truncated file ({size}); "
                         f"loading recomputes it, `snrmoe cache clear` removes it")
            continue
        created = datetime.fromisoformat(_text(attrs.get("created", "1970-01-01T00:00:00+00:00"))).timestamp()
        rows, pixels = int(attrs.get("rows", 0)), int(attrs.get("pixels", 0))
        data = f" ({st.st_size / data_bytes(rows, pixels):.0%} of its {data_bytes(rows, pixels) / 1e9:.2f} GB " \
               "of spectra)" if rows and pixels else ""
        lines.append(f"{path.name[:12]}  {_text(attrs.get('kind', 'shard')):<6}  {_text(attrs.get('source', '?'))}  "
                     f"{rows} rows  bins {_text(attrs.get('bins', '?'))}  {size}{data}  "
                     f"created {_age(now - created)} ago  last used {_age(now - st.st_mtime)} ago")
    lines.append(f"{len(entries)} cache files, {total / 1e6:.1f} MB in {root}" if entries
                 else f"cache {root} is empty")
    for path, pid, alive in temp_files(root):
        state = ("its run is still writing it" if alive else
                 "its run has ended: `snrmoe cache clear` or the next run removes it")
        lines.append(f"{path.name[1:13]}  temporary file of PID {pid}, {path.stat().st_size / 1e6:.1f} MB; {state}")
    return lines


def temp_files(root: str | os.PathLike) -> list[tuple[Path, int, bool]]:
    """The temporary files of ``save`` under root: (path, PID of the run writing it, whether that run
    is still alive). A killed run leaves its file behind; files named before the PID are not listed."""
    root = Path(root)
    out = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        m = _TEMP.fullmatch(path.name)
        if m and m.group(1) and path.is_file() and not path.is_symlink():
            out.append((path, int(m.group(1)), psutil.pid_exists(int(m.group(1)))))
    return out


def remove_dead_temp_files(root: str | os.PathLike | None) -> list[Path]:
    """Delete the temporary files under root whose run has ended (it was killed); returns them.

    A run calls this when it starts; files of live runs are left alone. None (no cache) does nothing.
    """
    dead = [path for path, _, alive in temp_files(root) if not alive] if root is not None else []
    for path in dead:
        path.unlink(missing_ok=True)
        log.info("%s: removed, left by a run that ended while writing it", path)
    return dead


def clear_cache(root: str | os.PathLike) -> int:
    """Delete our cache files under root, the temporary files of runs that have ended, and temporary
    files without a PID (older versions) older than :data:`STALE_TEMP_S`.

    Returns the number of files deleted. Files that are not ours (other HDF5 files, other names)
    are never touched; temporary files of a live run are kept.
    """
    root = Path(root)
    if not _cache_folder(root):
        return 0
    try:
        doomed = [path for path, _ in _entries(root)]
        now = time.time()
        for tmp in root.iterdir():
            m = _TEMP.fullmatch(tmp.name)
            if m and not m.group(1) and tmp.is_file() and now - tmp.stat().st_mtime > STALE_TEMP_S:
                doomed.append(tmp)
        doomed += [path for path, _, alive in temp_files(root) if not alive]
    except OSError as exc:
        raise InputError(f"{root}: cannot list the cache folder: {exc.strerror}") from None
    failed = []
    for path in doomed:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            failed.append((path, exc))
    if failed:
        path, exc = failed[0]
        raise InputError(f"{path}: cannot delete: {exc.strerror}; removed {len(doomed) - len(failed)} of "
                         f"{len(doomed)} cache files in {root}, {len(failed)} left")
    return len(doomed)


def _cache_folder(root: Path) -> bool:
    """True if ``root`` is a folder, False if nothing is there; InputError if it is something else."""
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: is not a folder; expected the cache folder (compute.cache_dir)")
    return root.exists()


def _read_digests(path: str, blocks: np.ndarray, reader: RowReader) -> list[bytes]:
    """The content digest of every (row0, rows) block of a shard file, read as the pass reads it."""
    out = []
    for row0, rows in blocks:
        flux, error = reader.read(path, int(row0), int(row0 + rows))
        out.append(block_digest(flux, error))
    return out


def verify_cache(root: str | os.PathLike) -> tuple[list[str], int]:
    """Re-read the shards of every entry under root and compare their content digests.

    Returns (one line per entry and a summary line, number of entries found changed). An entry whose
    shard content changed since it was cached (the key cannot always see that: see the README) can
    only give stale statistics: it is deleted, as is a damaged entry. An entry whose shard is missing
    or unreadable is kept (the disk may be unmounted) and reported.
    """
    root = Path(root)
    if not _cache_folder(root):
        return [f"no cache at {root} (folder does not exist)"], 0
    lines, counts, seen = [], {"ok": 0, "changed": 0, "source missing": 0, "damaged": 0}, {}
    reader = RowReader()
    for path, attrs in _entries(root):
        name = path.name[:12]
        if not _ENTRY.fullmatch(path.name):  # e.g. a copy the user made: not an entry, never deleted
            lines.append(f"{path.name}  not an entry (not named after a key); left alone")
            continue
        try:
            if attrs is None:
                raise _Invalid("unreadable")
            result, content = _read(path, path.stem)  # the name is the key: a file copied over another's fails
        except _Invalid as why:
            path.unlink(missing_ok=True)
            counts["damaged"] += 1
            lines.append(f"{name}  damaged ({why}); dropped")
            continue
        if content is None:
            counts["ok"] += 1
            lines.append(f"{name}  ok  (no content digest stored: nothing to compare)")
            continue
        status, notes = "ok", []
        for part, file in enumerate(content.files):
            mine = content.blocks[:, 0] == part
            blocks = content.blocks[mine][:, 1:]
            stored = [d for d, m in zip(result.digests, mine) if m]
            memo = (file, blocks.tobytes())
            try:
                if memo not in seen:
                    seen[memo] = _read_digests(file, blocks, reader)
            except (OSError, KeyError, ValueError) as exc:
                status = "changed" if status == "changed" else "source missing"
                notes.append(f"{file}: {'missing' if not Path(file).exists() else f'unreadable ({exc})'}")
                continue
            differ = [(int(r0), int(r0 + n)) for (r0, n), a, b in zip(blocks, seen[memo], stored) if a != b]
            if differ:
                status = "changed"
                more = f" and {len(differ) - 1} more blocks" if len(differ) > 1 else ""
                notes.append(f"{file}: rows {differ[0][0]}:{differ[0][1]}{more} differ from when it was cached")
        counts[status] += 1
        if status == "changed":
            path.unlink(missing_ok=True)
            notes.append("dropped")
        lines.append(f"{name}  {status}  " + ("; ".join(notes) if notes else _text(attrs.get("source", ""))))
    if not lines:
        return [f"cache {root} is empty"], 0
    lines.append(f"verified {sum(counts.values())} entries in {root}: {counts['ok']} ok, {counts['changed']} changed "
                 f"(dropped), {counts['source missing']} with a shard missing, {counts['damaged']} damaged (dropped)")
    return lines, counts["changed"]
