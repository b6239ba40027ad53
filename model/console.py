"""What process.py shows while it runs: progress over the cases, and no native library noise.

On a terminal a tqdm bar over the cases says which case is running and how far the folder is; in a
log (a container's stdout, CI) each case gets a plain ``[i/n] name`` line instead, since a bar's
carriage returns make a log unreadable.

ITK, GDCM and MetaIO print straight to file descriptor 2 from C++ (a truncated ``.mha`` gives
``MetaImage: M_ReadElementsData: data not read completely`` before our one-line reason), which no
Python setting reaches. :func:`native_stderr_silenced` points descriptor 2 at ``/dev/null`` for the
whole run, while Python's ``sys.stderr`` keeps writing to the real stderr through a duplicate of it,
so our messages and the bar stay visible. It covers the reader thread too: redirecting only around
each read would also swallow what the main thread prints meanwhile.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
    """Send what native code writes to descriptor 2 to ``/dev/null``; Python's stderr still shows."""
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no stderr at all (closed descriptor): nothing to protect
        yield
        return
    original = sys.stderr
    try:
        python_fd = original.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):  # already redirected in Python (tests)
        python_fd = None
    if python_fd == 2:
        sys.stderr = open(saved, "w", buffering=1, encoding=original.encoding,  # noqa: SIM115
                          errors=original.errors or "backslashreplace", closefd=False)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        if sys.stderr is not original:
            sys.stderr.flush()
            sys.stderr = original
        os.dup2(saved, 2)
        os.close(saved)


class Progress:
    """Progress over the cases: a tqdm bar on a terminal, plain ``[i/n] name`` lines otherwise.

    Everything process.py prints while cases run goes through :meth:`say`, so the bar is redrawn
    below the message instead of being torn by it.
    """

    def __init__(self, total: int, stream: Any = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="case", file=self.stream, dynamic_ncols=True, leave=True)

    def start(self, index: int, name: str) -> None:
        """Case ``index`` (0-based) begins."""
        if self.bar is not None:
            self.bar.set_description_str(name[:40], refresh=True)
        else:
            print(f"[{index + 1}/{self.total}] {name}", flush=True)

    def done(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def say(self, message: str, error: bool = False) -> None:
        """A line for stdout (``error``: stderr) that leaves the bar intact."""
        file = sys.stderr if error else sys.stdout
        if self.bar is not None:
            self.bar.write(message, file=file)
            file.flush()
        else:
            print(message, file=file, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
