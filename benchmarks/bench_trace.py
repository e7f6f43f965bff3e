"""The tracing engine against the plain per-cell loop: measured ratios, FLOP-predicted ratios, same scores.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_trace.py --json benchmarks/results/trace_cpu_8x512_1thread.json

Builds a random SpiritLM-shaped Llama (default 8 layers, d_model 512, 8 heads, d_mlp 1376, vocab
2560) and traces, with S = 10 noised rows:
- a text-length prompt: Known id 4, "MacApp, a product created by" (14 tokens under SpiritLM's
  tokenisation with the benchmark's tokenizer: BOS, "▁", [Text], then the text; subject at 3..6);
- a speech-length prompt: 60 tokens (BOS, [Speech], 57 HuBERT units, [Text]), subject at 20..31;
for every kind, with the engine (``trace_kinds``, one kind per call, its clean and corrupted runs
included) and with the plain per-cell ``run_with_hooks`` loop of ``tests/reference_tracing.py``
(ROME's layout: S+1 rows, every cell a full forward) on the same loaded model. Repetitions are
interleaved (engine, plain, plain, engine, ...). The headline is CPU time of this process on one
thread (``--threads 1``, ``time.process_time()``), which load from other processes on a shared
machine barely moves: ``ratio_cpu`` is the ratio of the medians, ``paired_ratios_cpu`` the ratio of
each repetition (its spread); wall-clock times and their ratio stand beside it (``ratio_wall``), the
load average with them. Scores must agree to 1e-5.

Next to each measured ratio: the ratio the two algorithms' matrix-multiply FLOPs predict, counted
here independently of the engine's code, for the same shape and for SpiritLM's real shape
(32 layers, d 4096, 32 heads, d_mlp 11008, vocab 32768).

``--sweep-batch 512,1024,...`` also times the engine (hidden, speech prompt) at each
tokens-in-flight batch target, to choose ``CPU_TOKENS_PER_BATCH``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
from spiritlens.synthetic.tiny import write_tiny_model  # noqa: E402
from spiritlens.interventions import suffix
from spiritlens.traces import trace_kinds  # noqa: E402

KINDS = ("hidden", "mlp", "attn")
TEXT_PROMPT, TEXT_SUBJECT = "MacApp, a product created by", "MacApp"  # Known id 4
SPIRITLM_SHAPE = dict(layers=32, d_model=4096, heads=32, kv_heads=32, d_mlp=11008, vocab=32768)


# ---------------------------------------------------------------- FLOP counts
def block_flops(shape: dict, keys: int, query: bool = True) -> float:
    """Matrix-multiply FLOPs of one Llama block for one token attending to ``keys`` positions
    (``query=False``: only its key and value projections)."""
    d, d_mlp = shape["d_model"], shape["d_mlp"]
    d_kv = d * shape["kv_heads"] // shape["heads"]
    kv = 2 * 2 * d * d_kv
    if not query:
        return kv
    return kv + 2 * 2 * d * d + 2 * 3 * d * d_mlp + 2 * 2 * keys * d


def forward_flops(shape: dict, rows: int, T: int, logits_at: int) -> float:
    """A full forward of ``rows`` x ``T`` tokens, logits at ``logits_at`` positions per row."""
    per_row = shape["layers"] * sum(block_flops(shape, p + 1) for p in range(T))
    return rows * (per_row + logits_at * 2 * shape["d_model"] * shape["vocab"])


def windows(kind: str, n_layers: int, window: int) -> list[tuple[int, ...]]:
    """Distinct restored-layer tuples of a kind (ROME's truncated windows; hidden: one layer,
    the last one known without a run)."""
    if kind == "hidden":
        return [(layer,) for layer in range(n_layers - 1)]
    seen = []
    for layer in range(n_layers):
        w = tuple(range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2))))
        if w not in seen:
            seen.append(w)
    return seen


def plain_flops(shape: dict, T: int, S: int) -> float:
    """The plain loop, one kind: clean (1 row), low (S+1 rows), T*L cells of S+1 rows; full logits."""
    return forward_flops(shape, 1, T, T) + (1 + T * shape["layers"]) * forward_flops(shape, S + 1, T, T)


def engine_flops(shape: dict, T: int, b: int, S: int, kind: str, window: int) -> float:
    """The suffix engine, one kind: clean (1 row) and corrupted (S rows) forwards with full logits,
    the corrupted keys/values of every layer, and per cell (rows t >= b, distinct windows) S rows
    over positions t..T-1 from the first block after the first patched one, the last block for the
    last position only, logits at the last position."""
    L, d = shape["layers"], shape["d_model"]
    total = forward_flops(shape, 1, T, T) + forward_flops(shape, S, T, T)
    total += L * S * T * block_flops(shape, 0, query=False)
    starts = [w[0] + 1 for w in windows(kind, L, window)]
    if kind == "attn":  # the first patched block's MLP at every position, once per first block
        total += len(set(starts)) * S * T * 2 * 3 * d * shape["d_mlp"]
    for t in range(b, T):
        for start in starts:
            cell = 0.0
            for _ in range(start, L - 1):
                cell += sum(block_flops(shape, p + 1) for p in range(t, T))
            if start <= L - 1:
                cell += (T - t - 1) * block_flops(shape, 0, query=False) + block_flops(shape, T)
            total += S * (cell + 2 * d * shape["vocab"])
    return total


# ---------------------------------------------------------------- measurement
def build_model(args, folder: Path) -> HookedSpiritLM:
    directory = write_tiny_model(folder / "m", hidden_size=args.d_model, num_hidden_layers=args.layers,
                                 intermediate_size=args.d_mlp, num_attention_heads=args.heads,
                                 num_key_value_heads=args.kv_heads, vocab_size=args.vocab, initializer_range=0.02)
    return HookedSpiritLM.from_pretrained(directory)


def prompts(model) -> dict[str, tuple[list[int], int, int]]:
    ids, token_map = model.encode(TEXT_PROMPT)
    b, e = token_map.find_text(TEXT_SUBJECT)
    vocab = model.vocab
    speech = [vocab.bos_id, vocab.speech_marker_id] + [vocab.hubert_ids[(37 * k) % 500] for k in range(57)] \
        + [vocab.text_marker_id]
    return {"text": (ids[0].tolist(), b, e), "speech": (speech, 20, 32)}


def time_engine(model, ids, b, e, kind, args) -> tuple[float, float, np.ndarray]:
    """Wall-clock and CPU seconds (this process, all threads) of the engine on one kind, and its scores."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = trace_kinds(model, ids, subject_range=(b, e), kinds=(kind,), samples=args.samples, noise=args.noise,
                         window=args.window)[kind]
    return time.perf_counter() - wall, time.process_time() - cpu, result.scores


def time_plain(model, ids, b, e, kind, args) -> tuple[float, float, np.ndarray]:
    """The same for the plain per-cell loop."""
    wall, cpu = time.perf_counter(), time.process_time()
    table = reference_trace(model, ids, b, e, kind, samples=args.samples, nu=args.noise, window=args.window,
                            answer=args.answer)[0]
    return time.perf_counter() - wall, time.process_time() - cpu, table


def measure(model, name, ids, b, e, kind, args) -> dict:
    # Warm-up; both score the engine's answer (SpiritLM's text rule: the top-1 text token; ROME's
    # loop would take the top-1 of the whole vocabulary, which a random model may put on a unit).
    args.answer = trace_kinds(model, ids, subject_range=(b, e), kinds=(kind,), samples=args.samples, noise=args.noise,
                              window=args.window)[kind].answer_id
    times = {time_engine: [], time_plain: []}
    cpu = {time_engine: [], time_plain: []}
    tables, loads = {}, []
    for rep in range(args.repeats):
        loads.append(load_average())
        for fn in ((time_engine, time_plain) if rep % 2 == 0 else (time_plain, time_engine)):
            wall_s, cpu_s, tables[fn] = fn(model, ids, b, e, kind, args)
            times[fn].append(wall_s)
            cpu[fn].append(cpu_s)
    engine_times, plain_times = times[time_engine], times[time_plain]
    ours, plain = tables[time_engine], tables[time_plain]
    reset = reset_peak()
    time_engine(model, ids, b, e, kind, args)
    engine_peak = peak() - reset
    T, L = len(ids), model.cfg.n_layers
    engine_s, plain_s = statistics.median(engine_times), statistics.median(plain_times)
    row = {
        "prompt": name, "tokens": T, "subject_range": [b, e], "kind": kind,
        "window": args.window if kind != "hidden" else None,
        "engine_s": [round(t, 3) for t in engine_times], "plain_s": [round(t, 3) for t in plain_times],
        "engine_median_s": round(engine_s, 3), "plain_median_s": round(plain_s, 3),
        "cells": T * L, "engine_cells_per_s": round(T * L / engine_s, 1), "plain_cells_per_s": round(T * L / plain_s, 1),
        "ratio_wall": round(plain_s / engine_s, 2),
        "paired_ratios_wall": [round(p / q, 2) for p, q in zip(plain_times, engine_times)],
        "load_average_1min": loads,
        "engine_cpu_s": [round(t, 3) for t in cpu[time_engine]], "plain_cpu_s": [round(t, 3) for t in cpu[time_plain]],
        "ratio_cpu": round(statistics.median(cpu[time_plain]) / statistics.median(cpu[time_engine]), 2),
        "paired_ratios_cpu": [round(p / q, 2) for p, q in zip(cpu[time_plain], cpu[time_engine])],
        "flop_ratio": round(plain_flops(args.shape, T, args.samples)
                            / engine_flops(args.shape, T, b, args.samples, kind, args.window), 2),
        "flop_ratio_spiritlm_7b": round(plain_flops(SPIRITLM_SHAPE, T, args.samples)
                                        / engine_flops(SPIRITLM_SHAPE, T, b, args.samples, kind, args.window), 2),
        "answer_id": args.answer, "max_abs_diff": float(np.abs(ours - plain).max()),
        "engine_peak_extra_mb": round(engine_peak / 2**20, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def load_average() -> float:
    """The machine's 1-minute load average (other processes share the CPUs)."""
    with open("/proc/loadavg") as handle:
        return float(handle.read().split()[0])


def sweep(model, ids, b, e, targets, args) -> list[dict]:
    default = suffix.CPU_TOKENS_PER_BATCH
    times = {t: [] for t in targets}
    try:
        for rep in range(args.repeats):
            for target in (targets if rep % 2 == 0 else targets[::-1]):
                suffix.CPU_TOKENS_PER_BATCH = target
                times[target].append(time_engine(model, ids, b, e, "hidden", args)[:2])
    finally:
        suffix.CPU_TOKENS_PER_BATCH = default
    rows = [{"tokens_per_batch": t, "engine_s": [round(w, 3) for w, _ in v],
             "median_s": round(statistics.median(w for w, _ in v), 3),
             "median_cpu_s": round(statistics.median(c for _, c in v), 3)} for t, v in times.items()]
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=None, help="default: --heads (no grouped-query attention)")
    parser.add_argument("--d-mlp", type=int, default=1376)
    parser.add_argument("--vocab", type=int, default=2560)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is comparable under load)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; medians are reported")
    parser.add_argument("--prompts", default="text,speech")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--sweep-batch", default="", help="comma-separated tokens-in-flight targets to time")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args()
    args.kv_heads = args.kv_heads or args.heads
    args.shape = dict(layers=args.layers, d_model=args.d_model, heads=args.heads, kv_heads=args.kv_heads,
                      d_mlp=args.d_mlp, vocab=args.vocab)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        model = build_model(args, Path(folder))
    chosen = prompts(model)
    report = {
        "model": {**args.shape, "params_M": round(sum(p.numel() for p in model.hf_model.parameters()) / 1e6, 1),
                  "dtype": str(model.dtype)},
        "samples": args.samples, "threads": args.threads, "repeats": args.repeats, "noise": args.noise,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpu_count": os.cpu_count(),
        "cpu_tokens_per_batch": suffix.CPU_TOKENS_PER_BATCH, "load_average_before": load_average(),
        "spiritlm_shape": SPIRITLM_SHAPE, "runs": [],
    }
    if args.sweep_batch:
        ids, b, e = chosen["speech"]
        report["batch_sweep"] = sweep(model, ids, b, e, [int(t) for t in args.sweep_batch.split(",")], args)
    for name in filter(None, args.prompts.split(",")):
        ids, b, e = chosen[name]
        for kind in filter(None, args.kinds.split(",")):
            report["runs"].append(measure(model, name, ids, b, e, kind, args))
    report["load_average_after"] = load_average()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    worst = max((r["max_abs_diff"] for r in report["runs"]), default=0.0)
    if worst > 1e-5:
        print(f"FAIL: engine and plain loop differ by {worst:.3g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
