"""Cache maintenance, for ``snrmoe cache ls|clear|verify`` and a run's start: list the entries
(:func:`list_cache`), delete them and dead runs' temporary files (:func:`clear_cache`,
:func:`remove_dead_temp_files`), and re-read the shards to compare their content digests with those
each entry stores (:func:`verify_cache`). Files that are not ours are never touched.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import psutil

from ...errors import InputError
from ..digest import block_digest
from ..shards import RowReader
from .entry_file import _ENTRY, _TEMP, _entries, _Invalid, _read, _stats, _text
from .store import data_bytes

log = logging.getLogger(__name__)

# A temporary file younger than this may belong to a run that is writing it right now.
STALE_TEMP_S = 15 * 60


def _age(seconds: float) -> str:
    """A short duration: 40 s, 12 min, 5.0 h, 3.2 d."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def list_cache(root: str | os.PathLike) -> list[str]:
    """One line per cache file (key prefix, kind, source shard, rows, bins, size, age, last use) and a
    total line; the entries least recently used come first (they are the first to be evicted)."""
    root = Path(root)
    if not _cache_folder(root):
        return [f"no cache at {root} (folder does not exist)"]
    try:
        attrs = dict(_entries(root))
        strays = [f"{path.name[:12]}  not a file: not ours, left alone ({path})" for path in sorted(root.glob("*.h5"))
                  if _ENTRY.fullmatch(path.name) and not path.is_file()]
    except OSError as exc:
        raise InputError(f"{root}: cannot list the cache folder: {exc.strerror}") from None
    entries = sorted(((p, attrs[p], st) for p, st in _stats(attrs)), key=lambda e: e[2].st_mtime_ns)
    lines, total, now = strays, 0, time.time()
    for path, attrs, st in entries:
        total += st.st_size
        size = f"{st.st_size / 1e6:.1f} MB"
        if attrs is None:
            lines.append(f"{path.name[:12]}  damaged or truncated file ({size}); "
                         f"loading recomputes it, `snrmoe cache clear` removes it")
            continue
        created = datetime.fromisoformat(_text(attrs.get("created", "1970-01-01T00:00:00+00:00"))).timestamp()
        rows, pixels = int(attrs.get("rows", 0)), int(attrs.get("pixels", 0))
        data = f" ({st.st_size / data_bytes(rows, pixels):.0%} of its {data_bytes(rows, pixels) / 1e9:.2f} GB " \
               "of spectra)" if rows and pixels else ""
        lines.append(f"{path.name[:12]}  {_text(attrs.get('kind', 'shard')):<6}  {_text(attrs.get('source', '?'))}  "
                     f"{rows} rows  bins {_text(attrs.get('bins', '?'))}  {size}{data}  "
                     f"created {_age(now - created)} ago  last used {_age(now - st.st_mtime)} ago")
    lines.append(f"{len(entries)} cache files, {total / 1e6:.1f} MB in {root}" if entries
                 else f"cache {root} is empty")
    for path, pid, alive in temp_files(root):
        state = ("its run is still writing it" if alive else
                 "its run has ended: `snrmoe cache clear` or the next run removes it")
        lines.append(f"{path.name[1:13]}  temporary file of PID {pid}, {path.stat().st_size / 1e6:.1f} MB; {state}")
    return lines


def temp_files(root: str | os.PathLike) -> list[tuple[Path, int, bool]]:
    """The temporary files of ``save`` under root: (path, PID of the run writing it, whether that run
    is still alive). A killed run leaves its file behind; files named before the PID are not listed."""
    root = Path(root)
    out = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        m = _TEMP.fullmatch(path.name)
        if m and m.group(1) and path.is_file() and not path.is_symlink():
            out.append((path, int(m.group(1)), psutil.pid_exists(int(m.group(1)))))
    return out


def remove_dead_temp_files(root: str | os.PathLike | None) -> list[Path]:
    """Delete the temporary files under root whose run has ended (it was killed); returns them.

    A run calls this when it starts; files of live runs are left alone. None (no cache) does nothing.
    """
    dead = [path for path, _, alive in temp_files(root) if not alive] if root is not None else []
    for path in dead:
        path.unlink(missing_ok=True)
        log.info("%s: removed, left by a run that ended while writing it", path)
    return dead


def clear_cache(root: str | os.PathLike) -> int:
    """Delete our cache files under root, the temporary files of runs that have ended, and temporary
    files without a PID (older versions) older than :data:`STALE_TEMP_S`.

    Returns the number of files deleted. Files that are not ours (other HDF5 files, other names)
    are never touched; temporary files of a live run are kept.
    """
    root = Path(root)
    if not _cache_folder(root):
        return 0
    try:
        doomed = [path for path, _ in _entries(root)]
        now = time.time()
        for tmp in root.iterdir():
            m = _TEMP.fullmatch(tmp.name)
            if m and not m.group(1) and tmp.is_file() and now - tmp.stat().st_mtime > STALE_TEMP_S:
                doomed.append(tmp)
        doomed += [path for path, _, alive in temp_files(root) if not alive]
    except OSError as exc:
        raise InputError(f"{root}: cannot list the cache folder: {exc.strerror}") from None
    failed = []
    for path in doomed:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            failed.append((path, exc))
    if failed:
        path, exc = failed[0]
        raise InputError(f"{path}: cannot delete: {exc.strerror}; removed {len(doomed) - len(failed)} of "
                         f"{len(doomed)} cache files in {root}, {len(failed)} left")
    return len(doomed)


def _cache_folder(root: Path) -> bool:
    """True if ``root`` is a folder, False if nothing is there; InputError if it is something else."""
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: is not a folder; expected the cache folder (compute.cache_dir)")
    return root.exists()


def _read_digests(path: str, blocks: np.ndarray, reader: RowReader) -> list[bytes]:
    """The content digest of every (row0, rows) block of a shard file, read as the pass reads it."""
    out = []
    for row0, rows in blocks:
        flux, error = reader.read(path, int(row0), int(row0 + rows))
        out.append(block_digest(flux, error))
    return out


def verify_cache(root: str | os.PathLike) -> tuple[list[str], int]:
    """Re-read the shards of every entry under root and compare their content digests.

    Returns (one line per entry and a summary line, number of entries found changed). An entry whose
    shard content changed since it was cached (the key cannot always see that: see docs/cache.md) can
    only give stale statistics: it is deleted, as is a damaged entry. An entry whose shard is missing
    or unreadable is kept (the disk may be unmounted) and reported.
    """
    root = Path(root)
    if not _cache_folder(root):
        return [f"no cache at {root} (folder does not exist)"], 0
    lines, counts, seen = [], {"ok": 0, "changed": 0, "source missing": 0, "damaged": 0}, {}
    reader = RowReader()
    for path, attrs in _entries(root):
        name = path.name[:12]
        if not _ENTRY.fullmatch(path.name):  # e.g. a copy the user made: not an entry, never deleted
            lines.append(f"{path.name}  not an entry (not named after a key); left alone")
            continue
        try:
            if attrs is None:
                raise _Invalid("unreadable")
            result, content = _read(path, path.stem)  # the name is the key: a file copied over another's fails
        except _Invalid as why:
            path.unlink(missing_ok=True)
            counts["damaged"] += 1
            lines.append(f"{name}  damaged ({why}); dropped")
            continue
        if content is None:
            counts["ok"] += 1
            lines.append(f"{name}  ok  (no content digest stored: nothing to compare)")
            continue
        status, notes = "ok", []
        for part, file in enumerate(content.files):
            mine = content.blocks[:, 0] == part
            blocks = content.blocks[mine][:, 1:]
            stored = [d for d, m in zip(result.digests, mine) if m]
            memo = (file, blocks.tobytes())
            try:
                if memo not in seen:
                    seen[memo] = _read_digests(file, blocks, reader)
            except (OSError, KeyError, ValueError) as exc:
                status = "changed" if status == "changed" else "source missing"
                notes.append(f"{file}: {'missing' if not Path(file).exists() else f'unreadable ({exc})'}")
                continue
            differ = [(int(r0), int(r0 + n)) for (r0, n), a, b in zip(blocks, seen[memo], stored) if a != b]
            if differ:
                status = "changed"
                more = f" and {len(differ) - 1} more blocks" if len(differ) > 1 else ""
                notes.append(f"{file}: rows {differ[0][0]}:{differ[0][1]}{more} differ from when it was cached")
        counts[status] += 1
        if status == "changed":
            path.unlink(missing_ok=True)
            notes.append("dropped")
        lines.append(f"{name}  {status}  " + ("; ".join(notes) if notes else _text(attrs.get("source", ""))))
    if not lines:
        return [f"cache {root} is empty"], 0
    lines.append(f"verified {sum(counts.values())} entries in {root}: {counts['ok']} ok, {counts['changed']} changed "
                 f"(dropped), {counts['source missing']} with a shard missing, {counts['damaged']} damaged (dropped)")
    return lines, counts["changed"]

