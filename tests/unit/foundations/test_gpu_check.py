"""benchmarks/gpu_check.py imports and, without a CUDA device, stops with one line (status 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the check would run")
def test_gpu_check_without_cuda_says_so_in_one_line(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT), "--json", str(out)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip() == "gpu_check needs a CUDA device: torch.cuda.is_available() is False here"
    assert done.stdout == "" and not out.exists()


def test_gpu_check_plumbing_runs_every_step_on_the_cpu(tmp_path):
    """``--plumbing``: the same steps with 2-layer shapes on the CPU, so the script stays runnable."""
    import json

    out = tmp_path / "plumbing.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--plumbing", "--samples", "2", "--json", str(out)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["steps"] == {"parity": "done", "seven_b": "done"}
    traces = record["traces"]
    assert {(t["prompt"], t["kind"], t["method"]) for t in traces} == {
        (p, k, m) for p in ("text", "speech") for k in ("hidden", "mlp", "attn")
        for m in ("exact", "attribution", "attribution_qk")}
    assert {t["tokens"] for t in traces} == {14, 60} and all(t["seconds"] > 0 for t in traces)
    assert all(-1 <= t["spearman_vs_exact"] <= 1 for t in traces if t["method"] != "exact")
    assert len(record["parity"]["entries"]) == 6 and record["load_s"] > 0 and record["weights_gib"] > 0
    for entry in record["parity"]["entries"]:  # CPU float32 twice: identical; bfloat16 close on this flat model
        assert entry["cuda_vs_cpu_float32"] == 0.0 and entry["bfloat16_vs_float32_cuda"] < 1e-3
