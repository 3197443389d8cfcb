"""Cache keys: what a pass result depends on, hashed into the 64-character name of its entry.

A training shard's :class:`~snrmoe_dask.core.block_pass.PassResult` depends only on the shard's content,
its position in the training list (it seeds the noise), the per-row values the pass takes from the
params table (target, SNR column, bins), the :class:`PassSpec` and the block cut. :func:`shard_key`
hashes what can be known without reading the spectra: the file's identity (resolved path, size,
mtime_ns, ctime_ns, inode, flux shape), those per-row values, the PassSpec and the block cut. The
spectra themselves are covered by a content digest (``io.digest``) that the pass takes of every
block it reads and that each entry stores; ``maintenance.verify_cache`` re-reads the shards to
compare it. :func:`merged_key` names the sum of a shard list's results. Every key includes
:data:`~snrmoe_dask.io.cache.entry_file.CACHE_VERSION`, so entries of another format match no key.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import numbers
import os
import re
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from ...core.block_pass import PassSpec
from ...errors import InputError
from ..shards import FLUX_KEY, ShardInfo
from .entry_file import CACHE_FORMAT, CACHE_VERSION

_KEY = re.compile(r"[0-9a-f]{64}")  # a sha256 hex digest
# The fields of a file's identity in the key, in the order a stale entry's log line names them.
IDENTITY = ("size", "mtime_ns", "ctime_ns", "inode", "shape")


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
    raise TypeError(f"shard_key: cannot hash a {type(value).__name__} value {value!r}; extend io.cache.keys._canonical")


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
