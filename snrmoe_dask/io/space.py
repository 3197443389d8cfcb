"""Room to write, checked before a run's pass: that each place can be written and that its file
system has the free space for what the run will put there."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Iterable, NamedTuple

from ..errors import InputError

MB = 1e6


class Need(NamedTuple):
    """``label`` (e.g. "output.dir") writes about ``size`` bytes at ``path`` (a file or folder that may
    not exist yet; its folders may be created)."""

    label: str
    path: Path
    size: int


def nearest_folder(path: str | os.PathLike) -> Path:
    """The folder a new ``path`` is created in: its nearest ancestor that exists (links resolved)."""
    folder = Path(os.path.abspath(path)).parent
    while not os.path.lexists(folder):
        folder = folder.parent
    return Path(os.path.realpath(folder))


def check_room(needs: Iterable[Need]) -> None:
    """Raise InputError naming the first place whose folder cannot be written (read-only file system,
    no permission) or whose file system has less free space than the needs on it together."""
    on_device: dict[int, list[Need]] = {}
    folders: dict[int, Path] = {}
    for need in needs:
        folder = nearest_folder(need.path)
        if not folder.is_dir():
            continue  # a path under a file: the writer's own check names it
        if not os.access(folder, os.W_OK | os.X_OK):
            read_only = os.statvfs(folder).f_flag & os.ST_RDONLY
            raise InputError(f"{need.label} {need.path}: cannot write in {folder} "
                             f"({os.strerror(errno.EROFS if read_only else errno.EACCES)}); nothing was done")
        device = os.stat(folder).st_dev
        on_device.setdefault(device, []).append(need)
        folders.setdefault(device, folder)
    for device, group in on_device.items():
        free, total = shutil.disk_usage(folders[device]).free, sum(n.size for n in group)
        if free < total:
            first = group[0]
            others = f" (with {', '.join(n.label for n in group[1:])})" if len(group) > 1 else ""
            raise InputError(f"{first.label} {first.path}: {free / MB:.1f} MB free on its file system "
                             f"({folders[device]}), the run writes about {total / MB:.1f} MB there{others}; "
                             "free some space or choose another place; nothing was done")
