"""The model boundary: a family's names appear in its own folder only (spiritlens/models/<family>/).

Checked on the code's string literals (docstrings, which explain the formats, are left out): SpiritLM's
markers and unit spellings, its variant names and its checkpoint folder occur nowhere outside
``spiritlens/models/spiritlm/``, SpeechGPT's speech and chat tokens nowhere outside
``spiritlens/models/speechgpt/``; and every registered family is a folder there."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers import REPO_ROOT

SRC = REPO_ROOT / "src" / "spiritlens"
NAMES = {"spiritlm": re.compile(r"\[Text\]|\[Speech\]|\[Hu(?!man\])|\[Pi|\[St|spirit-lm-|spiritlm_model"),
         "speechgpt": re.compile(r"<sosp>|<eosp>|\[SpeechGPT\]|\[Human\]|<eoh>|_L11_km1000|mhubert_base_vp_")}


def _string_literals(path: Path):
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_a_familys_names_appear_only_in_its_folder():
    found = []
    for family, pattern in NAMES.items():
        home = SRC / "models" / family
        for path in sorted(SRC.rglob("*.py")):
            if home in path.parents:
                continue
            found += [(str(path.relative_to(SRC)), line, value[:60]) for line, value in _string_literals(path)
                      if pattern.search(value)]
    assert not found, found


def test_the_check_sees_a_name_where_it_is():
    """The check can fail: each family's own folder does hold its names."""
    def hits(family):
        return [v for path in (SRC / "models" / family).rglob("*.py") for _, v in _string_literals(path)
                if NAMES[family].search(v)]

    assert "[Text]" in hits("spiritlm") and "spirit-lm-base-7b" in hits("spiritlm")
    assert {"<sosp>", "<eosp>", "[SpeechGPT]", "[Human]", "<eoh>"} <= set(hits("speechgpt"))


def test_every_registered_family_is_a_folder():
    from spiritlens.models import FAMILIES

    for name, where in FAMILIES.items():
        module = where.split(":")[0]
        assert module.startswith(f"spiritlens.models.{name}."), (name, module)
        assert (SRC / "models" / name).is_dir()
