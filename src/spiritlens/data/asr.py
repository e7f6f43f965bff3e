"""ASR for the WER check of synthesised prompts, and the WER report itself.

Backends (``get_asr(name)``):

- ``pocketsphinx``: offline, with the en-US model bundled in the PyPI wheel; 1.5-3 s per sentence.
  A fresh decoder per utterance, so a transcription does not depend on what was decoded before
  (the decoder's running cepstral mean otherwise carries over and changes the words).
- ``whisper``: the paper's check (whisper-small), only when ``whisper`` (openai-whisper) or
  ``faster_whisper`` is importable and a local model is given (no download is attempted).

WER is computed by jiwer on texts normalised by :mod:`spiritlens.data.normalize` (lower case,
punctuation removed, numbers spelled out; see ``NORMALISATION``). When no ASR can run,
:func:`wer_check` returns ``computed=False`` with the reason instead of raising.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import jiwer
import numpy as np

from spiritlens.audio.waveform import load_audio
from spiritlens._io import write_json_atomic
from spiritlens.data.normalize import NORMALISATION, normalize_text

__all__ = [
    "ASR_BACKENDS",
    "ASRBackend",
    "ASRUnavailable",
    "PocketsphinxASR",
    "WERCheck",
    "WERItem",
    "WERReport",
    "WhisperASR",
    "get_asr",
    "load_audio_16k",
    "wer_check",
    "wer_report",
]

ASR_SAMPLE_RATE = 16000


class ASRUnavailable(RuntimeError):
    """No usable ASR backend (package or local model missing)."""


def load_audio_16k(audio: str | os.PathLike | np.ndarray, sample_rate: int | None = None) -> np.ndarray:
    """A 1-D float32 waveform at 16 kHz (``spiritlens.audio.waveform.load_audio``: channels averaged, soxr)."""
    return load_audio(audio, sample_rate, target_sample_rate=ASR_SAMPLE_RATE).samples


@runtime_checkable
class ASRBackend(Protocol):
    name: str

    def available(self) -> bool: ...

    def transcribe(self, audio: str | os.PathLike | np.ndarray, sample_rate: int | None = None) -> str: ...


class PocketsphinxASR:
    """CMU pocketsphinx 5 with its bundled en-US acoustic model, dictionary and language model."""

    name = "pocketsphinx"

    def available(self) -> bool:
        return importlib.util.find_spec("pocketsphinx") is not None

    def transcribe(self, audio: str | os.PathLike | np.ndarray, sample_rate: int | None = None) -> str:
        if not self.available():
            raise ASRUnavailable("pocketsphinx is not installed (pip install 'spiritlens[data]')")
        from pocketsphinx import Decoder

        wave = load_audio_16k(audio, sample_rate)
        pcm = (np.clip(wave, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        decoder = Decoder(samprate=ASR_SAMPLE_RATE, loglevel="FATAL")
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


class WhisperASR:
    """Whisper via openai-whisper (preferred) or faster-whisper, from a local model only.

    ``model``: a checkpoint path (a ``.pt`` file for openai-whisper, a CTranslate2 folder for
    faster-whisper) or a model name already in the local cache (``~/.cache/whisper/<name>.pt``, or
    the Hugging Face cache for faster-whisper). Nothing is downloaded.
    """

    name = "whisper"

    def __init__(self, model: str | os.PathLike | None = None, device: str = "cpu", language: str = "en"):
        self.model = None if model is None else str(model)
        self.device = device
        self.language = language
        self._engine: str | None = None
        self._model: Any = None

    def _unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("whisper") is not None:
            engine = "whisper"
        elif importlib.util.find_spec("faster_whisper") is not None:
            engine = "faster_whisper"
        else:
            return "neither openai-whisper nor faster-whisper is installed"
        if self.model is None:
            return "no local Whisper model given (pass model=PATH or a cached model name)"
        cached = Path("~/.cache/whisper").expanduser() / f"{self.model}.pt"
        if engine == "whisper" and not (Path(self.model).exists() or cached.is_file()):
            return f"Whisper model {self.model!r} is neither a local file nor in {cached.parent}"
        self._engine = engine
        return None

    def available(self) -> bool:
        return self._unavailable_reason() is None

    def _load(self) -> None:
        reason = self._unavailable_reason()
        if reason is not None:
            raise ASRUnavailable(f"whisper ASR unavailable: {reason}")
        try:
            if self._engine == "whisper":
                import whisper

                self._model = whisper.load_model(self.model, device=self.device)
            else:
                from faster_whisper import WhisperModel

                self._model = WhisperModel(self.model, device=self.device, compute_type="int8", local_files_only=True)
        except Exception as e:  # noqa: BLE001 - a missing local model surfaces here
            raise ASRUnavailable(f"whisper ASR unavailable: cannot load model {self.model!r} ({type(e).__name__}: {e})") from None

    def transcribe(self, audio: str | os.PathLike | np.ndarray, sample_rate: int | None = None) -> str:
        if self._model is None:
            self._load()
        wave = load_audio_16k(audio, sample_rate)
        if self._engine == "whisper":
            return self._model.transcribe(wave, language=self.language, fp16=False, temperature=0.0)["text"].strip()
        segments, _ = self._model.transcribe(wave, language=self.language, beam_size=5)
        return " ".join(s.text.strip() for s in segments)


ASR_BACKENDS: dict[str, type] = {"pocketsphinx": PocketsphinxASR, "whisper": WhisperASR}


def get_asr(name: str, **kwargs: Any) -> ASRBackend:
    """Build the ASR backend ``name``; ValueError if unknown, ASRUnavailable if it cannot run here."""
    if name not in ASR_BACKENDS:
        raise ValueError(f"unknown ASR backend {name!r}; available: {', '.join(ASR_BACKENDS)}")
    backend = ASR_BACKENDS[name](**kwargs)
    if not backend.available():
        detail = backend._unavailable_reason() if isinstance(backend, WhisperASR) else "package not installed"
        raise ASRUnavailable(f"ASR backend {name!r} unavailable: {detail}")
    return backend


@dataclass
class WERItem:
    reference: str
    hypothesis: str
    reference_norm: str
    hypothesis_norm: str
    wer: float
    hits: int
    substitutions: int
    deletions: int
    insertions: int


@dataclass
class WERReport:
    """Per-item WER and corpus WER (total errors / total reference words, not the mean of items)."""

    items: list[WERItem]
    wer: float
    normalisation: str = NORMALISATION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wer_report(references: Sequence[str], hypotheses: Sequence[str]) -> WERReport:
    """WER of each hypothesis against its reference, both normalised with ``normalize_text``."""
    if isinstance(references, str) or isinstance(hypotheses, str):
        raise TypeError("references and hypotheses must be sequences of str, not a single str")
    if len(references) != len(hypotheses):
        raise ValueError(f"references ({len(references)}) and hypotheses ({len(hypotheses)}) differ in length")
    if not references:
        raise ValueError("references is empty")
    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(h) for h in hypotheses]
    for i, ref in enumerate(refs):
        if not ref:
            raise ValueError(f"reference #{i} ({references[i]!r}) is empty after normalisation")
    items = []
    for ref, hyp, ref_norm, hyp_norm in zip(references, hypotheses, refs, hyps):
        out = jiwer.process_words(ref_norm, hyp_norm)
        items.append(WERItem(ref, hyp, ref_norm, hyp_norm, float(out.wer), out.hits, out.substitutions, out.deletions, out.insertions))
    return WERReport(items=items, wer=float(jiwer.process_words(refs, hyps).wer))


@dataclass
class WERCheck:
    """Result of :func:`wer_check`: ``computed`` is False (with ``reason``) when no ASR could run."""

    computed: bool
    asr: str | None
    reason: str | None = None
    item_ids: list[str] = field(default_factory=list)
    report: WERReport | None = None
    failed: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wer_check(
    items: Iterable[tuple[str, str, str | os.PathLike]],
    asr: ASRBackend | str = "pocketsphinx",
    *,
    out_path: str | os.PathLike | None = None,
    **asr_kwargs: Any,
) -> WERCheck:
    """Transcribe ``(item_id, reference_text, audio_path)`` items and report WER.

    ``asr`` is a backend or a name for :func:`get_asr`. If it is unavailable the check is marked
    not computed with the reason; a failure on one item is recorded in ``failed`` and skipped.
    ``out_path``: also write the check as JSON (atomically).
    """
    items = list(items)
    check = WERCheck(computed=False, asr=asr if isinstance(asr, str) else asr.name)
    try:
        backend = get_asr(asr, **asr_kwargs) if isinstance(asr, str) else asr
        refs, hyps = [], []
        for item_id, text, path in items:
            try:
                hyp = backend.transcribe(path)
            except ASRUnavailable:
                raise
            except Exception as e:  # noqa: BLE001 - one bad file must not stop the check
                check.failed.append((item_id, f"{type(e).__name__}: {e}"))
                continue
            check.item_ids.append(item_id)
            refs.append(text)
            hyps.append(hyp)
    except ASRUnavailable as e:
        check.reason = str(e)
        check.item_ids = []
    else:
        if refs:
            check.report = wer_report(refs, hyps)
            check.computed = True
        else:
            check.reason = "no item could be transcribed" if items else "no items"
    if out_path is not None:
        write_json_atomic(out_path, check.to_dict())
    return check
