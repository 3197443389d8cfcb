"""The facts a report states, read from the typed results (``experiment.results_schema.Results``).

Nothing here is language: the rules (``rules``) decide which sentences hold, the prose modules
(``prose_zh``, ``prose_en``) say them. A results.json written before the ``diagnostics`` section
existed gets the same numbers from predictions.csv when it is given (the training range then stays
unknown).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..core.card_defaults import BINS as CARD_BINS
from ..experiment.diagnostics import prediction_checks
from ..experiment.verdict import robustness
from ..experiment.results_schema import (
    BinResult,
    Diagnostics,
    Metrics,
    PredictionCheck,
    Results,
    Robustness,
    TargetSpread,
    load_results,
)
from .formatting import as_float, ci_bounds, format_delta, format_number, format_r2, interval_label, snr_range_label

SNR_COLUMN = "snr"  # routing.by of the card's SNR bins
MODEL_ORDER = ("global", "oracle", "deployed", "noisy_snr_routed")


@dataclass(frozen=True)
class Score:
    """One model on one set of test spectra: R² (with its interval), MAE and RMSE in dex (NaN where
    undefined), and how its predictions sit against the truth (None where not known)."""

    r2: float
    mae: float
    rmse: float
    r2_ci: tuple[float, float] | None = None
    slope: float | None = None
    outside: float | None = None  # share of predictions outside the training range
    pred_min: float | None = None
    pred_max: float | None = None

    @classmethod
    def of(cls, metrics: Metrics | None, check: PredictionCheck | None = None) -> Score | None:
        if metrics is None:
            return None
        check = check or PredictionCheck()
        return cls(as_float(metrics.r2), as_float(metrics.mae), as_float(metrics.rmse), _interval(metrics.r2_ci),
                   check.slope, check.outside_train_range, check.pred_min, check.pred_max)


def _interval(ci: Any) -> tuple[float, float] | None:
    lo, hi = ci_bounds(ci)
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None


@dataclass(frozen=True)
class BinFacts:
    """One bin (or grid cell) of the run."""

    name: str
    label: str  # its range as the report writes it: '4 ≤ SNR < 7', 'T_eff [4000, 5000)'
    tick: str  # the same, compact, for figures: '4≤SNR<7'
    low: float
    high: float
    n_train: int
    n_test: int
    train_share: float
    test_share: float
    skipped: bool
    expert: Score
    global_: Score
    delta: float
    delta_ci: tuple[float, float] | None
    target_std: float | None
    alpha: float | None
    deployed: Score | None

    @property
    def trained(self) -> bool:
        return not self.skipped

    def ci_side(self) -> str | None:
        """Where the ΔR² interval lies against 0: 'above', 'below', 'includes'; None without one."""
        if self.delta_ci is None:
            return None
        lo, hi = self.delta_ci
        return "above" if lo > 0 else "below" if hi < 0 else "includes"

    def loses(self) -> bool:
        """The expert is worse than the global model here: its ΔR² interval lies below 0 or, without an
        interval, ΔR² < 0."""
        return self.trained and (self.ci_side() == "below" if self.delta_ci is not None else self.delta < 0)

    def marked(self, threshold: float) -> bool:
        """★: the lower bound of the ΔR² interval clears the threshold (descriptive; the decision is overall)."""
        return self.trained and self.delta_ci is not None and self.delta_ci[0] >= threshold


@dataclass(frozen=True)
class Facts:
    """Everything the report and the tracking blocks state, typed."""

    results: Results
    bins: tuple[BinFacts, ...]
    models: dict[str, Score]
    target: TargetSpread

    # ------------------------------------------------------------------ the verdict
    @property
    def decision(self) -> str:
        return self.results.decision

    @property
    def threshold(self) -> float:
        return self.results.threshold

    @property
    def delta(self) -> float:
        return self.results.delta_r2

    @property
    def delta_ci(self) -> tuple[float, float] | None:
        return _interval(self.results.delta_r2_ci)

    @property
    def robustness(self) -> Robustness | None:
        """results.robustness, or (for results that hold only the interval) the same entry from it."""
        if self.results.robustness is not None or self.delta_ci is None:
            return self.results.robustness
        resamples = self.config("evaluation.bootstrap") or 0
        return Robustness.model_validate(robustness(self.delta, self.threshold, self.delta_ci, self.n_test, resamples))

    @property
    def global_(self) -> Score:
        return self.models["global"]

    @property
    def oracle(self) -> Score:
        return self.models["oracle"]

    @property
    def deployed(self) -> Score | None:
        return self.models.get("deployed")

    @property
    def n_train(self) -> int:
        return self.results.models.oracle.n_train

    @property
    def n_test(self) -> int:
        return self.results.models.oracle.n_test

    @property
    def trained(self) -> list[BinFacts]:
        return [b for b in self.bins if b.trained and math.isfinite(b.delta)]

    @property
    def coverage(self) -> float:
        """Share of test spectra routed to a trained expert; NaN without test spectra."""
        total = sum(b.n_test for b in self.bins)
        return sum(b.n_test for b in self.bins if b.trained) / total if total else math.nan

    # ------------------------------------------------------------------ the run's settings
    def config(self, path: str, default: Any = None) -> Any:
        """A value of the run's config (results.json ``config``) at a dotted path, else ``default``."""
        node: Any = self.results.config
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    @property
    def per_bin(self) -> bool:
        """``evaluation.per_bin`` (true unless the config says false): the per-bin tables and sentences."""
        return self.config("evaluation.per_bin") is not False

    @property
    def metrics(self) -> list[str]:
        """The metrics shown ("r2", "mae", "rmse"): ``evaluation.metrics``, R² always; all when unsaid."""
        chosen = self.config("evaluation.metrics") or ["R2", "MAE", "RMSE"]
        keys = {str(m).lower().replace("²", "2") for m in chosen}
        return [k for k in ("r2", "mae", "rmse") if k == "r2" or k in keys]

    @property
    def min_train(self) -> int | None:
        value = self.config("evaluation.min_bin_samples")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def columns(self) -> list[str]:
        """The columns the experts are split on ('snr' for the card's SNR bins)."""
        return partition_columns(self.results)

    @property
    def snr_partition(self) -> bool:
        return self.columns == [SNR_COLUMN]

    @property
    def split(self) -> str:
        """What the experts are split by: 'SNR', 'T_eff', 'T_eff × M_H'."""
        return " × ".join("SNR" if c == SNR_COLUMN else c for c in self.columns)

    @property
    def card_bins(self) -> list[BinFacts]:
        """The bins that are the card's (name and edges), to which its expected shares and ceilings apply."""
        if not self.snr_partition:
            return []
        return [b for b in self.bins if b.name in CARD_BINS and _same_edges((b.low, b.high), CARD_BINS[b.name])]

    # ------------------------------------------------------------------ the data
    @property
    def sources(self) -> list[str | None] | None:
        """The ``source`` attribute of every input file (None for a file without one); None when not recorded."""
        files = self.results.provenance.files if self.results.provenance else None
        return None if files is None else [f.source for f in files]

    @property
    def simulated_sources(self) -> list[str]:
        """The distinct sources of the input files that say they are simulated."""
        return sorted({s for s in self.sources or [] if s and "simulat" in s.lower()})

    @property
    def configured_source(self) -> str | None:
        value = self.config("data.source")
        return None if value is None else str(value)

    @property
    def named_sources(self) -> list[tuple[str, int]]:
        """(source attribute, number of files saying it), for the files that carry one."""
        sources = self.sources or []
        return [(s, sources.count(s)) for s in sorted({s for s in sources if s})]

    @property
    def unnamed_files(self) -> int:
        """Input files without a source attribute (the real data's files carry none)."""
        return sum(s is None for s in self.sources or [])

    @property
    def source_mismatch(self) -> bool:
        """The config's data.source is not what the files say."""
        return self.configured_source is not None and any(s != self.configured_source for s, _ in self.named_sources)

    # ------------------------------------------------------------------ the model's settings
    @property
    def n_experts(self) -> int:
        return sum(b.trained for b in self.bins)

    @property
    def scaler(self) -> str:
        return self.config("preprocessing.scaler") or "StandardScaler"

    @property
    def shared_scaler(self) -> bool:
        return self.config("preprocessing.per_expert_scaler") is False

    @property
    def clips_flux(self) -> bool:
        return self.config("preprocessing.clip_flux") in (None, True)

    @property
    def seeds(self) -> str:
        """'seed=42, test_seed=2025': the noise seeds of the config."""
        noise = self.config("noise") or {}
        return ", ".join(f"{k}={v}" for k, v in noise.items() if "seed" in str(k))

    @property
    def metric_names(self) -> list[str]:
        return [{"r2": "R²", "mae": "MAE (dex)", "rmse": "RMSE (dex)"}[k] for k in self.metrics]

    @property
    def alpha_shown(self) -> str:
        """The global model's alpha ('100,000'), else the config's."""
        alpha = self.results.models.global_.alpha
        return format_number(alpha if alpha is not None else self.config("model.alpha"))

    @property
    def expert_alphas(self) -> dict[str, float] | None:
        """The experts' alphas when one differs from the global model's; None when they are all the same."""
        experts = {b.name: b.alpha for b in self.bins if b.trained and b.alpha is not None}
        differ = any(a != self.results.models.global_.alpha for a in experts.values())
        return experts if differ else None

    @property
    def alpha_selected(self) -> bool:
        return self.results.alpha is not None

    @property
    def alphas(self) -> list[float]:
        """The alpha of the global model and of every trained expert."""
        values = [self.results.models.global_.alpha] + [b.alpha for b in self.bins if b.trained]
        return [v for v in values if v is not None]


def _same_edges(edges: tuple[float, float], card: tuple[float, float]) -> bool:
    return all(a == b or not (math.isfinite(a) or math.isfinite(b)) for a, b in zip(edges, card))


def partition_columns(results: Results) -> list[str]:
    """results.partition.by, else the bins' ``by``, else SNR."""
    by = results.partition.by if results.partition else None
    if by is None:
        first = next(iter(results.bins.values()))
        by = first.by if first.by is not None else (list(first.low) if isinstance(first.low, dict) else SNR_COLUMN)
    return [by] if isinstance(by, str) else list(by)


def range_label(spec: BinResult, columns: list[str], spaced: bool = True, sep: str = " × ") -> str:
    """The range of one bin or grid cell: SNR bins '4 ≤ SNR < 7' (half-open), another column
    'T_eff [4000, 5000)', a grid cell 'T_eff [4000, 5000) × M_H [-1, 0)'."""
    if isinstance(spec.low, dict) or isinstance(spec.high, dict):
        low = spec.low if isinstance(spec.low, dict) else {}
        high = spec.high if isinstance(spec.high, dict) else {}
        return sep.join(interval_label(c, low.get(c), high.get(c)) for c in columns)
    if columns == [SNR_COLUMN]:
        return snr_range_label(spec.low, spec.high, spaced)
    return interval_label(columns[0], spec.low, spec.high)


def _diagnostics(results: Results, predictions: pd.DataFrame | None) -> Diagnostics:
    """results.diagnostics, or (for a results.json written before it existed) the same numbers from
    predictions.csv, without the training range."""
    if results.diagnostics is not None or predictions is None:
        return results.diagnostics or Diagnostics()
    names = list(results.bins)
    index = {name: k for k, name in enumerate(names)}
    bins = predictions["bin"].astype(str).map(index).fillna(-1).to_numpy(int)
    columns = {"global": "y_global", "oracle": "y_oracle", "deployed": "y_deployed", "noisy_snr_routed": "y_noisy_snr"}
    models = {key: predictions[c].to_numpy(np.float64) for key, c in columns.items() if c in predictions}
    return Diagnostics.model_validate(prediction_checks(predictions["y_true"].to_numpy(np.float64), models, bins, names))


def build_facts(results: Any, predictions: pd.DataFrame | None = None) -> Facts:
    """The facts of ``results`` (a parsed results.json or :class:`Results`); ``predictions`` fills in
    what an older results.json lacks."""
    results = load_results(results)
    checks = _diagnostics(results, predictions)
    columns = partition_columns(results)
    models = {key: Score.of(getattr(results.models, key if key != "global" else "global_"), checks.models.get(key))
              for key in MODEL_ORDER}
    total_train = sum(b.n_train for b in results.bins.values())
    total_test = sum(b.n_test for b in results.bins.values())
    bins = []
    for name, spec in results.bins.items():
        check = checks.bins.get(name)
        expert, glob = Score.of(spec.expert, check and check.expert), Score.of(spec.global_, check and check.global_)
        delta = as_float(spec.delta_r2) if spec.delta_r2 is not None else expert.r2 - glob.r2
        low = as_float(spec.low) if not isinstance(spec.low, dict) else math.nan
        high = as_float(spec.high) if not isinstance(spec.high, dict) else math.nan
        if columns == [SNR_COLUMN] and not math.isfinite(high):
            high = math.inf
        bins.append(BinFacts(
            name=str(name), label=range_label(spec, columns), tick=range_label(spec, columns, spaced=False, sep="\n"),
            low=low, high=high, n_train=spec.n_train, n_test=spec.n_test,
            train_share=spec.n_train / total_train if total_train else math.nan,
            test_share=spec.n_test / total_test if total_test else math.nan, skipped=spec.skipped,
            expert=expert, global_=glob, delta=delta, delta_ci=_interval(spec.delta_r2_ci),
            target_std=check.target_std if check else None, alpha=spec.alpha, deployed=Score.of(spec.deployed)))
    return Facts(results, tuple(bins), {k: v for k, v in models.items() if v is not None}, checks.target)


def shown_delta_disagrees(pairs: list[tuple[float, float, float]]) -> bool:
    """True when some ΔR² as shown (4 decimals) is not the difference of the two R² as shown: the
    reader's recomputation would be off by 0.0001, so the report says the ΔR² come from unrounded R²."""
    for a, b, d in pairs:
        if not all(math.isfinite(v) for v in (a, b, d)):
            continue
        if format_delta(float(format_r2(a)) - float(format_r2(b))) != format_delta(d):
            return True
    return False
