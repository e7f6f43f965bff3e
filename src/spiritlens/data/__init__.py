"""Dataset layer: ROME's Known facts, prompt speech synthesis, WER check, Known-t2t / Known-s2t filtering."""

from spiritlens.data.asr import (
    ASRBackend,
    ASRUnavailable,
    PocketsphinxASR,
    WERCheck,
    WERItem,
    WERReport,
    WhisperASR,
    get_asr,
    load_audio_16k,
    wer_check,
    wer_report,
)
from spiritlens.data.judge import FilterEntry, FilterResult, Judgement, filter_prompts, judge
from spiritlens.data.known import (
    KNOWN_URL,
    KnownDataset,
    KnownDataUnavailable,
    KnownRecord,
    load_known,
    parse_known,
    select,
)
from spiritlens.data.normalize import NORMALISATION, normalize_text, normalize_words
from spiritlens.data.tts.espeak import EspeakTTS
from spiritlens.data.tts.flite import FliteTTS
from spiritlens.data.tts.melo import MeloTTS
from spiritlens.data.tts.corpus import SpeechEntry, SynthesisResult, load_manifest, synthesize_corpus
from spiritlens.data.tts.backend import Synthesis, TTSBackend, TTSError, TTSUnavailable, WordTime
from spiritlens.data.tts.registry import get_backend

__all__ = [
    "ASRBackend", "ASRUnavailable", "EspeakTTS", "FilterEntry", "FilterResult", "FliteTTS", "Judgement",
    "KNOWN_URL", "KnownDataUnavailable", "KnownDataset", "KnownRecord", "MeloTTS", "NORMALISATION",
    "PocketsphinxASR", "SpeechEntry", "Synthesis", "SynthesisResult", "TTSBackend", "TTSError", "TTSUnavailable",
    "WERCheck", "WERItem", "WERReport", "WhisperASR", "WordTime", "filter_prompts", "get_asr", "get_backend", "judge",
    "load_audio_16k", "load_known", "load_manifest", "parse_known", "normalize_text", "normalize_words", "select", "synthesize_corpus",
    "wer_check", "wer_report",
]
