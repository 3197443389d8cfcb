"""The human-readable part of a results folder: the figures and report.md, from the results alone."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Callable

import pandas as pd

from ..errors import InputError
from .plots import make_figures
from .scaling import plot_scaling
from .text import write_report


def render(results: dict, predictions: pd.DataFrame, out_dir: Path, lang: str = "zh") -> None:
    """Write ``out_dir/img/*.png`` and ``out_dir/report.md`` from the results dict and the predictions table.

    Figures (``plots.make_figures``): the card's four, plus img/snr_oracle_moe_gate_confusion.png
    when results has "gate" and img/snr_oracle_moe_alpha_curve.png when it has "alpha".
    """
    make_figures(results, predictions, out_dir / "img")
    plot_scaling(results, out_dir / "img")  # img/snr_oracle_moe_scaling.png when results has "scaling"
    write_report(results, out_dir, lang=lang)


def renderer(lang: str = "zh") -> Callable[[dict, pd.DataFrame, Path], None]:
    """``render`` bound to a report language, in the form the experiment driver takes."""
    return partial(render, lang=lang)


def rebuild_report(results_dir: Path, lang: str = "zh") -> Path:
    """Figures and report.md again from results.json and predictions.csv alone."""
    try:
        results = json.loads((results_dir / "results.json").read_text())
        predictions = pd.read_csv(results_dir / "predictions.csv")
    except FileNotFoundError as exc:
        raise InputError(f"{exc.filename}: not found; expected the output folder of `snrmoe run`") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{results_dir / 'results.json'}: not valid JSON ({exc})") from None
    render(results, predictions, results_dir, lang)
    return results_dir / "report.md"
