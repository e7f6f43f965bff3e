"""Attribution patching's cost against the exact engine at SpiritLM's layer width.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_attribution_cost.py --layers 4 --tokens 14,60 \
        --json benchmarks/results/attribution_cost_1thread.json

A random Llama of SpiritLM's width (d_model 4096, d_mlp 11008, 32 heads, vocabulary 32512 rows) with
``--layers`` blocks traces, with S = ``--samples`` noised rows and the depth-scaled window, a 14-token
text-length prompt (BOS, ``[Text]``, 12 text ids; subject at 3..6, as Known id 4 under SpiritLM's
tokenisation) and a 60-token speech-length prompt (BOS, ``[Speech]``, 57 units, ``[Text]``; subject at
20..31), given as ids. For each kind: ``trace_kinds`` with ``method="exact"`` (the suffix engine, its
clean and corrupted runs included) and with ``method="attribution"`` (the clean run, one corrupted
forward with autograd through the hooked model and one backward), repetitions interleaved. The
headline is CPU time of this process on one thread (``time.process_time()``): ``ratio_cpu`` = median
exact / median attribution, ``paired_ratios_cpu`` each repetition's (the spread); wall time beside it.

Beside each measured ratio, the ratio the matrix-multiply FLOPs predict (``bench_trace``'s count of the
exact engine; attribution = the clean forward + 3 forwards of S rows, a backward costing two), for the
measured shape and for SpiritLM's 32 layers. Both engines run at similar FLOP rates on a CPU, so the
measured ratios follow the FLOP ratios; 32 layers is predicted, not measured (a 7B float32 model and its
exact trace do not fit this benchmark's budget on a 2-core machine).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trace import SPIRITLM_SHAPE, engine_flops, forward_flops, load_average  # noqa: E402

from spiritlens import HookedSpiritLM  # noqa: E402
from spiritlens.traces import default_window, trace_kinds  # noqa: E402

WIDTH = dict(d_model=4096, heads=32, kv_heads=32, d_mlp=11008, vocab=32512)


def prompt_ids(model, tokens: int) -> tuple[list[int], int, int]:
    """The 14- or 60-token prompt as ids, with its subject range (module docstring)."""
    vocab = model.vocab
    text = list(range(300, 300 + 64))  # ordinary text pieces of the benchmark tokenizer
    if tokens == 14:
        return [vocab.bos_id, vocab.text_marker_id] + text[:12], 3, 6
    if tokens == 60:
        units = [vocab.hubert_ids[(37 * k) % 500] for k in range(57)]
        return [vocab.bos_id, vocab.speech_marker_id] + units + [vocab.text_marker_id], 20, 32
    raise ValueError(f"--tokens takes 14 and/or 60, got {tokens}")


def write_wide_model(directory: Path, shape: dict) -> Path:
    """A random SpiritLM-layout folder of ``shape`` holding one copy of the weights in memory at a time
    (``write_tiny_model`` clones its state dict: 15 GB at 8 layers of SpiritLM's width)."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from spiritlens.synthetic.tiny import tiny_llama_config, write_tokenizer_files

    write_tokenizer_files(directory)
    config = tiny_llama_config(vocab_size=shape["vocab"], hidden_size=shape["d_model"],
                               num_hidden_layers=shape["layers"], intermediate_size=shape["d_mlp"],
                               num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
                               initializer_range=0.02)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config.items() if k != "architectures"}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    del model
    return directory


def attribution_flops(shape: dict, T: int, S: int) -> float:
    """Clean forward (1 row, full logits), the corrupted forward with autograd (S rows) and its backward (2x)."""
    return forward_flops(shape, 1, T, T) + 3 * forward_flops(shape, S, T, T)


def timed(model, ids, b, e, kind, method, args) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    trace_kinds(model, ids, subject_range=(b, e), kinds=(kind,), samples=args.samples, noise=0.1, method=method)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", default="4", help="comma-separated block counts (4,8)")
    parser.add_argument("--tokens", default="14,60", help="prompt lengths: 14 and/or 60")
    parser.add_argument("--kinds", default="hidden,mlp,attn")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for n_layers in (int(x) for x in args.layers.split(",")):
        shape = dict(WIDTH, layers=n_layers)
        with tempfile.TemporaryDirectory() as folder:
            directory = write_wide_model(Path(folder) / "m", shape)
            gc.collect()
            model = HookedSpiritLM.from_pretrained(directory)
        for tokens in (int(x) for x in args.tokens.split(",")):
            ids, b, e = prompt_ids(model, tokens)
            for kind in args.kinds.split(","):
                window = default_window(n_layers)
                timed(model, ids, b, e, kind, "attribution", args)  # warm-up
                cpu = {"exact": [], "attribution": []}
                wall = {"exact": [], "attribution": []}
                for rep in range(args.repeats):
                    for method in (("exact", "attribution") if rep % 2 == 0 else ("attribution", "exact")):
                        w, c = timed(model, ids, b, e, kind, method, args)
                        wall[method].append(round(w, 2))
                        cpu[method].append(round(c, 2))
                exact_flops = engine_flops(shape, tokens, b, args.samples, kind, window)
                spirit = dict(SPIRITLM_SHAPE, vocab=WIDTH["vocab"])
                row = {
                    "layers": n_layers, "tokens": tokens, "kind": kind, "window": window, "samples": args.samples,
                    "exact_cpu_s": cpu["exact"], "attribution_cpu_s": cpu["attribution"],
                    "exact_wall_s": wall["exact"], "attribution_wall_s": wall["attribution"],
                    "ratio_cpu": round(statistics.median(cpu["exact"]) / statistics.median(cpu["attribution"]), 2),
                    "paired_ratios_cpu": [round(x / y, 2) for x, y in zip(cpu["exact"], cpu["attribution"])],
                    "ratio_wall": round(statistics.median(wall["exact"]) / statistics.median(wall["attribution"]), 2),
                    "flop_ratio": round(exact_flops / attribution_flops(shape, tokens, args.samples), 2),
                    "exact_gflop_per_cpu_s": round(exact_flops / 1e9 / statistics.median(cpu["exact"]), 1),
                    "attribution_gflop_per_cpu_s": round(attribution_flops(shape, tokens, args.samples) / 1e9
                                                         / statistics.median(cpu["attribution"]), 1),
                    "flop_ratio_32_layers": round(
                        engine_flops(spirit, tokens, b, args.samples, kind, default_window(32))
                        / attribution_flops(spirit, tokens, args.samples), 2),
                    "load_average": load_average(),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        del model
        gc.collect()
    report = {"width": WIDTH, "threads": 1, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "cpu_count": os.cpu_count(), "runs": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
