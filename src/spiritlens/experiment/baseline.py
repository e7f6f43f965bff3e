"""The paper's baseline: the text-only backbone SpiritLM was built from, filtered and traced T->T (Figure 2's first row).

SpiritLM continued Llama-2-7B's training; the paper traces Llama-2-7B (text -> text) beside SpiritLM's T->T
and S->T on the same prompts. With a backbone (``--backbone DIR``, a Hugging Face Llama-2 folder; by default
the embedded toy's own backbone, ``backbone/llama-2-7b-hf`` in its tree, or with ``--random-weights`` a tiny
random Llama whose text pieces are the tiny SpiritLM's), the experiment:

- **filters** Known on the backbone as on SpiritLM: its own greedy generation (Llama-2's prompt: ``<s>`` and
  the text), judged by the same rule (:func:`spiritlens.data.filtering.filter_known`; Known-t2t of the backbone,
  ``filter/known-backbone-t2t.json``, keyed by the backbone's weights);
- measures **its own sigma**, ROME's rule over every Known subject's embedding rows of the backbone
  (:func:`spiritlens.traces.subject_sigma`, cached under ``sigma/backbone/``);
- **traces** T->T on the prompts it kept, with the run's noise rule, samples and seed, its judged first answer
  token, and a window scaled to *its* depth (:func:`spiritlens.traces.window.check_window`); results in
  ``results/backbone_t2t/<known_id>_<kind>.json``, marked ``model_role: "backbone"``, under a run key with
  the backbone's weights digest, dtype and device (a rerun with other weights recomputes them).

Only one of the two models is held in memory at a time (each is released when the other is loaded:
a 7B backbone beside a 7B SpiritLM would need 27 GB in bf16). The comparison of the traces is
:mod:`spiritlens.aggregates.compare`; the report's section is :mod:`spiritlens.experiment.report_baseline`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from spiritlens._io import write_atomic
from spiritlens.aggregates.aie import BACKBONE
from spiritlens.experiment.config import NO_BACKBONE, WINDOW_RULE
from spiritlens.experiment.prepared import free_memory

BACKBONE_DIRECTION = "backbone_t2t"  # results/backbone_t2t/, the work items' direction
FILTER_FILE = "known-backbone-t2t.json"
TINY_BACKBONE = Path("backbone") / "llama-2-tiny"  # under --random-weights' out/checkpoints/


def resolve_backbone(config, model_dir: Path, out: Path, log: Callable[[str], None] = print) -> Path | None:
    """The backbone folder of a run, or None for no baseline: ``--backbone DIR``; ``none``; by default the
    toy's backbone (embedded), a tiny random Llama written to ``out/checkpoints/backbone/llama-2-tiny``
    (``--random-weights``; its text ids are the tiny SpiritLM's), and nothing with real checkpoints."""
    if config.backbone == NO_BACKBONE:
        return None
    if config.backbone is not None:
        return Path(config.backbone)
    if not config.embedded:
        return None
    if config.random_weights:
        from spiritlens.synthetic.tiny_llama import write_tiny_llama

        folder = out / "checkpoints" / TINY_BACKBONE
        if not (folder / ".complete").is_file():  # out/checkpoints is this run's (resolve_checkpoints checked)
            log(f"[prepare] writing a tiny random-weight Llama backbone to {folder}")
            write_tiny_llama(folder, seed=0)  # seed 0: the tiny SpiritLM's tokenizer, so the same text ids
            write_atomic(folder / ".complete", "tiny random backbone\n")
        return folder
    from spiritlens.synthetic.toy.cache import backbone_dir

    return backbone_dir(Path(model_dir).parents[1])  # ValueError for a toy tree without one


class BackboneModel:
    """The backbone of a prepared run, loaded on first use (``HookedSpeechLM``, family ``llama``);
    ``before_load`` runs first (the experiment releases SpiritLM there)."""

    def __init__(self, model_dir: str, *, dtype: str, device: str, before_load: Callable[[], None] | None = None):
        self.model_dir, self.dtype, self.device, self.before_load = model_dir, dtype, device, before_load
        self._model = None

    def model(self):
        if self._model is None:
            from spiritlens.model.hooked import HookedSpeechLM

            if self.before_load is not None:
                self.before_load()
            self._model = HookedSpeechLM.from_pretrained(Path(self.model_dir), family="llama", dtype=self.dtype,
                                                         device=self.device)
        return self._model

    def release(self) -> None:
        """Drop the model (and, on CUDA, its cached memory)."""
        if self._model is not None:
            device, self._model = self._model.device, None
            free_memory(device)


def backbone_model(experiment, prep) -> BackboneModel:
    """The experiment's :class:`BackboneModel` for ``prep`` (kept on the experiment, reused while the folder
    is the same); loading it releases SpiritLM's model."""
    info = prep.backbone
    held = experiment._backbone
    if held is None or held.model_dir != info["model_dir"]:
        if held is not None:
            held.release()
        held = BackboneModel(info["model_dir"], dtype=info["dtype"],
                             device=experiment.models(prep).resolved_device(),
                             before_load=lambda: experiment._models is not None and experiment._models.release())
        experiment._backbone = held
    return held


def release_backbone(experiment) -> None:
    """Drop the backbone model, if loaded (before SpiritLM's is loaded)."""
    if getattr(experiment, "_backbone", None) is not None:
        experiment._backbone.release()


def prepare_backbone(experiment, prep, records, subjects: list[str]) -> dict | None:
    """The prepare stage's part for the backbone (module doc): ``prep.backbone``'s record, or None without a
    backbone. ``records``: the run's Known records; ``subjects``: every Known subject (sigma)."""
    from spiritlens.checkpoints.tree import resolve_dtype
    from spiritlens.data.filtering import filter_known
    from spiritlens.runkey import dtype_name, folder_digest
    from spiritlens.traces import subject_sigma
    from spiritlens.traces.noise import parse_noise
    from spiritlens.traces.window import check_window

    config, out = experiment.config, experiment.out
    folder = resolve_backbone(config, Path(prep.model_dir), out, log=experiment.log)
    if folder is None:
        return None
    dtype = dtype_name(resolve_dtype(config.dtype, folder))
    info: dict = {"model_dir": str(folder), "dtype": dtype,
                  "fingerprint": {"weights": folder_digest(folder), "dtype": dtype,
                                  "device": prep.fingerprint["device"]}}
    prep.backbone = info
    model = backbone_model(experiment, prep).model()
    experiment.log(f"[prepare] backbone (baseline row): {model.family.describe(folder)}, {model.cfg.n_layers} layers")
    info["n_layers"] = int(model.cfg.n_layers)
    info["window"] = check_window(config.window, model.cfg.n_layers)
    info["window_rule"] = "given (--window)" if config.window is not None else WINDOW_RULE
    answers: dict[str, int] = {}
    result = filter_known(model, records, "t2t", keep_all=config.keeps_all, accept=config.accept,
                          max_new_tokens=config.max_new_tokens, answers=answers,
                          out_path=out / "filter" / FILTER_FILE, progress=experiment.progress,
                          fingerprint=info["fingerprint"], notes=prep.recomputed)
    info["kept"] = [r.known_id for r in result.kept if str(r.known_id) in answers]
    info["filter"] = dict(result.counts)
    info["answers"] = answers
    info["errors"] = [{"known_id": e.known_id, "reason": e.error} for e in result.entries if e.error]
    info["sigma"] = subject_sigma(model, subjects, modality="text", cache_dir=out / "sigma" / "backbone",
                                  notes=prep.recomputed) if parse_noise(config.noise).needs_sigma else None
    toy_report = folder / "toy_report.json"
    if toy_report.is_file():  # the toy's backbone: what its own build measured
        from spiritlens._io import read_json

        report = read_json(toy_report, "toy report")
        info["toy"] = {"accuracy": report.get("accuracy"), "counts": report.get("counts"),
                       "training": {k: v for k, v in (report.get("training") or {}).items() if k != "history"}}
    return info  # still loaded: the trace stage takes the backbone's items first


def backbone_items(prep) -> list[tuple[str, int]]:
    """The backbone's work items, ``(BACKBONE_DIRECTION, known_id)`` for each prompt it kept (traced before
    SpiritLM's, so that each model is loaded once per rank)."""
    return [(BACKBONE_DIRECTION, kid) for kid in (prep.backbone or {}).get("kept", [])]


def backbone_result_key(experiment, prep, known_id: int) -> dict:
    """The run key of a backbone result: the backbone's weights digest, dtype and device, the method, the
    noise rule with the backbone's own sigma, samples, seed, the backbone's window, and the row (prompt,
    subject, the backbone's judged answer)."""
    from spiritlens.runkey import run_key
    from spiritlens.traces.noise import parse_noise

    config, info, record = experiment.config, prep.backbone, prep.records[str(known_id)]
    spec = parse_noise(config.noise)
    options = None if config.screen == "none" else {"verify_top": config.verify_top, "verify_rank": config.verify_rank}
    return run_key(info["fingerprint"], method=experiment.trace_method, noise=spec.text,
                   sigma_source="text subjects" if spec.needs_sigma else None,
                   sigma=info["sigma"] if spec.needs_sigma else None, samples=config.samples, seed=config.seed,
                   window=info["window"],
                   rows={"prompt": record["prompt"], "subject": record["subject"], "model": "backbone",
                         "answer": info["answers"].get(str(known_id))},
                   **({} if options is None else {"options": options}))


def backbone_trace_inputs(experiment, prep, known_id: int) -> dict:
    """What the runner's one tracing call takes for a backbone item: the model, its prompt (Llama-2's:
    the text), sigma, window, judged answer and the fields recorded with each result."""
    info, record = prep.backbone, prep.records[str(known_id)]
    return {"model": backbone_model(experiment, prep).model(), "prompt": record["prompt"],
            "subject": record["subject"], "row_mode": "auto", "sigma": info["sigma"], "window": info["window"],
            "judged": info["answers"].get(str(known_id)),
            "extra": {"experiment_modality": BACKBONE_DIRECTION, "sigma_modality": "text", "model_role": BACKBONE}}


def backbone_summary(prep) -> dict | None:
    """The summary's ``backbone`` entry: folder, layers, window, sigma, filter counts and kept ids."""
    info = prep.backbone
    if not info:
        return None
    return {k: info.get(k) for k in ("model_dir", "n_layers", "window", "sigma", "filter", "kept")}
