"""What process.py shows: progress over the cases, and nothing but its own lines on stderr."""

from __future__ import annotations

import io
import os
import sys

import SimpleITK as sitk

import process
from model.console import Progress, native_stderr_silenced
from tests.conftest import ct_image, head_volume, tiny_weights


def test_truncated_mha_gives_only_our_line_on_stderr(tmp_path, capfd):
    """MetaIO prints ``MetaImage: M_ReadElementsData`` from C++ to descriptor 2; none of it may show."""
    inp = tmp_path / "in"
    inp.mkdir()
    path = inp / "short.mha"
    sitk.WriteImage(ct_image(head_volume((6, 40, 36))), str(path))
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.7)])
    tiny_weights(tmp_path / "weights")
    code = process.main(["--input", str(inp), "--output", str(tmp_path / "out"),
                         "--weights", str(tmp_path / "weights")])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 1
    assert err == ["short: error: short.mha: not a readable image (File cannot be read: short.mha for reading.)",
                   "1 of 1 case(s) failed; first: short.mha: not a readable image "
                   "(File cannot be read: short.mha for reading.)"], err


def test_native_writes_are_dropped_and_python_stderr_kept(capfd):
    with native_stderr_silenced():
        os.write(2, b"native noise\n")
        print("ours", file=sys.stderr)
    os.write(2, b"after\n")
    assert capfd.readouterr().err.splitlines() == ["ours", "after"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_plain_lines_in_a_log(capsys):
    progress = Progress(2, stream=io.StringIO())
    progress.start(0, "a")
    progress.say("a: done")
    progress.start(1, "b")
    progress.say("b: error: x", error=True)
    progress.close()
    out, err = capsys.readouterr()
    assert out.splitlines() == ["[1/2] a", "a: done", "[2/2] b"] and err == "b: error: x\n"


def test_progress_is_a_bar_on_a_terminal(capsys):
    terminal = Terminal()
    progress = Progress(2, stream=terminal)
    progress.start(0, "case-a")
    progress.say("case-a: done")
    progress.done()
    progress.close()
    assert "case-a" in terminal.getvalue() and "1/2" in terminal.getvalue()
    assert "case-a: done" in capsys.readouterr().out
