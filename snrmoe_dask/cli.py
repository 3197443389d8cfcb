"""The ``snrmoe`` command: simulate, inspect, run, report, demo, cache.

Every user error (bad file, bad config) ends as one line ``snrmoe: error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

from .errors import ConfigError, InputError, SnrmoeError
from .io.atomic import write_text


def _train_spec(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise argparse.ArgumentTypeError(f"--train {text!r}: expected KxN, e.g. 5x200000")
    return int(m.group(1)), int(m.group(2))


def _cmd_simulate(args) -> int:
    from .io.simulate import simulate_set

    paths = simulate_set(args.out_root, train=args.train, val=args.val, test=args.test, seed=args.seed,
                         pixels=args.pixels, block_rows=args.block_rows, workers=args.workers,
                         progress=not args.quiet)
    for p in paths:
        print(p)
    return 0


def _cmd_inspect(args) -> int:
    from .engine.cluster import compute_context
    from .engine.survey import format_survey, survey
    from .io.shards import resolve_shards

    paths = resolve_shards(None, args.paths)
    with compute_context("threads", args.workers, progress=False) as compute:
        summaries = survey(paths, compute, args.block_rows)
    if args.json:
        print(json.dumps(summaries, indent=2))
    else:
        print("\n".join(format_survey(s) for s in summaries))
    return 0


def _cmd_run(args) -> int:
    from .experiment.config import load_config

    overrides = list(args.set or [])
    if args.scheduler:
        overrides.append(f"compute.scheduler={args.scheduler}")
    _run(load_config(args.config, overrides), args.lang, _progress(args), args.roadmap, args.hub, args.started)
    return 0


def _progress(args) -> bool:
    """Progress is shown unless -q; with --log it always goes to the log file (as lines)."""
    return not args.quiet or bool(args.log)


def _run(cfg, lang: str, progress: bool, roadmap: Path | None = None, hub: Path | None = None,
         started: float | None = None) -> dict:
    """The experiment with the report layer's figures and report (in the results folder and, with
    output.report / output.img_dir, in the owner's layout), the tracking blocks, the summary, and
    the decision and next step as the log's last lines. started: ``time.time()`` when the command began."""
    from .experiment.driver import run_experiment
    from .experiment.summary import print_summary
    from .report.render import renderer
    from .report.text import check_tracking_file, hub_block, roadmap_block, update_tracking_block

    # the tracking files are checked before the run, so that a bad marker cannot fail it after the results
    if roadmap and hub and roadmap.resolve() == hub.resolve():
        raise ConfigError(f"--roadmap and --hub name the same file {roadmap}; the two blocks share one marker, "
                          "expected two files")
    for path in (roadmap, hub):
        if path:
            check_tracking_file(path, cfg.experiment.id)
    render = renderer(lang, cfg.output.report, cfg.output.img_dir)  # refuses a foreign file before the pass
    results = run_experiment(cfg, render=render, progress=progress)
    render.finish(results)
    if roadmap:
        update_tracking_block(roadmap, results["experiment"], roadmap_block(results, lang))
    if hub:
        update_tracking_block(hub, results["experiment"], hub_block(results, lang))
    print_summary(results, wall_s=time.time() - started if started is not None else None)
    if render.report:
        print(f"report in the owner's layout: {render.report} (figures in {render.img_dir})")
    _log_decision(results)
    return results


def _log_decision(results: dict) -> None:
    """The premises, the decision and the next step, last in the log (a nohup run's stdout is often lost)."""
    from .report.text import caveat_lines

    log = logging.getLogger("snrmoe_dask")
    for line in caveat_lines(results, "en"):
        log.info("premise: %s", line.removeprefix("⚠️ "))
    log.info("decision: %s (the card's rule: dR2 %+.4f %s threshold %g)", results["decision"], results["delta_r2"],
             ">=" if results["decision"] == "PASS" else "<", results["threshold"])
    log.info("next step: %s", results["next_step"])


def _cmd_report(args) -> int:
    from .report.render import rebuild_report

    path = rebuild_report(Path(args.results_dir), lang=args.lang)
    print(path)
    return 0


def _cmd_demo(args) -> int:
    """Simulate the demo set once (5 x 20,000 train, 1,000 val, 1,000 test), then run config/demo.yaml."""
    from .experiment.config import load_config
    from .experiment.driver import demo_config_path, ensure_demo_data

    root = ensure_demo_data(Path(args.data_dir), _progress(args))
    results = _run(load_config(demo_config_path(), [f"data.root={root}"]), args.lang, _progress(args),
                   started=args.started)
    print(_demo_expectation(results))
    return 0


def _demo_expectation(results: dict) -> str:
    """The demo's last lines: what it is expected to show, whether this run did, and where its report is."""
    seen = "as expected" if results["decision"] == "FAIL" else "not what this set is expected to give"
    return (f"expected: FAIL by the card's rule on the demo's {results['models']['global']['n_train']:,} simulated "
            f"training spectra (dR2 below {results['threshold']:g} on this small simulated set; the demo shows the "
            f"pipeline end to end, not the answer for real spectra). This run: {results['decision']}, {seen}.\n"
            f"report: {Path(results['output_dir']) / 'report.md'}")


def _cmd_cache(args) -> int:
    """ls, clear, or verify (exit 1 when an entry's shard changed since it was cached)."""
    from .io.cache import clear_cache, list_cache, verify_cache

    if args.action == "ls":
        print("\n".join(list_cache(Path(args.dir))))
    elif args.action == "verify":
        lines, changed = verify_cache(Path(args.dir))
        print("\n".join(lines))
        return 1 if changed else 0
    else:
        print(f"removed {clear_cache(Path(args.dir))} cache files")
    return 0


def _add_run_logging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", type=Path, metavar="FILE",
                        help="append a timestamped log (progress as one line about every 10%% or 30 s) to FILE; "
                             "it also goes to stderr unless -q")
    parser.add_argument("--pid", type=Path, metavar="FILE",
                        help="write this process's id to FILE at the start and remove it at exit")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress on stderr; with --log, nothing but warnings and errors on stderr")


def _setup_logging(args) -> list[logging.Handler]:
    """stderr (INFO; WARNING with -q --log) and, with --log FILE, FILE (INFO, appended); returns the
    handlers added to the root logger so that main() can remove them again."""
    from .io.progress import set_mode

    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    stderr = logging.StreamHandler(sys.stderr)
    log_file = getattr(args, "log", None)
    stderr.setLevel(logging.WARNING if getattr(args, "quiet", False) and log_file else logging.NOTSET)
    handlers: list[logging.Handler] = [stderr]
    if log_file:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handlers.append(logging.FileHandler(log_file, mode="a", encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"{log_file}: cannot write the log: {exc.strerror or exc}") from None
    set_mode("lines" if log_file else "auto")
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    logging.captureWarnings(True)  # library warnings belong in the log too
    logging.getLogger("numexpr").setLevel(logging.WARNING)  # its thread-count notice is noise here
    if not args.verbose:  # a local cluster's start and stop are ~40 INFO lines; distributed reads this on import
        import dask

        dask.config.set({"logging.distributed": "warning"})
        logging.getLogger("distributed").setLevel(logging.WARNING)
    return handlers


@contextlib.contextmanager
def _pid_file(path: Path | None):
    """Write this process's id to ``path`` for the run and remove it at exit (SIGTERM included).

    A pid file of a process that is still running is an error; one left by a dead run is
    replaced; a file that does not hold a process id is not ours and is never overwritten.
    """
    if path is None:
        yield
        return
    import psutil

    if path.exists():
        text = path.read_text(errors="replace").strip()
        if not text.isdigit():
            raise InputError(f"{path}: exists and does not hold a process id; refusing to overwrite it")
        if int(text) != os.getpid() and psutil.pid_exists(int(text)):
            raise InputError(f"{path}: process {text} is still running (another run?); stop it or choose another --pid")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, f"{os.getpid()}\n")
    except OSError as exc:
        raise InputError(f"{path}: cannot write the pid file: {exc.strerror or exc}") from None

    def terminate(signum, frame):
        raise SystemExit(128 + signum)  # unwinds, so the finally below removes the file

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        with contextlib.suppress(OSError):
            if path.read_text().strip() == str(os.getpid()):
                path.unlink()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="snrmoe", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="write a simulated BOSZ/PFS-MR-like set in the real layout")
    s.add_argument("out_root")
    s.add_argument("--train", type=_train_spec, default=(5, 20000), metavar="KxN", help="K shards of N spectra")
    s.add_argument("--val", type=int, default=1000)
    s.add_argument("--test", type=int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--pixels", type=int, default=4096)
    s.add_argument("--block-rows", type=int, default=2048)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_simulate)

    s = sub.add_parser("inspect", help="N, D, wavelength range, repairs, SNR quantiles and bin counts per shard")
    s.add_argument("paths", nargs="+", help="shard files (globs and {a..b} ranges allowed)")
    s.add_argument("--block-rows", type=int, default=4096)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.set_defaults(func=_cmd_inspect)

    s = sub.add_parser("run", help="run an experiment config (one pass, all models, metrics, figures, report)")
    s.add_argument("config")
    s.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a config key (YAML value)")
    s.add_argument("--scheduler", help="threads | processes | sync | local-cluster | tcp://host:8786")
    s.add_argument("--lang", choices=("zh", "en"), default="zh", help="report body language (header is English)")
    s.add_argument("--roadmap", type=Path, help="update the experiment's block in this roadmap markdown file")
    s.add_argument("--hub", type=Path, help="update the experiment's block in this hub markdown file")
    _add_run_logging(s)
    s.set_defaults(func=_cmd_run)

    s = sub.add_parser("report", help="rebuild figures and report.md from results.json and predictions.csv")
    s.add_argument("results_dir")
    s.add_argument("--lang", choices=("zh", "en"), default="zh")
    s.set_defaults(func=_cmd_report)

    s = sub.add_parser("demo", help="simulate the demo set once, run config/demo.yaml, print the summary")
    s.add_argument("--data-dir", default=".demo-data", help="where the demo set is simulated (reused if present)")
    s.add_argument("--lang", choices=("zh", "en"), default="zh")
    _add_run_logging(s)
    s.set_defaults(func=_cmd_demo)

    s = sub.add_parser("cache", help="list, clear or verify the statistics cache",
                       description="ls: entries (least recently used first) with size, age and last use; "
                                   "clear: delete them; verify: re-read every entry's shards, compare their "
                                   "content digests, drop the entries whose shards changed (exit 1 if any)")
    s.add_argument("action", choices=("ls", "clear", "verify"))
    s.add_argument("--dir", default="results/.snrmoe-cache",
                   help="the cache folder (compute.cache_dir; default: .snrmoe-cache beside the results folders)")
    s.set_defaults(func=_cmd_cache)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that the same cleanup runs."""


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the cleanup
    raise Terminated()


def _start_time(argv: list[str] | None) -> float:
    """When the command began: the process's start on the command line (interpreter start-up included),
    the call of :func:`main` when it is called from Python."""
    if argv is None:
        import psutil

        return psutil.Process().create_time()
    return time.time()


def main(argv: list[str] | None = None) -> int:
    started = _start_time(argv)
    args = build_parser().parse_args(argv)
    args.started = started
    handlers: list[logging.Handler] = []
    in_main_thread = threading.current_thread() is threading.main_thread()  # where signal handlers can be set
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        handlers = _setup_logging(args)
        with _pid_file(getattr(args, "pid", None)):
            return args.func(args)
    except SnrmoeError as exc:
        record = logging.LogRecord("snrmoe", logging.ERROR, __file__, 0, f"error: {exc}", None, None)
        for handler in handlers[1:]:  # the log file records why the run ended; stderr gets the one line
            handler.handle(record)
        print(f"snrmoe: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("snrmoe: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("snrmoe: interrupted", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        root = logging.getLogger()
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()


if __name__ == "__main__":
    sys.exit(main())
