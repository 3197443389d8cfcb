"""Everything a run writes: results.json, predictions.csv, models.h5, metrics.nc (and, through the
report layer's ``render``, figures and report), built in a hidden folder and renamed into place in one step."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from ..core.ridge import RidgeModel
from ..io.shards import read_source
from .config import ExperimentConfig, config_to_dict

PACKAGES = ("snrmoe-dask", "numpy", "dask", "distributed", "xarray", "h5py", "pandas", "tables", "scikit-learn",
            "scipy", "matplotlib", "pydantic")


def provenance(cfg: ExperimentConfig, files: list[Path]) -> dict:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "packages": versions, "git_commit": commit,
        "files": [{"path": str(p), "bytes": p.stat().st_size, "source": read_source(p)} for p in files],
        "seeds": {"noise.seed": cfg.noise.seed, "noise.test_seed": cfg.noise.test_seed},
        "config": config_to_dict(cfg),
    }


def metrics_dataset(results: dict):
    """The metrics as an xarray Dataset (model x bin x metric) for notebooks and dashboards.

    Models: global, oracle, and deployed when the gate ran; bins: every bin, then "overall".
    """
    import xarray as xr

    sides = [("global", "global"), ("oracle", "expert")]
    if "deployed" in results["models"]:
        sides.append(("deployed", "deployed"))
    bins = list(results["bins"]) + ["overall"]
    metrics = ["r2", "mae", "rmse"]
    value = np.full((len(sides), len(bins), len(metrics)), np.nan)
    for i, (model, side) in enumerate(sides):
        for j, b in enumerate(bins):
            src = results["models"][model] if b == "overall" else results["bins"][b][side]
            value[i, j] = [np.nan if src[m] is None else src[m] for m in metrics]
    n_train = [results["bins"][b]["n_train"] for b in bins[:-1]] + [results["models"]["global"]["n_train"]]
    n_test = [results["bins"][b]["n_test"] for b in bins[:-1]] + [results["models"]["global"]["n_test"]]
    return xr.Dataset(
        {"value": (("model", "bin", "metric"), value), "n_train": ("bin", n_train), "n_test": ("bin", n_test)},
        coords={"model": [m for m, _ in sides], "bin": bins, "metric": metrics},
        attrs={"experiment": results["experiment"], "decision": results["decision"], "delta_r2": results["delta_r2"]},
    )


def save_models(path: Path, global_model: RidgeModel, experts: dict[str, RidgeModel | None]) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        global_model.save(f.create_group("global"))
        for name, model in experts.items():
            if model is not None:
                model.save(f.create_group(name))


@contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a hidden sibling folder; on success it replaces ``out`` in one rename, on error it is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(partial, out)
    shutil.rmtree(old, ignore_errors=True)


Render = Callable[[dict, pd.DataFrame, Path], None]


def write_outputs(out_dir: Path, results: dict, predictions: pd.DataFrame, global_model: RidgeModel,
                  experts: dict[str, RidgeModel | None], render: Render | None = None) -> None:
    """results.json, predictions.csv, models.h5, metrics.nc into ``out_dir``, then ``render(results,
    predictions, out_dir)`` (the report layer's figures and report.md; see ``report.render``)."""
    write_json(out_dir / "results.json", results)
    predictions.to_csv(out_dir / "predictions.csv", index=False)
    save_models(out_dir / "models.h5", global_model, experts)
    metrics_dataset(results).to_netcdf(out_dir / "metrics.nc")
    if render is not None:
        render(results, predictions, out_dir)


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: Path, obj: dict) -> None:
    """Write JSON atomically (temporary file in the same folder, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default))
    os.replace(tmp, path)
