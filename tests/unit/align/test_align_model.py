"""The tiny random HubertForCTC: layout, frame geometry, end-to-end alignment, bad directories and audio."""

import json
import time

import numpy as np
import pytest
import soxr

from spiritlens.align import CTCAligner, LowAlignmentConfidence
from spiritlens.synthetic.tiny_ctc import write_tiny_ctc_model
from spiritlens.synthetic.tiny_ctc import CTC_VOCAB, FINE_TUNING_VOCAB
from spiritlens.audio.waveform import load_audio
from spiritlens.units import conv_hop_samples, conv_receptive_field


@pytest.fixture(scope="module")
def tiny_ctc_dir(tmp_path_factory):
    return write_tiny_ctc_model(tmp_path_factory.mktemp("tiny_ctc"), seed=0)


@pytest.fixture(scope="module")
def aligner(tiny_ctc_dir):
    return CTCAligner.from_pretrained(tiny_ctc_dir)


def test_layout_and_determinism(tiny_ctc_dir, tmp_path):
    files = {p.name for p in tiny_ctc_dir.iterdir()}
    assert {"config.json", "vocab.json", "tokenizer_config.json", "special_tokens_map.json",
            "preprocessor_config.json"} <= files
    assert json.loads((tiny_ctc_dir / "vocab.json").read_text()) == {c: i for i, c in enumerate(CTC_VOCAB)}
    assert len(CTC_VOCAB) == 32 and CTC_VOCAB[0] == "<pad>" and CTC_VOCAB[4] == "|" and CTC_VOCAB[31] == "Z"
    config = json.loads((tiny_ctc_dir / "config.json").read_text())
    assert config["architectures"] == ["HubertForCTC"] and config["conv_stride"] == [5, 2, 2, 2, 2, 2, 2]
    assert json.loads((tiny_ctc_dir / "special_tokens_map.json").read_text())["pad_token"] == "<pad>"
    start = time.perf_counter()
    again = write_tiny_ctc_model(tmp_path / "again", seed=0)
    assert time.perf_counter() - start < 2.0  # measured ~0.1 s once transformers is imported
    weights = [p.name for p in tiny_ctc_dir.iterdir() if p.suffix in (".safetensors", ".bin")]
    assert weights and all((again / w).read_bytes() == (tiny_ctc_dir / w).read_bytes() for w in weights)


def test_conv_geometry():
    def geometry(kernels, strides):
        layers = [(512, k, s) for k, s in zip(kernels, strides)]
        return conv_hop_samples(layers), conv_receptive_field(layers)

    assert geometry((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)) == (320, 400)
    assert geometry((10, 3, 3, 3, 3, 2, 2, 2), (5, 2, 2, 2, 2, 2, 2, 2)) == (640, 720)  # mHuBERT 25 Hz


@pytest.mark.parametrize("num_samples", [400, 16123, 48000])
def test_emissions_shape(aligner, num_samples):
    wav = 0.1 * np.random.default_rng(0).standard_normal(num_samples).astype(np.float32)
    em = aligner.emissions(wav)
    frames = (num_samples - 400) // 320 + 1
    assert em.log_probs.shape == (frames, 32) and em.log_probs.dtype == np.float32
    assert aligner.num_frames(num_samples) == frames
    np.testing.assert_allclose(np.logaddexp.reduce(em.log_probs, axis=1), 0.0, atol=1e-4)
    assert (em.frame_seconds, em.hop_samples, em.receptive_field_samples, em.blank) == (0.02, 320, 400, 0)
    assert em.vocab == list(CTC_VOCAB) and em.num_samples == num_samples


def test_align_end_to_end(aligner):
    wav = 0.1 * np.random.default_rng(1).standard_normal(48000).astype(np.float32)
    with pytest.warns(LowAlignmentConfidence):  # random weights: the path is improbable
        alignment = aligner.align(wav, "The capital of France is Paris")
    assert [w.text for w in alignment] == ["THE", "CAPITAL", "OF", "FRANCE", "IS", "PARIS"]
    assert alignment.num_samples == 48000 and alignment.num_frames == 149 and alignment.low_confidence
    bounds = [(w.start_frame, w.end_frame) for w in alignment]
    assert all(0 <= a < b <= 149 for a, b in bounds)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(bounds, bounds[1:]))


def test_bad_audio(aligner):
    with pytest.raises(ValueError, match=r"waveform is silent \(peak amplitude 0\)"):
        aligner.emissions(np.zeros(16000, dtype=np.float32))
    with pytest.raises(ValueError, match="waveform has 399 samples at 16000 Hz; one CTC frame needs 400"):
        aligner.emissions(np.ones(399, dtype=np.float32))
    with pytest.raises(ValueError, match=r"expected audio of shape \[N\], \[C, N\] or \[N, C\], got \[2, 2, 8000\]"):
        aligner.emissions(np.ones((2, 2, 8000), dtype=np.float32))
    stereo = 0.1 * np.random.default_rng(5).standard_normal((2, 16000)).astype(np.float32)
    np.testing.assert_array_equal(aligner.emissions(stereo).log_probs, aligner.emissions(stereo.mean(axis=0)).log_probs)
    wav = 0.1 * np.random.default_rng(2).standard_normal(3200).astype(np.float32)  # 9 CTC frames
    with pytest.raises(ValueError, match=r"needs 30 CTC frames .* only 9 frames \(audio is shorter than text\)"):
        aligner.align(wav, "The capital of France is Paris")


def test_not_a_ctc_model(tmp_path, tiny_ctc_dir):
    with pytest.raises(ValueError, match="has no config.json"):
        CTCAligner.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ValueError, match=r"is not a CTC model: config.json architectures \['LlamaForCausalLM'\]"):
        CTCAligner.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text((tiny_ctc_dir / "config.json").read_text())
    with pytest.raises(ValueError, match="has no vocab.json"):
        CTCAligner.from_pretrained(tmp_path)


def test_an_8_khz_model_gets_8_khz_samples(tmp_path):
    # a 16 kHz waveform given to a model whose processor says 8 kHz: every time used to double
    aligner = CTCAligner.from_pretrained(write_tiny_ctc_model(tmp_path / "ctc8k", seed=1, sampling_rate=8000))
    assert (aligner.sample_rate, aligner.frame_seconds) == (8000, 0.04)
    wav16 = 0.1 * np.random.default_rng(3).standard_normal(36640).astype(np.float32)  # 2.29 s at 16 kHz
    em = aligner.emissions(wav16, sample_rate=16000)
    wav8 = soxr.resample(wav16, 16000, 8000)
    assert (em.sample_rate, em.num_samples, em.frame_seconds) == (8000, len(wav8), 0.04)
    assert em.num_frames == (len(wav8) - 400) // 320 + 1 == 57
    np.testing.assert_array_equal(em.log_probs, aligner.emissions(wav8, sample_rate=8000).log_probs)
    with pytest.warns(LowAlignmentConfidence):
        alignment = aligner.align(wav16, "The capital of France", sample_rate=16000)
    assert alignment.sample_rate == 8000 and alignment.num_samples == len(wav8)
    assert alignment.words[-1].end_s <= 2.29 + 1e-9 and alignment.frame_unit == "CTC frame (40 ms)"
    waveform = load_audio(wav16, 16000)
    np.testing.assert_array_equal(aligner.emissions(waveform).log_probs, em.log_probs)


def test_the_fine_tuning_vocabulary_layout_loads_and_aligns(tmp_path):
    # lower-case letters, [PAD] blank last, "|" delimiter, do_lower_case: used to load, then fail with
    # "label(s) ['A', 'C', ...] not in the CTC vocab"
    directory = write_tiny_ctc_model(tmp_path / "ft", seed=2, layout="fine-tuning")
    aligner = CTCAligner.from_pretrained(directory)
    assert aligner.vocab == list(FINE_TUNING_VOCAB) and aligner.blank == 29 and aligner.vocab[aligner.blank] == "[PAD]"
    assert aligner.word_delimiter == "|" and aligner.do_lower_case
    wav = 0.1 * np.random.default_rng(4).standard_normal(48000).astype(np.float32)
    with pytest.warns(LowAlignmentConfidence):
        alignment = aligner.align(wav, "The Capital of France's")
    assert [w.text for w in alignment] == ["THE", "CAPITAL", "OF", "FRANCE'S"]
    assert alignment.labels[:4] == ("t", "h", "e", "|") and "'" in alignment.labels


def test_a_vocabulary_that_is_not_characters_is_refused(tmp_path, tiny_ctc_dir):
    import shutil

    directory = tmp_path / "words"
    shutil.copytree(tiny_ctc_dir, directory)
    (directory / "vocab.json").write_text(json.dumps({f"word{i}": i for i in range(32)}))
    (directory / "tokenizer_config.json").write_text(json.dumps({"pad_token": "word0"}))
    with pytest.raises(ValueError, match="only 0 letters; not a character CTC vocabulary"):
        CTCAligner.from_pretrained(directory)
