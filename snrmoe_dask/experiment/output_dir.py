"""Where a run may write its results folder, one run per folder, and the atomic swap that publishes it.

A run first checks ``output.dir`` (:func:`check_output_dir`), before any data is read:

- symlinks and ``..`` are resolved; a path that is a symlink itself is refused;
- the folder must not equal or contain any of the protected paths (data.root, the shards, the
  config file, the cache folder, the current directory) and must not lie under a regular file;
- an existing path is replaced only when it is a results folder that this tool wrote: it carries
  the marker file :data:`MARKER` and holds nothing but the files the marker lists. Anything else
  (a folder without the marker, a file, a symlink, a FIFO...) is refused and left as it is.

Then :func:`claim_output_dir` takes an exclusive lock (``flock`` on ``.NAME.lock`` beside the
folder, holding the PID) for the whole run, and removes the hidden folders that dead runs on the
same folder left (``.NAME.partial-PID``, ``.NAME.old-PID``). :meth:`OutputDir.build` yields the
hidden ``.NAME.partial-PID`` folder to write into; on success the marker is written last and the
folder takes the place of ``output.dir`` in one rename, on any error (or signal) it is removed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

import psutil

from .._version import __version__
from ..errors import InputError
from ..io.space import Need, check_room
from .config import ExperimentConfig

log = logging.getLogger(__name__)

MARKER = ".snrmoe-results"  # JSON: format, experiment, version, created, files
MARKER_FORMAT = "snrmoe-results"


# ----------------------------------------------------------------------------- the checks
def _show(out: str | os.PathLike, target: Path) -> str:
    """``out`` as the user wrote it, with the resolved path when they differ."""
    return str(out) if Path(os.path.abspath(out)) == target else f"{out} (= {target})"


def _locations(path: Path) -> set[Path]:
    """Where ``path`` is: its resolved target and, for a symlink, the link itself."""
    return {Path(os.path.realpath(path)), Path(os.path.realpath(path.parent)) / path.name}


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):
        if test(mode):
            return name
    return "not a folder"


def read_marker(folder: Path) -> dict | None:
    """The marker of a results folder this tool wrote, or None when ``folder`` has no valid one."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT or not isinstance(
            marker.get("files"), list):
        return None
    return marker


def _not_ours(folder: Path, listed: set[str]) -> str | None:
    """The first entry under ``folder`` (relative path) that the marker does not list; None when the
    tool wrote everything there."""
    allowed = {MARKER, *listed}
    for here, dirs, files in os.walk(folder):
        # os.walk lists a symlink to a folder among dirs without entering it: it is an entry like a file
        for name in sorted(dirs + files):
            rel = os.path.relpath(os.path.join(here, name), folder)
            if rel not in allowed:
                return rel
    return None


def check_output_dir(out: str | os.PathLike, protected: Iterable[tuple[str, Path | None]] = ()) -> Path:
    """The resolved results folder for ``out``; raises InputError when the tool may not write there.

    protected: (label, path) pairs, e.g. ``("data.root", root)``, of what the folder must neither be
    nor contain (None: nothing). Reads only: nothing is created or changed.
    """
    target = Path(os.path.realpath(out))
    shown = _show(out, target)
    if os.path.islink(out):
        raise InputError(f"output.dir {out}: is a symbolic link (to {target}); give a real folder path")
    places = [(label, path, place) for label, path in protected if path is not None
              for place in _locations(Path(path))]
    for label, path, place in places:
        if place == target:
            raise InputError(f"output.dir {shown}: is {label} ({path}); choose a results folder of its own")
    for label, path, place in places:
        if target in place.parents:
            raise InputError(f"output.dir {shown}: contains {label} ({path}); replacing it would delete it")
    above = target.parent
    while not os.path.lexists(above):
        above = above.parent
    if not above.is_dir():
        raise InputError(f"output.dir {shown}: lies under {above}, which is {_kind(os.lstat(above).st_mode)}")
    _check_replaceable(shown, target)
    return target


def _check_replaceable(shown: str, target: Path) -> None:
    """Raise InputError unless ``target`` is absent or a results folder that the tool wrote."""
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        raise InputError(f"output.dir {shown}: exists and is {_kind(mode)}, not a results folder; "
                         "nothing was changed")
    if os.path.ismount(target):
        raise InputError(f"output.dir {shown}: is a mount point, which cannot be replaced; choose a folder inside it")
    marker = read_marker(target)
    if marker is None:
        raise InputError(f"output.dir {shown}: is an existing folder without a valid {MARKER} marker, so not a "
                         "results folder of snrmoe (older versions wrote none); choose a new folder name or move "
                         "it away; nothing was changed")
    foreign = _not_ours(target, set(map(str, marker["files"])))
    if foreign:
        raise InputError(f"output.dir {shown}: a previous results folder, but it holds {foreign}, which snrmoe "
                         "did not write; move it out or choose another folder; nothing was changed")


def protected_paths(cfg: ExperimentConfig, shards: list[Path], cache: Path | None) -> list[tuple[str, Path | None]]:
    """What the results folder of ``cfg`` must neither be nor contain, labelled for the error line:
    data.root, every shard read, the config file, the cache folder and the current directory."""
    return [("data.root", Path(cfg.data.root) if cfg.data.root else None), *(("a shard", p) for p in shards),
            ("the config file", Path(cfg._source) if cfg._source else None), ("the cache folder", cache),
            ("the current directory", Path.cwd())]


# ----------------------------------------------------------------------------- one run per folder
def _pid_in(lock: Path) -> str:
    """The PID the lock holder wrote (it writes it right after locking: wait a moment for it)."""
    for _ in range(20):
        try:
            text = lock.read_text().strip()
        except OSError:
            text = ""
        if text:
            return text
        time.sleep(0.05)
    return "unknown"


def _lock(lock: Path, shown: str) -> int:
    """An exclusive flock on ``lock`` (created, holding our PID); the file descriptor that holds it."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(f"output.dir {shown}: cannot write in {lock.parent} ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(f"output.dir {shown}: another snrmoe run (PID {_pid_in(lock)}) is writing it; "
                             "wait for it to finish or choose another folder") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the holder removed the file between our open and our lock: take the new one
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError as exc:  # a full disk creates the file but cannot hold the PID: leave nothing
                _unlock(lock, fd)
                raise InputError(f"output.dir {shown}: cannot write the lock file {lock} ({exc.strerror})") from None
            return fd
        os.close(fd)


def _unlock(lock: Path, fd: int) -> None:
    """Remove the lock file, then release it (in this order, so that no run locks a removed file)."""
    lock.unlink(missing_ok=True)
    os.close(fd)


def remove_dead_leftovers(target: Path) -> list[Path]:
    """Remove the hidden ``.NAME.partial-PID`` / ``.NAME.old-PID`` folders of runs on ``target`` whose
    process is gone (call it holding the lock: then none of them is being written). Returns them."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?:partial|old)-(\d+)")
    removed = []
    for path in sorted(target.parent.iterdir()):
        m = pattern.fullmatch(path.name)
        if not m or path.is_symlink() or not path.is_dir():
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or not psutil.pid_exists(pid):  # our own PID here: a reused PID's leftover
            try:
                shutil.rmtree(path)
            except OSError as exc:
                log.warning("%s: left by a run that ended (PID %d), cannot be removed: %s", path, pid, exc)
                continue
            removed.append(path)
            log.info("%s: removed, left by a run that ended (PID %d)", path, pid)
    return removed


# ----------------------------------------------------------------------------- the folder
@dataclass
class OutputDir:
    """A checked and locked results folder: ``path`` (resolved) is replaced by :meth:`build`."""

    path: Path
    shown: str
    experiment: str

    @contextmanager
    def build(self) -> Iterator[Path]:
        """Yield the hidden folder ``.NAME.partial-PID`` to write into; on success the marker (listing
        every file written) goes in last and the folder replaces ``path`` in one rename (a previous
        results folder of the tool is removed after it); on any error or signal it is removed."""
        partial = self.path.parent / f".{self.path.name}.partial-{os.getpid()}"
        partial.mkdir()
        try:
            yield partial
            write_marker(partial, self.experiment)
            self._publish(partial)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise

    def _publish(self, partial: Path) -> None:
        _check_replaceable(self.shown, self.path)  # the run took time: someone may have put a folder there
        old = self.path.parent / f".{self.path.name}.old-{os.getpid()}"
        try:
            if os.path.lexists(self.path):
                os.replace(self.path, old)
            os.replace(partial, self.path)
        except BaseException as exc:
            if os.path.lexists(old) and not os.path.lexists(self.path):  # interrupted between the renames
                os.replace(old, self.path)
            if isinstance(exc, OSError):
                raise InputError(f"output.dir {self.shown}: cannot put the results in place ({exc.strerror})") from None
            raise
        shutil.rmtree(old, ignore_errors=True)


def write_marker(folder: Path, experiment: str) -> None:
    """``folder/.snrmoe-results``: who wrote the folder and every file and folder in it (relative paths)."""
    files = sorted(os.path.relpath(os.path.join(here, name), folder)
                   for here, dirs, names in os.walk(folder) for name in dirs + names)
    marker = {"format": MARKER_FORMAT, "experiment": experiment, "version": __version__,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "pid": os.getpid(),
              "files": files}
    (folder / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


@contextmanager
def claim_output_dir(out: str | os.PathLike, experiment: str, protected: Iterable[tuple[str, Path | None]] = (),
                     size: int = 0, room: Iterable[Need] = ()) -> Iterator[OutputDir]:
    """Check ``out`` (:func:`check_output_dir`) and that it and the places of ``room`` (what the run
    writes elsewhere) can be written and have the free space (``size`` bytes for the results folder),
    create its parent folders, lock it for this run and remove the leftovers of dead runs on it;
    yield the :class:`OutputDir`. The lock is released when the block ends (after
    :meth:`OutputDir.build` published the folder, or on error)."""
    target = check_output_dir(out, protected)
    shown = _show(out, target)
    check_room([Need("output.dir", Path(out), size), *room])
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"output.dir {shown}: cannot create {target.parent} ({exc.strerror})") from None
    lock = target.parent / f".{target.name}.lock"
    fd = _lock(lock, shown)
    try:
        _check_replaceable(shown, target)  # again, now that no other run can change it
        remove_dead_leftovers(target)
        yield OutputDir(target, shown, experiment)
    finally:
        _unlock(lock, fd)
