"""Speech synthesis of Known prompts with word times: backends (espeak-ng, flite, MeloTTS), each
beside its binding, and the resumable corpus cache."""

from spiritlens.data.tts.backend import Synthesis, TTSBackend, TTSError, TTSUnavailable, WordTime
from spiritlens.data.tts.corpus import SpeechEntry, SynthesisResult, load_manifest, synthesize_corpus
from spiritlens.data.tts.espeak import EspeakTTS
from spiritlens.data.tts.flite import FliteTTS
from spiritlens.data.tts.melo import MeloTTS
from spiritlens.data.tts.registry import BACKENDS, get_backend

__all__ = [
    "BACKENDS", "EspeakTTS", "FliteTTS", "MeloTTS", "SpeechEntry", "Synthesis", "SynthesisResult", "TTSBackend",
    "TTSError", "TTSUnavailable", "WordTime", "get_backend", "load_manifest", "synthesize_corpus",
]
