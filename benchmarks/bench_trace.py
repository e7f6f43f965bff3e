"""Cells per second: the tracing engine against the plain per-cell loop, same results.

    .venv/bin/python benchmarks/bench_trace.py [--layers 8 --d-model 512 --vocab 32768 --samples 10]

Builds a random SpiritLM-shaped model (SpiritLM's tokenizer layout, Llama blocks) in a temporary
folder, traces one Known-style prompt for every kind with both implementations, checks that the
scores agree, and prints cells/s, the speed ratio and peak memory (JSON with --json).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import peak, reset_peak  # noqa: E402
from reference_tracing import reference_trace  # noqa: E402

from spiritlens import HookedSpiritLM  # noqa: E402
from spiritlens.tiny import write_tiny_model  # noqa: E402
from spiritlens.traces import trace_kinds  # noqa: E402

PROMPT = "The Space Needle is located in the city of"
SUBJECT = "Space Needle"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="best-of-N timing for both implementations")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        directory = write_tiny_model(Path(folder) / "m", hidden_size=args.d_model, num_hidden_layers=args.layers,
                                     intermediate_size=int(args.d_model * 2.6875), num_attention_heads=args.d_model // 64,
                                     num_key_value_heads=args.d_model // 64, vocab_size=args.vocab,
                                     initializer_range=0.02)
        model = HookedSpiritLM.from_pretrained(directory)
    ids, token_map = model.encode(PROMPT)
    b, e = token_map.find_text(SUBJECT)
    ids = ids[0].tolist()
    kinds = ("hidden", "mlp", "attn")
    T, L = len(ids), model.cfg.n_layers
    cells = len(kinds) * T * L
    rss_before = reset_peak()
    engine_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = trace_kinds(model, PROMPT, SUBJECT, kinds=kinds, samples=args.samples, noise=0.1,
                           window=args.window)
        engine_times.append(time.perf_counter() - start)
    engine_s = min(engine_times)
    engine_peak = peak() - rss_before

    rss_before = reset_peak()
    plain_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        plain = {k: reference_trace(model, ids, b, e, k, samples=args.samples, nu=0.1, window=args.window)[0]
                 for k in kinds}
        plain_times.append(time.perf_counter() - start)
    plain_s = min(plain_times)
    plain_peak = peak() - rss_before
    max_diff = max(float(np.abs(ours[k].scores - plain[k]).max()) for k in kinds)
    report = {
        "model": {"layers": L, "d_model": model.cfg.d_model, "vocab": model.cfg.d_vocab,
                  "params_M": round(sum(p.numel() for p in model.hf_model.parameters()) / 1e6, 1)},
        "prompt_tokens": T, "subject_range": [b, e], "samples": args.samples, "cells": cells,
        "threads": args.threads, "repeats": args.repeats,
        "engine_times_s": [round(t, 3) for t in engine_times], "plain_times_s": [round(t, 3) for t in plain_times],
        "engine_s": round(engine_s, 3), "plain_s": round(plain_s, 3),
        "engine_cells_per_s": round(cells / engine_s, 1), "plain_cells_per_s": round(cells / plain_s, 1),
        "speedup": round(plain_s / engine_s, 2), "max_abs_diff": max_diff,
        "engine_peak_extra_mb": round(engine_peak / 2**20, 1), "plain_peak_extra_mb": round(plain_peak / 2**20, 1),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if max_diff > 1e-6:
        print(f"FAIL: engine and plain loop differ by {max_diff:.3g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
