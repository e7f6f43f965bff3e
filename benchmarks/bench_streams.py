"""What ``spiritlens experiment --expressive`` costs per spoken prompt: measured CPU time on a benchmark-shaped
model, and the FLOP count that scales it to SpiritLM Expressive's 7B shape.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_streams.py --json benchmarks/results/streams_cpu_8x512_1thread.json

Builds a random SpiritLM-Expressive-shaped Llama (default 8 layers, d_model 512, 8 heads, d_mlp 1376, the
tiny Expressive vocabulary) with the tiny random speech tokenizer (mHuBERT, F0 VQ-VAE, style encoder; FCPE's
real weights) and a tiny random CTC aligner, synthesises Known prompts with espeak-ng, and runs for each
prompt what the stage runs (:mod:`spiritlens.experiment.expressive`): for each of the six prosody controls,
the controlled prompt, its stream-aware trace of the three kinds (rows split by stream, all three streams of
the subject noised, S = 10, window 10 scaled as given), the three one-stream corrupted runs and the greedy
first token. The headline is the CPU time of this process on one thread (``time.process_time()``, median of
``--repeats``), beside the plain S->T trace of the same prompt (text-token groups, three kinds).

The FLOP count (matrix multiplies; ``bench_trace.py``'s block and forward counts) follows the suffix engine:
the clean and corrupted runs, the corrupted keys and values, and per distinct row that restores a noised
position and per distinct restored window, S rows over positions ``min(row) .. T-1`` from the block after
the window's first layer (``bench_trace.engine_flops`` with group rows), plus the one-stream runs and the
greedy token. The same count at SpiritLM's shape (32 layers, d 4096, 32 heads, d_mlp 11008, vocab 32768)
over the same rows scales the measured time (``cpu_s_7b_scaled``: CPU seconds on one thread, FLOP-
proportional) and gives the work per prompt (``tflop_7b``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trace import SPIRITLM_SHAPE, block_flops, forward_flops, load_average, windows  # noqa: E402

from spiritlens import HookedSpiritLM  # noqa: E402
from spiritlens.align import LowAlignmentConfidence  # noqa: E402
from spiritlens.align.prosody import controlled_prompt  # noqa: E402
from spiritlens.align.speech_prompt import SpeechPrompt  # noqa: E402
from spiritlens.data import EspeakTTS  # noqa: E402
from spiritlens.synthetic.tiny import EXPRESSIVE, make_tiny_checkpoints, write_tiny_model  # noqa: E402
from spiritlens.synthetic.tiny_ctc import write_tiny_ctc_model  # noqa: E402
from spiritlens.traces import parse_noise, trace_kinds  # noqa: E402
from spiritlens.traces.noise import noise_scale  # noqa: E402
from spiritlens.traces.streams import stream_low_scores, stream_rows, subject_stream_positions  # noqa: E402
from spiritlens.units.controls import CONTROLS  # noqa: E402

KINDS = ("hidden", "mlp", "attn")
STREAMS = ("hubert", "pitch", "style")
PROMPTS = [("Vinson Massif is located in the continent of", "Vinson Massif"),  # Known ids 0, 6, 8
           ("Catalonia belongs to the continent of", "Catalonia"),
           ("Leslie Moonves is employed by", "Leslie Moonves")]


def rows_flops(shape: dict, T: int, rows: list[list[int]], first: int, S: int, kind: str, window: int) -> float:
    """The suffix engine on group rows, one kind (module docstring): clean and corrupted runs with full
    logits, the corrupted keys/values, and per distinct row restoring a position >= ``first`` (the first
    noised one) and per distinct window, S rows over ``min(row) .. T-1``."""
    L, d = shape["layers"], shape["d_model"]
    total = forward_flops(shape, 1, T, T) + forward_flops(shape, S, T, T) + L * S * T * block_flops(shape, 0, query=False)
    starts = [w[0] + 1 for w in windows(kind, L, window)]
    if kind == "attn":
        total += len(set(starts)) * S * T * 2 * 3 * d * shape["d_mlp"]
    distinct = {tuple(sorted(r)) for r in rows if max(r) >= first}
    for row in distinct:
        t = row[0]
        for start in starts:
            cell = sum(sum(block_flops(shape, p + 1) for p in range(t, T)) for _ in range(start, L - 1))
            if start <= L - 1:
                cell += (T - t - 1) * block_flops(shape, 0, query=False) + block_flops(shape, T)
            total += S * (cell + 2 * d * shape["vocab"])
    return total


def stage_flops(shape: dict, prompts: list, S: int, window: int) -> float:
    """One spoken prompt's stage: per control, three kinds of stream rows, three one-stream corrupted runs
    (S rows, full logits) and one greedy forward."""
    total = 0.0
    for T, rows, first in prompts:
        total += sum(rows_flops(shape, T, rows, first, S, kind, window) for kind in KINDS)
        total += 3 * forward_flops(shape, S, T, T) + forward_flops(shape, 1, T, T)
    return total


def build(args, folder: Path):
    root = make_tiny_checkpoints(folder / "tree", seed=0)
    directory = write_tiny_model(folder / "tree" / "spiritlm_model" / EXPRESSIVE, expressive=True, seed=1,
                                 hidden_size=args.d_model, num_hidden_layers=args.layers, intermediate_size=args.d_mlp,
                                 num_attention_heads=args.heads, num_key_value_heads=args.heads, initializer_range=0.02)
    model = HookedSpiritLM.from_pretrained(directory, speech_tokenizer=root / "speech_tokenizer")
    return model, write_tiny_ctc_model(folder / "ctc", seed=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--d-mlp", type=int, default=1376)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = parse_noise(args.noise)
    report = {"shape": {"layers": args.layers, "d_model": args.d_model, "heads": args.heads, "d_mlp": args.d_mlp},
              "samples": args.samples, "window": args.window, "threads": args.threads, "prompts": []}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model, ctc = build(args, folder)
        shape = dict(report["shape"], kv_heads=args.heads, vocab=model.cfg.d_vocab)
        window = min(args.window, args.layers)
        waves = [EspeakTTS().synthesize(text, folder / f"p{k}.wav") for k, (text, _) in enumerate(PROMPTS)]
        for k, (text, subject) in enumerate(PROMPTS):
            wav = waves[k]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", LowAlignmentConfidence)
                spoken = SpeechPrompt.from_audio(model, wav, transcript=text, subject=subject, aligner=ctc)
            donor = model.speech_tokenizer.encode(waves[(k + 1) % len(PROMPTS)])  # the next prompt, as the stage does
            controlled = {c: controlled_prompt(model, spoken, c, donor if c.startswith("other") else None)
                          for c in CONTROLS}
            answer = trace_kinds(model, spoken, kinds=("hidden",), noise=args.noise, samples=1)["hidden"].answer_id
            scale = noise_scale(spec, sigma=None)

            def stage():
                for prompt in controlled.values():
                    trace_kinds(model, prompt, kinds=KINDS, noise=args.noise, samples=args.samples, window=window,
                                row_mode="streams", noise_streams=STREAMS, target=answer)
                    traced = prompt.trace_prompt(model)
                    stream_low_scores(model, traced, answer, spec, scale, samples=args.samples, seed=1)
                    model.generate_ids(torch.tensor([prompt.input_ids]), max_new_tokens=1)

            def plain():
                trace_kinds(model, spoken, kinds=KINDS, noise=args.noise, samples=args.samples, window=window,
                            target=answer)

            times = {"stage": [], "plain": []}
            for rep in range(args.repeats):
                for name, fn in (("stage", stage), ("plain", plain)) if rep % 2 == 0 else (("plain", plain), ("stage", stage)):
                    cpu = time.process_time()
                    fn()
                    times[name].append(time.process_time() - cpu)
            layout = []
            for prompt in controlled.values():
                traced = prompt.trace_prompt(model)
                rows = [r.positions for r in stream_rows(model, traced).rows]
                layout.append((len(prompt.input_ids), rows, subject_stream_positions(model, traced, STREAMS)[0]))
            traced = spoken.trace_prompt(model)
            plain_layout = (len(spoken.input_ids), [r.positions for r in traced.groups], traced.subject_range[0])
            bench, big = stage_flops(shape, layout, args.samples, window), stage_flops(SPIRITLM_SHAPE, layout,
                                                                                      args.samples, 10)
            plain_bench = sum(rows_flops(shape, *plain_layout, args.samples, kind, window) for kind in KINDS)
            plain_big = sum(rows_flops(SPIRITLM_SHAPE, *plain_layout, args.samples, kind, 10) for kind in KINDS)
            stage_s, plain_s = statistics.median(times["stage"]), statistics.median(times["plain"])
            row = {"prompt": text, "tokens": {c: len(p.input_ids) for c, p in controlled.items()},
                   "speech_tokens_per_stream": {s: sum(1 for t in spoken.units.tokens if t.stream == s) for s in STREAMS},
                   "audio_s": round(spoken.waveform.samples.shape[0] / spoken.waveform.sample_rate, 2),
                   "stage_cpu_s": [round(t, 2) for t in times["stage"]], "plain_cpu_s": [round(t, 2) for t in times["plain"]],
                   "stage_median_cpu_s": round(stage_s, 2), "plain_median_cpu_s": round(plain_s, 2),
                   "tflop_bench": round(bench / 1e12, 3), "tflop_7b": round(big / 1e12, 1),
                   "plain_tflop_7b": round(plain_big / 1e12, 1),
                   "cpu_s_7b_scaled": round(stage_s * big / bench), "plain_cpu_s_7b_scaled": round(plain_s * plain_big
                                                                                                     / plain_bench),
                   "load_average_1min": load_average()}
            print(json.dumps(row), flush=True)
            report["prompts"].append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
