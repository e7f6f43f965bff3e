"""Forced-alignment accuracy against the synthesiser's own word times, on synthesised Known prompts.

    .venv/bin/python benchmarks/bench_align.py [--prompts 120] [--tts espeak,flite] [--ctc DIR]
                                               [--json benchmarks/results/align_known.json]

Synthesises ``--prompts`` Known prompts (a fixed random subset) with each TTS backend (espeak-ng;
flite where installed), each with its ground truth: the word times the synthesiser reports
(``spiritlens.data.tts.corpus``). Then, per aligner (pocketsphinx; the CTC path only with a real CTC model
directory given as ``--ctc``, else reported as skipped: the tiny random CTC model aligns noise) and
per TTS backend:

- word-boundary error: ``|aligned - true|`` in ms over every word start and end (median, 95th
  percentile, max);
- subject token range: the fraction of prompts whose subject's speech-token range equals the true
  one. The true range is the speech tokens the synthesiser's subject word times cover, the aligned
  range those its aligned words cover, both by the same rule (25 Hz frames ``[floor(start / 40 ms),
  ceil(end / 40 ms))``, ``spiritlens.align.mapping``). Tokens are the 25 Hz frames themselves (no
  deduplication: the strictest grid; SpiritLM's deduplicated tokens are runs of these frames, so a
  range exact on frames is exact on tokens), and the fraction within one token at each end;
- failures (prompts the aligner refused), low-confidence warnings, seconds per prompt: CPU time of this
  process on one torch thread per aligned prompt (median and range), wall time beside it.

Prints a table and writes JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from spiritlens.align import LowAlignmentConfidence, get_aligner, map_frames_to_speech_tokens
from spiritlens.align import map_seconds_to_speech_tokens
from spiritlens.data import EspeakTTS, FliteTTS, load_known, select, synthesize_corpus
from spiritlens.tokens.prompt import find_span

UNIT_SECONDS = 0.04


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=120, help="Known prompts (a fixed random subset)")
    parser.add_argument("--seed", type=int, default=0, help="subset seed")
    parser.add_argument("--tts", default="espeak,flite", help="TTS backends: espeak, flite (flite is skipped if absent)")
    parser.add_argument("--flite-voice", default="awb")
    parser.add_argument("--ctc", help="a real character CTC model directory (e.g. hubert-large-ls960-ft)")
    parser.add_argument("--known", help="known_1000.json (default: ../shared/data next to the checkout)")
    parser.add_argument("--work", help="folder for the synthesised audio (default: a temporary folder)")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # CPU time per prompt comparable on a shared machine
    known = args.known or str(Path(__file__).resolve().parents[2] / "shared" / "data" / "known_1000.json")
    records = list(select(load_known(known).records, args.prompts, seed=args.seed))
    backends, skipped = [], []
    for name in args.tts.split(","):
        backend = EspeakTTS() if name == "espeak" else FliteTTS(args.flite_voice) if name == "flite" else None
        if backend is None:
            parser.error(f"unknown TTS backend {name!r}")
        if backend.available():
            backends.append(backend)
        else:
            skipped.append({"tts": name, "reason": "not installed"})
    aligners = {"pocketsphinx": get_aligner("pocketsphinx")}
    if args.ctc:
        aligners["ctc"] = get_aligner(args.ctc)
    else:
        skipped.append({"aligner": "ctc", "reason": "no CTC model directory given (--ctc); the tiny random CTC "
                                                    "model would align noise"})

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        for backend in backends:
            folder = work / f"{backend.name}_{backend.voice}"
            synthesis = synthesize_corpus([(str(r.known_id), r.prompt) for r in records], backend, folder)
            entries = {e.item_id: e for e in synthesis.entries if e.ok}
            for aligner_name, aligner in aligners.items():
                rows.append(_measure(aligner_name, aligner, backend, records, entries, folder))
                print(_line(rows[-1]), flush=True)
    report = {"prompts": len(records), "seed": args.seed, "unit_seconds": UNIT_SECONDS, "results": rows,
              "skipped": skipped}
    print()
    print(_table(rows))
    for item in skipped:
        print(f"skipped: {item}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _measure(aligner_name, aligner, backend, records, entries, folder) -> dict:
    errors, exact, near, counted, failures, low, missing_truth = [], 0, 0, 0, [], 0, 0
    cpu_seconds = []  # per aligned prompt: CPU time of this process (one torch thread, see main)
    start = time.perf_counter()
    for record in records:
        entry = entries.get(str(record.known_id))
        if entry is None:
            failures.append({"known_id": record.known_id, "reason": "no audio"})
            continue
        wav, rate = sf.read(str(folder / entry.path), dtype="float32")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LowAlignmentConfidence)
            try:
                cpu = time.process_time()
                alignment = aligner.align(wav, record.prompt, sample_rate=rate)
                cpu_seconds.append(time.process_time() - cpu)
            except ValueError as error:
                failures.append({"known_id": record.known_id, "reason": str(error)})
                continue
        low += any(issubclass(w.category, LowAlignmentConfidence) for w in caught)
        truth = entry.word_times()
        assert len(truth) == len(alignment.words)  # one true time per spoken word (the same spoken form)
        for word, true in zip(alignment.words, truth):
            if true is None:
                missing_truth += 1
                continue
            errors += [abs(word.start_s - true.start_s), abs(word.end_s - true.end_s)]
        a, b = find_span(record.prompt, record.subject, occurrence="first")
        subject = [k for k, w in enumerate(alignment.words) if w.char_start < b and w.char_end > a]
        if any(truth[k] is None for k in subject):
            continue
        n_units = int(len(wav) / rate / UNIT_SECONDS) + 2
        grid = [(k, k + 1) for k in range(n_units)]
        true_range = map_seconds_to_speech_tokens([(truth[k].start_s, truth[k].end_s) for k in subject], grid,
                                                  UNIT_SECONDS).range_of(range(len(subject)))
        aligned_range = map_frames_to_speech_tokens(
            [(alignment.words[k].start_frame, alignment.words[k].end_frame) for k in subject], grid,
            ctc_frame_seconds=alignment.frame_seconds, unit_frame_seconds=UNIT_SECONDS).range_of(range(len(subject)))
        counted += 1
        exact += aligned_range == true_range
        near += abs(aligned_range[0] - true_range[0]) <= 1 and abs(aligned_range[1] - true_range[1]) <= 1
    errors_ms = np.array(errors) * 1000.0
    aligned = len(records) - len(failures)
    return {
        "aligner": aligner_name, "tts": backend.name, "voice": backend.voice, "prompts": len(records),
        "aligned": aligned, "boundaries": int(len(errors_ms)),
        "median_ms": round(float(np.median(errors_ms)), 1), "p95_ms": round(float(np.percentile(errors_ms, 95)), 1),
        "max_ms": round(float(errors_ms.max()), 1), "within_20ms": round(float((errors_ms <= 20).mean()), 3),
        "subject_range_exact": round(exact / max(counted, 1), 3),
        "subject_range_within_1": round(near / max(counted, 1), 3), "subjects": counted,
        "low_confidence": low, "words_without_truth": missing_truth, "failures": failures,
        "seconds_per_prompt": round((time.perf_counter() - start) / max(aligned, 1), 2),
        "cpu_s_per_prompt_median": round(float(np.median(cpu_seconds)), 3) if cpu_seconds else None,
        "cpu_s_per_prompt_range": [round(min(cpu_seconds), 3), round(max(cpu_seconds), 3)] if cpu_seconds else None,
    }


def _line(row: dict) -> str:
    return (f"{row['aligner']:>12} on {row['tts']}/{row['voice']}: median {row['median_ms']} ms, p95 {row['p95_ms']} ms, "
            f"subject range exact {row['subject_range_exact']:.1%} ({row['subjects']}), "
            f"{len(row['failures'])} failed, {row['seconds_per_prompt']} s/prompt")


def _table(rows) -> str:
    lines = ["| aligner | speech | prompts aligned | boundary error median | p95 | max | subject token range exact "
             "| within 1 token |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['aligner']} | {r['tts']} ({r['voice']}) | {r['aligned']}/{r['prompts']} | "
                     f"{r['median_ms']} ms | {r['p95_ms']} ms | {r['max_ms']} ms | "
                     f"{r['subject_range_exact']:.1%} of {r['subjects']} | {r['subject_range_within_1']:.1%} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
