"""Stream-aware causal tracing on the tiny Expressive model (spiritlens.traces.streams).

- every cell of a ``row_mode="streams"`` trace with ``noise_streams`` equals a plain loop written here: one
  full forward of S+1 rows per cell through the hooked model, row 0 clean, noise added at ``hook_embed`` on
  the stream mask built here from the merged token list, the row's positions copied from row 0 (<= 1e-6);
- the rows and the per-stream categories equal a brute-force rule over the merged token list and the
  subject's aligned groups;
- the prosody controls' prompts are SpiritLM's prompt path over the brute-force re-merged tokens, with the
  HuBERT tokens untouched.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from helpers import SPOKEN_PROMPT, run_cli
from spiritlens import HookedSpiritLM
from spiritlens.aggregates import aggregate_streams, categorize
from spiritlens.align import LowAlignmentConfidence
from spiritlens.align.prosody import controlled_prompt
from spiritlens.align.speech_prompt import SpeechPrompt
from spiritlens.traces import trace, trace_kinds

SCALE, SAMPLES, SEED, WINDOW = 0.5, 3, 4, 3
HOOKS = {"hidden": "blocks.{}.hook_resid_post", "mlp": "blocks.{}.hook_mlp_out", "attn": "blocks.{}.hook_attn_out"}
TAG = {"hubert": "[Hu", "pitch": "[Pi", "style": "[St"}


@pytest.fixture(scope="module")
def expressive(tiny_root):
    return HookedSpiritLM.from_pretrained(tiny_root / "spiritlm_model" / "spirit-lm-expressive-7b")


def spoken(model, wav, aligner, subject):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LowAlignmentConfidence)  # random CTC weights
        return SpeechPrompt.from_audio(model, wav, transcript=SPOKEN_PROMPT, subject=subject, aligner=aligner)


@pytest.fixture(scope="module", params=["Space Needle", "The Space Needle"])
def prompt(request, expressive, spoken_prompt_wav, tiny_ctc_dir):
    return spoken(expressive, spoken_prompt_wav, tiny_ctc_dir, request.param)


def stream_of(model, ids):
    """The stream of each position from its token string ([Hu…], [Pi…], [St…]; None otherwise)."""
    strings = model.tokenizer.convert_ids_to_tokens(list(ids))
    return [next((s for s, tag in TAG.items() if t.startswith(tag)), None) for t in strings]


def subject_words(prompt):
    """The subject's text tokens that have speech, with their positions (from the aligned groups)."""
    groups = prompt.token_groups()
    return [[prompt.speech_offset + k for k in groups[i]] for i in prompt.subject_tokens if groups[i]]


def plain_loop(model, ids, noised, rows, kind, answer):
    """One full forward of S+1 rows per (row, layer): noise on ``noised`` of rows 1..S, restore from row 0."""
    L, d = model.cfg.n_layers, model.cfg.d_model
    z = torch.from_numpy(SCALE * np.random.RandomState(SEED).randn(SAMPLES, len(noised), d))
    batch = torch.tensor([list(ids)] * (SAMPLES + 1))

    def noise(act, hook):
        act[1:, noised] += z
        return act

    def restore(positions):
        def hook(act, hook):
            act[1:, positions] = act[0, positions]
            return act
        return hook

    def score(hooks):
        with torch.no_grad():
            logits = model.run_with_hooks(batch, fwd_hooks=[("hook_embed", noise)] + hooks)
        return float(torch.softmax(logits[1:, -1].float(), dim=-1).mean(dim=0)[answer])

    table = np.zeros((len(rows), L))
    for r, positions in enumerate(rows):
        for layer in range(L):
            layers = [layer] if kind == "hidden" else range(max(0, layer - WINDOW // 2),
                                                            min(L, layer - (-WINDOW // 2)))
            table[r, layer] = score([(HOOKS[kind].format(l), restore(list(positions))) for l in layers])
    return table, score([])


@pytest.mark.parametrize("noise_streams", [("pitch",), ("hubert", "style"), ("hubert", "pitch", "style")])
def test_stream_trace_equals_the_plain_loop(expressive, prompt, noise_streams):
    ids = prompt.input_ids
    streams = stream_of(expressive, ids)
    mask = sorted({p for word in subject_words(prompt) for p in word if streams[p] in noise_streams})
    results = trace_kinds(expressive, prompt, kinds=("hidden", "mlp", "attn"), noise=SCALE, samples=SAMPLES,
                          seed=SEED, window=WINDOW, row_mode="streams", noise_streams=noise_streams)
    for kind, result in results.items():
        assert result.extra["noised_positions"] == mask and result.extra["noise_streams"] == list(noise_streams)
        rows = [row.positions for row in result.rows]
        expected, low = plain_loop(expressive, ids, mask, rows, kind, result.answer_id)
        assert abs(result.low_score - low) <= 1e-6
        assert np.abs(result.scores - expected).max() <= 1e-6, kind
        assert np.abs(result.scores - low).max() > 1e-4  # the noise has an effect to restore


def test_stream_rows_and_categories_follow_the_merged_tokens(expressive, prompt):
    result = trace(expressive, prompt, kind="hidden", noise=SCALE, samples=2, row_mode="streams",
                   noise_streams=("hubert", "pitch", "style"))
    groups = trace(expressive, prompt, kind="hidden", noise=SCALE, samples=2, row_mode="groups").to_json()
    streams = stream_of(expressive, prompt.input_ids)
    words = subject_words(prompt)
    # brute force: a subject position of stream s in the j-th subject word is in first (j = 0), last
    # (j = n - 1) or middle subject token / s; the rows after the subject are the plain groups' rows
    expected: dict[str, set] = {}
    for j, word in enumerate(words):
        where = ["first_subject"] * (j == 0) + ["last_subject"] * (j == len(words) - 1) + \
            ["middle_subject"] * (0 < j < len(words) - 1)
        for p in word:
            for name in where:
                expected.setdefault(f"{name}/{streams[p]}", set()).add(p)
    plain = categorize(groups)
    for name in ("first_subsequent", "further", "last"):
        expected[name] = {p for r in plain[name] for p in groups["rows"][r]["positions"]}
    document = result.to_json()
    got = categorize(document)
    assert set(got) == set(expected) | {c for c, rows in got.items() if not rows}
    for category, rows in got.items():
        positions = [p for r in rows for p in document["rows"][r]["positions"]]
        assert set(positions) == expected.get(category, set()), category
        if "/" in category:  # a subject row holds one stream of one word
            stream = category.split("/")[1]
            assert all(streams[p] == stream for p in positions)
    assert any(got[f"middle_subject/{s}"] for s in ("hubert", "pitch", "style")) == (len(words) > 2)
    aggregated = aggregate_streams([document], "hidden")
    for category, rows in got.items():
        if rows:
            effects = np.asarray([document["scores"][r] for r in rows]) - document["low_score"]
            assert np.allclose(aggregated.effect[category], effects.mean(axis=0), atol=2e-4)  # (rounding floor)


def test_plain_aggregate_refuses_stream_rows(expressive, prompt):
    from spiritlens.aggregates import aggregate

    document = trace(expressive, prompt, kind="hidden", noise=SCALE, samples=2, row_mode="streams").to_json()
    with pytest.raises(ValueError, match="split by stream"):
        aggregate([document], "hidden")


@pytest.mark.parametrize("name", ["flat_pitch", "shuffled_pitch", "other_pitch", "style_code", "other_style"])
def test_controlled_prompt_is_the_prompt_path_over_the_controlled_tokens(expressive, prompt, name, tmp_path,
                                                                       spoken_prompt_wav):
    donor = None
    if name.startswith("other"):
        from spiritlens.data import EspeakTTS

        wav = EspeakTTS().synthesize("The Eiffel Tower is in Paris, in the middle of France", tmp_path / "d.wav")
        donor = expressive.speech_tokenizer.encode(wav)
    changed = controlled_prompt(expressive, prompt, name, donor)
    strings = changed.units.token_strings()
    ids, _ = expressive.encode([("speech", changed.units)])
    assert changed.input_ids == ids[0].tolist()
    tokens = expressive.tokenizer.convert_ids_to_tokens(changed.input_ids)
    assert tokens[changed.speech_offset:-1] == strings and tokens[-1] == "[Text]"
    hubert = [t for t in tokens if t.startswith("[Hu")]
    assert hubert == [t for t in expressive.tokenizer.convert_ids_to_tokens(prompt.input_ids) if t.startswith("[Hu")]
    # each word's group is every token (any stream) whose 25 Hz span overlaps the word's frames
    for i, group in enumerate(changed.token_groups()):
        frames = changed.token_frames.tokens[i]
        if frames.start_frame is None:
            assert group is None
            continue
        lo, hi = frames.start_frame // 2, -(-frames.end_frame // 2)  # 50 Hz CTC frames -> 25 Hz frames
        assert list(group or ()) == [k for k, t in enumerate(changed.units.tokens) if t.frames[0] < hi and t.frames[1] > lo]
    result = trace(expressive, changed, kind="hidden", noise=SCALE, samples=2, row_mode="streams",
                   noise_streams=("pitch",))
    assert result.tokens[-1] == "[Text]" and np.isfinite(result.scores).all()


def test_controlled_prompt_refuses_codes_outside_the_vocabulary(expressive, prompt):
    from spiritlens.units.controls import ProsodyControl

    with pytest.raises(ValueError, match="code 64 is outside this model's 64 pitch tokens"):
        controlled_prompt(expressive, prompt, ProsodyControl("flat_pitch", code=64))


def test_noise_streams_need_an_expressive_spoken_prompt(expressive):
    with pytest.raises(ValueError, match="needs a spoken prompt"):
        trace(expressive, "The Space Needle is in", "Space Needle", noise=0.1, samples=2, noise_streams=("pitch",))
    with pytest.raises(ValueError, match="noise_streams must be a non-empty list of distinct streams"):
        trace(expressive, "The Space Needle is in", "Space Needle", noise=0.1, samples=2, noise_streams=("tone",))


def test_trace_cli_noises_one_stream(tiny_root, spoken_prompt_wav, tiny_ctc_dir, tmp_path):
    out = tmp_path / "s2t.json"
    done = run_cli("trace", "--model", tiny_root / "spiritlm_model" / "spirit-lm-expressive-7b", "--audio",
                   spoken_prompt_wav, "--transcript", SPOKEN_PROMPT, "--subject", "Space Needle", "--aligner",
                   tiny_ctc_dir, "--noise", "0.5", "--samples", "2", "--row-mode", "streams", "--noise-streams",
                   "pitch", "--json", out, env={"SPIRITLM_CHECKPOINTS_DIR": str(tiny_root)})
    assert done.returncode in (0, 1), done.stderr[-2000:]  # 1: the random CTC model's alignment is flagged
    import json

    data = json.loads(out.read_text())
    assert data["row_mode"] == "streams" and data["noise_streams"] == ["pitch"]
    assert all(data["tokens"][p].startswith("[Pi") for p in data["noised_positions"])
    assert {s for s in data["row_streams"] if s} == {"hubert", "pitch", "style"}
    bad = run_cli("trace", "--model", tiny_root / "spiritlm_model" / "spirit-lm-expressive-7b", "--prompt",
                  "The Space Needle is in", "--subject", "Space Needle", "--noise", "0.5", "--noise-streams", "pitch",
                  "--json", tmp_path / "t.json")
    assert bad.returncode == 2 and "need a spoken prompt (--audio)" in bad.stderr
