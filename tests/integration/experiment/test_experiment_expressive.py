"""The Known experiment on the tiny Expressive model: S->T prompts carry pitch and style tokens, and the
traced rows (word groups) hold them."""

from __future__ import annotations

import json

from helpers import run_cli


def test_experiment_runs_on_the_expressive_variant(tiny_root, known_path, tiny_ctc_dir, tmp_path):
    out = tmp_path / "expressive"
    done = run_cli("experiment", "--out", out, "--checkpoints", tiny_root, "--known", known_path, "--aligner",
                   tiny_ctc_dir, "--dtype", "float32", "--keep-all", "--asr", "none", "--variant",
                   "spirit-lm-expressive-7b", "--prompts", "2", "--kinds", "mlp", "--samples", "2", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    results = sorted((out / "results" / "s2t").glob("*.json"))
    assert len(results) == 2
    for path in results:
        data = json.loads(path.read_text())
        tokens = data["tokens"]
        assert tokens[2] == "[Speech]" and tokens[3].startswith("[St") and tokens[-1] == "[Text]"
        pitch = {p for p, t in enumerate(tokens) if t.startswith("[Pi")}
        style = {p for p, t in enumerate(tokens) if t.startswith("[St")}
        grouped = {p for row in data["rows"][3:-1] for p in row["positions"]}
        assert pitch and style and pitch | style <= grouped  # every pitch/style position is in a row
        b, e = data["subject_range"]
        subject = {p for r in data["rows"][slice(*data["subject_rows"])] for p in r["positions"]}
        assert subject & pitch and min(subject) == b and max(subject) == e - 1
    assert (out / "report.md").is_file()
