"""HDF5 formats of the numbers the pass and the solves produce: per-bin statistics and fitted models.

BinStats group: attributes ``format`` = "snrmoe_dask.BinStats", ``version``, ``names``, ``y0``;
datasets c, n, s, S, t, u, q (see ``core.stats``). RidgeModel group: datasets coef, intercept,
scaler_mean, scaler_scale; attributes alpha, n_train. ``models.h5``: one RidgeModel group per model
(``global``, then each bin that has an expert); root attributes ``bins`` (every bin, in order),
``partition`` (JSON: the label columns and each axis's bins ``{name: [low, high]}``, null for an
infinite edge) and ``pass`` (JSON: SNR method, noise level/seed/mode, clip, precision, features, y0),
with the pass's shift c (D,) in the dataset ``global/pass_c``; other attributes are JSON. No pickle.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from ..core.block_pass import PassSpec
from ..core.noise import NoiseSpec
from ..core.partition import Partition, make_partition
from ..core.ridge import RidgeModel
from ..core.stats import ARRAYS, BinStats
from ..errors import ConfigError, InputError

STATS_FORMAT = "snrmoe_dask.BinStats"
STATS_VERSION = 1
_MODEL_DATASETS = ("coef", "intercept", "scaler_mean", "scaler_scale")


def write_stats(group: h5py.Group, stats: BinStats) -> None:
    """Write ``stats`` into an HDF5 group (replacing datasets of the same names)."""
    group.attrs["format"] = STATS_FORMAT
    group.attrs["version"] = STATS_VERSION
    group.attrs["names"] = list(stats.names)
    group.attrs["y0"] = stats.y0
    for field in ARRAYS:
        if field in group:
            del group[field]
        group.create_dataset(field, data=getattr(stats, field))


def read_stats(group: h5py.Group) -> BinStats:
    """Statistics written by :func:`write_stats`; InputError naming the group when it is not one."""
    where = f"{group.file.filename}:{group.name}"
    if group.attrs.get("format") != STATS_FORMAT:
        raise InputError(f"{where}: not a BinStats group (attribute format != {STATS_FORMAT!r})")
    missing = [f for f in ARRAYS if f not in group]
    if missing or "names" not in group.attrs or "y0" not in group.attrs:
        raise InputError(f"{where}: BinStats group lacks {missing or ['names/y0 attributes']}")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["names"]]
    arrays = {f: group[f][()] for f in ARRAYS}
    return BinStats(tuple(names), arrays["c"], float(group.attrs["y0"]), *(arrays[f] for f in ARRAYS[1:]))


def write_model(group: h5py.Group, model: RidgeModel) -> None:
    """Write one fitted model into an HDF5 group."""
    for name in _MODEL_DATASETS:
        if name in group:
            del group[name]
        group.create_dataset(name, data=getattr(model, f"{name}_"))
    group.attrs["alpha"] = model.alpha_
    group.attrs["n_train"] = model.n_train_


def read_model(group: h5py.Group) -> RidgeModel:
    """A model written by :func:`write_model`."""
    try:
        return RidgeModel(coef_=group["coef"][()], intercept_=float(group["intercept"][()]),
                          scaler_mean_=group["scaler_mean"][()], scaler_scale_=group["scaler_scale"][()],
                          alpha_=float(group.attrs["alpha"]), n_train_=int(group.attrs["n_train"]))
    except KeyError as exc:
        raise InputError(f"{group.file.filename}:{group.name}: not a RidgeModel group ({exc})") from None


_PASS_SHIFT = "pass_c"  # beside the global model's datasets: a root group could collide with a bin's name


def _partition_record(partition: Partition) -> dict[str, Any]:
    return {"columns": list(partition.columns), "axes": [axis.to_dict() for axis in partition.axes]}


def _partition_from(record: Mapping[str, Any]) -> Partition:
    columns, axes = record["columns"], record["axes"]
    if columns == ["snr"]:
        return make_partition("snr", {}, axes[0])
    if len(columns) == 1:
        return make_partition(columns[0], axes[0])
    return make_partition(list(columns), dict(zip(columns, axes)))


def _spec_record(spec: PassSpec) -> dict[str, Any]:
    return {"snr_method": spec.snr_method, "noise": {"level": spec.noise.level, "seed": spec.noise.seed,
                                                     "mode": spec.noise.mode},
            "y0": spec.y0, "clip_flux": spec.clip_flux, "precision": spec.precision, "features": spec.features}


def save_models(path: str | os.PathLike, global_model: RidgeModel, experts: Mapping[str, RidgeModel | None],
                attrs: Mapping[str, Any] | None = None, *, partition: Partition | None = None,
                spec: PassSpec | None = None) -> None:
    """``models.h5``: group ``global``, one group per bin with an expert; root attribute ``bins`` lists
    every bin in order (those without a group have no expert); the partition and the pass rule when
    given; ``attrs`` are stored as JSON."""
    with h5py.File(path, "w") as f:
        write_model(f.create_group("global"), global_model)
        for name, model in experts.items():
            if model is not None:
                write_model(f.create_group(name), model)
        f.attrs["bins"] = json.dumps(list(experts))
        if partition is not None:
            f.attrs["partition"] = json.dumps(_partition_record(partition))
        if spec is not None:
            f.attrs["pass"] = json.dumps(_spec_record(spec))
            f["global"].create_dataset(_PASS_SHIFT, data=spec.c)
        for key, value in (attrs or {}).items():
            f.attrs[key] = json.dumps(value)


@dataclass
class SavedModels:
    """What a ``models.h5`` holds: the global model, {bin: expert or None}, the other JSON attributes,
    and the partition and pass rule (None in files written before they were stored)."""

    global_model: RidgeModel
    experts: dict[str, RidgeModel | None]
    attrs: dict[str, Any]
    partition: Partition | None = None
    spec: PassSpec | None = None


def load_models(path: str | os.PathLike) -> SavedModels:
    """The models of a ``models.h5`` written by :func:`save_models` (files written before the ``bins``
    attribute existed list the bins that have an expert only)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "global" not in f:
                raise InputError(f"{path}: no 'global' group; expected a models.h5 written by snrmoe")
            names = json.loads(f.attrs["bins"]) if "bins" in f.attrs else [
                k for k in f if k != "global"]
            experts = {name: read_model(f[name]) if name in f else None for name in names}
            attrs = {k: json.loads(v) for k, v in f.attrs.items() if k not in ("bins", "partition", "pass")}
            partition = _partition_from(json.loads(f.attrs["partition"])) if "partition" in f.attrs else None
            spec = None
            if "pass" in f.attrs and partition is not None:
                record = json.loads(f.attrs["pass"])
                spec = PassSpec(bins=partition, snr_method=record["snr_method"], noise=NoiseSpec(**record["noise"]),
                                c=np.asarray(f["global"][_PASS_SHIFT][()], np.float64), y0=float(record["y0"]),
                                clip_flux=bool(record["clip_flux"]), precision=record["precision"],
                                features=bool(record["features"]))
            if partition is not None and list(partition.names) != names:
                raise InputError(f"{path}: the partition's bins {list(partition.names)} are not the models' {names}")
            return SavedModels(read_model(f["global"]), experts, attrs, partition, spec)
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file: {exc}") from None
    except (KeyError, ValueError, TypeError, ConfigError) as exc:
        raise InputError(f"{path}: not a models.h5 written by snrmoe ({type(exc).__name__}: {exc})") from None
