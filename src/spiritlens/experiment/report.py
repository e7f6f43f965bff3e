"""The experiment's outputs after tracing: AIE tables and figures, samples, and ``report.md``."""

from __future__ import annotations

import warnings
from pathlib import Path

from .._io import write_atomic
from .config import MODALITY_OF

_LABEL = {"t2t": "T→T", "s2t": "S→T"}


def write_report(experiment, prep: dict, summary: dict) -> Path:
    """Aggregate every result under ``results/``, draw the figures, write ``report.md``; its path."""
    from ..aggregates import MODALITY_LABELS, load_results
    from ..aggregates.outputs import write_aggregate_outputs

    out, config = experiment.out, experiment.config
    problems: list[str] = []
    results = load_results(experiment.results_dir, problems) if experiment.results_dir.is_dir() else []
    lines = ["# spiritlens: factual recall in SpiritLM, text → text and speech → text", ""]
    if prep["embedded"]:
        lines += ["> **Random weights.** This run used the embedded tiny SpiritLM checkpoints, whose weights are",
                  "> random: the numbers and figures show that the pipeline works end to end, not anything about",
                  "> SpiritLM. Point `SPIRITLM_CHECKPOINTS_DIR` (or `--checkpoints`) at real checkpoints and pass",
                  "> `--aligner` for the real experiment.", ""]
    sigma = prep.get("sigma", {})
    lines += ["## Setup", "",
              f"- model: `{prep['model_dir']}` ({config.dtype}); aligner: `{prep['aligner']}` ({config.mapping} mapping)",
              f"- Known: {prep['n_known']} records from `{prep['known_source']}`, {len(prep['records'])} used",
              f"- noise `{config.noise}`; sigma text {_num(sigma.get('text'))}, speech {_num(sigma.get('speech'))} "
              f"(S→T uses the {config.speech_sigma} sigma); samples {config.samples}; seed {config.seed}; "
              f"window {config.window}; kinds {', '.join(config.kinds)}; S→T rows: {config.row_mode}",
              "", "## Data", ""]
    if "tts" in prep:
        tts = prep["tts"]
        lines.append(f"- speech synthesis ({tts['backend']}, voice {tts['voice']}): {tts['synthesized']} synthesised, "
                     f"{tts['reused']} reused from the cache, {len(tts['failed'])} failed")
        wer = prep.get("wer", {})
        lines.append(f"- WER check ({wer.get('asr')}): " + (f"corpus WER {wer['corpus_wer']:.3f} (per item in `wer.json`)"
                                                            if wer.get("computed") else f"not computed: {wer.get('reason')}"))
    for modality, counts in prep["filter"].items():
        lines.append(f"- Known-{modality}: judgements {counts}; kept {summary['kept'].get(modality, 0)}"
                     + (" (every prompt kept: --keep-all)" if config.keep_all else "")
                     + f" (`filter/known-{modality}.json`)")
    lines += ["", "## Tracing", "",
              f"- traced {summary['traced']} prompts in this run, {summary['already_done']} were already done, "
              f"{len(summary['failed'])} failed, {len(summary['skipped'])} skipped before tracing"]
    lines += [f"  - failed `{f['item']}`: {f['reason']}" for f in summary["failed"][:30]]
    lines += [f"  - skipped [{s['stage']}] {s.get('modality', '')} {s['known_id']}: {s['reason']}"
              for s in summary["skipped"][:30]]
    lines += [f"  - unreadable result skipped: {p}" for p in problems[:10]]
    lines += ["", "## Average indirect effects", ""]
    if results:
        try:
            outputs = write_aggregate_outputs(results, out / "aggregate")
        except ValueError as error:
            lines.append(f"No aggregate: {error}.")
        else:
            lines += ["| modality | kind | prompts | ATE | peak AIE (category, layer) |", "|---|---|---|---|---|"]
            for modality, kinds in outputs.by_modality.items():
                for kind, agg in kinds.items():
                    peak = agg.peak()
                    where = "–" if peak is None else f"{peak[2]:.4g} ({peak[0]}, {peak[1]})"
                    label = MODALITY_LABELS.get(modality, modality)
                    lines.append(f"| {label} | {kind} | {agg.count} | {_num(agg.ate)} | {where} |")
            lines += ["", "Tables: " + ", ".join(f"[`{n}`](aggregate/{n})" for n in outputs.written if not n.endswith(".png")),
                      "", "![AIE, log scale](aggregate/aie_grid_log.png)", "",
                      "![AIE, linear](aggregate/aie_grid_linear.png)", "", "![AIE lines](aggregate/aie_lines.png)", ""]
    else:
        lines.append("No results to aggregate.")
    lines += ["## Sample prompts", ""] + _samples(experiment, prep, results)
    path = write_atomic(out / "report.md", "\n".join(lines) + "\n")
    return path


def _samples(experiment, prep: dict, results: list[dict]) -> list[str]:
    from ..figures.heatmap import plot_trace_heatmap

    out, config = experiment.out, experiment.config
    lines = []
    by_item: dict[tuple[str, int], dict[str, dict]] = {}
    for result in results:
        key = (result.get("experiment_modality"), result.get("known_id"))
        if key[0] is not None:
            by_item.setdefault(key, {})[result["kind"]] = result
    for modality in config.modalities:
        ids = [kid for kid in prep["kept"].get(modality, []) if (modality, kid) in by_item][:config.sample_figures]
        for kid in ids:
            record = prep["records"][str(kid)]
            lines.append(f"### {_LABEL[modality]} {kid}: {record['prompt']!r} (subject {record['subject']!r}, "
                         f"attribute {record['attribute']!r})")
            lines.append("")
            for kind, result in sorted(by_item[(modality, kid)].items()):
                name = f"figures/heatmap_{modality}_{kid}_{kind}.png"
                plot_trace_heatmap(result, out / name)
                lines.append(f"![{kind}]({name})")
            lines += _alignment_figure(experiment, prep, modality, kid)
            lines += _circuits_view(out, modality, kid, by_item[(modality, kid)])
            lines.append("")
    return lines or ["No traced prompts."]


def _alignment_figure(experiment, prep: dict, modality: str, kid: int) -> list[str]:
    if MODALITY_OF[modality] != "speech":
        return []
    name = f"figures/alignment_{kid}.png"
    try:
        experiment._speech_prompt(prep, kid).plot_alignment(experiment.out / name)
    except (ValueError, OSError) as error:
        return [f"(alignment figure not drawn: {error})"]
    return [f"![alignment]({name})"]


def _circuits_view(out: Path, modality: str, kid: int, results: dict[str, dict]) -> list[str]:
    result = results.get("hidden") or next(iter(results.values()))
    name = f"figures/circuits_{modality}_{kid}.html"
    try:
        from ..figures.circuits import write_trace_tokens_html

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_trace_tokens_html(result, out / name)
    except ImportError as error:
        return [f"(circuitsvis view not written: {error})"]
    return ["", f"[per-token effects (circuitsvis)]({name})"]


def _num(value) -> str:
    return "–" if value is None or value != value else f"{value:.4g}"
