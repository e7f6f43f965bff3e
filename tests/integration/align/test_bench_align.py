"""benchmarks/bench_align.py runs on a handful of prompts and writes the numbers the README quotes."""

from __future__ import annotations

import importlib.util
import json

import pytest

from helpers import REPO_ROOT

from spiritlens.spoken import espeak

BENCH = REPO_ROOT / "benchmarks" / "bench_align.py"


@pytest.mark.skipif(importlib.util.find_spec("pocketsphinx") is None or not espeak.available(),
                    reason="pocketsphinx or libespeak-ng not installed")
def test_bench_align_on_three_prompts(known_path, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_align", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "align.json"
    assert bench.main(["--prompts", "3", "--tts", "espeak", "--known", str(known_path), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    (row,) = report["results"]
    assert (row["aligner"], row["tts"], row["prompts"], row["aligned"]) == ("pocketsphinx", "espeak", 3, 3)
    assert row["boundaries"] >= 2 * 3 * 4 and 0 <= row["median_ms"] <= row["p95_ms"] <= row["max_ms"] < 1000
    assert 0 <= row["subject_range_exact"] <= row["subject_range_within_1"] <= 1 and row["subjects"] == 3
    assert report["skipped"][0]["aligner"] == "ctc"
    assert "| pocketsphinx | espeak (en-us) | 3/3 |" in capsys.readouterr().out
