"""Figure 3 of the paper: forced alignment of a spoken prompt's transcript.

Three panels on one time axis in seconds:

- top: for the CTC path, the trellis ``log_probs[t, label_j]`` for every aligned label ``j`` (``|``
  included) over CTC frames, with the alignment path; for pocketsphinx, its phones as boxes on the
  same kind of path (there are no emissions to show). Frame ``t`` starts at ``t * frame_seconds``.
- middle: the aligned words as spans with their labels (and score), and, when the synthesiser's own
  word times are known (``reference``), those as a second track, so a misplaced word shows as a shift
  between the tracks. Labels that would overlap go to further rows, so every label stays readable
  whatever the words' lengths (short words, long names, many words in a short clip).
- bottom: a log-mel spectrogram of the waveform (numpy STFT + mel filterbank) with the aligned word
  boundaries (and the reference ones dotted).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["alignment_figure", "plot_alignment", "log_mel_spectrogram", "label_rows"]

MAX_WIDTH_IN = 24.0  # a long clip does not make an unbounded figure
_WORD_FONT = 8


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


def label_rows(centres, widths, gap: float = 0.0) -> list[int]:
    """Row of each label so that no two labels in a row overlap: labels ``[c - w/2, c + w/2)`` (any unit),
    taken left to right, each in the lowest row whose last label ends ``gap`` before it starts."""
    ends: list[float] = []
    rows = [0] * len(centres)
    for i in sorted(range(len(centres)), key=lambda k: centres[k] - widths[k] / 2):
        left = centres[i] - widths[i] / 2
        for row, end in enumerate(ends):
            if left >= end + gap:
                break
        else:
            row = len(ends)
            ends.append(-np.inf)
        ends[row] = centres[i] + widths[i] / 2
        rows[i] = row
    return rows


def plot_alignment(waveform: np.ndarray, sample_rate: int, emissions, vocab, alignment, path, *,
                   title: str | None = None, reference=None) -> Path:
    """Write the alignment figure (:func:`alignment_figure`) as a PNG to ``path`` and return it."""
    import matplotlib.pyplot as plt

    fig = alignment_figure(waveform, sample_rate, emissions, vocab, alignment, title=title, reference=reference)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def alignment_figure(waveform: np.ndarray, sample_rate: int, emissions, vocab, alignment, *,
                     title: str | None = None, reference=None):
    """The alignment figure as a matplotlib ``Figure`` (panels in the module docstring).

    ``waveform``: 1-D samples at ``sample_rate``; ``emissions``: an ``Emissions`` or CTC log-probs
    [T, V] (numpy or torch), or ``None`` (pocketsphinx); ``vocab``: its labels (ignored when
    ``emissions`` carries them); ``alignment``: an ``Alignment`` (CTC or pocketsphinx);
    ``reference``: the synthesiser's word times (dicts or objects with ``text``, ``start_s``,
    ``end_s``), or ``None``. Raises ``ValueError`` if the emissions and the alignment disagree on the
    number of frames.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fs = alignment.frame_seconds
    duration = max(len(waveform) / sample_rate, alignment.num_frames * fs)
    words = [(w.text, w.start_s, w.end_s, f"{w.confidence:.2f}") for w in alignment.words]
    reference_words = [] if reference is None else [
        (_get(r, "text"), _get(r, "start_s"), _get(r, "end_s"), "") for r in reference if r is not None]

    width = float(np.clip(1.6 * duration + 4, 8.0, MAX_WIDTH_IN))
    fig = plt.figure(figsize=(width, 9.0))
    grid = fig.add_gridspec(3, 2, height_ratios=[3.2, 1.0, 2.2], width_ratios=[60, 1], hspace=0.08, wspace=0.02)
    top, middle, bottom = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[2, 0])
    # word tracks: rows from the label widths the renderer measures against the axes' real width
    axis_width_in = middle.get_position().width * width
    align_layout = _layout(fig, words, duration, axis_width_in)
    ref_layout = _layout(fig, reference_words, duration, axis_width_in)
    n_rows = sum(max((r for r, _ in layout), default=-1) + 1 for layout in (align_layout, ref_layout))
    strip = 0.35 + 0.28 * n_rows
    fig.set_size_inches(width, 6.5 + strip)
    grid.set_height_ratios([3.2, strip, 2.2])
    for ax in (top, middle):
        ax.sharex(bottom)
        ax.tick_params(labelbottom=False)

    image = _top_panel(top, emissions, vocab, alignment)
    if image is not None:
        fig.colorbar(image, cax=fig.add_subplot(grid[0, 1]), label="log p")
    else:
        fig.add_subplot(grid[0, 1]).axis("off")
    method = "pocketsphinx" if alignment.method == "pocketsphinx" else f"CTC, {alignment.method}"
    top.set_title(f"{title or 'forced alignment'}\n{method}; {alignment.frame_unit}; "
                  f"confidence {alignment.confidence:.2f}", fontsize=9, loc="left")

    _word_tracks(middle, words, align_layout, reference_words, ref_layout)
    fig.add_subplot(grid[1, 1]).axis("off")

    spec = log_mel_spectrogram(waveform, sample_rate)
    image = bottom.imshow(spec, aspect="auto", origin="lower", cmap="magma", vmin=spec.max() - 80,
                          extent=(0, spec.shape[1] * 160 / sample_rate, 0, spec.shape[0]))
    for _, start, end, _ in words:
        bottom.axvline(start, color="cyan", linewidth=1)
        bottom.axvline(end, color="cyan", linewidth=1, linestyle="--")
    for _, start, end, _ in reference_words:
        bottom.axvline(start, ymax=0.12, color="white", linewidth=1.2, linestyle=":")
        bottom.axvline(end, ymax=0.12, color="white", linewidth=1.2, linestyle=":")
    bottom.set_ylabel("mel bin")
    bottom.set_xlabel("time (s)")
    bottom.set_xlim(0, duration)
    fig.colorbar(image, cax=fig.add_subplot(grid[2, 1]), label="dB")
    middle.set_label("word tracks")
    return fig


def _get(item, key):
    return item[key] if isinstance(item, dict) else getattr(item, key)


def _layout(fig, words, duration: float, axis_width_in: float) -> list[tuple[int, float]]:
    """``(row, centre in seconds)`` of each word label ("WORD 0.93"): its text width measured by the renderer,
    centred over the word but kept inside the time axis, rows from :func:`label_rows`."""
    if not words:
        return []
    renderer = fig.canvas.get_renderer()
    seconds_per_inch = duration / axis_width_in
    widths = []
    for text, _, _, score in words:
        label = fig.text(0, 0, text if not score else f"{text} {score}", fontsize=_WORD_FONT)
        widths.append(label.get_window_extent(renderer).width / fig.dpi * seconds_per_inch * 1.05)
        label.remove()
    centres = [float(np.clip((s + e) / 2, w / 2, duration - w / 2)) if w < duration else duration / 2
               for (_, s, e, _), w in zip(words, widths)]
    return list(zip(label_rows(centres, widths, gap=0.01 * duration), centres))


def _word_tracks(ax, words, layout, reference, ref_layout) -> None:
    """Aligned words (and the reference) as spans with labels, one row per level of ``label_rows``."""
    n_align = max((r for r, _ in layout), default=-1) + 1
    n_ref = max((r for r, _ in ref_layout), default=-1) + 1
    total = max(n_align + n_ref, 1)
    for (text, start, end, score), (row, centre) in zip(words, layout):
        y = total - 1 - row
        ax.add_patch(_span(start, end, y, "tab:cyan"))
        ax.text(centre, y, f"{text} {score}", ha="center", va="center", fontsize=_WORD_FONT)
    for (text, start, end, _), (row, centre) in zip(reference, ref_layout):
        y = n_ref - 1 - row
        ax.add_patch(_span(start, end, y, "lightgray"))
        ax.text(centre, y, text, ha="center", va="center", fontsize=_WORD_FONT, color="dimgray")
    ax.set_ylim(-0.6, total - 0.4)
    ticks = [(total - 1, "aligned")] if n_align else []
    ticks += [(n_ref - 1, "synthesiser")] if n_ref else []
    ax.set_yticks([t for t, _ in ticks], [name for _, name in ticks], fontsize=7)
    ax.tick_params(axis="y", length=0)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


def _span(start, end, y, color):
    from matplotlib.patches import Rectangle

    return Rectangle((start, y - 0.4), max(end - start, 1e-4), 0.8, facecolor=color, alpha=0.35, edgecolor=color)


def _top_panel(ax, emissions, vocab, alignment):
    """CTC trellis with the path, or pocketsphinx phones on the same kind of path; returns the image or None."""
    fs = alignment.frame_seconds
    labels = list(alignment.labels)
    image = None
    if emissions is not None:
        log_probs = getattr(emissions, "log_probs", emissions)
        vocab = list(getattr(emissions, "vocab", None) or vocab)
        if hasattr(log_probs, "detach"):
            log_probs = log_probs.detach().cpu().float().numpy()
        log_probs = np.asarray(log_probs)
        if log_probs.shape[0] != alignment.num_frames:
            raise ValueError(f"emissions have {log_probs.shape[0]} frames but the alignment {alignment.num_frames}")
        ids = alignment.label_ids
        if ids is None:
            index = {label: i for i, label in enumerate(vocab)}
            ids = [index[c] for c in labels]
        trellis = log_probs[:, list(ids)].T  # [labels, T]
        image = ax.imshow(trellis, aspect="auto", origin="lower", cmap="viridis", vmin=max(trellis.min(), -20),
                          vmax=0, extent=(0, alignment.num_frames * fs, -0.5, len(labels) - 0.5),
                          interpolation="nearest")
        for j, (a, b) in enumerate(alignment.label_spans):
            ax.plot((np.arange(a, b) + 0.5) * fs, np.full(b - a, j), "r.", markersize=3)
        ax.set_ylabel("transcript label")
    else:
        for j, (a, b) in enumerate(alignment.label_spans):
            silence = labels[j] in ("SIL", "sil", "<sil>")
            ax.add_patch(_span(a * fs, b * fs, j, "lightgray" if silence else "tab:red"))
        ax.set_ylim(-0.5, max(len(labels), 1) - 0.5)
        ax.set_ylabel("phone")
    if alignment.label_spans:
        ax.plot([(a + b) / 2 * fs for a, b in alignment.label_spans], range(len(labels)), "r-", linewidth=0.6,
                alpha=0.7)
    # y ticks: every label when they fit (about 9 per inch at this size), else every k-th
    height_in = ax.get_position().height * ax.figure.get_figheight()
    step = max(1, int(np.ceil(len(labels) / max(height_in * 9, 1))))
    ax.set_yticks(range(0, len(labels), step), labels[::step], fontsize=6)
    for word in alignment.words:
        ax.axvspan(word.start_s, word.end_s, color="white", alpha=0.10)
    return image


def plot_speech_prompt(prompt, path: str | os.PathLike) -> Path:
    """Figure 3 of the paper for a :class:`~spiritlens.align.speech_prompt.SpeechPrompt`: the CTC
    trellis with its path (or pocketsphinx's phones), the mel spectrogram with the aligned words and,
    when known, the synthesiser's own word times; written as a PNG at ``path``, which is returned."""
    emissions = prompt.emissions
    return plot_alignment(prompt.waveform.samples, prompt.waveform.sample_rate, emissions,
                          None if emissions is None else emissions.vocab, prompt.alignment, path,
                          title=f"{prompt.transcript!r} (subject {prompt.subject!r})",
                          reference=prompt.reference_words)
