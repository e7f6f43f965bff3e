"""SpeechTokenizer against an independent, plainly written mHuBERT + quantizer reference.

The reference below reads the raw fairseq-keyed state dict and runs fairseq's HuBERT with torch
ops only (conv stack, group norm, GELU, feature projection, weight-normed positional conv,
post-LN transformer layers), then SpiritLM's linear quantizer and blank fill, in float64. It does
not use transformers or spiritlens' conversion.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import soundfile
import soxr
import torch
import torch.nn.functional as F

from spiritlens.units import HubertFeatures, SpeechTokenizer, read_hubert_checkpoint
from spiritlens.synthetic.tiny_units import write_tiny_speech_tokenizer

HUBERT = "hubert_25hz/mhubert_base_25hz.pt"
QUANT = "hubert_25hz/L11_quantizer_500.pt"


# ---------------------------------------------------------------- reference implementation
def ref_layer_norm(x, sd, prefix):
    return F.layer_norm(x, x.shape[-1:], sd[prefix + "weight"], sd[prefix + "bias"], eps=1e-5)


def ref_hubert_features(sd: dict, cfg: dict, wav: torch.Tensor, layer: int) -> torch.Tensor:
    """fairseq HuBERT ``extract_features(output_layer=layer)`` for ``wav [N]`` -> ``[frames, hidden]``.

    Handles both extractor modes (``default``: GroupNorm after the first conv only; ``layer_norm``:
    LayerNorm over channels after every conv), conv bias, and post-LN or pre-LN
    (``layer_norm_first``) transformer layers.
    """
    sd = {k: v.double() for k, v in sd.items()}
    conv_layers = eval(cfg["conv_feature_layers"], {})  # trusted test config
    layer_norm_mode = cfg.get("extractor_mode") == "layer_norm"
    pre_ln = cfg.get("layer_norm_first", False)
    x = wav.double().view(1, 1, -1)
    for i, (dim, _, stride) in enumerate(conv_layers):
        p = f"feature_extractor.conv_layers.{i}."
        x = F.conv1d(x, sd[p + "0.weight"], sd.get(p + "0.bias"), stride=stride)
        if layer_norm_mode:
            x = ref_layer_norm(x.transpose(1, 2), sd, p + "2.1.").transpose(1, 2)
        elif i == 0:
            x = F.group_norm(x, dim, sd[p + "2.weight"], sd[p + "2.bias"], eps=1e-5)
        x = F.gelu(x)
    x = x.transpose(1, 2)  # [1, T, C]
    x = ref_layer_norm(x, sd, "layer_norm.")
    if "post_extract_proj.weight" in sd:  # absent when conv dim == hidden size
        x = x @ sd["post_extract_proj.weight"].T + sd["post_extract_proj.bias"]
    # positional conv: weight norm over dims (0, 1) (torch weight_norm dim=2), same padding, GELU
    v, g = sd["encoder.pos_conv.0.weight_v"], sd["encoder.pos_conv.0.weight_g"]
    weight = g * v / v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
    k = weight.shape[-1]
    pos = F.conv1d(x.transpose(1, 2), weight, sd["encoder.pos_conv.0.bias"], padding=k // 2,
                   groups=cfg["conv_pos_groups"])
    if k % 2 == 0:
        pos = pos[:, :, :-1]
    x = x + F.gelu(pos).transpose(1, 2)
    if not pre_ln:
        x = ref_layer_norm(x, sd, "encoder.layer_norm.")
    heads = cfg["encoder_attention_heads"]

    def attention(x, p):
        t, d = x.shape[1], x.shape[2]
        q, kk, vv = (x @ sd[f"{p}self_attn.{m}_proj.weight"].T + sd[f"{p}self_attn.{m}_proj.bias"]
                     for m in ("q", "k", "v"))
        q = q.view(t, heads, d // heads).transpose(0, 1) * (d // heads) ** -0.5
        kk = kk.view(t, heads, d // heads).transpose(0, 1)
        vv = vv.view(t, heads, d // heads).transpose(0, 1)
        out = torch.softmax(q @ kk.transpose(1, 2), dim=-1) @ vv  # [heads, T, d/heads]
        out = out.transpose(0, 1).reshape(1, t, d)
        return out @ sd[f"{p}self_attn.out_proj.weight"].T + sd[f"{p}self_attn.out_proj.bias"]

    def ffn(x, p):
        h = F.gelu(x @ sd[f"{p}fc1.weight"].T + sd[f"{p}fc1.bias"])
        return h @ sd[f"{p}fc2.weight"].T + sd[f"{p}fc2.bias"]

    for n in range(layer):  # fairseq stops after layer `layer` (no final encoder LayerNorm then)
        p = f"encoder.layers.{n}."
        if pre_ln:
            x = x + attention(ref_layer_norm(x, sd, f"{p}self_attn_layer_norm."), p)
            x = x + ffn(ref_layer_norm(x, sd, f"{p}final_layer_norm."), p)
        else:
            x = ref_layer_norm(x + attention(x, p), sd, f"{p}self_attn_layer_norm.")
            x = ref_layer_norm(x + ffn(x, p), sd, f"{p}final_layer_norm.")
    return x[0]


def ref_quantize(qsd: dict, vocab_size: int, feats: torch.Tensor) -> list[int]:
    """SpiritLM's linear quantizer: 3 Linear layers with LeakyReLU(0.01), argmax, blank fill."""
    w = {k: v.double() for k, v in qsd.items()}
    h = F.leaky_relu(feats.double() @ w["0.weight"].T + w["0.bias"], 0.01)
    h = F.leaky_relu(h @ w["2.weight"].T + w["2.bias"], 0.01)
    logits = h @ w["4.weight"].T + w["4.bias"]
    return ref_fill_blanks(logits.argmax(-1).tolist(), vocab_size)


def ref_fill_blanks(units: list[int], blank: int) -> list[int]:
    """Simultaneous passes of 'blank takes the unit on its left', index -1 wrapping to the end."""
    if all(u == blank for u in units):
        return list(units)
    while blank in units:
        units = [units[i - 1] if u == blank else u for i, u in enumerate(units)]
    return units


def ref_units(directory, wav16k: np.ndarray, *, max_chunk=1_600_000, min_chunk=1280, layer=11) -> list[int]:
    """SpiritLMTokenizer.encode_units: 100 s chunks, short ones skipped, each chunk on its own."""
    hub = torch.load(directory / HUBERT, weights_only=True)
    quant = torch.load(directory / QUANT, weights_only=True)
    wav = torch.from_numpy(wav16k)
    units: list[int] = []
    for start in range(0, len(wav), max_chunk):
        chunk = wav[start:start + max_chunk]
        if len(chunk) < min_chunk:
            continue
        if hub["task_cfg"]["normalize"]:
            chunk = F.layer_norm(chunk, chunk.shape)
        feats = ref_hubert_features(hub["model_weight"], hub["model_cfg"], chunk, layer)
        units += ref_quantize(quant["model_weight"], quant["model_cfg"]["vocab_size"], feats)
    return units


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_speech_tokenizer(tmp_path_factory.mktemp("speech_tokenizer"), seed=0)


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    return SpeechTokenizer.from_dir(tiny_dir)


def waveforms() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(32_000) / 16_000
    return {
        "noise_3s": (rng.standard_normal(48_000) * 0.1).astype(np.float32),
        "chirp_2s": (0.5 * np.sin(2 * np.pi * (200 + 800 * t) * t)).astype(np.float32),
        "bursts_odd_length": (rng.standard_normal(30_001) * np.repeat(rng.random(19), 1600)[:30_001]).astype(np.float32),
        "minimum_1280": (rng.standard_normal(1280) * 0.3).astype(np.float32),
    }


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("name", list(waveforms()))
def test_units_equal_reference(tokenizer, tiny_dir, name):
    wav = waveforms()[name]
    expected = ref_units(tiny_dir, wav)
    got = tokenizer.encode(wav)
    assert got.units == expected
    assert len(got.units) == (len(wav) - 720) // 640 + 1  # the frame count of this conv stack: receptive field 720, hop 640
    assert got.frame_seconds == pytest.approx(0.04)


def test_reference_sees_blanks_and_several_units(tiny_dir):
    """Guard that the comparison above is not trivial: raw argmax has blanks, output has variety."""
    wav = waveforms()["noise_3s"]
    hub = torch.load(tiny_dir / HUBERT, weights_only=True)
    quant = torch.load(tiny_dir / QUANT, weights_only=True)
    feats = ref_hubert_features(hub["model_weight"], hub["model_cfg"], torch.from_numpy(wav), 11)
    w = {k: v.double() for k, v in quant["model_weight"].items()}
    h = F.leaky_relu(F.leaky_relu(feats @ w["0.weight"].T + w["0.bias"], 0.01) @ w["2.weight"].T + w["2.bias"], 0.01)
    raw = (h @ w["4.weight"].T + w["4.bias"]).argmax(-1).tolist()
    assert raw[0] == 500, "frame 0 is blank: the wrap-around fill is exercised"
    assert 0.1 < raw.count(500) / len(raw) < 0.9
    assert len(set(ref_units(tiny_dir, wav))) >= 5


def test_layer11_features_match_reference(tokenizer, tiny_dir):
    wav = waveforms()["noise_3s"]
    hub = torch.load(tiny_dir / HUBERT, weights_only=True)
    ref = ref_hubert_features(hub["model_weight"], hub["model_cfg"], torch.from_numpy(wav), 11)
    got = tokenizer._source.hubert.features(torch.from_numpy(wav)).double()
    assert got.shape == ref.shape == (74, 48)
    diff = (got - ref).abs().max().item()
    assert diff < 2e-5, f"max |features - reference| = {diff:.3g}"


def test_stereo_44k1_file_equals_reference(tokenizer, tiny_dir, tmp_path):
    rng = np.random.default_rng(7)
    stereo = (rng.standard_normal((int(44_100 * 2.5), 2)) * [0.1, 0.3]).astype(np.float32)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, stereo, 44_100, subtype="FLOAT")
    read, rate = soundfile.read(path, dtype="float32")
    mono16k = soxr.resample(read.mean(axis=1), rate, 16_000).astype(np.float32)
    got = tokenizer.encode(path)
    assert got.num_samples == len(mono16k) == 40_000
    assert got.units == ref_units(tiny_dir, mono16k)
    assert got.units == tokenizer.encode(stereo.T, sample_rate=44_100).units  # [C, N] array, same result


def test_chunking_matches_spiritlm(tiny_dir):
    """1 s chunks: each chunk quantised on its own (wrap-around inside it), a short tail skipped."""
    wav = waveforms()["noise_3s"][:16_000 * 2 + 1000]  # 2 chunks + a 1000-sample tail (< 1280)
    small = SpeechTokenizer.from_dir(tiny_dir, max_chunk_samples=16_000)
    got = small.encode(wav)
    assert got.units == ref_units(tiny_dir, wav, max_chunk=16_000)
    assert [(c.start_sample, c.start_frame, c.num_frames) for c in got.chunks] == [(0, 0, 24), (16_000, 24, 24)]
    assert got.time_spans()[-1][1] == pytest.approx(1.0 + 24 * 0.04)


def test_normalize_applies_layer_norm(tmp_path):
    directory = write_tiny_speech_tokenizer(tmp_path / "st", seed=3, task_cfg={"normalize": True})
    wav = waveforms()["chirp_2s"] * 3 + 0.2
    assert SpeechTokenizer.from_dir(directory).encode(wav).units == ref_units(directory, wav)


def test_fairseq_and_converted_layouts_give_identical_units(tmp_path):
    conv = write_tiny_speech_tokenizer(tmp_path / "converted", seed=1, layout="converted")
    fair = write_tiny_speech_tokenizer(tmp_path / "fairseq", seed=1, layout="fairseq")
    with pytest.raises(Exception):  # real fairseq files pickle fairseq classes
        torch.load(fair / HUBERT, weights_only=True)
    ck_c, ck_f = read_hubert_checkpoint(conv / HUBERT), read_hubert_checkpoint(fair / HUBERT)
    assert (ck_c.layout, ck_f.layout) == ("converted", "fairseq")
    assert ck_f.dictionaries_symbols[0][:5] == ["<s>", "<pad>", "</s>", "<unk>", "0"]
    # old fairseq checkpoints keep an argparse.Namespace under "args"
    args_path = tmp_path / "args.pt"
    torch.save({"args": argparse.Namespace(**ck_c.model_cfg, sample_rate=16_000, normalize=False),
                "model": ck_c.state_dict, "task_state": {"dictionaries": []}}, args_path)
    wav = waveforms()["bursts_odd_length"]
    units = [SpeechTokenizer.from_dir(d).encode(wav).units for d in (conv, fair)]
    feats_c = HubertFeatures.from_checkpoint(conv / HUBERT).features(torch.from_numpy(wav))
    feats_a = HubertFeatures.from_checkpoint(args_path).features(torch.from_numpy(wav))
    assert units[0] == units[1] == ref_units(conv, wav)
    assert torch.equal(feats_c, feats_a)


@pytest.mark.parametrize("model_cfg", [
    {"extractor_mode": "layer_norm", "layer_norm_first": True, "conv_bias": True},
    {"conv_feature_layers": "[(48,10,5)] + [(48,3,2)] * 4 + [(48,2,2)] * 3"},  # no post_extract_proj
    {"encoder_layers": 11},  # output layer 11 = the last layer
], ids=["layer_norm_variants", "conv_dim_equals_hidden", "last_layer"])
def test_config_variants_match_reference(tmp_path, model_cfg):
    directory = write_tiny_speech_tokenizer(tmp_path / "st", seed=2, model_cfg=model_cfg)
    hub = torch.load(directory / HUBERT, weights_only=True)
    wav = waveforms()["chirp_2s"]
    ref = ref_hubert_features(hub["model_weight"], hub["model_cfg"], torch.from_numpy(wav), 11)
    got = HubertFeatures.from_checkpoint(directory / HUBERT).features(torch.from_numpy(wav)).double()
    diff = (got - ref).abs().max().item()
    assert diff < 2e-5, f"max |features - reference| = {diff:.3g}"
    assert SpeechTokenizer.from_dir(directory).encode(wav).units == ref_units(directory, wav)


def test_saved_hf_directory_round_trip(tokenizer, tmp_path):
    hubert = tokenizer._source.hubert
    hubert.save_hf_dir(tmp_path / "hf")
    reloaded = HubertFeatures.from_hf_dir(tmp_path / "hf")
    wav = torch.from_numpy(waveforms()["chirp_2s"])
    assert torch.equal(hubert.features(wav), reloaded.features(wav))


class ReferenceSpiritLMTokenizer:
    """Duck-typed stand-in for ``spiritlm_base()``: SpiritLM's interface, reference computation."""

    def __init__(self, directory):
        self.directory = directory
        self.max_wav_chunk, self.min_wav_chunk = 100 * 16_000, 1280
        self.hubert_model = argparse.Namespace(code_hop_size=640, expected_sample_rate=16_000)
        self.calls = []

    def encode_units(self, audio, channel_id=None):
        assert isinstance(audio, torch.Tensor) and audio.dim() == 1 and audio.dtype == torch.float32
        self.calls.append(audio.shape[0])
        return {"hubert": " ".join(str(u) for u in ref_units(self.directory, audio.numpy()))}


def test_spiritlm_adapter_gives_identical_tokens(tokenizer, tiny_dir):
    reference = ReferenceSpiritLMTokenizer(tiny_dir)
    adapter = SpeechTokenizer.from_spiritlm(reference)
    wav = waveforms()["bursts_odd_length"]
    ours, theirs = tokenizer.encode(wav), adapter.encode(wav)
    assert reference.calls == [30_001]
    assert theirs.units == ours.units and theirs.tokens == ours.tokens and theirs.spans == ours.spans
    assert theirs.time_spans() == ours.time_spans()
    assert math.isclose(adapter.frame_seconds, 0.04)
