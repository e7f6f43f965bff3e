"""GPU check: a random 7B-shaped SpiritLM in bf16 on one CUDA device, traced exactly and by attribution.

    .venv/bin/python benchmarks/gpu_check.py --json benchmarks/results/gpu_check.json

Needs a CUDA device; without one it exits with status 2 and one line. Under 10 minutes on one
recent GPU (the budget, ``--budget-s``, skips the remaining steps and records them as skipped):

1. writes a random checkpoint of SpiritLM's shape (32 layers, d_model 4096, 32 heads, d_mlp
   11008, vocab 32768; ``pytorch_model.bin`` in bfloat16) with the project's tiny-checkpoint
   writer (:func:`spiritlens.synthetic.tiny.write_tiny_model`), and its time;
2. loads it with ``HookedSpiritLM.from_pretrained(dtype="bfloat16", device="cuda")``: load time,
   weight bytes and peak CUDA memory (``torch.cuda.max_memory_allocated``);
3. traces the T->T prompt (14 tokens) and the S->T-length prompt (60 tokens: BOS, [Speech], 57
   units, [Text]) of ``benchmarks/bench_trace.py`` for every kind with the exact engine and with
   ``method="attribution"`` / ``"attribution_qk"`` (noise 3 x the embedding std, S = 10): seconds
   (after ``torch.cuda.synchronize``), peak memory per call, and the estimate's Spearman against
   the exact scores (random weights: a plumbing figure, not a quality one);
4. float32-vs-bfloat16 parity on a small shape (4 layers x d 256): the same traces on CUDA in
   float32 and bfloat16 and on the CPU in float32, max |difference| of the scores.

The JSON is written after every step, so a run cut short still leaves what it measured.

``--plumbing`` runs every step on the CPU with a 2-layer shape instead of 7B (no timing worth
reading; CPU float32 vs CPU bfloat16 for the parity step): the tests use it to keep the script working.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEVEN_B = dict(hidden_size=4096, num_hidden_layers=32, intermediate_size=11008, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32768, initializer_range=0.02)
SMALL = dict(hidden_size=256, num_hidden_layers=4, intermediate_size=688, num_attention_heads=4,
             num_key_value_heads=4, vocab_size=2560, initializer_range=0.02)
KINDS = ("hidden", "mlp", "attn")
METHODS = ("exact", "attribution", "attribution_qk")
PLUMBING = dict(hidden_size=128, num_hidden_layers=2, intermediate_size=344, num_attention_heads=4,
                num_key_value_heads=4, vocab_size=2560, initializer_range=0.02)
NO_CUDA = "gpu_check needs a CUDA device: torch.cuda.is_available() is False here"


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def require_cuda() -> None:
    """Exit with status 2 and one line on stderr when no CUDA device is usable."""
    import torch

    if not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        raise SystemExit(2)


def _write(record: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def _timed_trace(model, ids, b, e, kind, method, samples, device):
    from spiritlens.traces import trace_kinds

    _sync(device)
    _reset_peak(device)
    start = time.perf_counter()
    result = trace_kinds(model, ids, subject_range=(b, e), kinds=(kind,), samples=samples, noise="3v",
                         method=method)[kind]
    _sync(device)
    return result, time.perf_counter() - start, _peak_gib(device)


def seven_b(record: dict, args, folder: Path, out: Path, deadline: float) -> None:
    import torch

    sys.path.insert(0, str(HERE))
    from bench_attribution import spearman
    from bench_trace import prompts

    from spiritlens import HookedSpiritLM
    from spiritlens.synthetic.tiny import write_tiny_model

    device, shape = ("cpu", PLUMBING) if args.plumbing else ("cuda", SEVEN_B)
    start = time.perf_counter()
    directory = write_tiny_model(folder / "spirit-7b-random", dtype=torch.bfloat16, **shape)
    record["write_s"] = time.perf_counter() - start
    record["checkpoint_gib"] = sum(p.stat().st_size for p in directory.iterdir()) / 2**30
    _write(record, out)
    _reset_peak(device)
    start = time.perf_counter()
    model = HookedSpiritLM.from_pretrained(directory, dtype="bfloat16", device=device)
    _sync(device)
    record["load_s"] = time.perf_counter() - start
    record["weights_gib"] = sum(p.numel() * p.element_size() for p in model.hf_model.parameters()) / 2**30
    record["load_peak_gib"] = _peak_gib(device)
    _write(record, out)
    traces = record.setdefault("traces", [])
    for name, (ids, b, e) in prompts(model).items():
        for kind in KINDS:
            exact = None
            for method in METHODS:
                entry = {"prompt": name, "tokens": len(ids), "subject_range": [b, e], "kind": kind, "method": method}
                if time.perf_counter() > deadline:
                    entry["skipped"] = "time budget"
                    traces.append(entry)
                    continue
                result, seconds, peak = _timed_trace(model, ids, b, e, kind, method, args.samples, device)
                entry.update(seconds=seconds, peak_gib=peak, low=result.low_score, high=result.high_score)
                if method == "exact":
                    exact = result
                else:
                    live = (exact.indirect_effects[b:], result.indirect_effects[b:])
                    entry["spearman_vs_exact"] = spearman(live[1].ravel(), live[0].ravel())
                    entry["max_abs_error"] = float(abs(result.scores - exact.scores).max())
                traces.append(entry)
                _write(record, out)


def parity(record: dict, args, folder: Path, out: Path) -> None:
    import numpy as np
    import torch

    sys.path.insert(0, str(HERE))
    from bench_trace import prompts

    from spiritlens import HookedSpiritLM
    from spiritlens.synthetic.tiny import write_tiny_model
    from spiritlens.traces import trace_kinds

    directory = write_tiny_model(folder / "small", dtype=torch.float32, **(PLUMBING if args.plumbing else SMALL))
    scores = {}
    accelerator = "cpu" if args.plumbing else "cuda"
    for label, dtype, device in (("cpu_float32", "float32", "cpu"), ("cuda_float32", "float32", accelerator),
                                 ("cuda_bfloat16", "bfloat16", accelerator)):
        model = HookedSpiritLM.from_pretrained(directory, dtype=dtype, device=device)
        ids, b, e = prompts(model)["text"]
        for method in ("exact", "attribution"):
            results = trace_kinds(model, ids, subject_range=(b, e), samples=args.samples, noise="3v", method=method)
            for kind, result in results.items():
                scores[label, method, kind] = result.scores
    entries = []
    for method in ("exact", "attribution"):
        for kind in KINDS:
            entries.append({
                "method": method, "kind": kind,
                "cuda_vs_cpu_float32": float(np.abs(scores["cuda_float32", method, kind]
                                                    - scores["cpu_float32", method, kind]).max()),
                "bfloat16_vs_float32_cuda": float(np.abs(scores["cuda_bfloat16", method, kind]
                                                         - scores["cuda_float32", method, kind]).max()),
            })
    record["parity"] = {"shape": PLUMBING if args.plumbing else SMALL, "entries": entries}
    _write(record, out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=HERE / "results" / "gpu_check.json")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--budget-s", type=float, default=540.0, help="skip what remains after this many seconds")
    parser.add_argument("--workdir", type=Path, help="where the random checkpoints go (default: a temporary folder)")
    parser.add_argument("--plumbing", action="store_true", help="CPU only, 2-layer shapes: checks the script runs")
    args = parser.parse_args(argv)
    if not args.plumbing:
        require_cuda()
    import torch

    started = time.perf_counter()
    deadline = started + args.budget_s
    record = {"device": "cpu (plumbing)" if args.plumbing else torch.cuda.get_device_name(0),
              "torch": torch.__version__, "samples": args.samples,
              "shape_7b": PLUMBING if args.plumbing else SEVEN_B, "steps": {}}
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        for name, step in (("parity", lambda: parity(record, args, Path(folder), args.json)),
                           ("seven_b", lambda: seven_b(record, args, Path(folder), args.json, deadline))):
            try:
                step()
                record["steps"][name] = "done"
            except Exception as error:  # record, then go on: a partial check still says something
                record["steps"][name] = f"{type(error).__name__}: {error}".splitlines()[0]
                traceback.print_exc()
            record["elapsed_s"] = time.perf_counter() - started
            _write(record, args.json)
    print(json.dumps(record["steps"]))
    return 0 if all(v == "done" for v in record["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
