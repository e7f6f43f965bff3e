"""The prepared run (``prepare.json``) as a typed object, and the models it names, loaded once.

:class:`PreparedRun` is what the prepare stage decides for every later stage: the records, the audio,
which prompts each direction kept, the judged answers, sigma, the window and where the model, speech
tokenizer and aligner are. :meth:`PreparedRun.load` is its one reader (every field type-checked; paths
that lived under the run's ``--out`` follow the folder when it moves). :class:`RunModels` loads the
model and aligner of a prepared run once and builds its spoken prompts; the trace, cross-modal and
report stages share it.
"""

from __future__ import annotations

import math
import os
import traceback
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from spiritlens._io import read_json, write_json_atomic
from spiritlens.align.aligner import POCKETSPHINX

PREPARE_FILE = "prepare.json"


@dataclass
class PreparedRun:
    """Everything the prepare stage decided; see the module docstring.

    ``records``, ``audio``, ``reference_words`` and each direction's ``answers`` are keyed by Known id
    as a string (JSON object keys); ``kept`` maps a direction (``t2t``/``s2t``) to Known ids; ``sigma``
    maps a modality (``text``/``speech``) to the noise scale sigma (None when not needed).
    ``fingerprint``: the model part of this run's run keys (:func:`run_fingerprint`), computed by the
    prepare stage of this invocation; ``recomputed``: what prepare did not reuse, and why (one line each).
    ``backbone``: the baseline's own record (:func:`spiritlens.experiment.baseline.prepare_backbone`:
    ``model_dir``, ``dtype``, ``fingerprint``, ``n_layers``, ``window``, ``window_rule``, ``kept``, ``filter``,
    ``answers``, ``sigma``), or None without a backbone.
    """

    config: dict
    model_dir: str
    records: dict[str, dict]
    dtype: str = "float32"
    embedded: bool = False
    weights: str = "checkpoints"
    speech_tokenizer: str | None = None
    aligner: str | None = None
    known_source: str = ""
    n_known: int = 0
    skipped: list[dict] = field(default_factory=list)
    toy: dict | None = None
    tokenization: dict | None = None
    family: str | None = None  # the model family (spiritlens.models.FAMILIES) the model folder was loaded as
    n_layers: int | None = None
    window: int | None = None
    window_rule: str = "given"
    reference_words: dict[str, list] = field(default_factory=dict)
    tts: dict | None = None
    wer: dict = field(default_factory=dict)
    audio: dict[str, str] = field(default_factory=dict)
    kept: dict[str, list[int]] = field(default_factory=dict)
    filter: dict[str, dict] = field(default_factory=dict)
    answers: dict[str, dict[str, int]] = field(default_factory=dict)
    sigma: dict[str, float | None] = field(default_factory=lambda: {"text": None, "speech": None})
    fingerprint: dict = field(default_factory=dict)
    recomputed: list[str] = field(default_factory=list)
    prepare_seconds: float | None = None
    backbone: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, out: str | os.PathLike) -> Path:
        """Write ``out/prepare.json`` atomically; its path."""
        return write_json_atomic(Path(out) / PREPARE_FILE, self.to_dict())

    def record(self, known_id: int) -> dict:
        return self.records[str(known_id)]

    def shared_facts(self) -> list[int]:
        """Known ids kept in both Known-t2t and Known-s2t, in Known-t2t's order."""
        spoken = set(self.kept.get("s2t") or [])
        return [kid for kid in self.kept.get("t2t") or [] if kid in spoken]

    @classmethod
    def from_dict(cls, data: Any, source: str = PREPARE_FILE) -> "PreparedRun":
        """Check every field's type; ValueError naming ``source`` and the first bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        missing = [name for name in ("config", "model_dir", "records") if name not in data]
        if missing:
            raise ValueError(f"{source} lacks {missing}: not a prepare.json of `spiritlens experiment`")
        expected = {"config": dict, "model_dir": str, "records": dict, "skipped": list, "reference_words": dict,
                    "wer": dict, "audio": dict, "kept": dict, "filter": dict, "answers": dict, "sigma": dict,
                    "embedded": bool, "weights": str, "dtype": str, "known_source": str, "window_rule": str,
                    "fingerprint": dict, "recomputed": list}
        for name, kind in expected.items():
            if name in data and not isinstance(data[name], kind):
                raise ValueError(f"{source}: field {name!r} must be a JSON {kind.__name__}, "
                                 f"got {type(data[name]).__name__}")
        for name in ("speech_tokenizer", "aligner", "family"):
            if data.get(name) is not None and not isinstance(data[name], str):
                raise ValueError(f"{source}: field {name!r} must be a string or null")
        for direction, ids in data.get("kept", {}).items():
            if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise ValueError(f"{source}: kept[{direction!r}] must be a list of Known ids")
            unknown = [i for i in ids if str(i) not in data["records"]]
            if unknown:
                raise ValueError(f"{source}: kept[{direction!r}] lists Known id {unknown[0]}, which is not one of "
                                 "its records")
        for name in ("window", "n_layers", "n_known"):
            value = data.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{source}: field {name!r} must be a JSON integer, got {type(value).__name__}")
        for modality, value in data.get("sigma", {}).items():
            _check_sigma(value, f"{source}: sigma[{modality!r}]")
        if data.get("backbone") is not None:
            _check_backbone(data["backbone"], data["records"], source)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> "PreparedRun":
        """Read ``run_dir/prepare.json``. Paths recorded under the run's ``--out`` (as given then,
        perhaps relative to another working directory) are moved to ``run_dir``.

        Raises:
            FileNotFoundError: ``run_dir`` has no ``prepare.json``. ValueError: it is not one written by
            ``spiritlens experiment`` (a field missing or of the wrong type), or an audio path lies outside
            ``run_dir`` (named with its entry).
        """
        run_dir = Path(run_dir)
        path = run_dir / PREPARE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{str(run_dir)!r} is not an experiment directory: no prepare.json "
                                    "(run `spiritlens experiment --out DIR` first)")
        prep = cls.from_dict(read_json(path, "prepare manifest"), str(path))
        old_out = Path(prep.config.get("out") or run_dir)
        prep.model_dir = _rebase(prep.model_dir, old_out, run_dir)
        if prep.backbone is not None:  # --random-weights writes it under out/checkpoints
            prep.backbone["model_dir"] = _rebase(prep.backbone["model_dir"], old_out, run_dir)
        prep.speech_tokenizer = _rebase(prep.speech_tokenizer, old_out, run_dir)
        if prep.aligner != POCKETSPHINX:  # a backend name, not a path
            prep.aligner = _rebase(prep.aligner, old_out, run_dir)
        prep.audio = {k: _rebase(v, old_out, run_dir) for k, v in prep.audio.items()}
        for known_id, audio in prep.audio.items():  # written by the experiment into <out>/speech, nowhere else
            if not isinstance(audio, str) or not _inside(Path(audio), run_dir):
                raise ValueError(f"{path}: audio[{known_id!r}] {audio!r} is outside the run folder {run_dir} (the "
                                 "experiment writes its audio into speech/ there; not read)")
        return prep


def _check_sigma(value, where: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{where} must be a finite number > 0 or null, got {value!r}")


def _check_backbone(backbone: Any, records: dict, source: str) -> None:
    """``prep.backbone``'s fields and types (ValueError naming the first bad one)."""
    if not isinstance(backbone, dict):
        raise ValueError(f"{source}: field 'backbone' must be a JSON object or null, got {type(backbone).__name__}")
    expected = {"model_dir": str, "dtype": str, "fingerprint": dict, "n_layers": int, "window": int, "kept": list,
                "answers": dict, "filter": dict}
    for name, kind in expected.items():
        value = backbone.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{source}: backbone[{name!r}] must be a JSON {kind.__name__}, got "
                             f"{type(value).__name__}")
    if not all(isinstance(i, int) and not isinstance(i, bool) and str(i) in records for i in backbone["kept"]):
        raise ValueError(f"{source}: backbone['kept'] must list Known ids of its records")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in backbone["answers"].values()):
        raise ValueError(f"{source}: backbone['answers'] must map Known ids to token ids")
    _check_sigma(backbone.get("sigma"), f"{source}: backbone['sigma']")


def run_fingerprint(prep: PreparedRun, device_kind: str) -> dict:
    """The model part of a run's run keys (:mod:`spiritlens.runkey`): digests of the model directory's
    files (``weights``), of the speech tokenizer's (``speech_tokenizer``, None without one) and of the
    aligner (``aligner``: a CTC directory's files, or the backend's name and version), ``dtype`` and
    ``device`` (its kind). Hashing costs one read of every file per process (see :mod:`spiritlens.runkey`)."""
    from spiritlens.runkey import aligner_digest, folder_digest

    speech = prep.speech_tokenizer
    return {"weights": folder_digest(prep.model_dir),
            "speech_tokenizer": folder_digest(speech) if speech and Path(speech).is_dir() else None,
            "aligner": aligner_digest(prep.aligner), "dtype": prep.dtype, "device": device_kind}


def record_failure(status: dict, entry: dict, error: BaseException, say, label: str) -> None:
    """Record one work item's failure and go on: ``entry`` plus ``reason`` (the error's first line) is
    appended to ``status["failed"]``, ``say(f"{label} failed: {reason}")`` tells the user, and the traceback
    is printed when ``$SPIRITLENS_DEBUG`` is set."""
    reason = f"{type(error).__name__}: {error}".splitlines()[0]
    status["failed"].append({**entry, "reason": reason})
    say(f"{label} failed: {reason}")
    if os.environ.get("SPIRITLENS_DEBUG"):
        traceback.print_exc()


def free_memory(device) -> None:
    """Collect garbage and, on a CUDA ``device``, return PyTorch's cached blocks (after dropping a model)."""
    import gc

    gc.collect()
    if getattr(device, "type", str(device)).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (links followed) lies inside ``folder``."""
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _rebase(value: str | None, old_out: Path, run_dir: Path) -> str | None:
    """A path that lived under ``old_out`` moved to ``run_dir``; other paths unchanged."""
    if value is None:
        return None
    path = Path(value)
    if path.exists() and path.is_absolute():
        return value
    for base in (old_out, old_out.resolve()):
        try:
            return str(run_dir / path.relative_to(base))
        except ValueError:
            continue
    return value


class RunModels:
    """The model and aligner of a prepared run, loaded on first use, and its spoken prompts.

    ``device`` None: ``cuda:$LOCAL_RANK`` when CUDA is available, else the CPU. ``dtype``: the
    run's (``prep.dtype``, the configuration's resolved ``model_dtype``). ``mapping``: how aligned seconds become speech positions.
    """

    def __init__(self, prep: PreparedRun, *, dtype: str = "float32", device: str | None = None,
                 mapping: str = "exact", before_load=None):
        self.prep = prep
        self.dtype, self.device, self.mapping = dtype, device, mapping
        self.before_load = before_load  # called before the model loads (the experiment releases the backbone)
        self._model = None
        self._aligner = None

    def resolved_device(self) -> str:
        """``device``, or ``cuda:$LOCAL_RANK`` when CUDA is available, else ``"cpu"`` (without loading)."""
        import torch

        if self.device is not None:
            return str(self.device)
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"

    def fingerprint(self) -> dict:
        """:func:`run_fingerprint` of this run on this device."""
        from spiritlens.runkey import device_kind

        return run_fingerprint(self.prep, device_kind(self.resolved_device()))

    def release(self) -> None:
        """Drop the model (reloaded on next use; on CUDA its cached memory is freed too)."""
        if self._model is not None:
            device, self._model = self._model.device, None
            free_memory(device)

    def model(self):
        if self._model is None:
            from spiritlens.model import HookedSpeechLM

            if self.before_load is not None:
                self.before_load()
            self._model = HookedSpeechLM.from_pretrained(Path(self.prep.model_dir), dtype=self.dtype,  # family detected
                                                         device=self.resolved_device(),
                                                         speech_tokenizer=self.prep.speech_tokenizer)
        return self._model

    def aligner(self):
        """The forced aligner (:func:`spiritlens.align.get_aligner` of ``prep.aligner``)."""
        if self._aligner is None:
            from spiritlens.align import get_aligner

            if self.prep.aligner is None:
                raise ValueError("S->T tracing needs an aligner: pass --aligner (a CTC model directory, or "
                                 "'pocketsphinx')")
            self._aligner = get_aligner(self.prep.aligner)
        return self._aligner

    def speech_prompt(self, known_id: int):
        """The :class:`~spiritlens.align.speech_prompt.SpeechPrompt` of a Known record's audio: its
        prompt as transcript, its subject, this run's aligner and mapping. Low alignment confidence is
        not warned about here: it is recorded in the prompt and in each result."""
        from spiritlens.align import LowAlignmentConfidence
        from spiritlens.align.speech_prompt import SpeechPrompt

        record = self.prep.record(known_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LowAlignmentConfidence)
            return SpeechPrompt.from_audio(self.model(), self.prep.audio[str(known_id)],
                                           transcript=record["prompt"], subject=record["subject"],
                                           aligner=self.aligner(), mapping=self.mapping,
                                           reference_words=self.prep.reference_words.get(str(known_id)))
