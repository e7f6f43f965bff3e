"""The Known experiment end to end: data, speech, filtering, tracing (sharded, resumable), outputs.

Stages, all writing under ``config.out``:

1. **prepare** (rank 0): Known records (problems reported), speech synthesis of every prompt,
   subject and attribute (cached), the WER check, greedy-generation filtering into Known-t2t /
   Known-s2t, and sigma (text: ROME's rule over every Known subject; speech: the subjects' speech
   tokens of the Known-s2t prompts). Written to ``prepare.json``.
2. **trace** (every rank): the work items (modality, prompt) in a fixed order, rank ``r`` of
   ``w`` taking items ``r, r+w, ...``; each kind's result is written atomically to
   ``results/<modality>/<known_id>_<kind>.json``. A rerun skips finished results and recomputes
   missing or unreadable ones; a failure on one item is recorded and the run goes on.
3. **merge** (rank 0): AIE tables and figures, sample heatmaps and alignment figures, a
   circuitsvis view, ``report.md``, and the summary.

Sharding uses PyTorch's own launcher: under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) the ranks
meet at gloo barriers between the stages; the output folder must be shared by all ranks.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
import traceback
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._io import read_json, write_json_atomic
from ..checkpoints import CHECKPOINTS_ENV
from ..align.aligner import POCKETSPHINX
from .config import MODALITY_OF, WINDOW_RULE, ExperimentConfig, check_environment, default_window

EMBEDDED_PROMPTS = 6


class Experiment:
    """One run; see the module docstring. ``run()`` returns the summary dict (rank 0) or None."""

    def __init__(self, config: ExperimentConfig, *, progress: bool = True, log=print):
        self.config = config
        self.progress = progress
        self.log = log
        self.out = Path(config.out)
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self._model = None
        self._aligner = None

    # ------------------------------------------------------------------ plumbing
    @property
    def results_dir(self) -> Path:
        return self.out / "results"

    def result_path(self, modality: str, known_id: int, kind: str) -> Path:
        return self.results_dir / modality / f"{known_id}_{kind}.json"

    def _barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def _init_distributed(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))

    def _paths(self, prep: dict) -> tuple[Path, str | None]:
        """(model directory, aligner: a CTC model directory or "pocketsphinx")."""
        return Path(prep["model_dir"]), prep["aligner"]

    def model(self, prep: dict):
        if self._model is None:
            import torch

            from ..model import HookedSpiritLM

            device = self.config.device
            if device is None and torch.cuda.is_available():
                device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            model_dir, _ = self._paths(prep)
            self._model = HookedSpiritLM.from_pretrained(
                model_dir, dtype=self.config.dtype, device=device,
                speech_tokenizer=prep["speech_tokenizer"])
        return self._model

    def aligner(self, prep: dict):
        """The forced aligner of this run (``spiritlens.align.get_aligner`` of ``prep["aligner"]``)."""
        if self._aligner is None:
            from ..align import get_aligner

            _, aligner = self._paths(prep)
            if aligner is None:
                raise ValueError("S->T tracing needs an aligner: pass --aligner (a CTC model directory, or "
                                 "'pocketsphinx')")
            self._aligner = get_aligner(aligner)
        return self._aligner

    # -------------------------------------------------------------------- stages
    def run(self) -> dict | None:
        if self.config.embedded and "OMP_NUM_THREADS" not in os.environ:
            import torch

            # The embedded models are tiny: one thread is fastest, and two threads on a busy
            # 2-core machine were several times slower (measured). $OMP_NUM_THREADS overrides.
            torch.set_num_threads(1)
        self._init_distributed()
        try:
            if self.rank == 0:
                prep = self.prepare()
            self._barrier()
            prep = read_json(self.out / "prepare.json", "prepare manifest")
            status = self.trace_share(prep)
            write_json_atomic(self.out / "status" / f"rank{self.rank}.json", status)
            self._barrier()
            return self.merge(prep) if self.rank == 0 else None
        finally:
            if self.world > 1:
                import torch.distributed as dist

                if dist.is_initialized():
                    dist.destroy_process_group()

    def prepare(self) -> dict:
        """Stage 1 (rank 0): everything before tracing; writes and returns ``prepare.json``."""
        from ..data import KnownRecord, get_backend, load_known, select, synthesize_corpus, wer_check
        from ..traces import parse_noise, subject_sigma

        config, out = self.config, self.out
        _check_writable(out)
        _remove_stale_temporaries(self.results_dir)
        started = time.time()
        model_dir, speech_dir, aligner_dir = self._checkpoints()
        dataset = load_known(config.known)  # spiritlens.data.known's lookup rule when None
        skipped: list[dict] = [{"stage": "data", "known_id": kid, "reason": reason}
                               for kid, reason in dataset.problems]
        toy = self._toy_info(model_dir)
        pool = dataset.records if toy is None else [KnownRecord(**_record_fields(f)) for f in toy["facts"]]
        n = config.n_prompts or (EMBEDDED_PROMPTS if config.random_weights else None)
        records = list(select(pool, n, seed=config.subset_seed)) if n and n < len(pool) else list(pool)
        weights = {"random": " (RANDOM WEIGHTS: embedded tiny checkpoints)",
                   "toy": " (the toy SpiritLM, trained on these facts)"}.get(self.weights, "")
        self.log(f"[prepare] {len(records)} Known prompts ({len(dataset.problems)} records with problems), "
                 f"model {model_dir}{weights}")
        prep: dict[str, Any] = {
            "config": config.to_dict(), "embedded": config.embedded, "weights": self.weights,
            "model_dir": str(model_dir), "speech_tokenizer": None if speech_dir is None else str(speech_dir),
            "aligner": None if aligner_dir is None else str(aligner_dir),
            "known_source": str(dataset.source), "n_known": len(dataset.records),
            "records": {str(r.known_id): r.to_dict() for r in records}, "skipped": skipped,
        }
        if toy is not None:
            prep["toy"] = toy
        model = self.model(prep)
        prep["tokenization"] = model.tokenization.to_dict()  # how prompt strings became ids
        prep["n_layers"] = model.cfg.n_layers
        prep["window"] = config.window if config.window is not None else default_window(model.cfg.n_layers)
        prep["window_rule"] = "given (--window)" if config.window is not None else WINDOW_RULE

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
            prep["reference_words"] = {str(r.known_id): e.words for r in records for e in synthesis.entries
                                       if e.item_id == f"{r.known_id}_prompt" and e.ok}
            prep["tts"] = {"backend": backend.name, "voice": getattr(backend, "voice", None),
                           "synthesized": len(synthesis.synthesized), "reused": len(synthesis.reused),
                           "failed": [list(f) for f in synthesis.failed]}
            if config.asr != "none":
                prompts = [(i, t, p) for i, t, p in synthesis.ok_items() if i.endswith("_prompt")]
                check = wer_check(prompts, config.asr, out_path=out / "wer.json")
                prep["wer"] = {"computed": check.computed, "asr": check.asr, "reason": check.reason,
                               "corpus_wer": None if check.report is None else check.report.wer}
            else:
                prep["wer"] = {"computed": False, "asr": "none", "reason": "--asr none", "corpus_wer": None}
        prep["audio"] = {str(k): v for k, v in audio.items()}

        kept: dict[str, list[int]] = {}
        counts: dict[str, dict] = {}
        # The first generated token of each judged prompt: the answer its traces measure.
        answers: dict[str, dict[str, int]] = {m: {} for m in config.modalities}
        for modality in config.modalities:
            candidates = records if modality == "t2t" else [r for r in records if r.known_id in audio]
            result = filter_known(model, candidates, modality, audio, keep_all=config.keep_all, accept=config.accept,
                                  max_new_tokens=config.max_new_tokens, answers=answers[modality],
                                  out_path=out / "filter" / f"known-{modality}.json", progress=self.progress)
            kept[modality] = [r.known_id for r in result.kept]
            counts[modality] = dict(result.counts)
            for entry in result.entries:
                if entry.error:
                    skipped.append({"stage": "filter", "modality": modality, "known_id": entry.known_id,
                                    "reason": entry.error})
        for modality, ids in kept.items():  # generations reused from a manifest: their first token again
            for known_id in ids:
                if str(known_id) not in answers[modality]:
                    record = next(r for r in records if r.known_id == known_id)
                    prompt = known_prompt(record, modality, audio)
                    answers[modality][str(known_id)] = int(model.generate_ids(prompt, max_new_tokens=1)[0])
        prep["kept"], prep["filter"], prep["answers"] = kept, counts, answers

        spec = parse_noise(config.noise)
        sigma: dict[str, float | None] = {"text": None, "speech": None}
        if spec.needs_sigma:
            sigma["text"] = subject_sigma(model, [r.subject for r in dataset.records], modality="text",
                                          cache_dir=out / "sigma")
            if "s2t" in kept:
                sigma["speech"] = sigma["text"] if config.speech_sigma == "text" else \
                    self._speech_sigma(prep, kept, skipped, cache_dir=out / "sigma")
        prep["sigma"] = sigma
        prep["prepare_seconds"] = round(time.time() - started, 1)
        write_json_atomic(out / "prepare.json", prep)
        return prep

    def _speech_sigma(self, prep: dict, kept: dict, skipped: list, cache_dir: Path) -> float | None:
        """Sigma over the subject speech tokens of the Known-s2t prompts (alignment failures skipped)."""
        from ..traces import subject_sigma

        model, lists, good = self.model(prep), [], []
        for known_id in kept["s2t"]:
            try:
                prompt = self._speech_prompt(prep, known_id)
            except (ValueError, OSError) as error:
                skipped.append({"stage": "align", "modality": "s2t", "known_id": known_id, "reason": str(error)})
                continue
            b, e = prompt.subject_range
            lists.append(prompt.input_ids[b:e])
            good.append(known_id)
        kept["s2t"] = good
        return subject_sigma(model, lists, modality="speech", cache_dir=cache_dir) if lists else None

    def _speech_prompt(self, prep: dict, known_id: int):
        from ..align import LowAlignmentConfidence
        from ..speech_prompt import SpeechPrompt

        record = prep["records"][str(known_id)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LowAlignmentConfidence)  # recorded in the result instead
            return SpeechPrompt.from_audio(self.model(prep), prep["audio"][str(known_id)],
                                           transcript=record["prompt"], subject=record["subject"],
                                           aligner=self.aligner(prep), mapping=self.config.mapping,
                                           reference_words=prep.get("reference_words", {}).get(str(known_id)))

    def work_items(self, prep: dict) -> list[tuple[str, int]]:
        """Every (modality, known_id) to trace, in a fixed order shared by all ranks."""
        return [(modality, kid) for modality in self.config.modalities for kid in prep["kept"].get(modality, [])]

    def missing_kinds(self, modality: str, known_id: int) -> list[str]:
        """Kinds whose result file is absent or unreadable."""
        from ..traces import TraceResult

        missing = []
        for kind in self.config.kinds:
            path = self.result_path(modality, known_id, kind)
            try:
                TraceResult.load(path)
            except (ValueError, OSError, TypeError, KeyError):
                missing.append(kind)
        return missing

    def trace_share(self, prep: dict) -> dict:
        """Stage 2: trace this rank's share of the work items."""
        from tqdm.auto import tqdm

        items = self.work_items(prep)[self.rank::self.world]
        status: dict[str, Any] = {"rank": self.rank, "world_size": self.world, "items": len(items),
                                  "traced": [], "already_done": [], "failed": []}
        bar = tqdm(items, desc=f"tracing (rank {self.rank}/{self.world})", unit="prompt", position=self.rank,
                   disable=not self.progress, dynamic_ncols=True)
        for modality, known_id in bar:
            name = f"{modality}/{known_id}"
            missing = self.missing_kinds(modality, known_id)
            if not missing:
                status["already_done"].append(name)
                continue
            try:
                self._trace_item(prep, modality, known_id, missing)
                status["traced"].append({"item": name, "kinds": missing})
            except Exception as error:  # one item's failure must not stop the run
                reason = f"{type(error).__name__}: {error}".splitlines()[0]
                status["failed"].append({"item": name, "reason": reason})
                bar.write(f"[trace] {name} failed: {reason}")
                if os.environ.get("SPIRITLENS_DEBUG"):
                    traceback.print_exc()
        bar.close()
        return status

    def _trace_item(self, prep: dict, modality: str, known_id: int, kinds: list[str]) -> None:
        from ..traces import trace_kinds
        from ..traces.answer import generated_answer

        config, model = self.config, self.model(prep)
        record = prep["records"][str(known_id)]
        if modality == "t2t":
            prompt, subject, row_mode, sigma = record["prompt"], record["subject"], "auto", prep["sigma"]["text"]
        else:
            prompt, subject, row_mode, sigma = self._speech_prompt(prep, known_id), None, config.row_mode, \
                prep["sigma"]["speech"]
        judged = prep.get("answers", {}).get(modality, {}).get(str(known_id))
        target = None if judged is None else generated_answer(model, judged)  # the token the filter judged
        results = trace_kinds(model, prompt, subject, kinds=kinds, samples=config.samples, noise=config.noise,
                              seed=config.seed, window=prep["window"], sigma=sigma, row_mode=row_mode,
                              target=target, max_batch_cells=config.max_batch_cells, name=f"{modality}_{known_id}")
        for kind, result in results.items():
            result.extra.update(known_id=known_id, relation_id=record.get("relation_id"), attribute=record["attribute"],
                                experiment_modality=modality, sigma_modality=MODALITY_OF[modality]
                                if modality == "t2t" or config.speech_sigma == "speech" else "text")
            result.save(self.result_path(modality, known_id, kind))

    def merge(self, prep: dict) -> dict:
        """Stage 3 (rank 0): aggregate, figures, report, summary."""
        from .report import write_report

        statuses = [read_json(p, "rank status") for p in sorted((self.out / "status").glob("rank*.json"))]
        statuses = [s for s in statuses if s.get("world_size") == self.world]
        summary = {
            "embedded": prep["embedded"],
            "weights": prep.get("weights"),
            "window": prep.get("window"),
            "kept": {m: len(ids) for m, ids in prep["kept"].items()},
            "filter": prep["filter"],
            "skipped": prep["skipped"],
            "traced": sum(len(s["traced"]) for s in statuses),
            "already_done": sum(len(s["already_done"]) for s in statuses),
            "failed": [f for s in statuses for f in s["failed"]],
        }
        summary["crossmodal"] = self._crossmodal(prep)
        summary["report"] = str(write_report(self, prep, summary))
        write_json_atomic(self.out / "summary.json", summary)
        return summary

    def _crossmodal(self, prep: dict) -> dict | None:
        """The cross-modal analyses of the facts kept in both modalities (``crossmodal/``), reusing this
        run's model, aligner and settings; None when not run. A failure is recorded, never fatal: the
        traces and the rest of the report stand without it."""
        from ..crossmodal.runner import shared_facts

        if not self.config.crossmodal or not shared_facts(prep):
            return None
        from ..crossmodal import run_experiment_dir

        self.log(f"[crossmodal] {len(shared_facts(prep))} facts kept in both Known-t2t and Known-s2t")
        try:
            status = run_experiment_dir(self.out, experiment=self, progress=self.progress, log=self.log)
        except Exception as error:  # the traces are done; the section says what went wrong
            reason = f"{type(error).__name__}: {error}".splitlines()[0]
            self.log(f"[crossmodal] not written: {reason}")
            return {"error": reason}
        return {k: status[k] for k in ("facts", "computed", "reused", "failed")}

    # --------------------------------------------------------------- checkpoints
    @property
    def weights(self) -> str:
        """``"random"`` (tiny random checkpoints), ``"toy"`` (the trained toy) or ``"checkpoints"``."""
        if not self.config.embedded:
            return "checkpoints"
        return "random" if self.config.random_weights else "toy"

    def _checkpoints(self) -> tuple[Path, Path | None, str | None]:
        """(model dir, speech-tokenizer dir, aligner), building the embedded checkpoints if needed.

        The aligner is ``--aligner`` (a CTC model directory, the paper's path, or "pocketsphinx"); the
        embedded default, which has no CTC model, aligns with pocketsphinx's real US-English model.
        """
        config = self.config
        if config.embedded:
            if config.random_weights:
                from ..tiny import make_tiny_checkpoints

                root = self.out / "checkpoints"
                if not (root / ".complete").is_file():
                    self.log(f"[prepare] writing tiny random-weight SpiritLM checkpoints to {root}")
                    make_tiny_checkpoints(root)
                    (root / ".complete").write_text("tiny random weights\n")
            else:
                from ..toy import toy_checkpoints

                root = config.toy or toy_checkpoints(known=config.known, progress=self.progress, log=self.log)
                self.log(f"[prepare] toy SpiritLM: {root}")
            aligner = POCKETSPHINX if config.aligner is None else str(config.aligner)
            return root / "spiritlm_model" / config.variant, root / "speech_tokenizer", aligner
        root = Path(config.checkpoints or os.environ[CHECKPOINTS_ENV])
        speech = root / "speech_tokenizer"
        return (root / "spiritlm_model" / config.variant, speech if speech.is_dir() else None,
                None if config.aligner is None else str(config.aligner))

    def _toy_info(self, model_dir: Path) -> dict | None:
        """What the report says about the toy: its facts, configuration, accuracy and training."""
        if self.weights != "toy":
            return None
        from ..toy import REPORT, read_manifest

        root = model_dir.parents[1]
        manifest = read_manifest(root)
        report = read_json(model_dir / REPORT, "toy report")
        return {"root": str(root), "hash": manifest["hash"], "config": manifest["inputs"]["config"],
                "facts": manifest["inputs"]["facts"], "distractor_prompts": len(manifest["inputs"]["distractors"]),
                "accuracy": report["accuracy"], "counts": report["counts"], "meets_targets": report["meets_targets"],
                "training": {k: v for k, v in report["training"].items() if k != "history"}}


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / ".write_test", {"ok": True})
        (out / ".write_test").unlink()
    except OSError as error:
        raise PermissionError(f"output directory {str(out)!r} is not writable: {error.strerror or error}") from None


def _remove_stale_temporaries(results: Path) -> None:
    """Temporary files left by a run killed mid-write (no rank is writing during prepare)."""
    if results.is_dir():
        for stale in results.rglob(".*.tmp"):
            stale.unlink(missing_ok=True)


def known_prompt(record, modality: str, audio: Mapping[int, str]):
    """A Known record's prompt as the experiment feeds it: the prompt text (``"t2t"``), or
    ``[("speech", path)]`` of its synthesised audio ``audio[known_id]`` (``"s2t"``)."""
    return record.prompt if modality == "t2t" else [("speech", audio[record.known_id])]


def filter_known(model, records, modality: str, audio: Mapping[int, str] | None = None, *, keep_all: bool = False,
                 accept: Sequence[str] = ("exact",), max_new_tokens: int = 8, answers: dict[str, int] | None = None,
                 out_path: str | os.PathLike | None = None, progress: bool | None = False):
    """Known-t2t / Known-s2t: the model's greedy continuation of each record's prompt (SpiritLM's
    text-output rule, :meth:`HookedSpiritLM.generate`), judged by :func:`spiritlens.data.filter_prompts`.
    ``audio`` maps known_id to the WAV of its prompt (S->T). ``answers``, if given, receives each
    generated record's first token id under ``str(known_id)`` (the token its traces measure).
    Returns the ``FilterResult``."""
    from ..data import filter_prompts

    def generate(record):
        new = model.generate_ids(known_prompt(record, modality, audio or {}), max_new_tokens=max_new_tokens)
        if answers is not None and len(new):
            answers[str(record.known_id)] = int(new[0])
        return model.decode_generated(new)

    return filter_prompts(records, generate, modality, keep_all, accept=accept, out_path=out_path, progress=progress)


def run_experiment(config: ExperimentConfig, *, progress: bool = True) -> dict | None:
    """Run the whole experiment (see the module docstring); the summary on rank 0.

    Every setting is checked first (:func:`~spiritlens.experiment.config.check_environment`):
    a bad one raises before anything is built, synthesised or traced."""
    if config.random_weights or config.toy is not None or (
            config.checkpoints is None and not os.environ.get(CHECKPOINTS_ENV)):
        config.embedded = True
        if config.random_weights:
            config.keep_all = True  # random weights answer nothing
        if config.dtype not in ("float32", "fp32"):
            config.dtype = "float32"
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
    for item in summary["skipped"][:20]:
        print(f"  skipped [{item['stage']}] {item.get('modality', '')} {item['known_id']}: {item['reason']}")
    for item in summary["failed"][:20]:
        print(f"  failed {item['item']}: {item['reason']}")
    crossmodal = summary.get("crossmodal")
    if crossmodal is not None:
        print(f"cross-modal analyses: not written ({crossmodal['error']})" if "error" in crossmodal else
              f"cross-modal analyses: {len(crossmodal['facts'])} facts, {len(crossmodal['computed'])} computed, "
              f"{len(crossmodal['reused'])} reused, {len(crossmodal['failed'])} failed")
    print(f"report: {summary['report']}")
