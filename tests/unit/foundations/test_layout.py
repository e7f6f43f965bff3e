"""The house rules of the layout: no import cycle (imports inside functions counted), no private name
imported from another package, and one definition of each shared concept."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from helpers import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "import_graph.py"


def test_import_graph_has_no_cycle_and_no_private_import():
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout
    assert "import cycles: 0" in done.stdout and "private names imported across packages: 0" in done.stdout


def test_import_graph_finds_a_cycle_through_a_function_level_import(tmp_path):
    package = tmp_path / "src" / "spiritlens"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from spiritlens.b import g\n\ndef f():\n    return g()\n")
    (package / "b.py").write_text("def g():\n    from spiritlens.a import f\n    return f\n")
    (package / "c.py").write_text("from spiritlens.a import _hidden\n")
    done = subprocess.run([sys.executable, str(SCRIPT), "--src", str(tmp_path / "src"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "import cycles: 1" in done.stdout and "spiritlens.a spiritlens.b" in done.stdout


def test_shared_concepts_are_defined_once():
    """KINDS, MODALITIES, DIRECTIONS and friends are assigned in spiritlens/terms.py and nowhere else."""
    names = {"KINDS", "MODALITIES", "OUTPUT_MODALITIES", "DIRECTIONS", "DIRECTION_MODALITY", "MODALITY_LABELS",
             "KNOWN_SUBSETS", "MAPPINGS", "PATCH_MODES", "PATCH_DIRECTIONS", "MODES", "MODALITY_OF"}
    found = []
    for path in sorted((REPO_ROOT / "src" / "spiritlens").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) else []
            found += [(path.name, t.id) for t in targets if isinstance(t, ast.Name) and t.id in names]
    assert {name for _, name in found} <= names
    assert all(file == "terms.py" for file, _ in found), found


def test_a_missing_extra_is_one_line_and_a_real_import_bug_is_not(capsys, monkeypatch):
    from spiritlens import cli

    def needs_extra(args):
        raise ImportError("FCPE pitch extraction needs torchfcpe: pip install --no-deps 'torchfcpe==0.0.4'")

    def broken(args):
        raise ImportError("cannot import name 'x' from 'spiritlens.y'")

    parser = cli.build_parser()
    args = parser.parse_args(["aggregate", "somewhere", "--out", "elsewhere"])
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", lambda argv: args)
    args.func = needs_extra
    assert cli.main([]) == 2
    assert capsys.readouterr().err == ("spiritlens aggregate: error: FCPE pitch extraction needs torchfcpe: "
                                       "pip install --no-deps 'torchfcpe==0.0.4'\n")
    args.func = broken
    with pytest.raises(ImportError, match="cannot import name"):
        cli.main([])
