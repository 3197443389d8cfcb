"""The one place where the experiment config becomes arguments of the library API.

Everything below the driver takes plain arguments (``bin_statistics``, ``BinnedRidge``,
``load_test_set``, ``score``); these functions read ``ExperimentConfig`` and return them.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator

from ..core import card_defaults
from ..core.noise import NoiseSpec
from ..errors import ConfigError, InvalidParameterError
from .config import ExperimentConfig

log = logging.getLogger(__name__)

# The validation set's shard number: its noise stream is apart from every training shard's
VAL_SHARD_INDEX = 1_000_000


def pass_options(cfg: ExperimentConfig) -> dict[str, Any]:
    """Keyword arguments of ``bin_statistics`` for the training (and validation) pass."""
    by = cfg.routing.by
    return {"target": cfg.data.target, "by": None if by == "snr" else by,
            "bins": cfg.snr.bins if by == "snr" else cfg.routing.bins,
            "noise": NoiseSpec(cfg.noise.level, cfg.noise.seed, cfg.noise.mode), "snr": cfg.snr.method,
            "precision": cfg.compute.precision, "clip_flux": cfg.preprocessing.clip_flux,
            "features": cfg.evaluation.deployable_gate}


def shift_options(cfg: ExperimentConfig) -> dict[str, Any]:
    """Keyword arguments of ``pass_shift``: the shift shared by the training and validation passes."""
    return {"target": cfg.data.target, "clip_flux": cfg.preprocessing.clip_flux, "block_rows": cfg.compute.block_rows}


def scaling_options(cfg: ExperimentConfig) -> dict[str, Any]:
    """Keyword arguments of ``curve_graph`` besides the pass's, the model, test set and partition."""
    return {"points": cfg.evaluation.scaling_points, "splits": cfg.evaluation.scaling_splits,
            "threshold": cfg.evaluation.threshold, "bootstrap": cfg.evaluation.bootstrap, "seed": cfg.noise.test_seed}


def curve_options(cfg: ExperimentConfig) -> dict[str, Any]:
    """Keyword arguments of ``scaling.curve``."""
    return {"threshold": cfg.evaluation.threshold, "bootstrap": cfg.evaluation.bootstrap, "seed": cfg.noise.test_seed}


# The config key of each BinnedRidge parameter, to name it in errors
ESTIMATOR_KEYS = {"alpha": "model.alpha", "min_bin_samples": "evaluation.min_bin_samples",
                  "scaler": "preprocessing.per_expert_scaler"}


def model_options(cfg: ExperimentConfig) -> dict[str, Any]:
    """Keyword arguments of ``BinnedRidge``. A list of alphas gets the card's alpha as one more candidate
    (the choice is then never worse on validation than the card's value, and the report measures the
    gain against it); ``auto``'s grid holds it already."""
    alpha = cfg.model.alpha
    if isinstance(alpha, list) and card_defaults.ALPHA not in alpha:
        log.info("model.alpha: the card's alpha %g joins the candidates %s", card_defaults.ALPHA, alpha)
        alpha = [*alpha, card_defaults.ALPHA]
    return {"alpha": alpha, "min_bin_samples": cfg.evaluation.min_bin_samples,
            "scaler": "per-expert" if cfg.preprocessing.per_expert_scaler else "shared"}


@contextmanager
def config_keys() -> Iterator[None]:
    """An estimator's parameter error, named by its config key."""
    try:
        yield
    except InvalidParameterError as exc:
        key = ESTIMATOR_KEYS.get(exc.parameter, exc.parameter)
        raise ConfigError(f"{key}: {str(exc).split(': ', 1)[-1]}") from None


def test_options(cfg: ExperimentConfig) -> dict[str, Any]:
    """Keyword arguments of ``load_test_set`` (the partition is ``cfg.partition``)."""
    return {"target": cfg.data.target, "noise": NoiseSpec(cfg.noise.level, cfg.noise.test_seed, "sample"),
            "snr": cfg.snr.method, "clip_flux": cfg.preprocessing.clip_flux,
            "pre_noised": cfg.noise.test == "pre_noised", "features": cfg.evaluation.deployable_gate,
            "precision": cfg.compute.precision}


def score_options(cfg: ExperimentConfig) -> dict[str, Any]:
    """Keyword arguments of ``score``."""
    return {"snr_method": cfg.snr.method, "threshold": cfg.evaluation.threshold,
            "bootstrap": cfg.evaluation.bootstrap, "seed": cfg.noise.test_seed,
            "gate_fallback": cfg.evaluation.gate_fallback if cfg.evaluation.deployable_gate else None,
            "gate_seed": cfg.noise.seed, "experiment": cfg.experiment.id, "card_date": cfg.experiment.date}
