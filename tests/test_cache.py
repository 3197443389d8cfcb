"""Per-shard cache: exact round trip, keys that change with every input, damage detected, atomic
writes, ls / clear."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import time

import h5py
import numpy as np
import pytest

from snrmoe_dask.io import cache
from snrmoe_dask.core.fold import PassResult, PassSpec
from snrmoe_dask.core.noise import NoiseSpec
from snrmoe_dask.core.repair import RepairCounts
from snrmoe_dask.core.snr import Bins
from snrmoe_dask.core.stats import BinStats
from snrmoe_dask.io.cache import ShardCache, clear_cache, list_cache, shard_key
from snrmoe_dask.io.shards import inspect_shard

INF = math.inf
BINS = {"H": [7, INF], "M": [4, 7], "L": [2, 4], "X": [0, 2]}
D = 12


def make_spec(level=1.5, seed=42, noise_mode="sample", **changes) -> PassSpec:
    """A PassSpec built from scratch each call, so equal values are distinct objects."""
    c = np.linspace(0.9, 1.1, D)
    spec = PassSpec(bins=Bins.from_mapping(BINS), snr_method="norm", noise=NoiseSpec(level, seed, noise_mode),
                    c=c, y0=3.25)
    return dataclasses.replace(spec, **changes)


def make_result(rows: int = 90, seed: int = 0, features: int = 3) -> PassResult:
    """A PassResult of three blocks of random rows (features (rows, F) unless features=0)."""
    rng = np.random.default_rng(seed)
    spec = make_spec()
    result = PassResult(BinStats.zeros(spec.bins.names, spec.c, spec.y0),
                        RepairCounts(flux_negative=5, error_nan=2, error_nonpositive=7))
    for block in np.array_split(np.arange(rows), 3):
        x = (1 + 0.1 * rng.standard_normal((len(block), D))).astype(np.float32)
        y = 3 + rng.standard_normal(len(block))
        snr = rng.uniform(0, 10, len(block))
        result.stats.add_block(x, y, spec.bins.assign(snr), dtype=np.float32)
        result.snr.append(snr)
        if features:
            result.features.append(rng.standard_normal((len(block), features)).astype(np.float32))
    return result


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.fixture
def shard(shard_factory):
    return shard_factory("train_0/dataset.h5", n=50, d=D)


def key_of(path, spec=None, target="log_g", block_rows=64, segment_rows=256, shard_index=0) -> str:
    return shard_key(path, spec or make_spec(), target, block_rows, segment_rows, shard_index)


# ----------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("features", [3, 0])
def test_round_trip_is_bit_identical(tmp_path, features):
    result = make_result(features=features)
    store = ShardCache(tmp_path / "cache")
    key = "ab" * 32
    path = store.save(key, result, {"source": "train_0/dataset.h5"})
    assert path == tmp_path / "cache" / f"{key}.h5"
    back = store.load(key)
    assert back is not None
    for name in ("c", "n", "s", "S", "t", "u", "q"):
        assert same_bits(getattr(back.stats, name), getattr(result.stats, name)), name
    assert back.stats.names == result.stats.names and back.stats.y0 == result.stats.y0
    assert back.repairs == result.repairs
    assert len(back.snr) == 1 and same_bits(back.snr[0], np.concatenate(result.snr))
    if features:
        assert len(back.features) == 1 and same_bits(back.features[0], np.concatenate(result.features))
    else:
        assert back.features == []


def test_miss_returns_none_and_bad_key_is_refused(tmp_path):
    store = ShardCache(tmp_path / "nothing-here")
    assert store.load("0" * 64) is None
    with pytest.raises(ValueError, match="hex digest"):
        store.path("../../etc/passwd")


def test_save_refuses_snr_that_disagrees_with_the_counts(tmp_path):
    result = make_result()
    result.snr.append(np.ones(4))
    with pytest.raises(ValueError, match="snr has shape"):
        ShardCache(tmp_path).save("cd" * 32, result)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- keys
def test_same_inputs_same_key(shard):
    key = key_of(shard)
    assert len(key) == 64 and int(key, 16) >= 0
    assert key_of(shard) == key
    assert key_of(inspect_shard(shard)) == key  # a ShardInfo and its path give one key
    assert key_of(shard, make_spec(level=np.float32(1.5), seed=np.int64(42))) == key  # equal numbers, other types
    assert key_of(shard, make_spec(c=np.linspace(0.9, 1.1, D).astype(np.float32).astype(np.float64))) != key


def _other(value):
    """A value of the same kind that differs as little as possible."""
    if isinstance(value, Bins):
        return Bins.from_mapping({"H": [7, INF], "M": [4.5, 7], "L": [2, 4.5], "X": [0, 2]})
    if isinstance(value, NoiseSpec):
        return NoiseSpec(_other(value.level), value.seed, value.mode)
    if isinstance(value, np.ndarray):
        out = value.copy()
        out[-1] = np.nextafter(out[-1], INF)
        return out
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return float(np.nextafter(value, INF))
    if isinstance(value, str):
        return value + "_other"
    pytest.fail(f"no test value for a {type(value).__name__}: teach _other about this new PassSpec field")


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(PassSpec)])
def test_every_passspec_field_changes_the_key(shard, field):
    spec = make_spec()
    assert key_of(shard, dataclasses.replace(spec, **{field: _other(getattr(spec, field))})) != key_of(shard, spec)


@pytest.mark.parametrize("bins", [
    {"H": [7, INF], "M": [4, 7], "L": [2, 4], "X": [0, 2]},  # the reference (must equal the base key)
    {"H": [7.5, INF], "M": [4, 7.5], "L": [2, 4], "X": [0, 2]},  # an edge moved
    {"M": [4, 7], "H": [7, INF], "L": [2, 4], "X": [0, 2]},  # same bins, other order (other indices)
    {"A": [7, INF], "M": [4, 7], "L": [2, 4], "X": [0, 2]},  # a bin renamed
    {"H": [4, INF], "L": [2, 4], "X": [0, 2]},  # a bin fewer
])
def test_bins_change_the_key(shard, bins):
    changed = key_of(shard, make_spec(bins=Bins.from_mapping(bins))) != key_of(shard)
    assert changed == (bins != BINS or list(bins) != list(BINS))


@pytest.mark.parametrize("spec_change", [{"seed": 43}, {"level": 2.0}, {"noise_mode": "expected"},
                                         {"precision": "float64"}, {"snr_method": "median"},
                                         {"clip_flux": False}, {"y0": 3.0}])
def test_named_spec_fields_change_the_key(shard, spec_change):
    assert key_of(shard, make_spec(**spec_change)) != key_of(shard)


@pytest.mark.parametrize("argument", [{"target": "T_eff"}, {"block_rows": 128}, {"segment_rows": 512},
                                      {"shard_index": 1}])
def test_pass_arguments_change_the_key(shard, argument):
    assert key_of(shard, **argument) != key_of(shard)


def test_version_changes_the_key(shard, monkeypatch):
    key = key_of(shard)
    monkeypatch.setattr(cache, "CACHE_VERSION", cache.CACHE_VERSION + 1)
    assert key_of(shard) != key


def test_touched_file_changes_the_key(shard):
    key = key_of(shard)
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert key_of(shard) != key


def test_size_alone_changes_the_key(shard):
    info = inspect_shard(shard)
    key = key_of(info)
    st = shard.stat()
    with open(shard, "ab") as f:
        f.write(b"\0")
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: only the size differs
    assert key_of(info) != key


def test_shape_and_path_change_the_key(shard, tmp_path):
    info = inspect_shard(shard)
    assert key_of(dataclasses.replace(info, n=info.n - 1)) != key_of(info)
    twin = tmp_path / "train_1" / "dataset.h5"
    twin.parent.mkdir()
    shutil.copy2(shard, twin)  # same bytes, size and mtime
    assert twin.stat().st_mtime_ns == shard.stat().st_mtime_ns
    assert key_of(twin) != key_of(shard)


def test_unreadable_shard_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(cache.InputError, match=str(bad)):
        key_of(bad)


def test_column_partition_in_the_spec_is_hashed(shard):
    # spec.bins may be a Partition (routing by table columns): its columns and every axis count.
    from snrmoe_dask.core.partition import Partition

    axis = Bins.from_mapping(BINS)
    by_snr = make_spec(bins=Partition((axis,), ("snr",)))
    assert key_of(shard, by_snr) == key_of(shard, make_spec(bins=Partition((Bins.from_mapping(BINS),), ("snr",))))
    assert key_of(shard, make_spec(bins=Partition((axis,), ("mag",)))) != key_of(shard, by_snr)
    grid = make_spec(bins=Partition((axis, axis), ("snr", "mag")))
    assert key_of(shard, grid) != key_of(shard, by_snr)


# ----------------------------------------------------------------------------- damage
def _flip_byte(path, dataset: str) -> None:
    """Flip one byte in the middle of a stored dataset's data (the HDF5 structure stays valid)."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        offset = ds.id.get_offset() + ds.id.get_storage_size() // 2
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))


def _damage(kind: str, path) -> None:
    if kind == "truncated":
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.truncate(size // 2)
    elif kind.startswith("flip:"):
        _flip_byte(path, kind[5:])
        with h5py.File(path, "r") as f:  # still valid HDF5: only the checksum can tell
            f["stats/S"][()]
    elif kind == "not-hdf5":
        path.write_bytes(b"this is not an HDF5 file\n" * 10)
    elif kind == "foreign-hdf5":
        path.unlink()
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(3)


@pytest.mark.parametrize("kind", ["truncated", "flip:stats/S", "flip:snr", "flip:features", "not-hdf5",
                                  "foreign-hdf5"])
def test_damaged_file_is_logged_deleted_and_missed(tmp_path, caplog, kind):
    store = ShardCache(tmp_path)
    key = "12" * 32
    path = store.save(key, make_result(), {"source": "s.h5"})
    _damage(kind, path)
    with caplog.at_level(logging.WARNING, logger="snrmoe_dask.io.cache"):
        assert store.load(key) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0].getMessage()
    if kind.startswith("flip:"):
        assert "checksum" in warnings[0].getMessage()
    assert not path.exists()
    store.save(key, make_result(), {"source": "s.h5"})  # the recompute path: save again, hit again
    assert store.load(key) is not None


# ----------------------------------------------------------------------------- atomic writes
def _fail_after(monkeypatch, calls: int) -> None:
    """Make h5py's create_dataset raise on its ``calls``-th call: a crash in the middle of a write."""
    real = h5py.Group.create_dataset
    count = {"n": 0}

    def failing(self, *args, **kwargs):
        count["n"] += 1
        if count["n"] >= calls:
            raise OSError("disk full (simulated)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    store = ShardCache(tmp_path)
    _fail_after(monkeypatch, 4)
    with pytest.raises(OSError, match="simulated"):
        store.save("34" * 32, make_result())
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_entry(tmp_path, monkeypatch):
    store = ShardCache(tmp_path)
    key = "56" * 32
    old = make_result(seed=1)
    store.save(key, old)
    monkeypatch.setattr(cache.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("rename failed")))
    with pytest.raises(OSError, match="rename failed"):
        store.save(key, make_result(seed=2))
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == [f"{key}.h5"]
    back = store.load(key)
    assert back is not None and same_bits(back.stats.S, old.stats.S)


# ----------------------------------------------------------------------------- ls / clear
def test_list_missing_and_empty(tmp_path):
    assert list_cache(tmp_path / "missing") == [f"no cache at {tmp_path / 'missing'} (folder does not exist)"]
    assert list_cache(tmp_path) == [f"cache {tmp_path} is empty"]
    assert clear_cache(tmp_path / "missing") == 0


def test_list_shows_entries_and_total(tmp_path):
    store = ShardCache(tmp_path)
    store.save("a1" * 32, make_result(rows=90), {"source": "train_0/dataset.h5"})
    store.save("b2" * 32, make_result(rows=60), {"source": "train_1/dataset.h5"})
    (tmp_path / "notes.txt").write_text("not ours")
    lines = list_cache(tmp_path)
    assert len(lines) == 3
    assert lines[0].startswith("a1" * 6) and "train_0/dataset.h5" in lines[0] and "90 rows" in lines[0]
    assert lines[1].startswith("b2" * 6) and "train_1/dataset.h5" in lines[1] and "60 rows" in lines[1]
    assert all("bins H,M,L,X" in line and " MB " in line and "created 20" in line for line in lines[:2])
    assert lines[2].startswith("2 cache files, ") and str(tmp_path) in lines[2]


def test_clear_removes_only_ours(tmp_path, shard_factory):
    store = ShardCache(tmp_path)
    for key in ("c3" * 32, "d4" * 32):
        store.save(key, make_result())
    broken = tmp_path / f"{'e5' * 32}.h5"
    broken.write_bytes(b"truncated")  # named like an entry, unreadable: a damaged entry of ours
    stale = tmp_path / f".{'f6' * 32}.{'0' * 32}.tmp"
    fresh = tmp_path / f".{'f7' * 32}.{'1' * 32}.tmp"
    for tmp in (stale, fresh):
        tmp.write_bytes(b"partial")
    old = time.time() - cache.STALE_TEMP_S - 60
    os.utime(stale, (old, old))
    foreign = shard_factory(str(tmp_path / "foreign.h5"), n=10, d=4)  # an HDF5 file that is not ours
    other = tmp_path / "other.h5"
    other.write_bytes(b"someone else's file")  # unreadable, but not named like a key
    assert "damaged" in " ".join(list_cache(tmp_path))
    assert clear_cache(tmp_path) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, foreign.name, other.name])
    assert clear_cache(tmp_path) == 0
    assert list_cache(tmp_path) == [f"cache {tmp_path} is empty"]

