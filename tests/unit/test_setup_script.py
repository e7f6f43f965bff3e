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

REPO = Path(__file__).resolve().parents[2]

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


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="setup.sh would install espeak-ng with apt-get")
def test_cpu_index_is_chosen_by_an_environment_variable(tmp_path):
    url = "https://download.pytorch.org/whl/cpu"
    done, calls = _run_setup(tmp_path, SPIRITLENS_TORCH_INDEX_URL=url, SPIRITLENS_TORCH_VERSION="2.5.1")
    assert done.returncode == 0, done.stderr
    assert f"-m pip install -q torch==2.5.1 --index-url {url}" in calls
    assert f"setup: installing torch==2.5.1 from {url}" in done.stdout


def test_ci_runs_exactly_the_readme_commands():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Setup, main job, tests\s+```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    setup, _main_job, tests = commands
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci == [setup, tests]
