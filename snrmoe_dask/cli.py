"""The ``snrmoe`` command: simulate, inspect, run, report, demo, cache.

Every user error (bad file, bad config) ends as one line ``snrmoe: error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
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
    from .engine.inspect import format_survey, survey
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
    from .experiment.config_file import load_config

    overrides = list(args.set or [])
    if args.scheduler:
        overrides.append(f"compute.scheduler={args.scheduler}")
    _run(load_config(args.config, overrides), args.lang, _progress(args), args.roadmap, args.hub, args.log,
         args.started)
    return 0


def _progress(args) -> bool:
    """Progress is shown unless -q; with --log it always goes to the log file (as lines)."""
    return not args.quiet or bool(args.log)


def _run(cfg, lang: str, progress: bool, roadmap: Path | None = None, hub: Path | None = None,
         log: Path | None = None, started: float | None = None) -> dict:
    """The experiment with the report layer's figures and report (in the results folder and, with
    output.report / output.img_dir, in the owner's layout), the tracking blocks, the summary, and
    the decision and next step as the log's last lines. started: ``time.time()`` when the command began.

    Everything that can be checked is checked before the pass (tracking files, the owner's layout,
    permissions and free space). Once the results folder is published it comes first: a step after
    it that fails (a copy, a tracking block, the summary on stdout) is named in one line at the end
    (:class:`NotWritten`, exit 3), never a traceback, and the steps after it still run.
    """
    from .experiment.driver import run_experiment
    from .experiment.summary import print_summary
    from .io.space import Need, reason
    from .report.render import renderer
    from .report.text import hub_block, roadmap_block, update_tracking_block

    tracking = _check_tracking(cfg.experiment.id, {"--roadmap": (roadmap, roadmap_block), "--hub": (hub, hub_block)})
    render = renderer(lang, cfg.output.report, cfg.output.img_dir)  # refuses a foreign file before the pass
    room = [*render.room(), *(Need(flag, path, _size(path) + 65536) for flag, (path, _) in tracking.items()),
            *([Need("--log", log, 1_000_000, appends=True)] if log else [])]
    since = time.time()
    try:
        results = run_experiment(cfg, render=render, progress=progress, room=room)
        render.finish(results)
        not_written = [f"{what} ({why})" for what, why in render.not_written.items()]
        for flag, (path, block) in tracking.items():
            try:
                update_tracking_block(path, results["experiment"], block(results, lang))
            except (OSError, SnrmoeError) as exc:
                not_written.append(f"{flag} {path} ({reason(exc) if isinstance(exc, OSError) else exc})")
        try:
            print_summary(results, wall_s=time.time() - started if started is not None else None)
            if render.owner_line():
                print(render.owner_line())
            sys.stdout.flush()
        except StdoutError as exc:
            not_written.append(f"the summary on standard output ({exc.strerror})")
        _log_decision(results)
    except KeyboardInterrupt as exc:  # a signal: say whether the results had been published
        exc.published = _published_since(cfg.output_dir, since)
        raise
    if not_written:
        raise NotWritten(f"the results are complete in {results['output_dir']}, but not written: "
                         + "; ".join(not_written))
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


class NotWritten(SnrmoeError):
    """The results folder was published, but a step after it did not write everything (exit 3)."""


def _check_tracking(experiment: str, flags: dict) -> dict:
    """The --roadmap / --hub files given, checked before the run so that a bad marker, a folder that
    cannot be written, or one file named twice (a link, a hard link) cannot fail it after the results:
    {flag: (path, block function)}."""
    from .report.text import check_tracking_file

    given = {flag: (path, block) for flag, (path, block) in flags.items() if path}
    if len(given) == 2:
        (roadmap, _), (hub, _) = given.values()
        if roadmap.resolve() == hub.resolve() or (roadmap.exists() and hub.exists() and roadmap.samefile(hub)):
            raise ConfigError(f"--roadmap and --hub name the same file {roadmap} (as {hub}); the two blocks "
                              "share one marker, expected two files")
    for flag, (path, _) in given.items():
        check_tracking_file(path, experiment)
        if path.exists() and path.resolve().stat().st_nlink > 1:
            # the block is written by an atomic rename, which would part the names of a hard link
            raise InputError(f"{flag} {path}: has {path.resolve().stat().st_nlink} hard links; the block is "
                             "written into a new file, which would part them; give a file with one name")
    return given


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _published_since(out: str | os.PathLike, started: float) -> Path | None:
    """``out`` when this process published it as a results folder since ``started`` (its marker says so)."""
    from .experiment.output_dir import read_marker

    marker = read_marker(Path(out))
    if marker and marker.get("pid") == os.getpid() and os.stat(Path(out) / ".snrmoe-results").st_mtime >= started:
        return Path(out)
    return None


def _silence_stdout() -> None:
    """Send what is left of stdout (and later prints) nowhere: a full or closed stdout would otherwise
    end the process with a traceback when Python flushes it at exit."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _cmd_report(args) -> int:
    from .report.render import rebuild_report

    path = rebuild_report(Path(args.results_dir), lang=args.lang)
    print(path)
    return 0


def _cmd_demo(args) -> int:
    """Simulate the demo set once (5 x 20,000 train, 1,000 val, 1,000 test), then run config/demo.yaml."""
    from .experiment.config_file import load_config
    from .experiment.driver import demo_config_path, ensure_demo_data

    root = ensure_demo_data(Path(args.data_dir), _progress(args))
    results = _run(load_config(demo_config_path(), [f"data.root={root}"]), args.lang, _progress(args),
                   log=args.log, started=args.started)
    print(_demo_expectation(results))
    return 0


def _demo_expectation(results: dict) -> str:
    """The demo's last lines: what it is expected to show, whether this run did, and where its report is."""
    seen = "as expected" if results["decision"] == "FAIL" else "not what this set is expected to give"
    return (f"expected: FAIL by the card's rule on the demo's {results['models']['global']['n_train']:,} simulated "
            f"training spectra (dR2 below {results['threshold']:g} on this small set; the demo shows the pipeline "
            f"end to end, not the card's answer). This run: {results['decision']}, {seen}.\n"
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
            handlers.append(LogFile(log_file, mode="a", encoding="utf-8"))
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


class LogFile(logging.FileHandler):
    """``--log FILE``: a write that fails (a full disk) stops the log once, instead of a traceback per
    record on stderr; :attr:`failed` says from when and why, for the run's last line."""

    failed: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.failed is None:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        reason = getattr(exc, "strerror", None) or exc
        self.failed = f"--log {self.baseFilename} from {time.strftime('%H:%M:%S')} on ({reason})"
        with contextlib.suppress(Exception):  # closing flushes, which fails again
            self.close()


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
    try:
        yield  # main's signal handlers raise here, so the finally below removes the file
    finally:
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
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that the same
    cleanup runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# a full disk, a read-only file system, no permission: wherever they escape, one line naming the path
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
TERMINATING = (signal.SIGTERM, signal.SIGHUP)  # a hang-up (closed terminal, ssh gone) ends a run like SIGTERM


def _on_terminate(signum, frame) -> None:
    for sig in TERMINATING:  # a second signal must not interrupt the cleanup
        signal.signal(sig, signal.SIG_IGN)
    raise Terminated(signum)


def _ending(exc: KeyboardInterrupt) -> tuple[str, int]:
    """The line and exit code of a run ended by a signal: 130 for Ctrl-C, 128 + N for signal N. When the
    results folder had been published, the line says so (what came after it may be missing)."""
    if isinstance(exc, Terminated):
        line, code = f"terminated ({signal.Signals(exc.signum).name})", 128 + exc.signum
    else:
        line, code = "interrupted", 130
    published = getattr(exc, "published", None)
    if published:
        line += (f"; the results are complete in {published} (the steps after them, such as the owner's copies, "
                 "tracking blocks and summary, may be missing)")
    return line, code


class StdoutError(OSError):
    """Standard output cannot be written (a full disk, /dev/full, a closed pipe)."""


class _GuardedStdout:
    """sys.stdout for a command: a write or flush that fails raises :class:`StdoutError`, so that it is
    told apart from a file's error, and stdout is silenced (Python's flush at exit would fail again)."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def _guarded(self, method: str, *args):
        try:
            return getattr(self._stream, method)(*args)
        except OSError as exc:
            _silence_stdout()
            raise StdoutError(exc.errno, exc.strerror) from None

    def write(self, text: str) -> int:
        return self._guarded("write", text)

    def flush(self) -> None:
        self._guarded("flush")

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


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
    previous = {sig: signal.signal(sig, _on_terminate) for sig in TERMINATING} if in_main_thread else {}
    line, code = None, 0
    stdout, sys.stdout = sys.stdout, _GuardedStdout(sys.stdout)
    try:
        handlers = _setup_logging(args)
        with _pid_file(getattr(args, "pid", None)):
            code = args.func(args)
        sys.stdout.flush()
    except StdoutError as exc:
        line, code = f"error: standard output: cannot write the command's output ({exc.strerror})", 2
    except NotWritten as exc:
        line, code = f"error: {exc}", 3
    except SnrmoeError as exc:
        line, code = f"error: {exc}", 2
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP
        line, code = _ending(exc)
    except OSError as exc:
        if exc.errno not in WRITE_ERRORS:
            raise
        line, code = f"error: {exc.filename or 'a file'}: cannot write ({exc.strerror})", 2
    finally:
        sys.stdout = stdout
        if in_main_thread:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        failed = [h.failed for h in handlers if getattr(h, "failed", None)]
        if failed and line is None:
            line, code = "error: the command finished, but not written: " + failed[0], 3
        elif failed:  # the one line says it too
            line += f"; {failed[0]}" if code == 3 else f"; not written: {failed[0]}"
        if line is not None:
            record = logging.LogRecord("snrmoe", logging.ERROR, __file__, 0, line, None, None)
            for handler in handlers[1:]:  # the log file records why the run ended; stderr gets the one line
                handler.handle(record)
            print(f"snrmoe: {line}", file=sys.stderr)
        root = logging.getLogger()
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
    return code


def entry() -> None:
    """The ``snrmoe`` command: :func:`main`, then an exit without the interpreter's teardown.

    Tearing down a finished run's objects and modules (dask, pandas, scikit-learn, matplotlib) takes most
    of a second after the last line and does nothing the command needs: the exit handlers still run
    (logging, dask, distributed), the streams are flushed (their errors were reported by ``main``), and
    every file of the results was closed before (os._exit drops only what Python itself still buffers)."""
    code = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
