"""Bad checkpoints and too-short audio: one-line errors naming the input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spiritlens.units import (
    SpeechTokenizer,
    conv_hop_samples,
    conv_num_frames,
    conv_receptive_field,
    load_quantizer,
    parse_conv_layers,
    read_hubert_checkpoint,
)
from spiritlens.synthetic.tiny_units import write_tiny_speech_tokenizer
from spiritlens.units.hubert import build_hubert_model

HUBERT = "hubert_25hz/mhubert_base_25hz.pt"
QUANT = "hubert_25hz/L11_quantizer_500.pt"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_speech_tokenizer(tmp_path_factory.mktemp("st"), seed=0)


def edited_hubert(tiny_dir, tmp_path, edit):
    ck = torch.load(tiny_dir / HUBERT, weights_only=True)
    edit(ck["model_weight"])
    torch.save(ck, tmp_path / "m.pt")
    return tmp_path / "m.pt"


def test_conv_stack_numbers_come_from_the_checkpoint(tiny_dir):
    layers = read_hubert_checkpoint(tiny_dir / HUBERT).conv_layers
    assert [k for _, k, _ in layers] == [10, 3, 3, 3, 3, 2, 2, 2]
    assert conv_hop_samples(layers) == 640 and conv_receptive_field(layers) == 720
    model = build_hubert_model(read_hubert_checkpoint(tiny_dir / HUBERT))
    for n in (720, 1359, 1360, 16_000, 16_001):
        assert conv_num_frames(n, layers) == (n - 720) // 640 + 1
        assert model.feature_extractor(torch.zeros(1, n)).shape[-1] == conv_num_frames(n, layers)
    assert conv_num_frames(719, layers) == 0
    # the standard 50 Hz stack: 320 hop, 400 receptive field
    std = parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2")
    assert (conv_hop_samples(std), conv_receptive_field(std)) == (320, 400)


def test_conv_spec_is_not_evaluated():
    with pytest.raises(ValueError, match=r"mHuBERT: cannot parse conv_feature_layers .*__import__.* \(Call\)"):
        parse_conv_layers("__import__('os').getcwd()")


def test_missing_weight(tiny_dir, tmp_path):
    path = edited_hubert(tiny_dir, tmp_path, lambda sd: sd.pop("encoder.layers.3.fc1.weight"))
    with pytest.raises(ValueError) as error:
        build_hubert_model(read_hubert_checkpoint(path))
    assert str(error.value) == (f"{path}: mHuBERT weights do not match its config: 1 missing "
                                "(encoder.layers.3.feed_forward.intermediate_dense.weight)")


def test_wrong_shape(tiny_dir, tmp_path):
    path = edited_hubert(tiny_dir, tmp_path, lambda sd: sd.update({"encoder.layers.0.fc2.weight": torch.zeros(48, 95)}))
    with pytest.raises(ValueError) as error:
        build_hubert_model(read_hubert_checkpoint(path))
    assert str(error.value) == (f"{path}: mHuBERT weights do not match its config: 1 mis-shaped "
                                "(encoder.layers.0.fc2.weight (HF encoder.layers.0.feed_forward.output_dense.weight) "
                                "[48, 95] in the file, [48, 96] by the config)")


def test_unused_weight(tiny_dir, tmp_path):
    path = edited_hubert(tiny_dir, tmp_path, lambda sd: sd.update({"encoder.layers.12.fc1.weight": torch.zeros(1)}))
    with pytest.raises(ValueError, match=r"m\.pt: mHuBERT weights do not match its config: 1 unexpected "
                                         r"\(encoder\.layers\.12\.fc1\.weight\)$"):
        build_hubert_model(read_hubert_checkpoint(path))


def test_not_a_hubert_checkpoint(tmp_path):
    torch.save({"weights": {}}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match=r"x\.pt: not an mHuBERT checkpoint: expected keys"):
        read_hubert_checkpoint(tmp_path / "x.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"junk\.pt: cannot read mHuBERT checkpoint"):
        read_hubert_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match=r"nope\.pt: mHuBERT checkpoint not found"):
        read_hubert_checkpoint(tmp_path / "nope.pt")


def test_quantizer_missing_key_and_wrong_shape(tiny_dir, tmp_path):
    q = torch.load(tiny_dir / QUANT, weights_only=True)
    del q["model_weight"]["2.bias"]
    torch.save(q, tmp_path / "q.pt")
    with pytest.raises(ValueError, match=r"^.*q\.pt: quantizer weights do not match its config: 1 missing \(2\.bias\)$"):
        load_quantizer(tmp_path / "q.pt")
    q = torch.load(tiny_dir / QUANT, weights_only=True)
    q["model_weight"]["4.weight"] = torch.zeros(500, 275)
    torch.save(q, tmp_path / "q.pt")
    with pytest.raises(ValueError) as error:
        load_quantizer(tmp_path / "q.pt")
    assert str(error.value).endswith("q.pt: quantizer weights do not match its config: 1 mis-shaped (4.weight "
                                     "[500, 275] in the file, [501, 275] by the config)")


def test_quantizer_and_hubert_widths_must_agree(tiny_dir, tmp_path):
    directory = write_tiny_speech_tokenizer(tmp_path / "st", seed=0, model_cfg={"encoder_embed_dim": 32,
                                                                               "encoder_attention_heads": 2})
    torch.save(torch.load(tiny_dir / QUANT, weights_only=True), directory / QUANT)  # a 48-dim quantizer
    with pytest.raises(ValueError, match=r"quantizer expects 48-dim features but .* gives 32"):
        SpeechTokenizer.from_dir(directory)


def test_output_layer_out_of_range(tiny_dir):
    with pytest.raises(ValueError, match=r"output_layer must be in 1\.\.12 .* got 13"):
        SpeechTokenizer.from_dir(tiny_dir, output_layer=13)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope: speech tokenizer directory not found"):
        SpeechTokenizer.from_dir(tmp_path / "nope")


@pytest.mark.parametrize("n", [0, 300, 719, 1279])
def test_too_short_audio(tiny_dir, n):
    tok = SpeechTokenizer.from_dir(tiny_dir)
    if n == 0:
        with pytest.raises(ValueError, match="zero length"):
            tok.encode(np.zeros(0, np.float32))
        return
    with pytest.raises(ValueError) as error:
        tok.encode(np.ones(n, np.float32) * 0.1)
    assert str(error.value) == (f"<numpy array of shape [{n}]>: {n} samples ({n / 16:.1f} ms) are too short to "
                                "encode: at least 1280 samples at 16000 Hz are needed (mHuBERT receptive field "
                                "/ SpiritLM's minimum chunk)")


def test_receptive_field_is_the_floor_when_min_chunk_is_lower(tiny_dir):
    tok = SpeechTokenizer.from_dir(tiny_dir, min_chunk_samples=400)
    assert tok.min_samples == 720
    assert len(tok.encode(np.ones(720, np.float32) * 0.1).units) == 1
    with pytest.raises(ValueError, match="at least 720 samples"):
        tok.encode(np.ones(719, np.float32))


def test_expressive_points_to_the_expressive_tokenizer(tiny_dir):
    with pytest.raises(ValueError, match=r"SpeechTokenizer gives HuBERT units only; pitch and style "
                                         r"tokens come from spiritlens\.units\.expressive\.ExpressiveTokenizer"):
        SpeechTokenizer.from_dir(tiny_dir).encode(np.zeros(2000, np.float32), expressive=True)


def test_tiny_writer_is_deterministic_and_fast(tmp_path):
    import time

    start = time.perf_counter()
    a = write_tiny_speech_tokenizer(tmp_path / "a", seed=5)
    elapsed = time.perf_counter() - start
    b = write_tiny_speech_tokenizer(tmp_path / "b", seed=5)
    c = write_tiny_speech_tokenizer(tmp_path / "c", seed=6)
    assert elapsed < 2.0
    for name in (HUBERT, QUANT):
        assert (a / name).read_bytes() == (b / name).read_bytes()
        assert (a / name).read_bytes() != (c / name).read_bytes()
