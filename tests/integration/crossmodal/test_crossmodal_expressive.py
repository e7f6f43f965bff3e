"""Cross-modal analyses on the tiny Expressive model: a word's speech group holds its HuBERT, pitch and
style positions (every token whose 25 Hz span overlaps the word), and the analyses run on it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from helpers import SPOKEN_PROMPT
from spiritlens import HookedSpiritLM
from spiritlens.align import LowAlignmentConfidence
from spiritlens.crossmodal import CrossModalFact, cross_modal_patching, representation_geometry, speech_logit_lens


@pytest.fixture(scope="module")
def expressive(tiny_root):
    return HookedSpiritLM.from_pretrained(tiny_root / "spiritlm_model" / "spirit-lm-expressive-7b")


@pytest.fixture(scope="module")
def fact(expressive, spoken_prompt_wav, tiny_ctc_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LowAlignmentConfidence)  # random CTC weights
        return CrossModalFact.from_audio(expressive, spoken_prompt_wav, prompt=SPOKEN_PROMPT, subject="Space Needle",
                                         aligner=tiny_ctc_dir, name="space_needle")


def test_speech_groups_hold_every_overlapping_stream(fact):
    speech = fact.speech
    tokens = speech.units.tokens
    offset = speech.speech_offset
    streams_seen = set()
    for i, frames in enumerate(speech.token_frames.tokens):
        positions = fact.speech_positions(i)
        if frames.start_frame is None:
            assert positions == []
            continue
        a, b = frames.start_frame // 2, -(-frames.end_frame // 2)  # 50 Hz CTC frames -> 25 Hz frames
        assert positions == [offset + k for k, t in enumerate(tokens) if t.frames[0] < b and t.frames[1] > a]
        streams_seen |= {tokens[p - offset].stream for p in positions}
    assert streams_seen == {"hubert", "pitch", "style"}
    for word in fact.words():
        assert word.speech_positions == sorted({p for t in word.tokens for p in fact.speech_positions(t)})


def test_patching_geometry_and_logit_lens_run(expressive, fact):
    patching = cross_modal_patching(expressive, fact, noise=0.1, samples=2)
    assert all(np.isfinite(c.scores).all() and len(c.scores) == expressive.cfg.n_layers for c in patching.curves)
    geometry = representation_geometry(expressive, fact)
    word_groups = [w.speech_positions for w in fact.words()]
    assert geometry.speech_positions and all(group in word_groups for group in geometry.speech_positions)
    assert geometry.cosine.shape[1] == expressive.cfg.n_layers and np.isfinite(geometry.cosine).all()
    lens = speech_logit_lens(expressive, fact)
    b, e = fact.speech_subject_range
    assert lens.positions == list(range(b, e))
    pieces = [label.split(": ", 1)[1] for label in lens.position_labels]
    assert any(p.startswith("[Pi") for p in pieces) and any(p.startswith("[Hu") for p in pieces)
