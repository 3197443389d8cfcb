"""The human-readable part of a run: figures and report, in the results folder and in the owner's layout.

The results folder always gets its own copy (``report.md``, ``img/``). With ``output.report``
(e.g. ``logg/moe/exp/exp_logg_snr_oracle_01_{date}.md``) and ``output.img_dir`` (default: ``img/``
beside that report) the report and figures are also written there, the report's image links
relative to its own folder. Those files live outside the results folder, so each is written
atomically, and a file there that this tool did not write (no report mark, no PNG ``Software``
metadata) is never overwritten: :class:`Renderer` refuses it when it is built, before the run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import date
from pathlib import Path

import pandas as pd

from ..errors import ConfigError, InputError
from ..io.atomic import atomic_file
from ..io.space import Need, reason
from .files import (
    FIG_ALPHA_CURVE,
    FIG_GATE_CONFUSION,
    FIG_SCALING,
    FIGURE_NAMES,
    PREDICTION_COLUMNS,
    check_predictions,
    check_results,
)
from .files import written_by_snrmoe as png_written_by_snrmoe
from .prose import LANGS
from .text import write_report
from .text import written_by_snrmoe as report_written_by_snrmoe

ALL_FIGURES = (*FIGURE_NAMES, FIG_GATE_CONFUSION, FIG_ALPHA_CURVE, FIG_SCALING)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def expand_path(template: str | os.PathLike, day: date, key: str) -> Path:
    """``template`` with ``{date}`` replaced by ``day`` as YYYYMMDD (the card's file names); any other
    ``{...}`` is a ConfigError naming ``key``."""
    text = str(template)
    unknown = [m for m in _PLACEHOLDER.findall(text) if m != "date"]
    if unknown:
        raise ConfigError(f"{key}: unknown placeholder {{{unknown[0]}}} in {text!r}; only {{date}} is expanded")
    return Path(text.replace("{date}", day.strftime("%Y%m%d")))


def _refuse_foreign(path: Path) -> None:
    """Raise when ``path`` exists and is not a file this tool wrote (it must never be overwritten)."""
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_file():
        raise InputError(f"{path}: exists and is not a regular file; refusing to write the report or figure there")
    ours = report_written_by_snrmoe(path) if path.suffix.lower() != ".png" else png_written_by_snrmoe(path)
    if not ours:
        raise InputError(f"{path}: exists and was not written by snrmoe; refusing to overwrite it "
                         f"(move it away or choose another output.report / output.img_dir)")


def _copy_atomic(source: Path, target: Path) -> None:
    with atomic_file(target) as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out)


class Renderer:
    """The report layer's ``render`` hook for ``experiment.driver.run_experiment``.

    ``renderer(results, predictions, out_dir)`` writes ``out_dir/img/*.png`` and ``out_dir/report.md``
    and, when ``report`` / ``img_dir`` are set, the same report and figures there. Building the
    object expands ``{date}`` (the run's date, YYYYMMDD) and refuses, before any work is done, a
    file in the way that this tool did not write. ``finish(results)`` rewrites the reports with the
    run's final results (its total time is known only after the results folder is written).
    """

    # what drawing needs: imported while the run's pass runs (see run_experiment)
    modules = ("snrmoe_dask.report.plots", "snrmoe_dask.report.scaling", "matplotlib.backends.backend_agg")

    def __init__(self, lang: str = "zh", report: str | os.PathLike | None = None,
                 img_dir: str | os.PathLike | None = None, day: date | None = None) -> None:
        if lang not in LANGS:  # fails now, not after the run
            raise ConfigError(f"lang={lang!r}: expected one of {', '.join(map(repr, LANGS))}")
        self.lang = lang
        day = day or date.today()
        self.report = expand_path(report, day, "output.report") if report else None
        if img_dir:
            self.img_dir: Path | None = expand_path(img_dir, day, "output.img_dir")
        else:
            self.img_dir = self.report.parent / "img" if self.report else None
        self.out_dir: Path | None = None
        self.predictions: pd.DataFrame | None = None
        self.not_written: dict[str, str] = {}  # what (a path) -> why, for the run's last line
        self.written: set[str] = set()  # the owner's copies written (the summary names only these)
        self.check()

    def targets(self) -> list[Path]:
        """Every file outside the results folder that a run may write."""
        figures = [self.img_dir / name for name in ALL_FIGURES] if self.img_dir else []
        return ([self.report] if self.report else []) + figures

    def check(self) -> None:
        """Raise InputError naming the first target that exists and was not written by this tool."""
        for path in self.targets():
            _refuse_foreign(path)

    def room(self) -> list[Need]:
        """What the owner's copies need (a report of ~1 MB, figures of ~0.5 MB each), for the check before
        the pass."""
        needs = [Need("output.report", self.report, 1_000_000)] if self.report else []
        return needs + ([Need("output.img_dir", self.img_dir / ALL_FIGURES[0], 500_000 * len(ALL_FIGURES))]
                        if self.img_dir else [])

    def img_prefix(self) -> str:
        """The owner's report's image links: img_dir relative to the report's folder."""
        return Path(os.path.relpath(self.img_dir.resolve(), self.report.parent.resolve())).as_posix()

    def __call__(self, results: dict, predictions: pd.DataFrame, out_dir: Path) -> None:
        """Figures and report into ``out_dir`` (the results folder being built), then the owner's copies.

        Figures (``plots.make_figures``): the card's four, plus img/snr_oracle_moe_gate_confusion.png
        when results has "gate", img/snr_oracle_moe_alpha_curve.png when it has "alpha" and
        img/snr_oracle_moe_scaling.png when it has "scaling". The data files come first: when the
        figures or the report fail (a full disk, a figure that cannot be drawn), neither is left in
        ``out_dir``, which is published without them; a copy that cannot be written in the owner's
        layout is left as it was. Either is named in :attr:`not_written` and the run goes on.
        """
        out_dir = Path(out_dir)
        try:
            figures = draw(results, predictions, out_dir, self.lang)
            self.predictions = predictions
        except Exception as exc:  # noqa: BLE001 - whatever failed, the published data files come first
            shutil.rmtree(out_dir / "img", ignore_errors=True)
            (out_dir / "report.md").unlink(missing_ok=True)
            shown = results.get("output_dir") or out_dir
            self.not_written[f"the figures and report.md of {shown}"] = (
                f"{_reason(exc)}; `snrmoe report {shown}` draws them from the results")
            return
        self.out_dir = Path(results.get("output_dir") or out_dir)
        if self.img_dir:
            for figure in figures:
                self._attempt(self.img_dir / figure.name, _copy_atomic, figure)
            failed = [why for what, why in self.not_written.items() if Path(what).parent == self.img_dir]
            if len(failed) > 1:  # one entry for the figures, not one per figure
                for figure in figures:
                    self.not_written.pop(str(self.img_dir / figure.name), None)
                self.not_written[f"{len(failed)} figures in {self.img_dir}"] = failed[0]
        self._write_owner_report(results)

    def finish(self, results: dict) -> None:
        """Rewrite the reports (results folder and owner's copy) with the run's final results."""
        if self.out_dir is None:
            return
        self._attempt(self.out_dir / "report.md", lambda path: write_report(
            results, path.parent, lang=self.lang, predictions=self.predictions))
        self._write_owner_report(results)

    def _write_owner_report(self, results: dict) -> None:
        if self.report:
            self._attempt(self.report, lambda path: write_report(
                results, path.parent, lang=self.lang, name=path.name, img_prefix=self.img_prefix(),
                predictions=self.predictions))

    def _attempt(self, path: Path, write, *args) -> None:
        """``write(*args, path)``, or ``path`` and why into :attr:`not_written` (never a file this tool did
        not write: it is refused again, as it may have appeared while the run went on)."""
        try:
            _refuse_foreign(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            write(*args, path)
        except (OSError, InputError) as exc:
            self.not_written[str(path)] = _reason(exc)
            self.written.discard(str(path))
        else:
            self.not_written.pop(str(path), None)
            self.written.add(str(path))

    def owner_line(self) -> str | None:
        """The summary's line naming the owner's copy of the report, or None when it was not written (a
        claim about a file that is not there would contradict the run's last line). The figures' folder
        is named only when every figure drawn was copied there."""
        if not self.report or str(self.report) not in self.written:
            return None
        figures_failed = any(Path(what).parent == self.img_dir or what.endswith(f" figures in {self.img_dir}")
                             for what in self.not_written)
        return (f"report in the owner's layout: {self.report}"
                + ("" if figures_failed else f" (figures in {self.img_dir})"))


def _reason(exc: BaseException) -> str:
    """Why a write failed, in a few words: the system's reason (No space left on device), or the message."""
    if isinstance(exc, OSError):
        return reason(exc)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text if isinstance(exc, InputError) else f"{type(exc).__name__}: {text}"


def draw(results: dict, predictions: pd.DataFrame, out_dir: Path, lang: str = "zh") -> list[Path]:
    """``out_dir/img/*.png`` and ``out_dir/report.md`` from the results; the figures written."""
    from ..experiment.results_schema import load_results
    # matplotlib: loaded when a figure is drawn (a run loads it during its pass)
    from .plots import draw_figures, figure_jobs
    from .scaling import FIG_SCALING, plot_scaling

    img_dir = Path(out_dir) / "img"
    jobs = figure_jobs(results, predictions, img_dir)
    if load_results(results).scaling is not None:
        jobs[FIG_SCALING] = lambda: plot_scaling(results, img_dir)
    drawn = draw_figures(jobs)
    figures = [drawn[name] for name in jobs]
    write_report(results, out_dir, lang=lang, predictions=predictions)
    return figures


def renderer(lang: str = "zh", report: str | os.PathLike | None = None,
             img_dir: str | os.PathLike | None = None) -> Renderer:
    """``render`` bound to a report language and the owner's layout, in the form the driver takes."""
    return Renderer(lang, report, img_dir)


def render(results: dict, predictions: pd.DataFrame, out_dir: Path, lang: str = "zh") -> None:
    """Write ``out_dir/img/*.png`` and ``out_dir/report.md`` from the results dict and the predictions table."""
    draw(results, predictions, out_dir, lang)


def rebuild_report(results_dir: Path, lang: str = "zh") -> Path:
    """Figures and report.md of the results folder again, from results.json and predictions.csv alone."""
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
    typed = check_results(results, str(results_path))  # the schema of results.json (experiment.results_schema)
    predictions = check_predictions(predictions, str(predictions_path))
    n_test = typed.models.oracle.n_test
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
