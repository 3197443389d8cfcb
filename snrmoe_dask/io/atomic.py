"""Writing a file so that a reader sees the old file or the whole new one, never half of it."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", file_mode: int = 0o644, **open_kw) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; when the block ends it replaces ``path`` in one
    rename (with permissions ``file_mode``), and on any error it is removed and ``path`` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kw) as fh:
            yield fh
        os.chmod(tmp, file_mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str, file_mode: int = 0o644) -> None:
    """Write UTF-8 ``text`` (newlines as given) to ``path`` atomically."""
    with atomic_file(path, "w", file_mode, encoding="utf-8", newline="") as fh:
        fh.write(text)
