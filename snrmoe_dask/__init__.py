"""snrmoe-dask: does one Ridge expert per SNR bin beat one global Ridge model for log g, and by how much?

The engine as a library (experiment card LOGG-SNR-ORACLE-01; every default is the card's)::

    ds = open_shards("root/train_200k_{0..4}/dataset.h5")      # lazy xarray.Dataset of dask arrays
    stats = bin_statistics(ds).persist()                       # one pass, on any dask scheduler
    model = BinnedRidge(alpha=1e5).fit(stats)                  # global model + one expert per bin
    metrics = evaluate(model, open_shards("root/test_1k_0/dataset.h5"))  # model x bin x metric
    model.set_params(alpha=1e4).fit()                          # a new alpha: D x D solves, no pass
    curve = scaling_curve(bin_statistics(ds, per_shard=True), test=open_shards(...))  # R² against N, no pass more

``snrmoe run CONFIG`` is one client of these functions; the notebook in ``notebooks/`` is another.
The names are imported on first use, so that ``snrmoe --help`` does not load dask, xarray and
scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# public name -> the module that defines it
_EXPORTS = {
    "BinStats": "core.stats", "PassResult": "core.block_pass", "sum_results": "core.block_pass",
    "NoiseSpec": "core.noise", "add_noise": "core.noise", "make_partition": "core.partition",
    "open_shards": "engine.dataset", "bin_statistics": "engine.statistics", "BinnedRidge": "engine.model",
    "evaluate": "experiment.evaluation", "load_test_set": "experiment.evaluation",
    "simulate_set": "io.simulate", "CARD_BINS": "core.card_defaults", "scaling_curve": "experiment.scaling",
}
__all__ = ["__version__", *sorted(_EXPORTS)]

if TYPE_CHECKING:
    from .core.card_defaults import BINS as CARD_BINS  # noqa: F401
    from .core.block_pass import PassResult, sum_results  # noqa: F401
    from .core.noise import NoiseSpec, add_noise  # noqa: F401
    from .core.partition import make_partition  # noqa: F401
    from .core.stats import BinStats  # noqa: F401
    from .engine.dataset import open_shards  # noqa: F401
    from .engine.model import BinnedRidge  # noqa: F401
    from .engine.statistics import bin_statistics  # noqa: F401
    from .experiment.evaluation import evaluate, load_test_set  # noqa: F401
    from .experiment.scaling import scaling_curve  # noqa: F401
    from .io.simulate import simulate_set  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'snrmoe_dask' has no attribute {name!r}")
    module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    value = getattr(module, "BINS" if name == "CARD_BINS" else name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
