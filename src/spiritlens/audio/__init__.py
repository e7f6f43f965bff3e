"""Audio input: load, average to mono, resample to 16 kHz (soxr); a Waveform knows its rate."""

from spiritlens.audio.waveform import TARGET_SAMPLE_RATE, MAX_CHANNELS, Waveform, load_audio

__all__ = [
    "TARGET_SAMPLE_RATE",
    "MAX_CHANNELS",
    "Waveform",
    "load_audio",
]
