"""The human-readable part of a results folder: the figures and report.md, from the results alone."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Callable

import pandas as pd

from ..errors import InputError
from .plots import PREDICTION_COLUMNS, check_predictions, check_results, make_figures
from .text import write_report


def render(results: dict, predictions: pd.DataFrame, out_dir: Path, lang: str = "zh") -> None:
    """Write ``out_dir/img/*.png`` and ``out_dir/report.md`` from the results dict and the predictions table.

    Figures (``plots.make_figures``): the card's four, plus img/snr_oracle_moe_gate_confusion.png
    when results has "gate" and img/snr_oracle_moe_alpha_curve.png when it has "alpha".
    """
    make_figures(results, predictions, out_dir / "img")
    write_report(results, out_dir, lang=lang)


def renderer(lang: str = "zh") -> Callable[[dict, pd.DataFrame, Path], None]:
    """``render`` bound to a report language, in the form the experiment driver takes."""
    return partial(render, lang=lang)


def rebuild_report(results_dir: Path, lang: str = "zh") -> Path:
    """Figures and report.md again from results.json and predictions.csv alone."""
    results_path, predictions_path = results_dir / "results.json", results_dir / "predictions.csv"
    if not results_dir.is_dir():
        what = "not found" if not results_dir.exists() else "not a folder"
        raise InputError(f"{results_dir}: {what}; expected the output folder of `snrmoe run`")
    for path in (results_path, predictions_path):
        if not path.is_file():
            what = "not found" if not path.exists() else "not a regular file"
            raise InputError(f"{path}: {what}; expected the output folder of `snrmoe run`")
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise InputError(f"{results_path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise InputError(f"{results_path}: cannot read: {exc.strerror}") from None
    try:
        predictions = pd.read_csv(predictions_path)
    except pd.errors.EmptyDataError:
        raise InputError(f"{predictions_path}: empty; expected a CSV with columns "
                         f"{', '.join(PREDICTION_COLUMNS)}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{predictions_path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise InputError(f"{predictions_path}: cannot read: {exc.strerror}") from None
    check_results(results, str(results_path))
    predictions = check_predictions(predictions, str(predictions_path))
    n_test = results["models"]["oracle"]["n_test"]
    if len(predictions) != n_test:
        raise InputError(f"{predictions_path}: {len(predictions)} rows but {results_path} says n_test={n_test!r}; "
                         "expected one row per test spectrum")
    try:
        render(results, predictions, results_dir, lang)
    except InputError as exc:  # a value deeper in results.json; name the file
        raise InputError(f"{results_path}: {str(exc).removeprefix('results: ')}") from None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        # results.json passed check_results but holds a value of a shape no run writes
        raise InputError(f"{results_path}: a value has an unexpected type or shape "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    except OSError as exc:
        raise InputError(f"{exc.filename or results_dir}: cannot write the report: {exc.strerror}") from None
    return results_dir / "report.md"
