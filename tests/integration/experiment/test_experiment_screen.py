"""The experiment's screen: attribution estimates saved as the results, their top cells traced exactly,
and per prompt how many the exact trace confirmed (summary, report)."""

from __future__ import annotations

import json

from helpers import run_cli
from reference_tracing import reference_trace

from spiritlens import HookedSpiritLM
from spiritlens.traces import TraceResult


def test_screen_then_verify_reports_confirmed_cells_per_prompt(known_path, tmp_path):
    out = tmp_path / "screen"
    done = run_cli("experiment", "--out", out, "--known", known_path, "--prompts", "1", "--kinds", "hidden,attn",
                   "--samples", "3", "--random-weights", "--asr", "none", "--no-crossmodal", "--screen",
                   "attribution", "--verify-top", "3", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    screen = summary["screen"]
    assert screen["screen"] == "attribution" and screen["verify_top"] == 3
    assert len(screen["per_prompt"]) == 3  # one fact, T->T and S->T, and the tiny backbone's T->T
    results = {p.relative_to(out / "results").as_posix(): TraceResult.load(p) for p in (out / "results").rglob("*.json")}
    assert len(results) == 6 and {r.method for r in results.values()} == {"attribution"}
    for kind in ("hidden", "attn"):
        confirmed = sum(r.extra["verification"]["confirmed"] for r in results.values() if r.kind == kind)
        assert screen["confirmed_of_verified"][kind] == [confirmed, 9]
    for item, kinds in screen["per_prompt"].items():
        assert set(kinds) == {"hidden", "attn"} and all(n == 3 for _, n in kinds.values())
    # The verified cells are exact: the T->T hidden ones against the plain per-cell reference.
    t2t = next(r for name, r in results.items() if name.startswith("t2t/") and r.kind == "hidden")
    model = HookedSpiritLM.from_pretrained(out / "checkpoints" / "spiritlm_model" / "spirit-lm-base-7b",
                                           dtype="float32")
    table, low, _, _ = reference_trace(model, t2t.input_ids, *t2t.subject_range, "hidden", samples=3, nu=t2t.noise,
                                       answer=t2t.answer_id)
    for cell in t2t.extra["verification"]["cells"]:
        assert abs(cell["exact_ie"] - (table[cell["row"], cell["layer"]] - low)) <= 1e-6
    report = (out / "report.md").read_text()
    assert "attribution-patching estimates" in report and "| t2t/" in report and "| s2t/" in report
    assert "| backbone_t2t/" in report
    bad = run_cli("experiment", "--out", tmp_path / "bad", "--random-weights", "--verify-top", "3")
    assert bad.returncode == 2 and "--verify-top checks a screen" in bad.stderr
