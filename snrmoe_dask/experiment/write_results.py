"""Everything a run writes: results.json, predictions.csv, models.h5, metrics.nc (and, through the
report layer's ``render``, figures and report), into the hidden folder that ``output_dir.OutputDir.build``
yields and renames into place in one step."""

from __future__ import annotations

import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd

from ..io.atomic import write_text
from ..io.shards import read_source
from .evaluation import metrics_dataset
from .config import ExperimentConfig, config_to_dict
from .results_schema import load_results

if TYPE_CHECKING:
    from ..engine.model import BinnedRidge

PACKAGES = ("snrmoe-dask", "numpy", "dask", "distributed", "xarray", "h5py", "pandas", "tables", "scikit-learn",
            "scipy", "matplotlib", "pydantic")


def provenance(cfg: ExperimentConfig, files: list[Path], sources: list[str | None] | None = None) -> dict:
    """Versions, commit, input files (path, size, the file's own ``source``: ``sources`` in the order of
    ``files`` when known, else read from each file), seeds and config."""
    sources = sources if sources is not None else [read_source(p) for p in files]
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
        "files": [{"path": str(p), "bytes": p.stat().st_size, "source": source} for p, source in zip(files, sources)],
        "seeds": {"noise.seed": cfg.noise.seed, "noise.test_seed": cfg.noise.test_seed},
        "config": config_to_dict(cfg),
    }


Render = Callable[[dict, pd.DataFrame, Path], None]


def results_size(n_bins: int, pixels: int, n_test: int) -> int:
    """About how many bytes a results folder takes, for the free-space check before the pass: the models
    (K + 1 of D coefficients, scaler means and scales), a predictions row per test spectrum, and a few
    MB for results.json, metrics.nc, the figures and the report."""
    return 8_000_000 + (n_bins + 1) * pixels * 3 * 8 + n_test * 200


def write_outputs(out_dir: Path, results: dict, predictions: pd.DataFrame, model: BinnedRidge,
                  render: Render | None = None) -> None:
    """results.json, predictions.csv, models.h5, metrics.nc into ``out_dir``, then ``render(results,
    predictions, out_dir)`` (the report layer's figures and report.md; see ``report.render``).
    results.json is checked against the schema the report reads (``results_schema``) before it is written."""
    load_results(json.loads(json.dumps(results, default=_json_default)), "results.json (as written)")
    write_json(out_dir / "results.json", results)
    predictions.to_csv(out_dir / "predictions.csv", index=False)
    model.save(out_dir / "models.h5")
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
    write_text(path, json.dumps(obj, indent=2, default=_json_default))
