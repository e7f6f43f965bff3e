"""Loading SpiritLM directories: formats, variant names, dtypes, and every bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import pytest
import torch

from spiritlens import HookedSpiritLM
from spiritlens.synthetic.tiny import train_tokenizer_model, write_tiny_model


@pytest.mark.parametrize("fmt, shards", [("safetensors", 1), ("bin", 3), ("safetensors", 2)])
def test_weight_formats_give_identical_logits(tiny_model, tmp_path, fmt, shards):
    directory = write_tiny_model(tmp_path / "m", seed=0, fmt=fmt, shards=shards)
    model = HookedSpiritLM.from_pretrained(directory)
    tokens = tiny_model.to_tokens("The capital of Italy is")
    with torch.no_grad():
        assert torch.equal(model(tokens), tiny_model(tokens))


def test_variant_name_resolves_under_checkpoints_dir(tiny_root, tiny_model, monkeypatch):
    monkeypatch.setenv("SPIRITLM_CHECKPOINTS_DIR", str(tiny_root))
    model = HookedSpiritLM.from_pretrained("spirit-lm-base-7b")
    assert model.model_dir == tiny_root / "spiritlm_model" / "spirit-lm-base-7b"
    expressive = HookedSpiritLM.from_pretrained("spirit-lm-expressive-7b")
    assert expressive.vocab.is_expressive and not model.vocab.is_expressive
    assert len(expressive.vocab.pitch_ids) == 64 and len(expressive.vocab.style_ids) == 100
    tokens = tiny_model.to_tokens("Paris")
    assert torch.equal(model(tokens), tiny_model(tokens))


def test_ids_are_read_from_the_tokenizer(tiny_model):
    vocab = tiny_model.vocab
    tokenizer = tiny_model.tokenizer
    assert vocab.text_marker_id == tokenizer.convert_tokens_to_ids("[Text]") == 1024
    assert vocab.hubert_ids[0] == tokenizer.convert_tokens_to_ids("[Hu0]") == 1026
    assert vocab.hubert_ids[500] == 1526
    assert tiny_model.cfg.d_vocab == 1536 > len(tokenizer) == 1527


def test_process_weights_option_keeps_predictions(tiny_base_dir, tiny_model):
    processed = HookedSpiritLM.from_pretrained(tiny_base_dir, process_weights=True)
    tokens = tiny_model.to_tokens("The capital of Italy is")
    with torch.no_grad():
        a, b = processed(tokens), tiny_model(tokens)
    # Folding and centring change logits by a per-position constant only.
    centred = lambda x: x - x.mean(-1, keepdim=True)  # noqa: E731
    assert (centred(a) - centred(b)).abs().max().item() < 1e-4


def _copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_directory():
    with pytest.raises(FileNotFoundError, match="model directory './no/such/dir' does not exist"):
        HookedSpiritLM.from_pretrained("./no/such/dir")


def test_unknown_variant(monkeypatch, tmp_path):
    monkeypatch.setenv("SPIRITLM_CHECKPOINTS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="unknown SpiritLM variant 'spirit-lm-large'; known variants"):
        HookedSpiritLM.from_pretrained("spirit-lm-large")


def test_variant_without_checkpoints_dir(monkeypatch):
    monkeypatch.delenv("SPIRITLM_CHECKPOINTS_DIR", raising=False)
    with pytest.raises(ValueError, match=r"\$SPIRITLM_CHECKPOINTS_DIR is not set"):
        HookedSpiritLM.from_pretrained("spirit-lm-base-7b")


def test_missing_weights(tiny_base_dir, tmp_path):
    directory = _copy_model(tiny_base_dir, tmp_path / "m")
    (directory / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="has no weights"):
        HookedSpiritLM.from_pretrained(directory)


def test_tokenizer_without_spiritlm_tokens(tiny_base_dir, tmp_path):
    directory = _copy_model(tiny_base_dir, tmp_path / "m")
    (directory / "tokenizer.model").write_bytes(train_tokenizer_model(expressive=False, spirit_pieces=False))
    # a Llama without SpiritLM's tokens is the text-only backbone family, not a broken SpiritLM
    with pytest.raises(ValueError, match=r"is a Llama-2 \(text-only backbone\) checkpoint, not SpiritLM: load it with "
                                         r"HookedSpeechLM\.from_pretrained\(\.\.\., family='llama'\)"):
        HookedSpiritLM.from_pretrained(directory)


def test_embedding_smaller_than_tokenizer(tmp_path):
    directory = write_tiny_model(tmp_path / "m", vocab_size=1200)
    with pytest.raises(ValueError, match="vocab_size 1200 embedding rows is fewer than the tokenizer's 1527 ids"):
        HookedSpiritLM.from_pretrained(directory)


@pytest.mark.parametrize("dtype", ["float8", "int8", torch.int64])
def test_unknown_dtype(tiny_base_dir, dtype):
    with pytest.raises(ValueError, match="dtype"):
        HookedSpiritLM.from_pretrained(tiny_base_dir, dtype=dtype)


def _greedy_reference(model, tokens, forbidden, steps):
    """Plain greedy decoding with forbidden ids masked, one full forward per step."""
    ids = tokens.clone()
    out = []
    for _ in range(steps):
        with torch.no_grad():
            logits = model(ids)[0, -1].clone()
        logits[forbidden] = float("-inf")
        nxt = int(logits.argmax())
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


@pytest.mark.parametrize("output_modality", ["text", "speech"])
def test_generate_is_greedy_and_respects_the_output_modality(tiny_model, output_modality):
    prompt = "The capital of Italy is"
    forbidden = tiny_model.forbidden_token_ids(output_modality)
    got = tiny_model.generate_ids(prompt, output_modality, max_new_tokens=6).tolist()
    tokens = tiny_model.to_tokens(prompt, output_modality)
    assert got == _greedy_reference(tiny_model, tokens, forbidden, 6)
    speech = tiny_model.vocab.speech_ids
    if output_modality == "text":
        assert not any(i in speech or i in tiny_model.vocab.marker_ids for i in got)
        assert isinstance(tiny_model.generate(prompt, max_new_tokens=3, verbose=False), str)
    else:
        assert all(tiny_model.vocab.unit_of(i) is not None for i in got)
        assert tiny_model.generate([("text", prompt)], output_modality="speech", max_new_tokens=2,
                                   do_sample=False, verbose=False).lstrip().startswith("[Hu")


def test_make_tiny_cli_is_deterministic(tmp_path):
    def digest(root):
        files = sorted(p for p in root.rglob("*") if p.is_file())
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    for name in ("a", "b"):
        result = subprocess.run([sys.executable, "-m", "spiritlens", "make-tiny", str(tmp_path / name)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "random weights" in result.stdout
    first, second = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert first == second
    base = tmp_path / "a" / "spiritlm_model" / "spirit-lm-base-7b"
    assert {"config.json", "generation_config.json", "pytorch_model.bin", "tokenizer.model",
            "tokenizer_config.json", "special_tokens_map.json"} <= {p.name for p in base.iterdir()}
    assert json.loads((base / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]


def test_device_map_placement_gives_identical_logits(tiny_base_dir, tiny_model):
    # The bridge's accelerate-dispatched placement path (the one n_devices/device_map use on GPUs).
    placed = HookedSpiritLM.from_pretrained(tiny_base_dir, device_map={"": "cpu"})
    tokens = tiny_model.to_tokens("The capital of Italy is")
    with torch.no_grad():
        assert torch.equal(placed(tokens), tiny_model(tokens))
    with pytest.raises(ValueError, match="pass either device or device_map/n_devices, not both"):
        HookedSpiritLM.from_pretrained(tiny_base_dir, device="cpu", device_map="auto")
