"""Per-shard cache of a training shard's complete pass result, one HDF5 file per key.

A training shard's :class:`~snrmoe_dask.blockwork.PassResult` (per-bin statistics, repair counts,
per-row SNR and optional quality features) depends only on the shard file, its position in the
training list (it seeds the noise), the target column, the :class:`PassSpec` and the block cut.
:func:`shard_key` hashes exactly those; :class:`ShardCache` stores one result per key as
``<root>/<key>.h5``:

    attrs        format, version, key, checksum, source, rows, bins, created, package_version, meta (JSON),
                 repairs.<field> (int) for every RepairCounts field
    stats/       the BinStats group written by ``BinStats.save`` (c, n, s, S, t, u, q)
    snr          (N,) the SNR of every row of the shard, in row order
    features     (N, F) the quality features, only when the result had any

Files are written atomically (temporary file in the same folder, fsync, ``os.replace``) and carry a
sha256 over every stored value, checked on load: a damaged file is logged, deleted and reported as
a miss, so the caller simply recomputes the shard. No pickle: HDF5 through h5py only.

Bump rule for :data:`CACHE_VERSION`: increase it whenever the same inputs could produce different
stored numbers or a different file layout -- a change to the noise generator, the repairs, the SNR
formulas, the binning, the order or precision of the block products, the meaning of a PassSpec
field, or what this module writes. Old files then simply stop matching any key
(``snrmoe cache clear`` removes them).
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
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import psutil

from .._version import __version__
from ..core.fold import PassResult, PassSpec
from ..core.repair import RepairCounts
from ..core.stats import BinStats
from ..errors import InputError
from .models import read_stats, write_stats
from .shards import FLUX_KEY, ShardInfo

log = logging.getLogger(__name__)

CACHE_FORMAT = "snrmoe_dask.ShardCache"
CACHE_VERSION = 1  # see the bump rule in the module docstring

_KEY = re.compile(r"[0-9a-f]{64}")  # a sha256 hex digest
_ENTRY = re.compile(r"[0-9a-f]{64}\.h5")
# A temporary file ``.{key}.{pid}.{uuid}.tmp``; files of versions before the PID have none.
_TEMP = re.compile(r"\.[0-9a-f]{64}\.(?:(\d+)\.)?[0-9a-f]{32}\.tmp")
# A temporary file without a PID, younger than this, may belong to a run that is writing it right now.
STALE_TEMP_S = 15 * 60


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
    """Resolved path, size, mtime_ns and flux shape (N, D) of a shard (the shape read when only a path)."""
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
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "shape": list(shape)}


def shard_key(info_or_path: ShardInfo | str | os.PathLike, spec: PassSpec, target: str, block_rows: int,
              segment_rows: int, shard_index: int) -> str:
    """The 64-character sha256 hex key of one training shard's pass result.

    It covers everything the result depends on: the file (resolved path, size, mtime_ns, flux shape
    (N, D)), the shard's position in the training list (it seeds the noise), the target column, every
    PassSpec field (bins names and edges, snr_method, level, seed, the bytes of c, y0, clip_flux,
    precision, noise_mode and any field added later), block_rows and segment_rows (they fix the
    floating-point sum order; pass the values actually used, e.g. after ``aligned_block_rows``) and
    :data:`CACHE_VERSION`. Hash input: canonical JSON, then the bytes of every array in it.
    """
    blobs: list[bytes] = []
    head = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "file": _file_identity(info_or_path),
        "shard_index": int(shard_index),
        "target": str(target),
        "block_rows": int(block_rows),
        "segment_rows": int(segment_rows),
        "spec": _canonical(spec, blobs),
    }
    digest = hashlib.sha256(json.dumps(head, sort_keys=True, separators=(",", ":")).encode())
    for blob in blobs:  # the JSON records each array's dtype and shape, so the lengths are unambiguous
        digest.update(blob)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- stored values
def _flatten(result: PassResult) -> tuple[np.ndarray, np.ndarray | None]:
    """snr (N,) and features (N, F) or None, concatenated over the result's blocks."""
    snr = np.concatenate(result.snr) if result.snr else np.empty(0)
    features = np.concatenate(result.features) if result.features else None
    return snr, features


def _checksum(stats: BinStats, repairs: RepairCounts, snr: np.ndarray, features: np.ndarray | None) -> str:
    """sha256 over every stored value: bin names, y0, repairs, then each array's dtype, shape and bytes."""
    arrays = {"c": stats.c, "n": stats.n, "s": stats.s, "S": stats.S, "t": stats.t, "u": stats.u,
              "q": stats.q, "snr": snr}
    if features is not None:
        arrays["features"] = features
    arrays = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    head = {"names": list(stats.names), "y0": repr(stats.y0), "repairs": repairs.to_dict(),
            "arrays": [[name, a.dtype.str, list(a.shape)] for name, a in arrays.items()]}
    digest = hashlib.sha256(json.dumps(head, sort_keys=True).encode())
    for a in arrays.values():
        digest.update(memoryview(a).cast("B"))  # no copy: S alone is K * D * D * 8 bytes
    return digest.hexdigest()


def _check_rows(stats: BinStats, snr: np.ndarray, features: np.ndarray | None) -> str | None:
    """Why snr (N,) / features (N, F) disagree with the statistics' row count, or None when they agree."""
    rows = int(stats.n.sum())
    if snr.shape != (rows,):
        return f"snr has shape {snr.shape} but the statistics count {rows} rows"
    if features is not None and (features.ndim != 2 or features.shape[0] != rows):
        return f"features have shape {features.shape}; expected ({rows}, F)"
    return None


def _write(path: Path, key: str, result: PassResult, snr: np.ndarray, features: np.ndarray | None,
           meta: dict[str, Any]) -> None:
    """Write the whole cache file at ``path`` (a temporary name; the caller publishes it)."""
    with h5py.File(path, "w") as f:
        write_stats(f.create_group("stats"), result.stats)
        f.create_dataset("snr", data=snr)
        if features is not None:
            f.create_dataset("features", data=features)
        for name, count in result.repairs.to_dict().items():
            f.attrs[f"repairs.{name}"] = count
        f.attrs["source"] = str(meta.get("source", ""))
        f.attrs["rows"] = int(snr.shape[0])
        f.attrs["bins"] = ",".join(result.stats.names)
        f.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        f.attrs["package_version"] = __version__
        f.attrs["meta"] = json.dumps(meta, sort_keys=True, default=str)
        f.attrs["key"] = key
        f.attrs["checksum"] = _checksum(result.stats, result.repairs, snr, features)
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


def _read(path: Path, key: str) -> PassResult:
    """Read and verify one cache file; raise _Invalid saying why it cannot be used."""
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            if attrs.get("format") != CACHE_FORMAT:
                raise _Invalid(f"not a snrmoe cache file (attribute format != {CACHE_FORMAT!r})")
            if attrs.get("version") != CACHE_VERSION or attrs.get("key") != key:
                raise _Invalid(f"written for version {attrs.get('version')} key {attrs.get('key')}, "
                               f"expected version {CACHE_VERSION} key {key}")
            stats = read_stats(f["stats"])
            snr = f["snr"][()]
            features = f["features"][()] if "features" in f else None
            repairs = RepairCounts(**{name: int(attrs[f"repairs.{name}"]) for name in RepairCounts().to_dict()})
    except _Invalid:
        raise
    except Exception as exc:  # h5py/HDF5 raise OSError, KeyError, ValueError... for damaged files
        raise _Invalid(f"unreadable ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if _checksum(stats, repairs, snr, features) != attrs.get("checksum"):
        raise _Invalid("checksum mismatch (the stored values changed after writing)")
    why = _check_rows(stats, snr, features)
    if why:
        raise _Invalid(why)
    return PassResult(stats, repairs, [snr], [] if features is None else [features])


# ----------------------------------------------------------------------------- the cache
class ShardCache:
    """One HDF5 file per shard key under ``root`` (created on the first save)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """``root / f"{key}.h5"``; the key must be a :func:`shard_key` digest (no path tricks)."""
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(f"cache key {key!r}: expected a 64-character lowercase hex digest from shard_key")
        return self.root / f"{key}.h5"

    def load(self, key: str) -> PassResult | None:
        """The cached result (snr and features as one block each), or None on a miss.

        A file that is truncated, not HDF5, not ours, or fails its checksum is logged as a warning,
        deleted and reported as a miss, so the caller recomputes the shard.
        """
        path = self.path(key)
        if not path.is_file():
            if path.exists():
                log.warning("%s: not a cache file (something else has its name): left alone; the shard is "
                            "recomputed", path)
            return None
        try:
            result = _read(path, key)
        except _Invalid as why:
            log.warning("%s: cache file discarded, the shard will be recomputed: %s", path, why)
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("%s: could not delete the damaged cache file: %s", path, exc)
            return None
        log.debug("%s: cache hit (%d rows)", path, len(result.snr[0]))
        return result

    def metas(self) -> list[tuple[str, dict[str, Any]]]:
        """(key, meta) of every readable entry, from the file attributes only (no arrays read)."""
        out = []
        for path, attrs in _entries(self.root) if self.root.is_dir() else []:
            if attrs is not None:
                out.append((str(attrs.get("key", "")), json.loads(attrs.get("meta", "{}"))))
        return out

    def save(self, key: str, result: PassResult, meta: dict[str, Any] | None = None) -> Path:
        """Store ``result`` under ``key`` atomically and return the file's path.

        meta: small JSON-able facts for ``snrmoe cache ls`` (``meta["source"]`` is the shard path
        shown there); stored as the JSON attribute ``meta``. Rows, bins, creation time and package
        version are added here. On any error the temporary file is removed and the error raised;
        an existing file for ``key`` is left untouched.
        """
        meta = dict(meta or {})
        path = self.path(key)
        if path.exists() and not path.is_file():
            log.warning("%s: not a cache file (something else has its name): left alone; this shard's result is "
                        "not cached", path)
            return path
        snr, features = _flatten(result)
        why = _check_rows(result.stats, snr, features)
        if why:
            raise ValueError(f"cache save {key[:12]}: {why}")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{key}.{os.getpid()}.{uuid.uuid4().hex}.tmp"  # the PID: see remove_dead_temp_files
        try:
            _write(tmp, key, result, snr, features, meta)
            _fsync(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync(self.root)  # makes the rename itself durable
        log.debug("%s: cached %d rows of %s", path, snr.shape[0], meta.get("source", "?"))
        return path


# ----------------------------------------------------------------------------- ls / clear
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
    for path in sorted(root.glob("*.h5")):
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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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


def list_cache(root: str | os.PathLike) -> list[str]:
    """One line per cache file (key prefix, source shard, rows, bins, size MB, created), a total line,
    then one line per temporary file left or being written by a run (PID, alive or not)."""
    root = Path(root)
    if not _cache_folder(root):
        return [f"no cache at {root} (folder does not exist)"]
    try:
        entries, temps = _entries(root), temp_files(root)
        strays = [f"{path.name[:12]}  not a file: not ours, left alone ({path})" for path in sorted(root.glob("*.h5"))
                  if _ENTRY.fullmatch(path.name) and not path.is_file()]
    except OSError as exc:
        raise InputError(f"{root}: cannot list the cache folder: {exc.strerror}") from None
    lines, total = strays, 0
    for path, attrs in entries:
        size = path.stat().st_size
        total += size
        if attrs is None:
            lines.append(f"{path.name[:12]}  damaged or truncated file ({size / 1e6:.1f} MB); "
                         f"loading recomputes it, `snrmoe cache clear` removes it")
            continue
        lines.append(f"{path.name[:12]}  {_text(attrs.get('source', '?'))}  {int(attrs.get('rows', 0))} rows  "
                     f"bins {_text(attrs.get('bins', '?'))}  {size / 1e6:.1f} MB  "
                     f"created {_text(attrs.get('created', '?'))}")
    lines.append(f"{len(entries)} cache files, {total / 1e6:.1f} MB in {root}" if entries
                 else f"cache {root} is empty")
    for path, pid, alive in temps:
        state = ("its run is still writing it" if alive else
                 "its run has ended: `snrmoe cache clear` or the next run removes it")
        lines.append(f"{path.name[1:13]}  temporary file of PID {pid}, {path.stat().st_size / 1e6:.1f} MB; {state}")
    return lines


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
