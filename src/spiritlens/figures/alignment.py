"""Figure 3 of the paper: CTC forced alignment of a spoken prompt's transcript.

Top: the CTC trellis, ``log_probs[t, label_j]`` for every label ``j`` of the aligned transcript
(``|`` included) over CTC frames, with the alignment path and each word's span and score.
Bottom: a log-mel spectrogram of the waveform (numpy STFT + mel filterbank) with the word boundaries.
Both panels share a time axis in seconds (CTC frame ``t`` starts at ``t * frame_seconds``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_alignment", "log_mel_spectrogram"]


def log_mel_spectrogram(waveform: np.ndarray, sample_rate: int, *, n_fft: int = 400, hop: int = 160,
                        n_mels: int = 80) -> np.ndarray:
    """Log-mel power spectrogram in dB, [n_mels, frames]; frame ``i`` starts at sample ``i * hop``.

    Hann-windowed STFT (``n_fft`` samples; a final partial frame is dropped), HTK mel scale, triangular
    filters from 0 Hz to Nyquist, ``10 * log10(max(power, 1e-10))``.
    """
    wav = np.asarray(waveform, dtype=np.float64).ravel()
    wav = np.pad(wav, (0, max(0, n_fft - len(wav))))
    frames = np.lib.stride_tricks.sliding_window_view(wav, n_fft)[::hop]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=1)) ** 2  # [frames, n_fft // 2 + 1]
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(0.0), mel(sample_rate / 2), n_mels + 2))
    bins = np.linspace(0.0, sample_rate / 2, power.shape[1])
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    filters = np.maximum(0.0, np.minimum((bins - lower) / (centre - lower), (upper - bins) / (upper - centre)))
    return 10.0 * np.log10(np.maximum(filters @ power.T, 1e-10))


def plot_alignment(waveform: np.ndarray, sample_rate: int, emissions, vocab, alignment, path, *,
                   title: str | None = None) -> Path:
    """Write the alignment figure as a PNG to ``path`` and return it.

    ``waveform``: 1-D samples at ``sample_rate``; ``emissions``: an ``Emissions`` or CTC log-probs
    [T, V] (numpy or torch); ``vocab``: its labels (ignored when ``emissions`` carries them);
    ``alignment``: the ``Alignment`` of ``align_emissions`` / ``CTCAligner.align``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log_probs = getattr(emissions, "log_probs", emissions)
    vocab = list(getattr(emissions, "vocab", None) or vocab)
    if hasattr(log_probs, "detach"):
        log_probs = log_probs.detach().cpu().float().numpy()
    log_probs = np.asarray(log_probs)
    if log_probs.shape[0] != alignment.num_frames:
        raise ValueError(f"emissions have {log_probs.shape[0]} frames but the alignment {alignment.num_frames}")
    index = {label: i for i, label in enumerate(vocab)}
    labels = alignment.labels
    fs = alignment.frame_seconds
    duration = len(waveform) / sample_rate

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8.0, 1.6 * duration + 4), 7.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    trellis = log_probs[:, [index[c] for c in labels]].T  # [labels, T]
    image = top.imshow(trellis, aspect="auto", origin="lower", cmap="viridis", vmin=max(trellis.min(), -20), vmax=0,
                       extent=(0, alignment.num_frames * fs, -0.5, len(labels) - 0.5), interpolation="nearest")
    for j, (a, b) in enumerate(alignment.label_spans):
        top.plot((np.arange(a, b) + 0.5) * fs, np.full(b - a, j), "r.", markersize=3)
    top.plot([(a + b) / 2 * fs for a, b in alignment.label_spans], range(len(labels)), "r-", linewidth=0.6,
             alpha=0.7, label="alignment path")
    top.set_yticks(range(len(labels)), list(labels), fontsize=6)
    top.set_ylabel("transcript label")
    for word in alignment.words:
        top.axvspan(word.start_s, word.end_s, color="white", alpha=0.12)
        top.text((word.start_s + word.end_s) / 2, len(labels) - 0.3, f"{word.text}\n{word.confidence:.2f}",
                 ha="center", va="bottom", fontsize=7, rotation=0, clip_on=False)
    top.set_title(title or f"CTC forced alignment ({alignment.method}, confidence {alignment.confidence:.2f})",
                  pad=28)
    fig.colorbar(image, ax=top, pad=0.01, label="log p")
    top.legend(loc="lower right", fontsize=7)

    spec = log_mel_spectrogram(waveform, sample_rate)
    image = bottom.imshow(spec, aspect="auto", origin="lower", cmap="magma", vmin=spec.max() - 80,
                          extent=(0, spec.shape[1] * 160 / sample_rate, 0, spec.shape[0]))
    for word in alignment.words:
        bottom.axvline(word.start_s, color="cyan", linewidth=1)
        bottom.axvline(word.end_s, color="cyan", linewidth=1, linestyle="--")
        bottom.text((word.start_s + word.end_s) / 2, spec.shape[0] - 2, word.text, color="white", ha="center",
                    va="top", fontsize=7)
    bottom.set_ylabel("mel bin")
    bottom.set_xlabel("time (s)")
    bottom.set_xlim(0, max(duration, alignment.num_frames * fs))
    fig.colorbar(image, ax=bottom, pad=0.01, label="dB")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
