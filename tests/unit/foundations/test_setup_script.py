"""scripts/setup.sh installs the torch build it says it does, and .ci/run runs exactly the README's commands.

The real script runs against a stand-in ``.venv/bin/python`` that records its arguments (installing
torch for real would download gigabytes); everything else in the script runs as written.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import REPO_ROOT

REPO = REPO_ROOT

RECORDING_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$SETUP_LOG"
if [ "$1" = "-c" ] && [ "$2" = "import torch" ]; then exit 1; fi  # torch not installed yet
exit 0
"""


def _run_setup(tmp_path: Path, **env) -> tuple[subprocess.CompletedProcess, list[str]]:
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", project / "scripts" / "setup.sh")
    python = project / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(RECORDING_PYTHON)
    python.chmod(0o755)
    log = tmp_path / "calls.log"
    base = {k: v for k, v in os.environ.items() if not k.startswith("SPIRITLENS_TORCH")}
    done = subprocess.run(["bash", str(project / "scripts" / "setup.sh")], capture_output=True, text=True,
                          timeout=60, env={**base, "SETUP_LOG": str(log), **env})
    return done, log.read_text().splitlines()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="setup.sh would install espeak-ng with apt-get")
def test_default_torch_install_is_the_plain_index_and_says_so(tmp_path):
    done, calls = _run_setup(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "-m pip install -q torch==2.13.0" in calls
    assert not any("--index-url" in c for c in calls)
    assert "PyPI on Linux serves the CUDA build" in done.stdout
    assert "SPIRITLENS_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in done.stdout
    assert calls.index("-m pip install -q torch==2.13.0") < calls.index('-m pip install -q -e .[all]')
    assert "-m pip install -q --no-deps torchfcpe==0.0.4" in calls  # FCPE without torchaudio
    assert not any("torchaudio" in c for c in calls)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="setup.sh would install espeak-ng with apt-get")
def test_cpu_index_is_chosen_by_an_environment_variable(tmp_path):
    url = "https://download.pytorch.org/whl/cpu"
    done, calls = _run_setup(tmp_path, SPIRITLENS_TORCH_INDEX_URL=url, SPIRITLENS_TORCH_VERSION="2.5.1")
    assert done.returncode == 0, done.stderr
    assert f"-m pip install -q torch==2.5.1 --index-url {url}" in calls
    assert f"setup: installing torch==2.5.1 from {url}" in done.stdout


def _quick_start() -> list[str]:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Setup, main job, tests\s+```bash\n(.*?)```", readme, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command_which_sets_up_first():
    main_job, tests = _quick_start()
    assert main_job == "bash scripts/main_job.sh" and tests == "bash scripts/test.sh"
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci == [tests]
    for script in ("main_job.sh", "test.sh"):  # both set up through the same script
        assert "bash scripts/ensure_setup.sh" in (REPO / "scripts" / script).read_text()
    assert "bash scripts/setup.sh" in (REPO / "scripts" / "ensure_setup.sh").read_text()


STAND_IN_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$SETUP_LOG"
if [ "$1" = "-m" ] && [ "$2" = "pytest" ]; then exit "${PYTEST_STATUS:-0}"; fi
exit 0
"""


def _project_with_scripts(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    for name in ("setup.sh", "ensure_setup.sh", "test.sh"):
        shutil.copy(REPO / "scripts" / name, project / "scripts" / name)
    (project / "scripts" / "setup.sh").write_text('#!/usr/bin/env bash\necho setup-ran >> "$SETUP_LOG"\n'
                                                  'mkdir -p .venv/bin && cp "$STAND_IN" .venv/bin/python\n')
    shutil.copy(REPO / "pyproject.toml", project / "pyproject.toml")
    stand_in = tmp_path / "python"
    stand_in.write_text(STAND_IN_PYTHON)
    stand_in.chmod(0o755)
    return project


def _test_sh(project: Path, tmp_path: Path, **env) -> tuple[subprocess.CompletedProcess, list[str]]:
    log = tmp_path / "calls.log"
    done = subprocess.run(["bash", str(project / "scripts" / "test.sh"), "-x"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "SETUP_LOG": str(log), "STAND_IN": str(tmp_path / "python"),
                                           **env})
    calls = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return done, calls


def test_test_command_sets_up_once_and_fails_when_no_test_runs(tmp_path):
    project = _project_with_scripts(tmp_path)
    first, calls = _test_sh(project, tmp_path)
    assert first.returncode == 0, first.stderr
    assert calls[0] == "setup-ran" and calls[-1] == "-m pytest -q -x"
    again, calls = _test_sh(project, tmp_path)  # set up already: straight to pytest
    assert again.returncode == 0 and "setup-ran" not in calls and calls[-1] == "-m pytest -q -x"
    empty, _ = _test_sh(project, tmp_path, PYTEST_STATUS="5")  # pytest's "no tests collected"
    assert empty.returncode == 1 and "collected no test" in empty.stderr
    failing, _ = _test_sh(project, tmp_path, PYTEST_STATUS="1")
    assert failing.returncode == 1
    (project / "pyproject.toml").write_text("# changed\n")  # a changed project is set up again
    _, calls = _test_sh(project, tmp_path)
    assert calls[0] == "setup-ran"
