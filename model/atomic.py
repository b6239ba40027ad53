"""Write-to-temporary-then-rename: a reader (the platform, a resumed run) never sees a half-written file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary name beside ``path`` to write to; renamed onto ``path`` when the block ends normally.

    On any exception, SIGTERM's included, the temporary file is removed and ``path`` is left as it
    was. ``suffix`` ends the temporary name for writers that choose the format by it (ITK, NumPy,
    matplotlib). The process id keeps two writers of one path apart.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
