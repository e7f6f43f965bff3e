"""The Known experiment end to end: data, speech, filtering, tracing (sharded, resumable), outputs.

Stages, all writing under ``config.out``:

1. **prepare** (rank 0): Known records (problems reported), speech synthesis of every prompt,
   subject and attribute (cached), the WER check, greedy-generation filtering into Known-t2t /
   Known-s2t, and sigma (text: ROME's rule over every Known subject; speech: the subjects' speech
   tokens of the Known-s2t prompts). Written to ``prepare.json``.
2. **trace** (every rank): the work items (modality, prompt) in a fixed order, rank ``r`` of
   ``w`` taking items ``r, r+w, ...``; each kind's result is written atomically to
   ``results/<modality>/<known_id>_<kind>.json``. A rerun keeps a finished result only when it verifies
   under this run's run key (:mod:`spiritlens.runkey`: checksum, arrays, validation, and the key of
   the model files, dtype, device, method, noise, sigma, samples, seed, window and the row); anything
   else is recomputed and the summary says why. A failure on one item is recorded and the run goes on.
3. **merge** (rank 0): AIE tables and figures, sample heatmaps and alignment figures, a
   circuitsvis view, ``report.md``, and the summary.

Sharding uses PyTorch's own launcher: under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) the ranks
meet at gloo barriers between the stages; the output folder must be shared by all ranks.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from spiritlens._io import read_json, sweep_temporaries, write_json_atomic
from spiritlens.runkey import dtype_name, file_digest, reason_counts, run_key
from spiritlens.checkpoints.tree import resolve_dtype
from spiritlens.experiment import distributed
from spiritlens.experiment.checkpoints import resolve_checkpoints, toy_info, weights_kind
from spiritlens.experiment.config import (
    DIRECTION_MODALITY,
    WINDOW_RULE,
    ExperimentConfig,
    check_environment,
)
from spiritlens.data.filtering import filter_known, known_prompt
from spiritlens.experiment.crossmodal import run_experiment_dir
from spiritlens.experiment.baseline import (
    BACKBONE_DIRECTION,
    backbone_items,
    backbone_result_key,
    backbone_summary,
    backbone_trace_inputs,
    prepare_backbone,
    release_backbone,
)
from spiritlens.traces.attribution import CONFIRM_RULE
from spiritlens.experiment.prepared import PreparedRun, RunModels, record_failure
from spiritlens.traces.noise import parse_noise
from spiritlens.traces.window import check_window

EMBEDDED_PROMPTS = 6


class Experiment:
    """One run; see the module docstring. ``run()`` returns the summary dict (rank 0) or None."""

    def __init__(self, config: ExperimentConfig, *, progress: bool = True, log=print):
        self.config = config
        self.progress = progress
        self.log = log
        self.out = Path(config.out)
        self.rank, self.world = distributed.rank_and_world()
        self._models: RunModels | None = None
        self._backbone = None  # the baseline's model (spiritlens.experiment.baseline.BackboneModel)

    # ------------------------------------------------------------------ plumbing
    @property
    def results_dir(self) -> Path:
        return self.out / "results"

    def result_path(self, modality: str, known_id: int, kind: str) -> Path:
        return self.results_dir / modality / f"{known_id}_{kind}.json"

    def models(self, prep: PreparedRun) -> RunModels:
        """The model and aligner of this run (loaded once) and its spoken prompts."""
        if self._models is None or self._models.prep is not prep:
            previous = self._models
            self._models = RunModels(prep, dtype=prep.dtype, device=self.config.device,
                                     mapping=self.config.mapping, before_load=lambda: release_backbone(self))
            if previous is not None and previous.prep.model_dir == prep.model_dir:
                self._models._model, self._models._aligner = previous._model, previous._aligner
        return self._models

    # -------------------------------------------------------------------- stages
    def run(self) -> dict | None:
        if self.config.embedded and "OMP_NUM_THREADS" not in os.environ:
            import torch

            # The embedded models are tiny: one thread is fastest, and two threads on a busy
            # 2-core machine were several times slower (measured). $OMP_NUM_THREADS overrides.
            torch.set_num_threads(1)
        distributed.init(self.world)
        try:
            if self.rank == 0:
                prep = self.prepare()
            distributed.barrier(self.world)
            prep = PreparedRun.load(self.out)
            status = self.trace_share(prep)
            write_json_atomic(self.out / "status" / f"rank{self.rank}.json", status)
            if self.config.expressive:  # stream-aware traces and prosody controls (spiritlens.experiment.expressive)
                from spiritlens.experiment import expressive

                write_json_atomic(expressive.folder(self) / "status" / f"rank{self.rank}.json",
                                  expressive.run_share(self, prep))
            distributed.barrier(self.world)
            return self.merge(prep) if self.rank == 0 else None
        finally:
            distributed.close(self.world)

    def prepare(self) -> PreparedRun:
        """Stage 1 (rank 0): everything before tracing; writes ``prepare.json`` and returns it."""
        from spiritlens.data import KnownRecord, get_backend, load_known, select, synthesize_corpus, wer_check
        from spiritlens.traces import subject_sigma

        config, out = self.config, self.out
        _check_writable(out)
        sweep_temporaries(out)  # what a run killed mid-write left (no rank is writing during prepare)
        started = time.time()
        model_dir, speech_dir, aligner_dir = resolve_checkpoints(self.config, self.out, progress=self.progress, log=self.log)
        dtype = dtype_name(resolve_dtype(config.dtype, model_dir))  # the one dtype rule
        dataset = load_known(config.known)  # spiritlens.data.known's lookup rule when None
        skipped: list[dict] = [{"stage": "data", "known_id": kid, "reason": reason}
                               for kid, reason in dataset.problems]
        toy = toy_info(model_dir) if self.weights == "toy" else None
        pool = dataset.records if toy is None else [KnownRecord(**_record_fields(f)) for f in toy["facts"]]
        n = config.n_prompts or (EMBEDDED_PROMPTS if config.random_weights else None)
        records = list(select(pool, n, seed=config.subset_seed)) if n and n < len(pool) else list(pool)
        weights = {"random": " (RANDOM WEIGHTS: embedded tiny checkpoints)",
                   "toy": " (the toy SpiritLM, trained on these facts)"}.get(self.weights, "")
        self.log(f"[prepare] {len(records)} Known prompts ({len(dataset.problems)} records with problems), "
                 f"model {model_dir}{weights}")
        prep = PreparedRun(
            config=config.to_dict(), dtype=dtype, embedded=config.embedded, weights=self.weights, model_dir=str(model_dir),
            speech_tokenizer=None if speech_dir is None else str(speech_dir),
            aligner=None if aligner_dir is None else str(aligner_dir), known_source=str(dataset.source),
            n_known=len(dataset.records), records={str(r.known_id): r.to_dict() for r in records},
            skipped=skipped, toy=toy)
        prep.fingerprint = self.models(prep).fingerprint()  # the model part of every run key of this run
        model = self.models(prep).model()
        prep.tokenization = model.tokenization.to_dict()  # how prompt strings became ids
        prep.family = model.family.name
        if "s2t" in config.modalities:
            # Loaded (and checked: allow-listed pickles, weights against config) before any work, so a
            # bad speech-tokenizer file ends the run with one line instead of failing every prompt.
            model.speech_tokenizer  # noqa: B018 - the property loads it
        prep.n_layers = model.cfg.n_layers
        prep.window = check_window(config.window, model.cfg.n_layers)
        prep.window_rule = "given (--window)" if config.window is not None else WINDOW_RULE

        audio: dict[int, str] = {}
        if "s2t" in config.modalities:
            backend = get_backend(config.tts)
            items = [(f"{r.known_id}_{part}", getattr(r, part)) for r in records
                     for part in ("prompt", "subject", "attribute")]
            synthesis = synthesize_corpus(items, backend, out / "speech", progress=self.progress)
            ok = {item_id: path for item_id, _, path in synthesis.ok_items()}
            for record in records:
                path = ok.get(f"{record.known_id}_prompt")
                if path is None:
                    skipped.append({"stage": "tts", "modality": "s2t", "known_id": record.known_id,
                                    "reason": dict(synthesis.failed).get(f"{record.known_id}_prompt", "no audio")})
                else:
                    audio[record.known_id] = str(path)
            # ground truth: where the synthesiser put each spoken word of each prompt (seconds)
            prep.reference_words = {str(r.known_id): e.words for r in records for e in synthesis.entries
                                       if e.item_id == f"{r.known_id}_prompt" and e.ok}
            prep.tts = {"backend": backend.name, "voice": getattr(backend, "voice", None),
                           "synthesized": len(synthesis.synthesized), "reused": len(synthesis.reused),
                           "failed": [list(f) for f in synthesis.failed]}
            prep.recomputed += [f"speech/{synthesis.manifest_path.name}: {n} item(s) synthesised again: {reason}"
                                for reason, n in reason_counts([r for _, r in synthesis.recomputed]).items()]
            if config.asr != "none":
                prompts = [(i, t, p) for i, t, p in synthesis.ok_items() if i.endswith("_prompt")]
                check = wer_check(prompts, config.asr, out_path=out / "wer.json")
                prep.wer = {"computed": check.computed, "asr": check.asr, "reason": check.reason,
                               "corpus_wer": None if check.report is None else check.report.wer}
            else:
                prep.wer = {"computed": False, "asr": "none", "reason": "--asr none", "corpus_wer": None}
        prep.audio = {str(k): v for k, v in audio.items()}

        kept: dict[str, list[int]] = {}
        counts: dict[str, dict] = {}
        # The first generated token of each judged prompt: the answer its traces measure.
        answers: dict[str, dict[str, int]] = {m: {} for m in config.modalities}
        for modality in config.modalities:
            candidates = records if modality == "t2t" else [r for r in records if r.known_id in audio]
            result = filter_known(model, candidates, modality, audio, keep_all=config.keeps_all, accept=config.accept,
                                  max_new_tokens=config.max_new_tokens, answers=answers[modality],
                                  out_path=out / "filter" / f"known-{modality}.json", progress=self.progress,
                                  fingerprint=prep.fingerprint, notes=prep.recomputed)
            kept[modality] = [r.known_id for r in result.kept]
            counts[modality] = dict(result.counts)
            for entry in result.entries:
                if entry.error:
                    skipped.append({"stage": "filter", "modality": modality, "known_id": entry.known_id,
                                    "reason": entry.error})
        for modality, ids in kept.items():  # a kept record without a generated token (never, but cheap to be sure)
            for known_id in ids:
                if str(known_id) not in answers[modality]:
                    record = next(r for r in records if r.known_id == known_id)
                    prompt = known_prompt(record, modality, audio)
                    answers[modality][str(known_id)] = int(model.generate_ids(prompt, max_new_tokens=1)[0])
        prep.kept, prep.filter, prep.answers = kept, counts, answers

        spec = parse_noise(config.noise)
        sigma: dict[str, float | None] = {"text": None, "speech": None}
        if spec.needs_sigma:
            sigma["text"] = subject_sigma(model, [r.subject for r in dataset.records], modality="text",
                                          cache_dir=out / "sigma", notes=prep.recomputed)
            if "s2t" in kept:
                sigma["speech"] = sigma["text"] if config.speech_sigma == "text" else \
                    self._speech_sigma(prep, kept, skipped, cache_dir=out / "sigma")
        prep.sigma = sigma
        prep.backbone = prepare_backbone(self, prep, records, [r.subject for r in dataset.records])
        prep.prepare_seconds = round(time.time() - started, 1)
        prep.save(out)
        return prep

    def _speech_sigma(self, prep: PreparedRun, kept: dict, skipped: list, cache_dir: Path) -> float | None:
        """Sigma over the subject speech tokens of the Known-s2t prompts (alignment failures skipped)."""
        from spiritlens.traces import subject_sigma

        model, lists, good = self.models(prep).model(), [], []
        for known_id in kept["s2t"]:
            try:
                prompt = self.models(prep).speech_prompt(known_id)
            except (ValueError, OSError) as error:
                skipped.append({"stage": "align", "modality": "s2t", "known_id": known_id, "reason": str(error)})
                continue
            b, e = prompt.subject_range
            lists.append(prompt.input_ids[b:e])
            good.append(known_id)
        kept["s2t"] = good
        return subject_sigma(model, lists, modality="speech", cache_dir=cache_dir,
                             notes=prep.recomputed) if lists else None

    def work_items(self, prep: PreparedRun) -> list[tuple[str, int]]:
        """Every (direction, known_id) to trace, in a fixed order shared by all ranks: the backbone's
        (``backbone_t2t``, :mod:`spiritlens.experiment.baseline`), then each direction's."""
        return backbone_items(prep) + [(modality, kid) for modality in self.config.modalities
                                       for kid in prep.kept.get(modality, [])]

    def result_key(self, prep: PreparedRun, modality: str, known_id: int) -> dict:
        """The run key (:mod:`spiritlens.runkey`) of the results of ``(modality, known_id)``, whatever
        their kind: the model files, dtype and device (for S->T also the speech tokenizer and the
        aligner), the method (with ``--verify-top``/``--verify-rank`` as options), the noise rule, the
        sigma and where it came from, samples, seed, window, and the row: prompt, subject and judged
        answer, and for S->T the audio's SHA-256, mapping and row mode. Recorded in each result; a
        result of another key is recomputed. The backbone's items have its own key
        (:func:`~spiritlens.experiment.baseline.backbone_result_key`)."""
        if modality == BACKBONE_DIRECTION:
            return backbone_result_key(self, prep, known_id)
        config, record = self.config, prep.records[str(known_id)]
        spoken = modality != "t2t"
        base = {k: v for k, v in prep.fingerprint.items() if spoken or k not in ("speech_tokenizer", "aligner")}
        rows = {"prompt": record["prompt"], "subject": record["subject"],
                "answer": prep.answers.get(modality, {}).get(str(known_id))}
        if spoken:
            audio = prep.audio.get(str(known_id))
            rows.update(audio_sha256=file_digest(audio) if audio and Path(audio).is_file() else None,
                        mapping=config.mapping, row_mode=config.row_mode)
        spec = parse_noise(config.noise)
        sigma_source = None if not spec.needs_sigma else \
            "text subjects" if not spoken or config.speech_sigma == "text" else "speech subjects"
        sigma = None if sigma_source is None else prep.sigma.get("text" if sigma_source == "text subjects" else "speech")
        options = None if config.screen == "none" else {"verify_top": config.verify_top,
                                                         "verify_rank": config.verify_rank}
        return run_key(base, method=self.trace_method, noise=spec.text, sigma_source=sigma_source, sigma=sigma,
                       samples=config.samples, seed=config.seed, window=prep.window, rows=rows,
                       **({} if options is None else {"options": options}))

    def stale_kinds(self, modality: str, known_id: int, key: dict | None = None) -> dict[str, str | None]:
        """Kinds whose result must be (re)computed, with why: None when there is none yet, else the
        reason it is not reused: unreadable, failing its checksum (edited or damaged, its ``.npz``
        included), its validation, or its run ``key`` (the key's changes, e.g. "model weights changed"),
        or traced by another method than ``--screen`` asks."""
        from spiritlens.traces import TraceResult

        stale: dict[str, str | None] = {}
        for kind in self.config.kinds:
            path = self.result_path(modality, known_id, kind)
            if not path.exists() and not path.with_suffix(".npz").exists():
                stale[kind] = None
                continue
            try:
                result = TraceResult.load(path, run_key=key)
            except (ValueError, OSError, TypeError, KeyError) as error:
                stale[kind] = getattr(error, "reason", f"{type(error).__name__}: {error}".splitlines()[0])
                continue
            if result.method != self.trace_method:
                stale[kind] = f"method {result.method} → {self.trace_method}"
        return stale

    def missing_kinds(self, modality: str, known_id: int, key: dict | None = None) -> list[str]:
        """The kinds of :meth:`stale_kinds`."""
        return list(self.stale_kinds(modality, known_id, key))

    def current_results(self, prep: PreparedRun) -> tuple[list[Path], list[str]]:
        """The result files of this run's work items and kinds that verify under this run's keys (what the
        report aggregates), and one line ``"<path>: <why>"`` per file there that does not."""
        paths, problems = [], []
        for modality, known_id in self.work_items(prep):
            stale = self.stale_kinds(modality, known_id, self.result_key(prep, modality, known_id))
            for kind in self.config.kinds:
                path = self.result_path(modality, known_id, kind)
                if kind not in stale:
                    paths.append(path)
                elif stale[kind] is not None:
                    problems.append(f"{path}: {stale[kind]}")
        return paths, problems

    @property
    def trace_method(self) -> str:
        """The tracing method of this run's results: ``exact``, or the ``--screen``'s attribution method."""
        return "exact" if self.config.screen == "none" else self.config.screen

    def trace_share(self, prep: PreparedRun) -> dict:
        """Stage 2: trace this rank's share of the work items."""
        from tqdm.auto import tqdm

        items = self.work_items(prep)[self.rank::self.world]
        status: dict[str, Any] = {"rank": self.rank, "world_size": self.world, "items": len(items),
                                  "traced": [], "already_done": [], "failed": [], "recomputed": []}
        bar = tqdm(items, desc=f"tracing (rank {self.rank}/{self.world})", unit="prompt", position=self.rank,
                   disable=not self.progress, dynamic_ncols=True)
        for modality, known_id in bar:
            name = f"{modality}/{known_id}"
            stale = self.stale_kinds(modality, known_id, self.result_key(prep, modality, known_id))
            missing = list(stale)
            if not missing:
                status["already_done"].append(name)
                continue
            status["recomputed"] += [reason for reason in stale.values() if reason is not None]
            try:
                self._trace_item(prep, modality, known_id, missing)
                status["traced"].append({"item": name, "kinds": missing})
            except Exception as error:  # one item's failure must not stop the run
                record_failure(status, {"item": name}, error, bar.write, f"[trace] {name}")
        bar.close()
        return status

    def _trace_inputs(self, prep: PreparedRun, modality: str, known_id: int) -> dict:
        """What tracing one work item takes: ``model``, ``prompt``, ``subject``, ``row_mode``, ``sigma``,
        ``window``, ``judged`` (the filter's first answer token) and ``extra`` (fields recorded with its results)."""
        if modality == BACKBONE_DIRECTION:
            return backbone_trace_inputs(self, prep, known_id)
        config, record, models = self.config, prep.records[str(known_id)], self.models(prep)
        spoken = modality != "t2t"
        model = models.model()
        return {"model": model, "prompt": models.speech_prompt(known_id) if spoken else record["prompt"],
                "subject": None if spoken else record["subject"], "row_mode": config.row_mode if spoken else "auto",
                "sigma": prep.sigma["speech" if spoken else "text"], "window": prep.window,
                "judged": prep.answers.get(modality, {}).get(str(known_id)),
                "extra": {"experiment_modality": modality, "sigma_modality": DIRECTION_MODALITY[modality]
                          if not spoken or config.speech_sigma == "speech" else "text"}}

    def _trace_item(self, prep: PreparedRun, modality: str, known_id: int, kinds: list[str]) -> None:
        from spiritlens.traces import trace_kinds
        from spiritlens.traces.answer import generated_answer

        config, record = self.config, prep.records[str(known_id)]
        item = self._trace_inputs(prep, modality, known_id)
        model, judged = item["model"], item["judged"]
        target = None if judged is None else generated_answer(model, judged)  # the token the filter judged
        results = trace_kinds(model, item["prompt"], item["subject"], kinds=kinds, samples=config.samples,
                              noise=config.noise, seed=config.seed, window=item["window"], sigma=item["sigma"],
                              row_mode=item["row_mode"], target=target, max_batch_cells=config.max_batch_cells,
                              name=f"{modality}_{known_id}", method=self.trace_method, verify_top=config.verify_top,
                              verify_rank=config.verify_rank)
        for kind, result in results.items():
            result.extra.update(known_id=known_id, relation_id=record.get("relation_id"), attribute=record["attribute"],
                                **item["extra"])
            result.save(self.result_path(modality, known_id, kind), run_key=self.result_key(prep, modality, known_id))

    def merge(self, prep: PreparedRun) -> dict:
        """Stage 3 (rank 0): aggregate, figures, report, summary."""
        from spiritlens.experiment.report import write_report

        statuses = [read_json(p, "rank status") for p in sorted((self.out / "status").glob("rank*.json"))]
        statuses = [s for s in statuses if s.get("world_size") == self.world]
        summary = {
            "embedded": prep.embedded,
            "weights": prep.weights,
            "window": prep.window,
            "kept": {m: len(ids) for m, ids in prep.kept.items()},
            "filter": prep.filter,
            "skipped": prep.skipped,
            "traced": sum(len(s["traced"]) for s in statuses),
            "already_done": sum(len(s["already_done"]) for s in statuses),
            "failed": [f for s in statuses for f in s["failed"]],
        }
        summary["backbone"] = backbone_summary(prep)
        summary["screen"] = self._screen_summary(prep)
        summary["crossmodal"] = self._crossmodal(prep)
        if self.config.expressive:
            from spiritlens.experiment.expressive import summarize

            summary["expressive"] = summarize(self, prep)
        summary["recomputed"] = {"prepare": list(prep.recomputed),
                                 "traces": reason_counts([r for s in statuses for r in s.get("recomputed", [])]),
                                 "crossmodal": (summary["crossmodal"] or {}).get("recomputed", {}),
                                 "expressive": (summary.get("expressive") or {}).get("recomputed", {})}
        summary["report"] = str(write_report(self, prep, summary))
        write_json_atomic(self.out / "summary.json", summary)
        return summary

    def _screen_summary(self, prep: PreparedRun) -> dict | None:
        """With ``--screen``: per prompt and kind, how many of the screen's top ``--verify-top`` cells the
        exact trace confirmed (from each result's ``verification``); None without a screen."""
        if self.config.screen == "none":
            return None
        per_prompt: dict[str, dict] = {}
        totals = {kind: [0, 0] for kind in self.config.kinds}
        for modality, known_id in self.work_items(prep):
            for kind in self.config.kinds:
                try:
                    record = read_json(self.result_path(modality, known_id, kind), "trace result").get("verification")
                except ValueError:
                    continue
                if record:
                    per_prompt.setdefault(f"{modality}/{known_id}", {})[kind] = [record["confirmed"],
                                                                                record["verify_top"]]
                    totals[kind][0] += record["confirmed"]
                    totals[kind][1] += record["verify_top"]
        return {"screen": self.config.screen, "verify_top": self.config.verify_top, "rank": self.config.verify_rank,
                "confirm_rule": CONFIRM_RULE, "confirmed_of_verified": totals, "per_prompt": per_prompt}

    def _crossmodal(self, prep: PreparedRun) -> dict | None:
        """The cross-modal analyses of the facts kept in both modalities (``crossmodal/``), reusing this
        run's model, aligner and settings; None when not run. A failure is recorded, never fatal: the
        traces and the rest of the report stand without it."""
        if not self.config.crossmodal or not prep.shared_facts():
            return None
        self.log(f"[crossmodal] {len(prep.shared_facts())} facts kept in both Known-t2t and Known-s2t")
        try:
            status = run_experiment_dir(self.out, models=self.models(prep), progress=self.progress, log=self.log)
        except Exception as error:  # the traces are done; the section says what went wrong
            reason = f"{type(error).__name__}: {error}".splitlines()[0]
            self.log(f"[crossmodal] not written: {reason}")
            return {"error": reason}
        return {k: status[k] for k in ("facts", "computed", "reused", "failed", "recomputed")}

    @property
    def weights(self) -> str:
        """``"random"`` (tiny random checkpoints), ``"toy"`` (the trained toy) or ``"checkpoints"``."""
        return weights_kind(self.config)


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / ".write_test", {"ok": True})
        (out / ".write_test").unlink()
    except OSError as error:
        raise PermissionError(f"output directory {str(out)!r} is not writable: {error.strerror or error}") from None


def run_experiment(config: ExperimentConfig, *, progress: bool = True) -> dict | None:
    """Run the whole experiment (see the module docstring); the summary on rank 0.

    Every setting is checked first (:func:`~spiritlens.experiment.config.check_environment`):
    a bad one raises before anything is built, synthesised or traced."""
    check_environment(config)
    return Experiment(config, progress=progress, log=lambda m: print(m, file=sys.stderr, flush=True)).run()


def _record_fields(fact: dict) -> dict:
    keys = ("known_id", "prompt", "subject", "attribute", "relation_id")
    return {key: fact[key] for key in keys if key in fact}


def print_summary(summary: dict) -> None:
    if summary.get("weights") == "random":
        print("NOTE: embedded run on tiny RANDOM-WEIGHT checkpoints: the numbers show the pipeline "
              "works, not anything about SpiritLM.")
    elif summary.get("weights") == "toy":
        print("NOTE: embedded default run on the toy SpiritLM trained by spiritlens on these Known facts "
              "(not SpiritLM itself).")
    print(f"kept prompts: {json.dumps(summary['kept'])}; filter judgements: {json.dumps(summary['filter'])}")
    print(f"traced {summary['traced']} prompts, {summary['already_done']} already done, "
          f"{len(summary['failed'])} failed, {len(summary['skipped'])} skipped")
    from spiritlens.experiment.report import recomputed_lines

    for line in recomputed_lines(summary.get("recomputed")):
        print(f"  {line}")
    for item in summary["skipped"][:20]:
        print(f"  skipped [{item['stage']}] {item.get('modality', '')} {item['known_id']}: {item['reason']}")
    for item in summary["failed"][:20]:
        print(f"  failed {item['item']}: {item['reason']}")
    screen = summary.get("screen")
    if screen is not None and screen["verify_top"] is not None:
        counts = ", ".join(f"{kind} {c}/{n}" for kind, (c, n) in screen["confirmed_of_verified"].items())
        print(f"screen {screen['screen']}: exact trace confirmed {counts} of the top-{screen['verify_top']} "
              f"screened cells ({screen['confirm_rule']})")
    backbone = summary.get("backbone")
    if backbone is not None:
        print(f"backbone (baseline row): {backbone['model_dir']}; Known-t2t kept {len(backbone['kept'])}; "
              f"window {backbone['window']}; sigma " + ("–" if backbone["sigma"] is None else f"{backbone['sigma']:.4g}"))
    if summary.get("comparison") is not None:
        from spiritlens.aggregates.compare import comparison_lines

        for line in comparison_lines(summary["comparison"]):
            print(f"  {line}")
    crossmodal = summary.get("crossmodal")
    if crossmodal is not None:
        print(f"cross-modal analyses: not written ({crossmodal['error']})" if "error" in crossmodal else
              f"cross-modal analyses: {len(crossmodal['facts'])} facts, {len(crossmodal['computed'])} computed, "
              f"{len(crossmodal['reused'])} reused, {len(crossmodal['failed'])} failed")
    expressive = summary.get("expressive")
    if expressive is not None:
        print(f"expressive (prosody controls): {expressive['prompts']} S→T prompts x {len(expressive['controls'])} "
              f"controls, {expressive['computed']} computed, {expressive['reused']} reused, "
              f"{len(expressive['skipped'])} skipped, {len(expressive['failed'])} failed")
        for item in expressive["failed"][:20]:
            print(f"  failed {item['item']}: {item['reason']}")
    print(f"report: {summary['report']}")

