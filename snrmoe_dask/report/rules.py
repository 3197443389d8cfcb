"""Which sentences a report may write: each rule is a condition over the facts of a run.

A rule returns a :class:`Statement` (its kind and the numbers it states) only when its condition
holds; the prose modules turn a statement into a sentence of their language. Three families:

- :func:`premises`: what the conclusion rests on, written under the one-sentence summary and in the
  roadmap/hub blocks (simulated data, the robustness of the verdict to the test set, alpha at the
  edge of its grid or untuned while experts lose, R² still rising with N, negative R², a deployed
  model above the oracle);
- :func:`insights`: the per-bin findings (numbered in "Key insights");
- :func:`checks`: the card's troubleshooting table and expectations, each with what was found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..core.card_defaults import EXPECTED_SHARE, R2_CEILING
from .facts import Facts

SHRINKAGE_SLOPE = 0.8  # a slope of prediction on truth below this is a visible regression to the mean
STILL_RISING = 0.005  # R² gained between the last two points of the scaling curve: not yet saturated
SMALL_BIN = 100  # test spectra below which a bin's R² is too uncertain to read alone
SHARE_TOLERANCE = 0.8  # the card's shares are approximate ("~30%+"): a share is low below this part of it


@dataclass(frozen=True)
class Statement:
    """One sentence's kind and the numbers it states; ``warn``: a premise that qualifies the conclusion."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    warn: bool = True

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


# ----------------------------------------------------------------------------- premises
def premises(f: Facts) -> list[Statement]:
    """The premises of the conclusion, in reading order; the first one is always the robustness."""
    out = [_robustness(f)]
    for rule in (_simulated, _alpha_edge, _alpha_untuned, _still_rising, _negative_r2, _deployed_above_oracle):
        statement = rule(f)
        if statement is not None:
            out.append(statement)
    return out


def caveats(f: Facts) -> list[Statement]:
    """The premises that qualify the conclusion (robust verdicts left out)."""
    return [p for p in premises(f) if p.warn]


def _robustness(f: Facts) -> Statement:
    rob = f.robustness
    if rob is None:
        return Statement("no_interval", {"n_test": f.n_test})
    data = {"ci": tuple(rob.ci), "level": rob.level, "n_test": rob.n_test, "needed": rob.test_spectra_needed,
            "threshold": f.threshold, "decision": f.decision}
    return Statement("robust" if rob.verdict == "robust" else "not_robust", data, warn=rob.verdict != "robust")


def _simulated(f: Facts) -> Statement | None:
    """The input files say (attribute ``source``) that a simulator wrote them."""
    sources = f.simulated_sources
    return Statement("simulated", {"sources": sources}) if sources else None


def _alpha_edge(f: Facts) -> Statement | None:
    """An alpha chosen on validation at the edge of its candidate grid: the validation curve may still
    rise beyond it."""
    choice = f.results.alpha
    if choice is None:
        return None
    models = [("global", choice.global_)] + list(choice.experts.items())
    edges: dict[tuple, list[str]] = {}  # (alpha, edge) -> the models there, so that the prose says each once
    for name, model in models:
        grid = [a for a in model.curve.alpha]
        if model.source == "global" or len(grid) < 2 or model.alpha is None:
            continue
        if model.alpha in (min(grid), max(grid)):
            edges.setdefault((model.alpha, "low" if model.alpha == min(grid) else "high"), []).append(name)
    return (Statement("alpha_edge", {"models": [(names, a, e) for (a, e), names in edges.items()]})
            if edges else None)


def _alpha_untuned(f: Facts) -> Statement | None:
    """One fixed alpha for every model while an expert, trained on a part of the same spectra, loses to
    the global model in its own bin: Ridge's penalty weighs more on fewer spectra, so the split may be
    judged on over-regularised experts."""
    if f.alpha_selected or not f.per_bin or len(set(f.alphas)) != 1:
        return None
    losing = [b for b in f.trained if b.loses()]
    if not losing:
        return None
    shares = [b.train_share for b in f.trained]
    return Statement("alpha_untuned", {"alpha": f.alphas[0], "bins": [b.name for b in losing],
                                       "share_min": min(shares), "share_max": max(shares)})


def _still_rising(f: Facts) -> Statement | None:
    """R² of the global model or the MoE still grew between the last two points of the scaling curve."""
    scaling = f.results.scaling
    if scaling is None or len(scaling.points) < 2:
        return None
    before, last = scaling.points[-2], scaling.points[-1]
    rising = [(name, a.r2, b.r2) for name, a, b in (("global", before.global_, last.global_),
                                                    ("oracle", before.oracle, last.oracle))
              if a.r2 is not None and b.r2 is not None and b.r2 - a.r2 > STILL_RISING]
    if not rising:
        return None
    return Statement("still_rising", {"models": rising, "n_before": before.n_train, "n_last": last.n_train})


def negative_r2(f: Facts) -> list[tuple[str, str, float]]:
    """(where: "overall" or a bin, model: "global"/"oracle"/"expert", R²) for every R² below 0."""
    found = [("overall", key, score.r2) for key, score in f.models.items() if score.r2 < 0]
    for b in f.bins if f.per_bin else []:
        found += [(b.name, "expert", b.expert.r2)] if b.trained and b.expert.r2 < 0 else []
        found += [(b.name, "global", b.global_.r2)] if b.global_.r2 < 0 else []
    return found


def _negative_r2(f: Facts) -> Statement | None:
    """A negative R² (worse than predicting the mean): the card's advice is to check scaling and regularisation."""
    found = negative_r2(f)
    return Statement("negative_r2", {"found": found}) if found else None


def _deployed_above_oracle(f: Facts) -> Statement | None:
    """The deployable gate beats oracle routing: the oracle's ΔR² is then no upper bound for a deployed model."""
    deployed = f.deployed
    if deployed is None or not deployed.r2 > f.oracle.r2:
        return None
    bins = [(b.name, b.deployed.r2, b.expert.r2) for b in f.trained
            if b.deployed is not None and b.deployed.r2 > b.expert.r2]
    return Statement("deployed_above_oracle", {"deployed": deployed.r2, "oracle": f.oracle.r2, "bins": bins})


# ----------------------------------------------------------------------------- insights
def insights(f: Facts) -> list[Statement]:
    """The findings, each only where its numbers support it."""
    out: list[Statement] = []
    if f.per_bin:
        for rule in (_gain_extremes, _expert_better_everywhere, _expert_worse, _within_noise, _mae_disagrees,
                     _small_bins):
            statement = rule(f)
            if statement is not None:
                out.append(statement)
    for rule in (_skipped, _shrinkage, _outside_range):
        statement = rule(f)
        if statement is not None:
            out.append(statement)
    return out


def _gain_extremes(f: Facts) -> Statement | None:
    """The bins of the largest and the smallest ΔR² (point estimates), with two trained bins or more."""
    trained = f.trained
    if len(trained) < 2:
        return None
    best, worst = max(trained, key=lambda b: b.delta), min(trained, key=lambda b: b.delta)
    return Statement("gain_extremes", {"best": best, "worst": worst}, warn=False)


def _expert_better_everywhere(f: Facts) -> Statement | None:
    """Every trained bin: the ΔR² interval lies at or above 0 and the expert's MAE and RMSE are no worse."""
    trained = f.trained
    if not trained or any(b.delta_ci is None or b.delta_ci[0] < 0 for b in trained):
        return None
    if any(b.expert.mae > b.global_.mae or b.expert.rmse > b.global_.rmse for b in trained):
        return None
    return Statement("expert_better_everywhere", {"bins": trained}, warn=False)


def _expert_worse(f: Facts) -> Statement | None:
    """Bins where the expert is worse: its ΔR² interval lies below 0 or, without intervals, ΔR² < 0."""
    worse = [b for b in f.trained if b.loses()]
    interval = any(b.delta_ci is not None for b in f.trained)
    return Statement("expert_worse", {"bins": worse, "interval": interval}, warn=False) if worse else None


def _within_noise(f: Facts) -> Statement | None:
    """Bins whose ΔR² interval includes 0: expert and global model differ by no more than the test noise."""
    bins = [b for b in f.trained if b.ci_side() == "includes"]
    return Statement("within_noise", {"bins": bins}, warn=False) if bins else None


def _mae_disagrees(f: Facts) -> Statement | None:
    """Bins where R² favours the expert but MAE does not."""
    bins = [b for b in f.trained if b.delta > 0 and b.expert.mae > b.global_.mae]
    return Statement("mae_disagrees", {"bins": bins}, warn=False) if bins else None


def _small_bins(f: Facts) -> Statement | None:
    bins = [b for b in f.trained if 0 < b.n_test < SMALL_BIN]
    return Statement("small_bins", {"bins": bins, "limit": SMALL_BIN}, warn=False) if bins else None


def _skipped(f: Facts) -> Statement | None:
    bins = [b for b in f.bins if b.skipped]
    return Statement("skipped", {"bins": bins, "minimum": f.min_train}, warn=False) if bins else None


def _shrinkage(f: Facts) -> Statement | None:
    """Predictions regress to the mean: the slope of prediction on truth is below SHRINKAGE_SLOPE."""
    slopes = [(key, f.models[key].slope) for key in ("global", "oracle")
              if f.models[key].slope is not None and f.models[key].slope < SHRINKAGE_SLOPE]
    return Statement("shrinkage", {"slopes": slopes, "limit": SHRINKAGE_SLOPE}, warn=False) if slopes else None


def _outside_range(f: Facts) -> Statement | None:
    """Some predictions leave the range of the training targets."""
    models = [(key, s.outside, s.pred_min, s.pred_max) for key, s in f.models.items()
              if key in ("global", "oracle") and s.outside]
    if not models:
        return None
    return Statement("outside_range", {"models": models, "low": f.target.train_min, "high": f.target.train_max},
                     warn=False)


# ----------------------------------------------------------------------------- the card's checks
def checks(f: Facts) -> list[Statement]:
    """The card's troubleshooting rows and expectations, each with what this run found (a check that does
    not apply says why); the per-bin expectations only with ``evaluation.per_bin``."""
    per_bin = [_check_shares(f), _check_ceilings(f)] if f.per_bin else []
    return [_check_min_train(f), _check_repairs(f), _check_negative(f), *per_bin]


def _check_min_train(f: Facts) -> Statement:
    skipped = [b for b in f.bins if b.skipped]
    return Statement("check_min_train", {"skipped": skipped, "minimum": f.min_train,
                                         "smallest": min(f.bins, key=lambda b: b.n_train)}, warn=bool(skipped))


def _check_repairs(f: Facts) -> Statement:
    """Repair counts of the training and the test set (zeros included: they show that the checks ran)."""
    r = f.results
    sets = [(name, repairs.model_dump() if repairs is not None else None, rows)
            for name, repairs, rows in (("train", r.repairs, r.data.n_train), ("test", r.test_repairs, r.data.n_test))]
    changed = any(counts and any(counts.values()) for _, counts, _ in sets)
    return Statement("check_repairs", {"sets": sets, "pixels": r.data.pixels}, warn=changed)


def _check_negative(f: Facts) -> Statement:
    found = negative_r2(f)
    return Statement("check_negative_r2", {"found": found}, warn=bool(found))


def _check_shares(f: Facts) -> Statement:
    """Training shares against the card's expected shares (the card's bins only), clearly below: < SHARE_TOLERANCE of it."""
    card_bins = f.card_bins
    low = [(b.name, b.train_share, EXPECTED_SHARE[b.name]) for b in card_bins
           if b.train_share < SHARE_TOLERANCE * EXPECTED_SHARE[b.name]]
    return Statement("check_shares", {"applies": bool(card_bins), "low": low}, warn=False)


def _check_ceilings(f: Facts) -> Statement:
    """R² against the card's Fisher ceilings R²_max (estimated for the real BOSZ data): a model is above its
    ceiling when its R² interval lies above it (without an interval, its point estimate, said so). Not
    applied to simulated data or to bins that are not the card's."""
    card_bins = f.card_bins
    if not card_bins or f.simulated_sources:
        return Statement("check_ceilings", {"applies": False, "simulated": bool(f.simulated_sources),
                                           "card_bins": bool(card_bins)}, warn=False)
    above = []
    for b in card_bins:
        for model, score in (("expert", b.expert), ("global", b.global_)):
            if model == "expert" and b.skipped:
                continue
            low = score.r2_ci[0] if score.r2_ci else score.r2
            if math.isfinite(low) and low > R2_CEILING[b.name]:
                above.append((b.name, model, score.r2, score.r2_ci, R2_CEILING[b.name]))
    return Statement("check_ceilings", {"applies": True, "above": above}, warn=bool(above))
