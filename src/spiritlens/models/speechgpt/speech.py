"""SpeechGPT's speech tokenizer (``utils/speech2unit/speech2unit.py``): audio -> deduplicated units of a
50 Hz mHuBERT's layer 11, quantised by k-means (1000 clusters).

Its folder (SpeechGPT's ``s2u_dir``, ``utils/speech2unit/`` in its README) holds two files (L141-142)::

    mhubert_base_vp_en_es_fr_it3.pt                 a raw fairseq HuBERT-base checkpoint
    mhubert_base_vp_en_es_fr_it3_L11_km1000.bin     scikit-learn MiniBatchKMeans saved with joblib.dump

read by :mod:`spiritlens.units.hubert` (fairseq's layout; pickled fairseq classes through the allow-list)
and :func:`spiritlens.units.quantizer.load_kmeans_joblib` (joblib's format without joblib). The pipeline
of ``Speech2Unit.__call__`` (L162-174), reproduced:

1. audio at 16 kHz (``FeatureReader.read_audio``, L54-58: ``torchaudio.load`` and torchaudio's
   ``resample``; here :func:`spiritlens.audio.waveform.load_audio`, soxr, mono by averaging channels,
   where SpeechGPT's ``view(1, -1)`` would lay a stereo file's channels end to end);
2. ``F.layer_norm`` over the waveform when the checkpoint's ``task.cfg.normalize`` is set (L68-69),
   before ``view(1, -1)`` (L70);
3. chunks of 1,600,000 samples (``max_chunk``, L73-85), each through ``extract_features(output_layer=11)``
   (HF ``hidden_states[11]``, :class:`~spiritlens.units.hubert.HubertFeatures`), features concatenated;
   the conv stack gives one frame per 320 samples (50 Hz) and needs 400 samples;
4. each frame's unit: the nearest centre by squared distance (``ApplyKmeans``, L90-118;
   :class:`~spiritlens.units.quantizer.KmeansQuantizer`), no blank;
5. runs of equal units merged (``merge_duplicates``, L148-159), each unit spelled ``<u>`` (L169).

Where spiritlens cannot give SpeechGPT's result it refuses in one line: a last chunk shorter than the
conv stack's receptive field (fairseq's convolution raises on it) and, with ``normalize``, audio longer
than one chunk (SpeechGPT normalises the whole waveform, spiritlens each chunk).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from spiritlens.audio.waveform import load_audio
from spiritlens.models.speechgpt.vocab import N_UNITS
from spiritlens.units.hubert import HubertFeatures
from spiritlens.units.quantizer import load_kmeans_joblib
from spiritlens.units.speech_tokenizer import SpeechTokenizer

HUBERT_FILE = "mhubert_base_vp_en_es_fr_it3.pt"  # speech2unit.py L141
KMEANS_FILE = "mhubert_base_vp_en_es_fr_it3_L11_km1000.bin"  # speech2unit.py L142
OUTPUT_LAYER = 11  # Speech2Unit(layer=11), L125
MAX_CHUNK_SAMPLES = 1_600_000  # Speech2Unit(max_chunk=1600000), L126


class SpeechGPTSpeechTokenizer(SpeechTokenizer):
    """Audio -> :class:`~spiritlens.units.SpeechUnits` as SpeechGPT's ``Speech2Unit`` (module docstring);
    frames are 20 ms (``frame_seconds`` 0.02). Build it with :meth:`from_dir`."""

    normalize = False  # the mHuBERT's task.cfg.normalize, set by from_dir

    @classmethod
    def from_dir(cls, speech_tokenizer_dir: str | os.PathLike, *, device: str = "cpu") -> "SpeechGPTSpeechTokenizer":
        """Load SpeechGPT's ``speech2unit`` folder (module docstring). FileNotFoundError naming a missing
        file; ValueError (one line naming the file) for a refused or malformed one, or a k-means with more
        clusters than SpeechGPT has unit tokens."""
        directory = Path(speech_tokenizer_dir)
        missing = [name for name in (HUBERT_FILE, KMEANS_FILE) if not (directory / name).is_file()]
        if not directory.is_dir() or missing:
            raise FileNotFoundError(f"{directory}: not SpeechGPT's speech tokenizer folder (utils/speech2unit/): "
                                    f"{' and '.join(missing) if directory.is_dir() else 'no such folder'} missing; "
                                    f"it holds {HUBERT_FILE} and {KMEANS_FILE}")
        hubert = HubertFeatures.from_checkpoint(directory / HUBERT_FILE, output_layer=OUTPUT_LAYER, device=device)
        quantizer = load_kmeans_joblib(directory / KMEANS_FILE).to(device)
        if quantizer.vocab_size > N_UNITS:
            raise ValueError(f"{directory / KMEANS_FILE}: {quantizer.vocab_size} clusters, more than SpeechGPT's "
                             f"{N_UNITS} unit tokens <0>..<{N_UNITS - 1}>")
        tokenizer = cls.from_parts(hubert, quantizer, max_chunk_samples=MAX_CHUNK_SAMPLES, min_chunk_samples=1,
                                   name=str(directory))  # no minimum chunk: the receptive field is the minimum
        tokenizer.normalize = hubert.normalize
        return tokenizer

    def encode(self, audio, sample_rate: float | None = None, *, expressive: bool = False):
        """Units of ``audio`` (a path, array, tensor or Waveform; ``sample_rate`` of an array, default
        16 kHz), or ValueError where SpeechGPT's own code would fail or differ (module docstring)."""
        if expressive:
            raise ValueError("SpeechGPT has no pitch or style tokens")
        wave = load_audio(audio, sample_rate, target_sample_rate=self.sample_rate)
        tail = wave.num_samples % MAX_CHUNK_SAMPLES
        if wave.num_samples > MAX_CHUNK_SAMPLES and 0 < tail < self.min_samples:
            raise ValueError(f"{wave.source}: its last {MAX_CHUNK_SAMPLES}-sample chunk has {tail} samples, fewer "
                             f"than the {self.min_samples} the mHuBERT's convolutions need (SpeechGPT's speech2unit "
                             "fails on it); trim or pad the audio")
        if self.normalize and wave.num_samples > MAX_CHUNK_SAMPLES:
            raise ValueError(f"{wave.source}: {wave.num_samples} samples are more than one {MAX_CHUNK_SAMPLES}-sample "
                             "chunk, and this mHuBERT normalises its input: SpeechGPT normalises the whole waveform "
                             "before chunking, which spiritlens does not reproduce")
        return super().encode(wave)


def load_speech_tokenizer(source: Any, model_dir: Path):
    """SpeechGPT's speech tokenizer from ``source``: its ``speech2unit`` folder, or a
    :class:`~spiritlens.units.SpeechTokenizer` (used as it is). SpeechGPT keeps no fixed place for it, so
    None is a FileNotFoundError saying what to pass."""
    if source is None:
        raise FileNotFoundError(f"{model_dir}: SpeechGPT's speech tokenizer has no fixed place: pass "
                                f"speech_tokenizer= (its utils/speech2unit/ folder: {HUBERT_FILE} and {KMEANS_FILE})")
    if isinstance(source, (str, os.PathLike)):
        return SpeechGPTSpeechTokenizer.from_dir(source)
    if isinstance(source, SpeechTokenizer):
        return source
    raise ValueError(f"speech_tokenizer must be SpeechGPT's speech2unit folder or a SpeechTokenizer, "
                     f"got {type(source).__name__}")
