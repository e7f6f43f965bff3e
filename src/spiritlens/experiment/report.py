"""The experiment's outputs after tracing: AIE tables and figures, samples, and ``report.md``.

The report explains itself: what the model is (real checkpoints, the toy SpiritLM with what it was
trained on and how well it knows its facts, or random weights), the settings (with the window
rule), the data and filter counts, the definitions of TE, IE, AIE and the six token categories,
each S->T alignment's confidence, the AIE tables and figures, and a paragraph of findings computed
from the aggregates by :func:`findings` (nothing in it is written by hand).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path

from spiritlens.aggregates.ci import ci_formula
from spiritlens.figures.escape import md_quoted, md_text
from spiritlens._io import write_atomic
from spiritlens.experiment.prepared import PreparedRun
from spiritlens.figures.alignment import plot_speech_prompt
from spiritlens.figures.heatmap import plot_trace_heatmap
from spiritlens.terms import DIRECTION_MODALITY

_LABEL = {"t2t": "T→T", "s2t": "S→T"}
_KIND_WORDS = {"hidden": "Hidden states", "mlp": "MLP outputs", "attn": "Attention outputs"}
SUBJECT_CATEGORIES = ("first_subject", "middle_subject", "last_subject")
AFTER_CATEGORIES = ("first_subsequent", "further")

DEFINITIONS = [
    "## What the numbers mean", "",
    "Causal tracing (Meng et al., 2022, ROME) runs each prompt three ways: *clean*; *corrupted*, with Gaussian "
    "noise (ν = the `noise` rule, e.g. 3σ) added to the input embeddings of the subject's tokens, the same draw "
    "for every cell; and *restored*, corrupted but with one state set back to its clean value. The metric is "
    "p(answer) at the last position, averaged over the noise samples; the answer is the token the Known filter "
    "judged: the first token of the model's greedy continuation under SpiritLM's text rule (the top-1 text token "
    "of the clean run), so each trace measures the answer that was checked.",
    "",
    "- **TE** (total effect) = p_clean(answer) − p_corrupted(answer) = `high_score` − `low_score`.",
    "- **IE** (indirect effect) of row t at layer l = p(answer) with that state restored − `low_score`. "
    "Hidden states restore `blocks.l.hook_resid_post` at t; MLP and attention restore `hook_mlp_out` / "
    "`hook_attn_out` at t for a window of layers centred on l.",
    "- **AIE** (average indirect effect) of a token category c at layer l = the mean, over the kept prompts "
    "that have category c, of each prompt's mean IE over its rows of c (each against its own `low_score`; an IE "
    "within float32 rounding counts as 0). ROME's rollup (every row of c pooled, minus the mean `low_score`) "
    "is `aie` in `aie.json`. **ATE** = mean `high_score` − mean `low_score`.",
    "- The **six token categories** (rows before the subject, such as `<s>` and a modality marker, and S→T rows in "
    "silence belong to none): *first subject token*; *middle subject tokens* (between first and last); "
    "*last subject token*; *first subsequent token* (right after the subject); *further tokens* (after that, "
    "before the last); *last token* (the final position: the last prompt word for T→T, the text marker "
    "for S→T). A one-token subject is both first and last subject token.",
    "- S→T rows are the speech tokens aligned to each LM text token of the transcript, restored together.",
    "",
]


def write_report(experiment, prep: PreparedRun, summary: dict) -> Path:
    """Aggregate every result under ``results/``, draw the figures, write ``report.md``; its path. With a
    backbone, ``summary["comparison"]`` receives the comparison (``aggregate/comparison.json``'s document)."""
    from spiritlens.aggregates import load_results
    from spiritlens.aggregates.aie import group_labels
    from spiritlens.experiment.report_baseline import report_section as baseline_section
    from spiritlens.figures.outputs import write_aggregate_outputs

    out, config = experiment.out, experiment.config
    paths, problems = experiment.current_results(prep)  # this run's results, verified under its run keys
    results = load_results(paths, problems)
    from spiritlens.models import get_family

    model_label = get_family(prep.family).label if prep.family else "SpiritLM"  # prepare.json before --model: SpiritLM
    lines = [f"# spiritlens: factual recall in {md_text(model_label)}, text → text and speech → text", ""]
    lines += _model_section(prep, config)
    sigma = (prep.sigma or {})
    window = (prep.window or config.window)
    lines += ["## Setup", "",
              f"- model: {md_text(prep.model_dir)} ({md_text(prep.dtype)}, {(prep.n_layers or '?')} layers); "
              f"aligner: {md_text(prep.aligner)} ({md_text(config.mapping)} mapping)",
              f"- Known: {prep.n_known} records from {md_text(prep.known_source)}, {len(prep.records)} used",
              f"- noise {md_text(config.noise)}; sigma text {_num(sigma.get('text'))}, speech {_num(sigma.get('speech'))} "
              f"(S→T uses the {config.speech_sigma} sigma); samples {config.samples}; seed {config.seed}; "
              f"kinds {', '.join(config.kinds)}; S→T rows: {config.row_mode}",
              f"- window {window} ({(prep.window_rule or 'given')}): MLP/attention rows restore the outputs of "
              f"{window} layer(s) around the centre layer, truncated at the ends", "",
              "## Data", ""]
    if prep.tts is not None:
        tts = prep.tts
        lines.append(f"- speech synthesis ({md_text(tts['backend'])}, voice {md_text(tts['voice'])}): "
                     f"{tts['synthesized']} synthesised, "
                     f"{tts['reused']} reused from the cache, {len(tts['failed'])} failed")
        wer = (prep.wer or {})
        lines.append(f"- WER check ({md_text(wer.get('asr'))}): "
                     + (f"corpus WER {wer['corpus_wer']:.3f} (per item in `wer.json`)"
                        if wer.get("computed") else f"not computed: {md_text(wer.get('reason'))}"))
        if wer.get("computed") and wer.get("asr") == "pocketsphinx":
            lines.append("  (pocketsphinx's WER measures its small US-English model as much as the audio: on 40 Known "
                         "prompts it was 0.87 on espeak-ng's voice and 0.30 on flite's awb voice. Forced alignment, "
                         "which is given the transcript, is measured against the synthesiser's own word times "
                         "instead: README, \"Speech: spoken form, ground truth, alignment\".)")
    for modality, counts in prep.filter.items():
        lines.append(f"- Known-{md_text(modality)}: judgements {md_text(counts)}; kept {summary['kept'].get(modality, 0)}"
                     + (" (every prompt kept: --keep-all)" if config.keeps_all else " (greedy answer judged exact)")
                     + f" (`filter/known-{modality}.json`)")
    lines += ["", "## Tracing", "",
              f"- traced {summary['traced']} prompts in this run, {summary['already_done']} were already done, "
              f"{len(summary['failed'])} failed, {len(summary['skipped'])} skipped before tracing"]
    lines += [f"  - failed {md_text(f['item'])}: {md_text(f['reason'])}" for f in summary["failed"][:30]]
    lines += [f"  - skipped \\[{md_text(s['stage'])}\\] {md_text(s.get('modality', ''))} {md_text(s['known_id'])}: "
              f"{md_text(s['reason'])}"
              for s in summary["skipped"][:30]]
    lines += [f"  - unreadable result skipped: {md_text(p)}" for p in problems[:10]]
    recomputed = recomputed_lines(summary.get("recomputed"))
    if recomputed:
        lines += ["- computed again instead of reused (resume trusts only what it can verify: README, \"Resuming\"):"]
        lines += [f"  - {md_text(line)}" for line in recomputed[:30]]
    lines += screen_section(summary.get("screen"))
    lines += [""] + DEFINITIONS
    lines += alignment_section(results)
    lines += ["## Average indirect effects", ""]
    by_modality: dict = {}
    outputs = None
    if results:
        try:
            outputs = write_aggregate_outputs(results, out / "aggregate")
        except ValueError as error:
            lines.append(f"No aggregate: {md_text(error)}.")
        else:
            by_modality = outputs.by_modality
            lines += ["### What the traces show", ""]
            for paragraph in findings(outputs.by_modality):
                lines += [paragraph, ""]
            labels = group_labels(outputs.by_modality)
            lines += ["| modality | kind | prompts | ATE | AIE (per-prompt effects, 95% CI) |", "|---|---|---|---|---|"]
            for modality, kinds in outputs.by_modality.items():
                for kind, agg in kinds.items():
                    lines.append(f"| {labels[modality]} | {kind} | {agg.count} | {_num(agg.ate)} | "
                                 f"{agg.describe_peak()} |")
            lines += ["", "Tables: " + ", ".join(f"[`{n}`](aggregate/{n})" for n in outputs.written if not n.endswith(".png")),
                      "", "![AIE, log scale](aggregate/aie_grid_log.png)", "",
                      "![AIE, linear](aggregate/aie_grid_linear.png)", "",
                      "![AIE lines](aggregate/aie_lines.png)", "",
                      *(["Rows, as the paper's Figure 2: the backbone's T→T, SpiritLM's T→T, SpiritLM's S→T, each over "
                         "the prompts that model kept; one colour scale per kind across the rows.", ""]
                        if "backbone" in outputs.by_modality else []),
                      "The figures draw each category's AIE as the mean over prompts of the prompt's own effect "
                      "(its category rows against its own corrupted score); in the line plots the shaded band is the "
                      f"95% confidence interval of that mean, {ci_formula('prompts')}, drawn where it has a width.",
                      ""]
    else:
        lines.append("No results to aggregate.")
    summary["comparison"] = None if outputs is None else outputs.comparison
    lines += baseline_section(prep, config, summary["comparison"], None if outputs is None else outputs.by_modality)
    if summary.get("crossmodal") is not None:
        from spiritlens.experiment.report_crossmodal import report_section

        lines += report_section(out)
        if "error" in summary["crossmodal"]:
            lines += [f"The cross-modal analyses of this run stopped: {md_text(summary['crossmodal']['error'])}.", ""]
    if summary.get("expressive") is not None:
        from spiritlens.experiment.report_expressive import report_section as expressive_section

        lines += expressive_section(experiment, prep, summary["expressive"], by_modality)
    lines += ["## Sample prompts", ""] + _samples(experiment, prep, results)
    path = write_atomic(out / "report.md", "\n".join(lines) + "\n")
    return path


def screen_section(screen: dict | None) -> list[str]:
    """The ``--screen`` lines of the Tracing section: what the scores are, and per prompt how many of the
    screen's top cells the exact trace confirmed (nothing without a screen)."""
    if screen is None:
        return []
    lines = [f"- scores are attribution-patching estimates (`{screen['screen']}`: first-order, one backward pass "
             "per prompt), not restored runs; the aggregates and figures below average those estimates"]
    if screen["verify_top"] is None:
        return lines
    totals = ", ".join(f"{kind} {c}/{n}" for kind, (c, n) in screen["confirmed_of_verified"].items())
    lines.append(f"- verification: the top {screen['verify_top']} screened cells (by {screen.get('rank', 'estimate')}) "
                 "of every prompt and kind traced "
                 f"exactly; confirmed ({screen['confirm_rule']}): {totals}")
    lines += ["", "| prompt | " + " | ".join(screen["confirmed_of_verified"]) + " |",
              "|---|" + "---|" * len(screen["confirmed_of_verified"])]
    for item, kinds in sorted(screen["per_prompt"].items()):
        cells = [f"{kinds[k][0]}/{kinds[k][1]}" if k in kinds else "–" for k in screen["confirmed_of_verified"]]
        lines.append(f"| {item} | " + " | ".join(cells) + " |")
    return lines


def _model_section(prep: PreparedRun, config) -> list[str]:
    weights = prep.weights or ("random" if prep.embedded else "checkpoints")
    if weights == "random":
        return ["> **Random weights.** This run used the embedded tiny SpiritLM checkpoints, whose weights are",
                "> random: the numbers and figures show that the pipeline works end to end, not anything about",
                "> SpiritLM. Point `SPIRITLM_CHECKPOINTS_DIR` (or `--checkpoints`) at real checkpoints and pass",
                "> `--aligner` for the real experiment.", ""]
    if getattr(config, "model", None) is not None:  # --model: a folder of any family
        from spiritlens.models import get_family

        label = get_family(prep.family).label if prep.family else "model"
        speech = f", speech tokenizer {md_text(prep.speech_tokenizer)}" if prep.speech_tokenizer else ""
        return ["## Model", "", f"{md_text(label)} model folder {md_text(prep.model_dir)} (`--model`{speech}).", ""]
    if weights != "toy" or prep.toy is None:
        return ["## Model", "", f"SpiritLM checkpoints {md_text(prep.model_dir)} (variant {md_text(config.variant)}).", ""]
    toy = prep.toy
    cfg, training = toy["config"], toy["training"]
    relations = sorted({f.get("relation_id", "") for f in toy["facts"]})
    forms = ", ".join(f"{n} {form}" for form, n in training.get("sequences", {}).items())
    accuracy = "; ".join(f"{_LABEL.get(m, m)} {a:.0%} ({toy['counts'][m]['exact']}/{toy['counts'][m]['total']})"
                         for m, a in toy["accuracy"].items())
    lines = ["> **The toy SpiritLM.** This run traced a small model that spiritlens trained itself on the Known facts",
             "> below, not Meta's SpiritLM: it shows what causal tracing finds in a model whose answers come from",
             "> the subject. Point `SPIRITLM_CHECKPOINTS_DIR` (or `--checkpoints`) at real checkpoints for the paper's",
             "> experiment.", "",
             "## Model", "",
             f"- the toy SpiritLM (`spiritlens.synthetic.toy.build`) at {md_text(toy['root'])} (inputs hash {md_text(toy['hash'][:12])}): a Llama in "
             f"SpiritLM's checkpoint layout, {cfg['n_layers']} layers, d_model {cfg['d_model']}, {cfg['n_heads']} heads, "
             f"MLP {cfg['d_mlp']}; tokenizer with SpiritLM's markers and HuBERT unit tokens; the tiny random mHuBERT "
             "speech front end",
             f"- trained on {len(toy['facts'])} Known facts of {len(relations)} relations "
             f"({md_text(', '.join(relations))}) as sequences: {md_text(forms)}; plus {toy['distractor_prompts']} distractor prompts (unknown subjects, random "
             "answers)",
             f"- by design, attention is off in its first {cfg.get('local_layers', 0)} layers (zero output "
             "projections): there each position sees only its own token, so only the subject's own positions can "
             "carry the subject, and the last token can get it only from a later layer. A tracer should find "
             "exactly that" if cfg.get("local_layers") else "- attention in every layer",
             f"- trained in {training.get('seconds')} s, {training.get('steps')} steps ({training.get('stop')}); "
             f"greedy answers judged exact by the Known filter: {accuracy}"
             + ("" if toy.get("meets_targets") else " (BELOW the targets 90% / 70%)"), ""]
    return lines


def alignment_section(results: list[dict]) -> list[str]:
    """Each S->T prompt's alignment confidence, and how many the aligner warned about (its own
    threshold: mean per-frame probability under 0.5 for CTC; goodness of pronunciation under 0.05
    or coverage under 90% for pocketsphinx, :mod:`spiritlens.align.pocketsphinx`)."""
    from spiritlens.align import DEFAULT_MIN_CONFIDENCE

    seen: dict[str, dict] = {}
    for result in results:
        if result.get("modality") == "speech" and "alignment_confidence" in result:
            seen.setdefault(str(result.get("known_id", result.get("name"))), result)
    if not seen:
        return []

    def low(r: dict) -> bool:
        if "alignment_low_confidence" in r:
            return bool(r["alignment_low_confidence"])
        return float(r["alignment_confidence"]) < DEFAULT_MIN_CONFIDENCE  # results written before the flag

    from spiritlens.align import pocketsphinx

    rules = {"ctc": f"the CTC aligner's confidence is the mean per-frame probability of its path, and the CTC aligner "
                    f"warns under {DEFAULT_MIN_CONFIDENCE}",
             "pocketsphinx": f"pocketsphinx's confidence is exp(mean per-frame log-likelihood ratio of the forced "
                             f"path against its free phone loop); it warns under {pocketsphinx.DEFAULT_MIN_CONFIDENCE} "
                             f"or when the aligned words cover under {pocketsphinx.MIN_COVERAGE:.0%} of the speech"}
    aligners = sorted({str(r.get("aligner", "?")) for r in seen.values()})
    rule = "; ".join(rules[kind] for kind in sorted({"pocketsphinx" if a == "pocketsphinx" else "ctc" for a in aligners}))
    flagged = [k for k, r in seen.items() if low(r)]
    coverage = any(r.get("alignment_coverage") is not None for r in seen.values())
    lines = ["## S→T alignment", "",
             f"Forced alignment ({md_text(', '.join(aligners))}) of each transcript to its audio locates the subject's speech "
             f"tokens; {rule}. **{len(flagged)} of {len(seen)}** S→T alignments were flagged"
             + (" (their subject positions are unreliable; they are traced and averaged like the others, so read "
                "their rows with care or rerun without them)." if flagged else "."), "",
             "| Known id | confidence |" + (" coverage |" if coverage else "") + " flagged |",
             "|---|---|" + ("---|" if coverage else "") + "---|"]
    for key, r in sorted(seen.items(), key=lambda kv: _sort_key(kv[0])):
        cov = r.get("alignment_coverage")
        lines.append(f"| {md_text(key)} | {float(r['alignment_confidence']):.3f} |"
                     + ((" – |" if cov is None else f" {cov:.0%} |") if coverage else "")
                     + f" {'yes' if low(r) else 'no'} |")
    return lines + [""]


def _sort_key(text: str):
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def _peak(agg, categories, layers: range | None = None, values_of: str = "effect") -> tuple[str, int, float] | None:
    """(category, layer, value) of the largest ``agg.effect`` (the per-prompt AIE; or another per-category
    field) among ``categories`` (and ``layers``), or None."""
    best = None
    aie = getattr(agg, values_of)
    for category in categories:
        values = aie[category]
        for layer in layers or range(len(values)):
            value = float(values[layer])
            if not math.isnan(value) and (best is None or value > best[2]):
                best = (category, layer, value)
    return best


def _where(peak) -> str:
    category, layer, value = peak
    return f"{value:.3f} at the {category.replace('_', ' ')} token{'s' if category in ('middle_subject', 'further') else ''}, layer {layer}"


def findings(by_modality: Mapping[str, Mapping]) -> list[str]:
    """One paragraph per modality stating what the aggregates show, computed from them: the prompt count,
    mean p(answer) clean and corrupted and the ATE; per kind where the largest AIE lies, the largest
    at a subject token against the largest after the subject in the first half of the layers (where
    ROME finds the early site), and whether the subject site leads."""
    from spiritlens.aggregates import CATEGORIES
    from spiritlens.aggregates.aie import FLOOR_ULPS, group_labels

    paragraphs = []
    labels = group_labels(by_modality)
    for modality, kinds in by_modality.items():
        sentences: list[str] = []
        paragraphs.append(sentences)
        if not kinds:
            continue
        first = next(iter(kinds.values()))
        label = labels[modality]
        if first.count == 0:
            sentences.append(f"{label}: no kept prompts.")
            continue
        sentences.append(f"{label} ({first.count} prompt{'' if first.count == 1 else 's'}): corrupting the subject lowers p(answer) from "
                         f"{first.high_score_mean:.3f} to {first.low_score_mean:.3f} on average (ATE {first.ate:.3f}).")
        for kind, agg in kinds.items():
            if agg.no_effect:  # nothing to locate: no peak is named
                sentences.append(f"{_KIND_WORDS.get(kind, kind)}: no effect; every restored cell's indirect effect "
                                 f"is within float32 rounding of 0 ({FLOOR_ULPS} ulps of p(answer)).")
                continue
            overall = _peak(agg, CATEGORIES)
            if overall is None:
                continue
            early = range(0, max(1, math.ceil(agg.n_layers / 2)))
            # Every value is the per-prompt AIE (each prompt against its own corrupted score), so a
            # category only some prompts have does not inherit their low-score difference.
            subject = _peak(agg, SUBJECT_CATEGORIES, early)
            after = _peak(agg, AFTER_CATEGORIES, early)
            text = f"{_KIND_WORDS.get(kind, kind)}: the largest AIE is {_where(overall)}"
            values = agg.effect[overall[0]]
            onset = next(layer for layer, v in enumerate(values) if v >= 0.9 * overall[2])
            text += f" (90% of it from layer {onset})." if onset < overall[1] else "."
            if subject is not None:
                text += f" In layers 0-{early[-1]} the largest at a subject token is {_where(subject)}"
                if after is not None:
                    ratio = subject[2] / after[2] if after[2] > 0 else math.inf
                    relation = ("larger than" if subject[2] > after[2] else "not larger than")
                    s_ci, a_ci = float(agg.ci[subject[0]][subject[1]]), float(agg.ci[after[0]][after[1]])
                    overlap = (math.isfinite(s_ci) and math.isfinite(a_ci)
                               and abs(subject[2] - after[2]) <= s_ci + a_ci)  # the two 95% CIs overlap
                    text += (f", {relation} the largest after the subject ({_where(after)}"
                             + (f"; ratio {ratio:.1f}" if math.isfinite(ratio) and subject[2] > 0 else "")
                             + ("; their 95% CIs overlap" if overlap else "") + ")")
                text += "."
            shifted = _baseline_shift(agg)
            if shifted is not None:
                category, layer, aie, own = shifted
                text += (f" (ROME's AIE for the {category.replace('_', ' ')} tokens is {aie:.3f} at layer {layer}, "
                         f"where their rows' own IE is {own:.3f}: the prompts that have them are corrupted to a "
                         "different score than the average that ROME's AIE subtracts.)")
            sentences.append(text)
    if any(paragraphs):
        paragraphs[-1].append("Every AIE here, in the table and in the figures is the mean over prompts of each "
                              "prompt's effect against its own corrupted score (aie.json also keeps ROME's pooled AIE).")
    return [" ".join(p) for p in paragraphs if p]


def _baseline_shift(agg, threshold: float = 0.02) -> tuple[str, int, float, float] | None:
    """(category, layer, ROME's AIE, per-prompt AIE) where ROME's AIE differs most from the per-prompt AIE
    (each prompt's rows against its own corrupted score), if by more than ``threshold`` (absolute
    p(answer)); None otherwise."""
    worst = None
    for category, values in agg.aie.items():
        own = agg.effect.get(category)
        if own is None:
            continue
        for layer, (a, r) in enumerate(zip(values, own)):
            if not (math.isnan(a) or math.isnan(r)) and abs(a - r) > threshold and (
                    worst is None or abs(a - r) > abs(worst[2] - worst[3])):
                worst = (category, layer, float(a), float(r))
    return worst


def _samples(experiment, prep: PreparedRun, results: list[dict]) -> list[str]:
    out, config = experiment.out, experiment.config
    lines = []
    by_item: dict[tuple[str, int], dict[str, dict]] = {}
    for result in results:
        key = (result.get("experiment_modality"), result.get("known_id"))
        if key[0] is not None:
            by_item.setdefault(key, {})[result["kind"]] = result
    for modality in config.modalities:
        traced = {kid: by_item[(modality, kid)] for kid in prep.kept.get(modality, []) if (modality, kid) in by_item}
        ids = sample_ids(list(traced), traced, config.sample_figures)
        if ids:
            lines += [f"{_LABEL[modality]}: the {len(ids)} kept prompt{'s' if len(ids) > 1 else ''} with the largest "
                      "total effect (p_clean − p_corrupted of the answer), whose heatmaps have the most to show.", ""]
        for kid in ids:
            record = prep.records[str(kid)]
            lines.append(f"### {_LABEL[modality]} {md_text(kid)}: {md_quoted(record['prompt'])} (subject "
                         f"{md_quoted(record['subject'])}, attribute {md_quoted(record['attribute'])})")
            lines.append("")
            for kind, result in sorted(by_item[(modality, kid)].items()):
                name = f"figures/heatmap_{modality}_{kid}_{kind}.png"
                plot_trace_heatmap(result, out / name)
                lines.append(f"![{kind}]({name})")
            lines += _alignment_figure(experiment, prep, modality, kid)
            lines += _circuits_view(out, modality, kid, by_item[(modality, kid)])
            lines.append("")
    return lines or ["No traced prompts."]


def sample_ids(ids: list[int], results: Mapping[int, Mapping[str, dict]], n: int) -> list[int]:
    """The ``n`` of ``ids`` with the largest total effect (``high_score - low_score`` of the hidden
    result, else of any kind), ties in the given order."""
    def total_effect(kid: int) -> float:
        result = results[kid].get("hidden") or next(iter(results[kid].values()))
        return float(result["high_score"]) - float(result["low_score"])

    order = {kid: i for i, kid in enumerate(ids)}
    return sorted(ids, key=lambda kid: (-total_effect(kid), order[kid]))[:n]


def _alignment_figure(experiment, prep: PreparedRun, modality: str, kid: int) -> list[str]:
    if DIRECTION_MODALITY[modality] != "speech":
        return []
    name = f"figures/alignment_{kid}.png"
    try:
        plot_speech_prompt(experiment.models(prep).speech_prompt(kid), experiment.out / name)
    except (ValueError, OSError) as error:
        return [f"(alignment figure not drawn: {md_text(error)})"]
    return [f"![alignment]({name})"]


def _circuits_view(out: Path, modality: str, kid: int, results: dict[str, dict]) -> list[str]:
    result = results.get("hidden") or next(iter(results.values()))
    name = f"figures/circuits_{modality}_{kid}.html"
    try:
        from spiritlens.figures.circuits import write_trace_tokens_html

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_trace_tokens_html(result, out / name)
    except ImportError as error:
        return [f"(circuitsvis view not written: {md_text(error)})"]
    return ["", f"[per-token effects (circuitsvis)]({name})"]


def _num(value) -> str:
    return "–" if value is None or value != value else f"{value:.4g}"


def recomputed_lines(recomputed: dict | None) -> list[str]:
    """What this run computed again instead of reusing, and why, one line each (summary and report):
    ``"12 trace results recomputed: model weights changed"``."""
    if not recomputed:
        return []
    lines = list(recomputed.get("prepare", []))
    for what, counts in (("trace result", recomputed.get("traces", {})),
                         ("cross-modal result", recomputed.get("crossmodal", {})),
                         ("prosody-control item", recomputed.get("expressive", {}))):
        lines += [f"{n} {what}{'s' if n != 1 else ''} recomputed: {reason}" for reason, n in counts.items()]
    return lines
