"""The alignment figure: word labels never overlap (short words, long names, many words in a short clip),
the row assignment is optimal, and both aligners' alignments draw."""

import itertools

import numpy as np
import pytest

from spiritlens.align import Alignment, WordSpan
from spiritlens.figures.alignment import alignment_figure, label_rows, plot_alignment


def test_label_rows_never_overlap_and_use_the_fewest_rows():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 25))
        centres, widths = rng.uniform(0, 10, n), rng.uniform(0.1, 3, n)
        rows = label_rows(centres, widths)
        for i, j in itertools.combinations(range(n), 2):
            if rows[i] == rows[j]:
                assert (centres[i] + widths[i] / 2 <= centres[j] - widths[j] / 2
                        or centres[j] + widths[j] / 2 <= centres[i] - widths[i] / 2)
        # brute force: the most labels covering one point is the fewest rows any layout can use
        edges = sorted({c - w / 2 for c, w in zip(centres, widths)})
        depth = max(sum(c - w / 2 <= x < c + w / 2 for c, w in zip(centres, widths)) for x in edges)
        assert max(rows) + 1 == depth


def pocketsphinx_alignment(texts, duration, frame_seconds=0.01):
    """Words spread evenly over ``duration`` seconds, as the pocketsphinx aligner reports them."""
    n = int(round(duration / frame_seconds))
    bounds = np.linspace(0, n, len(texts) + 1).astype(int)
    words = tuple(WordSpan(t, int(a), int(b), a * frame_seconds, b * frame_seconds, -0.1, 0.9, 0, 1)
                  for t, a, b in zip(texts, bounds, bounds[1:]))
    labels = tuple(c for t in texts for c in t[:2])
    spans = tuple((int(a), int(a) + 1) for a in np.linspace(0, n - 1, len(labels)).astype(int))
    return Alignment(" ".join(texts), words, labels, spans, -0.1, 0.9, 0.05, False, n, frame_seconds, "pocketsphinx",
                     num_samples=n * 160, sample_rate=16000)


@pytest.mark.parametrize("texts,duration", [
    (["A", "I", "OF", "TO", "IN", "A", "IS", "BY", "ON", "AT", "OR", "AN", "IT", "BE", "AS", "SO", "NO", "UP", "GO",
      "ME"], 1.5),  # many short words in a short clip
    (["WOLFESCHLEGELSTEINHAUSENBERGERDORFF", "OF", "KIERKEGAARD", "ODNOKLASSNIKI", "IS"], 1.2),  # long names
    (["THE", "SPACE", "NEEDLE", "IS", "LOCATED", "IN", "THE", "CITY", "OF"], 2.5),
])
def test_word_labels_do_not_overlap(texts, duration):
    alignment = pocketsphinx_alignment(texts, duration)
    reference = [{"text": w.text, "start_s": w.start_s + 0.01, "end_s": w.end_s} for w in alignment]
    wave = 0.1 * np.random.default_rng(1).standard_normal(int(duration * 16000)).astype(np.float32)
    fig = alignment_figure(wave, 16000, None, None, alignment, title="labels", reference=reference)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    tracks = next(ax for ax in fig.axes if ax.get_label() == "word tracks")
    boxes = [t.get_window_extent(renderer) for t in tracks.texts]
    assert len(boxes) == 2 * len(texts)
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)
    axes_box = tracks.get_window_extent(renderer)
    # every label inside its strip, and off the track names at its left
    assert all(axes_box.y0 <= box.y0 and box.y1 <= axes_box.y1 and axes_box.x0 <= box.x0 + 1
               and box.x1 <= axes_box.x1 + 1 for box in boxes)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_pocketsphinx_alignment_draws_without_emissions(tmp_path):
    alignment = pocketsphinx_alignment(["HELLO", "WORLD"], 1.0)
    wave = 0.1 * np.random.default_rng(2).standard_normal(16000).astype(np.float32)
    data = plot_alignment(wave, 16000, None, None, alignment, tmp_path / "a.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    with pytest.raises(ValueError, match="emissions have 5 frames but the alignment 100"):
        alignment_figure(wave, 16000, np.zeros((5, 3)), ["a", "b", "c"], alignment)
