"""HDF5 formats of the numbers the pass and the solves produce: per-bin statistics and fitted models.

BinStats group: attributes ``format`` = "snrmoe_dask.BinStats", ``version``, ``names``, ``y0``;
datasets c, n, s, S, t, u, q (see ``core.stats``). RidgeModel group: datasets coef, intercept,
scaler_mean, scaler_scale; attributes alpha, n_train. ``models.h5``: one RidgeModel group per model
(``global``, then each bin that has an expert) and root attributes naming every bin. No pickle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import h5py

from ..core.ridge import RidgeModel
from ..core.stats import ARRAYS, BinStats
from ..errors import InputError

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


def save_models(path: str | os.PathLike, global_model: RidgeModel, experts: Mapping[str, RidgeModel | None],
                attrs: Mapping[str, Any] | None = None) -> None:
    """``models.h5``: group ``global``, one group per bin with an expert; root attribute ``bins`` lists
    every bin in order (those without a group have no expert); ``attrs`` are stored as JSON."""
    with h5py.File(path, "w") as f:
        write_model(f.create_group("global"), global_model)
        for name, model in experts.items():
            if model is not None:
                write_model(f.create_group(name), model)
        f.attrs["bins"] = json.dumps(list(experts))
        for key, value in (attrs or {}).items():
            f.attrs[key] = json.dumps(value)


def load_models(path: str | os.PathLike) -> tuple[RidgeModel, dict[str, RidgeModel | None], dict[str, Any]]:
    """(global model, {bin: expert or None}, attrs) from a ``models.h5`` written by :func:`save_models`.

    Files written before the ``bins`` attribute existed list the bins that have an expert only.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "global" not in f:
                raise InputError(f"{path}: no 'global' group; expected a models.h5 written by snrmoe")
            names = json.loads(f.attrs["bins"]) if "bins" in f.attrs else [k for k in f if k != "global"]
            experts = {name: read_model(f[name]) if name in f else None for name in names}
            attrs = {k: json.loads(v) for k, v in f.attrs.items() if k != "bins"}
            return read_model(f["global"]), experts, attrs
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file: {exc}") from None
