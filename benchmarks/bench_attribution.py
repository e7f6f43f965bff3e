"""Attribution patching against the exact engine on the toy SpiritLM's 12 facts (T->T and S->T).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_attribution.py --json benchmarks/results/attribution_toy.json

The toy (:mod:`spiritlens.synthetic.toy`, default config: 4 relations x 3 facts, 8 layers x d 128,
attention off in its first 2 layers) is the cached one (built on first use, about 40 s), or
``--toy DIR``. Every fact is traced as text and as speech (its synthesised prompt audio, aligned
with pocketsphinx, text-token group rows as the experiment's default), noise 3 sigma (text: ROME's
sigma over every Known subject; speech: over the 12 prompts' subject speech tokens, the
experiment's default), S = 10, the depth-scaled window (3 for 8 layers), each kind with the exact
engine and with ``method="attribution"`` (AtP) and ``"attribution_qk"`` (AtP with the QK fix).

Agreement, per modality, kind and method, over the cells that need a run (rows from the subject
on; hidden without its last layer, which both methods fill in exactly):
- Spearman correlation of estimated and exact indirect effects, per prompt (median and minimum
  over the 12) and pooled over every prompt's cells;
- recall of the exact top-10 cells within the estimate's top-20, per prompt (mean, minimum);
- the largest absolute error of a score, in probability, and as a share of the prompt's total effect;
- the share of cells whose estimate has the sign of the exact effect, among cells with |IE| > 1% TE;
each also over the prompts whose total effect is at least 0.1 (below it the effects are mostly noise).
GradDrop (AtP*): the same recall for its magnitudes, and its CPU seconds per prompt (``graddrop``).

Time: CPU seconds of this process on one thread (``torch.set_num_threads(1)``,
``time.process_time()``), wall seconds beside it, for the whole set of prompts per kind (each call
a full ``trace_kinds`` for one kind: clean and corrupted runs included, and the gradient pass for
attribution), ``--repeats`` repetitions interleaved (exact, attribution, attribution_qk, rotated);
the ratio exact / attribution per repetition is reported as median and range.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trace import SPIRITLM_SHAPE, engine_flops, forward_flops  # noqa: E402

from spiritlens import HookedSpiritLM  # noqa: E402
from spiritlens.data import load_known  # noqa: E402
from spiritlens.synthetic.toy.build import toy_checkpoints  # noqa: E402
from spiritlens.synthetic.toy.cache import model_dir, toy_facts  # noqa: E402
from spiritlens.tokens.trace_prompt import Row, prepare_prompt  # noqa: E402
from spiritlens.traces import Tracer, parse_noise, subject_sigma, trace_kinds  # noqa: E402
from spiritlens.traces.attribution import estimated_cells, graddrop_magnitudes  # noqa: E402

KINDS = ("hidden", "mlp", "attn")
METHODS = ("exact", "attribution", "attribution_qk")
ESTIMATES = ("attribution", "attribution_qk")
# Prompts whose total effect is below this carry indirect effects that are mostly noise; the table
# is also given over the prompts at or above it.
MIN_TE = 0.1


def attribution_flops(shape: dict, T: int, S: int) -> float:
    """Matrix-multiply FLOPs of plain AtP for all cells of one kind: the clean run (1 row) and the
    corrupted run (S rows) with full logits, as the exact engine, plus the corrupted forward again
    with autograd (logits at the last position) and its backward to the activations (about one
    forward: no weight gradients). The QK fix's extra attention patterns are not counted."""
    return forward_flops(shape, 1, T, T) + forward_flops(shape, S, T, T) + 2 * forward_flops(shape, S, T, 1)


def predicted_ratios(S: int, window: int = 10) -> dict:
    """Exact engine / AtP FLOP ratio on SpiritLM's shape for bench_trace's two prompts
    (14 tokens, subject from 3; 60 tokens, subject from 20), per kind."""
    out = {}
    for name, T, b in (("text_14_tokens", 14, 3), ("speech_60_tokens", 60, 20)):
        out[name] = {kind: round(engine_flops(SPIRITLM_SHAPE, T, b, S, kind, window)
                                 / attribution_flops(SPIRITLM_SHAPE, T, S), 1) for kind in KINDS}
        out[name]["all_kinds"] = round(sum(engine_flops(SPIRITLM_SHAPE, T, b, S, k, window) for k in KINDS)
                                       / attribution_flops(SPIRITLM_SHAPE, T, S), 1)
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    def ranks(v):
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):  # average the ranks of ties
            tied = v == value
            if tied.sum() > 1:
                r[tied] = r[tied].mean()
        return r
    rx, ry = ranks(np.asarray(x, float)), ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def top_recall(estimate: np.ndarray, exact: np.ndarray, k: int = 10, within: int = 20) -> float:
    """Share of the exact top-``k`` cells (by IE) found in the estimate's top-``within``."""
    k = min(k, len(exact))
    truth = set(np.argsort(-exact, kind="mergesort")[:k].tolist())
    found = set(np.argsort(-estimate, kind="mergesort")[:within].tolist())
    return len(truth & found) / k


def prompts(model, root: Path, facts, known_path) -> dict[str, list[dict]]:
    """The T->T and S->T prompts of the toy's facts, with their sigma."""
    from spiritlens.align import LowAlignmentConfidence
    from spiritlens.align.speech_prompt import SpeechPrompt

    text_sigma = subject_sigma(model, [r.subject for r in load_known(known_path)])
    speech = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LowAlignmentConfidence)
        for fact in facts:
            spoken = SpeechPrompt.from_audio(model, root / "speech" / f"{fact.known_id}_prompt.wav",
                                             transcript=fact.prompt, subject=fact.subject, aligner="pocketsphinx")
            speech.append((fact, spoken))
    speech_sigma = subject_sigma(model, [p.input_ids[slice(*p.subject_range)] for _, p in speech], modality="speech")
    return {
        "t2t": [dict(name=f"t2t_{f.known_id}", prompt=f.prompt, subject=f.subject, sigma=text_sigma) for f in facts],
        "s2t": [dict(name=f"s2t_{f.known_id}", prompt=p, subject=None, sigma=speech_sigma) for f, p in speech],
    }


def run(model, item: dict, kinds, method: str, args) -> tuple[dict, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    results = trace_kinds(model, item["prompt"], item["subject"], kinds=kinds, samples=args.samples, noise="3s",
                          sigma=item["sigma"], method=method)
    return results, time.process_time() - cpu, time.perf_counter() - wall


def graddrop_recall(model, group: list[dict], exact: dict, args) -> dict:
    """AtP*'s GradDrop as a ranking: recall of the exact top-10 cells within its top-20 (by
    magnitude), per kind over the group's prompts, and its CPU seconds per prompt (all kinds)."""
    recalls = {kind: [] for kind in KINDS}
    strong = {kind: [] for kind in KINDS}
    seconds = []
    for item in group:
        prepared = prepare_prompt(model, item["prompt"], item["subject"])
        rows = prepared.groups or [Row(t, [i]) for i, t in enumerate(prepared.tokens)]
        cpu = time.process_time()
        tracer = Tracer(model, prepared, samples=args.samples, noise=parse_noise("3s"), sigma=item["sigma"])
        magnitudes = {kind: graddrop_magnitudes(tracer, kind, rows) for kind in KINDS}
        seconds.append(time.process_time() - cpu)
        for kind in KINDS:
            reference = exact[item["name"], kind]
            assert [r.positions for r in reference.rows] == [r.positions for r in rows]
            cells = estimated_cells(kind, rows, reference.subject_range[0], reference.n_layers)
            index = tuple(np.array(cells).T)
            recall = top_recall(magnitudes[kind][index], reference.indirect_effects[index])
            recalls[kind].append(recall)
            if reference.total_effect >= MIN_TE:
                strong[kind].append(recall)
    return {kind: {"recall10_in_top20_mean": float(np.mean(recalls[kind])),
                   "recall10_in_top20_min": float(np.min(recalls[kind])),
                   "te_at_least_recall_mean": float(np.mean(strong[kind])) if strong[kind] else None,
                   "te_at_least_recall_min": float(np.min(strong[kind])) if strong[kind] else None,
                   "per_prompt": recalls[kind]} for kind in KINDS} | {"cpu_s_per_prompt_all_kinds": seconds}


def agreement(pairs: list[tuple]) -> dict:
    """Metrics over (exact result, estimated result) pairs of one modality, kind and method."""
    per_spearman, per_recall, errors, te_errors, pooled_x, pooled_y, signs = [], [], [], [], [], [], []
    all_spearman = []
    for exact, estimate in pairs:
        cells = estimated_cells(exact.kind, exact.rows, exact.subject_range[0], exact.n_layers)
        index = tuple(np.array(cells).T)
        x, y = estimate.indirect_effects[index], exact.indirect_effects[index]
        per_spearman.append(spearman(x, y))
        all_spearman.append(spearman(estimate.indirect_effects.ravel(), exact.indirect_effects.ravel()))
        per_recall.append(top_recall(x, y))
        error = np.abs(estimate.scores - exact.scores).max()
        errors.append(float(error))
        te = exact.total_effect
        te_errors.append(float(error / te) if te > 0 else float("nan"))
        pooled_x.extend(x.tolist())
        pooled_y.extend(y.tolist())
        big = np.abs(y) > 0.01 * abs(te)
        signs.extend((np.sign(x[big]) == np.sign(y[big])).tolist())
    finite = [s for s in per_spearman if np.isfinite(s)]
    return {
        "prompts": len(pairs),
        "cells_per_prompt": [len(estimated_cells(e.kind, e.rows, e.subject_range[0], e.n_layers)) for e, _ in pairs],
        "spearman_median": float(np.median(finite)) if finite else None,
        "spearman_min": float(np.min(finite)) if finite else None,
        "spearman_pooled": spearman(np.array(pooled_x), np.array(pooled_y)),
        "spearman_all_cells_median": float(np.nanmedian(all_spearman)),
        "recall10_in_top20_mean": float(np.mean(per_recall)),
        "recall10_in_top20_min": float(np.min(per_recall)),
        "max_abs_error": float(np.max(errors)),
        "max_abs_error_over_te_median": float(np.nanmedian(te_errors)),
        "max_abs_error_over_te_max": float(np.nanmax(te_errors)),
        "sign_agreement_big_cells": float(np.mean(signs)) if signs else None,
        "per_prompt": {"spearman": per_spearman, "recall": per_recall, "max_abs_error": errors},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", type=Path, help="a toy tree (default: the cached default toy, built on first use)")
    parser.add_argument("--known", default=os.environ.get("SPIRITLENS_KNOWN_PATH"), help="known_1000.json")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--facts", type=int, default=None, help="only the first N facts (quick runs)")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    root = args.toy or toy_checkpoints(known=args.known)
    model = HookedSpiritLM.from_pretrained(model_dir(root), dtype="float32")
    facts = toy_facts(root)[: args.facts]
    items = prompts(model, root, facts, args.known)
    # Warm-up (first-call costs: allocator, kernels).
    for method in METHODS:
        run(model, items["t2t"][0], KINDS, method, args)
    cpu = {(m, k, meth): [] for m in items for k in KINDS for meth in METHODS}
    wall = {key: [] for key in cpu}
    together = {(m, meth): [] for m in items for meth in METHODS}
    results = {}
    for rep in range(args.repeats):
        order = METHODS[rep % 3:] + METHODS[:rep % 3]
        for modality, group in items.items():
            sums = {(k, meth): [0.0, 0.0] for k in KINDS for meth in METHODS}
            for item in group:
                for kind in KINDS:
                    for method in order:
                        out, c, w = run(model, item, (kind,), method, args)
                        sums[kind, method][0] += c
                        sums[kind, method][1] += w
                        if rep == 0:
                            results[item["name"], kind, method] = out[kind]
            for (kind, method), (c, w) in sums.items():
                cpu[modality, kind, method].append(c)
                wall[modality, kind, method].append(w)
            for method in order:  # all three kinds in one call: AtP shares its gradient pass
                c_total = 0.0
                for item in group:
                    c_total += run(model, item, KINDS, method, args)[1]
                together[modality, method].append(c_total)
        print(f"repetition {rep + 1}/{args.repeats} done", file=sys.stderr)
    table = []
    for modality, group in items.items():
        for kind in KINDS:
            for method in ESTIMATES:
                pairs = [(results[item["name"], kind, "exact"], results[item["name"], kind, method]) for item in group]
                row = {"modality": modality, "kind": kind, "method": method, **agreement(pairs)}
                strong = [(e, a) for e, a in pairs if e.total_effect >= MIN_TE]
                row["with_te_at_least"] = {"te": MIN_TE, **agreement(strong)} if strong else None
                ratios = [e / a for e, a in zip(cpu[modality, kind, "exact"], cpu[modality, kind, method])]
                row.update(
                    exact_cpu_s=cpu[modality, kind, "exact"], estimate_cpu_s=cpu[modality, kind, method],
                    exact_wall_s=wall[modality, kind, "exact"], estimate_wall_s=wall[modality, kind, method],
                    time_ratio_cpu_median=statistics.median(ratios), time_ratio_cpu_range=[min(ratios), max(ratios)],
                    time_ratio_wall_median=statistics.median(
                        [e / a for e, a in zip(wall[modality, kind, "exact"], wall[modality, kind, method])]),
                )
                table.append(row)
    exact = {(item["name"], kind): results[item["name"], kind, "exact"] for g in items.values() for item in g
             for kind in KINDS}
    graddrop = {modality: graddrop_recall(model, group, exact, args) for modality, group in items.items()}
    three = {f"{m}/{meth}": v for (m, meth), v in together.items()}
    ratios3 = {f"{m}/{meth}": [e / a for e, a in zip(together[m, "exact"], together[m, meth])]
               for m in items for meth in ESTIMATES}
    example = results[items["s2t"][0]["name"], "hidden", "exact"]
    record = {
        "toy": str(root), "facts": len(facts), "samples": args.samples, "noise": "3s",
        "window": example.window, "threads": torch.get_num_threads(), "repeats": args.repeats,
        "model": {"layers": model.cfg.n_layers, "d_model": model.cfg.d_model},
        "tokens": {m: [len(results[i["name"], "hidden", "exact"].input_ids) for i in g] for m, g in items.items()},
        "rows": {m: [len(results[i["name"], "hidden", "exact"].rows) for i in g] for m, g in items.items()},
        "cpu_count": os.cpu_count(), "load_average_before": os.getloadavg()[0],
        "table": table, "all_kinds_cpu_s": three, "all_kinds_time_ratio_cpu": ratios3,
        "flop_ratio_spiritlm_7b": predicted_ratios(args.samples),
        "graddrop": graddrop,
        "total_effects": {m: [results[i["name"], "hidden", "exact"].total_effect for i in g] for m, g in items.items()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    print(markdown(record))
    for modality, kinds in graddrop.items():
        print(modality, "GradDrop recall mean/min:", {k: (round(v["recall10_in_top20_mean"], 2),
                                                         round(v["recall10_in_top20_min"], 2))
                                                     for k, v in kinds.items() if k in KINDS})
    return 0


def markdown(record: dict) -> str:
    lines = ["| direction | kind | method | Spearman median / min (all 12; TE >= 0.1) | top-10 recall in top-20 "
             "mean / min (all; TE >= 0.1) | max abs error (probability; / TE, median) | sign agreement "
             "| CPU time ratio (range) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in record["table"]:
        strong = row["with_te_at_least"] or {key: float("nan") for key in (
            "spearman_median", "spearman_min", "recall10_in_top20_mean", "recall10_in_top20_min")} | {"prompts": 0}
        lines.append(
            f"| {row['modality']} | {row['kind']} | {row['method']} | {row['spearman_median']:.2f} / "
            f"{row['spearman_min']:.2f}; {strong['spearman_median']:.2f} / {strong['spearman_min']:.2f} "
            f"({strong['prompts']}) | {row['recall10_in_top20_mean']:.2f} / {row['recall10_in_top20_min']:.2f}; "
            f"{strong['recall10_in_top20_mean']:.2f} / {strong['recall10_in_top20_min']:.2f} "
            f"| {row['max_abs_error']:.2f} ({row['max_abs_error_over_te_median']:.1f}) "
            f"| {row['sign_agreement_big_cells']:.2f} | {row['time_ratio_cpu_median']:.1f}x "
            f"({row['time_ratio_cpu_range'][0]:.1f}-{row['time_ratio_cpu_range'][1]:.1f}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
