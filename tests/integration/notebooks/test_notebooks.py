"""The tutorial notebooks: committed without outputs, and each runs top to bottom.

Every ``notebooks/*.ipynb`` is executed with nbclient on the ``python3`` kernel of this interpreter
(the ``.venv``), with the notebooks folder as working directory. A notebook must not raise, must
show at least one image, and must not write into the repository (they work in temporary folders).
The notebooks run on the small toy SpiritLM: the session's copy, found through
``$SPIRITLENS_CACHE_DIR`` as a user's notebook finds its cached toy (nothing is trained twice).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from helpers import REPO_ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300

pytestmark = pytest.mark.slow


def _ids(paths):
    return [p.name for p in paths]


def _git(*args: str) -> subprocess.CompletedProcess | None:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        return None
    done = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True)
    return done if done.returncode == 0 else None


def _output_problems(notebook: dict) -> list[str]:
    problems = []
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {index} has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {index} has execution_count {cell['execution_count']}")
    return problems


def _repo_state() -> tuple[str, list[str]]:
    """What a notebook could have written: git's view of the tree, and every file under notebooks/."""
    status = _git("status", "--porcelain", "--untracked-files=all")
    files = sorted(str(p.relative_to(REPO_ROOT)) for p in NOTEBOOK_DIR.rglob("*"))
    return (status.stdout if status else ""), files


@pytest.fixture(scope="module")
def venv_kernel(tmp_path_factory, monkeypatch_module):
    """Make the ``python3`` kernel this interpreter, whatever kernelspecs the machine has."""
    kernels = tmp_path_factory.mktemp("jupyter") / "kernels" / "python3"
    kernels.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (spiritlens tests)", "language": "python"}
    (kernels / "kernel.json").write_text(json.dumps(spec))
    monkeypatch_module.setenv("JUPYTER_PATH", str(kernels.parent.parent))
    return "python3"


@pytest.fixture(scope="module")
def toy_environment(toy_root, toy_cache_dir, known_path, monkeypatch_module):
    """The kernel's environment: the session's toy cache and the Known file."""
    monkeypatch_module.setenv("SPIRITLENS_CACHE_DIR", str(toy_cache_dir))
    monkeypatch_module.setenv("SPIRITLENS_KNOWN_PATH", str(known_path))
    return toy_root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_there_are_notebooks():
    names = [p.name for p in NOTEBOOKS]
    assert len(names) >= 3, names
    assert names == sorted(names) and all(name[:2].isdigit() for name in names), names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_stored_without_outputs(path):
    problems = _output_problems(json.loads(path.read_text(encoding="utf-8")))
    assert not problems, f"{path.name}: strip outputs before committing ({'; '.join(problems)})"
    relative = str(path.relative_to(REPO_ROOT))
    committed = _git("show", f"HEAD:{relative}")
    if committed is not None:  # the version in git, when the file is tracked
        problems = _output_problems(json.loads(committed.stdout))
        assert not problems, f"{relative} in HEAD has outputs ({'; '.join(problems)})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path, venv_kernel, toy_environment):
    notebook = nbformat.read(path, as_version=4)
    before = _repo_state()
    client = nbclient.NotebookClient(notebook, kernel_name=venv_kernel, timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error

    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    errors = [out for out in outputs if out.get("output_type") == "error"]
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert images, f"{path.name} displayed no image"
    assert _repo_state() == before, f"{path.name} wrote into the repository"
    cache = sorted(p.name for p in toy_environment.parent.iterdir() if p.name.startswith("toy-"))
    assert cache == [toy_environment.name], f"{path.name} trained another toy: {cache}"
