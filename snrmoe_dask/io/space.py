"""Room to write, checked before a run's pass: that each place can be written and that its file
system has the free space for what the run will put there."""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, NamedTuple

from ..errors import InputError

MB = 1e6


class Need(NamedTuple):
    """``label`` (e.g. "output.dir") writes about ``size`` bytes at ``path`` (a file or folder that may
    not exist yet; its folders may be created). ``appends``: the file exists and is written in place
    (a log), so its folder need not be writable."""

    label: str
    path: Path
    size: int
    appends: bool = False


def nearest_folder(path: str | os.PathLike) -> Path:
    """The folder a new ``path`` is created in: its nearest ancestor that exists (links resolved)."""
    folder = Path(os.path.abspath(path)).parent
    while not os.path.lexists(folder):
        folder = folder.parent
    return Path(os.path.realpath(folder))


def check_room(needs: Iterable[Need]) -> None:
    """Raise InputError naming the first place whose folder cannot be written (read-only file system,
    no permission) or whose file system has less free space than the needs on it together."""
    places: list[tuple[Need, Path, int]] = []
    for need in needs:
        folder = nearest_folder(need.path)
        if not folder.is_dir():
            continue  # a path under a file: the writer's own check names it
        if not (need.appends or os.access(folder, os.W_OK | os.X_OK)):
            read_only = os.statvfs(folder).f_flag & os.ST_RDONLY
            raise InputError(f"{need.label} {need.path}: cannot write in {folder} "
                             f"({os.strerror(errno.EROFS if read_only else errno.EACCES)}); nothing was done")
        places.append((need, folder, os.stat(folder).st_dev))
    for need, folder, device in places:
        group = [other for other, _, on in places if on == device]  # one file system: their sizes add up
        free, total = shutil.disk_usage(folder).free, sum(other.size for other in group)
        if free < total:
            others = [other.label for other in group if other is not need]
            with_others = f" (with {', '.join(others)})" if others else ""
            raise InputError(f"{need.label} {need.path}: {free / MB:.1f} MB free on its file system ({folder}), "
                             f"the run writes about {total / MB:.1f} MB there{with_others}; free some space or "
                             "choose another place; nothing was done")


def reason(exc: BaseException) -> str:
    """Why a write failed, in a few words: the system's reason (No space left on device) from an
    OSError, or from the ``errno = N`` of an HDF5 library report (h5py gives no errno), or the first
    line of the message."""
    errno_ = getattr(exc, "errno", None) or _hdf5_errno(str(exc))
    if errno_:
        return os.strerror(errno_)
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _hdf5_errno(message: str) -> int | None:
    found = re.search(r"\berrno = (\d+)", message)
    return int(found.group(1)) if found else None
