"""The shipped core (``process.py`` and ``model/``) never imports a tool, and the container holds only the core.

Training, evaluation, the data generator and the benchmark import the core; an import the other way
would pull a tool (and its dependencies) into the container, where it is not copied.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = [ROOT / "process.py", *sorted((ROOT / "model").rglob("*.py"))]
TOOLS = {"training", "evaluation", "synthetic", "bench", "scripts", "tests", "train", "evaluate"}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at any depth of the file (lazy imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_core_imports_no_tool() -> None:
    offenders = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & TOOLS) for p in CORE}
    assert {p: t for p, t in offenders.items() if t} == {}


def test_the_check_sees_a_tool_import(tmp_path: Path) -> None:
    """The check itself: a lazy import of a tool inside a function is found."""
    source = tmp_path / "bad.py"
    source.write_text("def f():\n    from training.export import export_run\n    import bench.run\n")
    assert imported_packages(source) & TOOLS == {"training", "bench"}


def test_the_dockerfile_copies_only_the_core() -> None:
    copied = re.findall(r"^COPY (?!--from)(.+?) /opt/app/", (ROOT / "Dockerfile").read_text(), flags=re.M)
    sources = {part for line in copied for part in line.split()}
    assert sources == {"requirements.txt", "process.py", "model/", "weights/"}
