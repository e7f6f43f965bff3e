"""The tutorial notebooks: committed without outputs, and each runs top to bottom.

Every ``notebooks/*.ipynb`` is executed with nbclient on the ``python3`` kernel of this interpreter
(the ``.venv``), with the notebooks folder as working directory. A notebook must not raise, must
show at least one image, must not write into the repository (they work in temporary folders), and
must not fill its cells with progress bars or warnings: spiritlens' ``progress=None`` default draws
none outside a terminal, transformers' loading bar follows it, and TransformerLens' patching helper
(which has no switch) is run with its stderr set aside. A first run, which trains a toy, is as
quiet (``test_first_toy_build_is_quiet``).
The notebooks run on the small toy SpiritLM: the session's copy, found through
``$SPIRITLENS_CACHE_DIR`` as a user's notebook finds its cached toy (nothing is trained twice).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from helpers import REPO_ROOT, tqdm_bar_updates

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
    stderr = "".join(out.get("text", "") for out in outputs if out.get("output_type") == "stream"
                     and out.get("name") == "stderr")
    widgets = [out for out in outputs if "application/vnd.jupyter.widget-view+json" in out.get("data", {})]
    assert tqdm_bar_updates(stderr) == 0 and not widgets, f"{path.name} drew progress bars: {stderr[-600:]!r}"
    assert "warn" not in stderr.lower(), f"{path.name} printed warnings: {stderr[-600:]!r}"
    assert _repo_state() == before, f"{path.name} wrote into the repository"
    cache = sorted(p.name for p in toy_environment.parent.iterdir() if p.name.startswith("toy-"))
    assert cache == [toy_environment.name], f"{path.name} trained another toy: {cache}"



FIRST_RUN = """
import sys
from spiritlens.synthetic.toy import ToyConfig, toy_checkpoints
config = ToyConfig(relations=1, facts_per_relation=2, paraphrases=1, distractors=1, n_layers=2, d_model=32,
                   n_heads=2, d_mlp=64, local_layers=1, distractors_per_step=2, max_steps=3, min_steps=0,
                   interleaved=False)
toy_checkpoints(config, cache_dir=sys.argv[1], **eval(sys.argv[2]))
"""


@pytest.mark.parametrize("progress", ["default", "True"])
def test_first_toy_build_is_quiet(tmp_path, known_path, progress):
    """A notebook's first cell on a fresh cache builds the toy (speech synthesis, training, evaluation, two
    model loads), here a tiny one: with the default ``progress=None`` and stderr not a terminal (as in a
    notebook) no bar is drawn; the old default drew 8 bars (21 bar states); ``progress=True`` draws them."""
    import os

    kwargs = "{}" if progress == "default" else "{'progress': True}"
    environment = dict(os.environ, SPIRITLENS_KNOWN_PATH=str(known_path), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", FIRST_RUN, str(tmp_path / "cache"), kwargs], capture_output=True,
                          text=True, timeout=300, env=environment)
    assert done.returncode == 0, done.stderr[-2000:]
    if progress == "default":
        assert tqdm_bar_updates(done.stderr) == 0, done.stderr[-1000:]
        lines = done.stderr.splitlines()
        assert lines and all(line.startswith("[toy] ") for line in lines), lines  # the build's log lines only
    else:
        assert tqdm_bar_updates(done.stderr) >= 8
        for name in ("TTS espeak", "training toy SpiritLM", "Loading weights", "Known-t2t", "Known-s2t"):
            assert f"{name}:" in done.stderr, name
