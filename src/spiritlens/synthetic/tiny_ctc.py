"""A tiny random ``HubertForCTC`` directory in the facebook/hubert-large-ls960-ft layout, for tests.

Same conv feature stack as the real model (7 layers, kernels 10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2:
320 samples = 20 ms per CTC frame at 16 kHz, 400-sample receptive field) and the same 32-label
character vocabulary; tiny widths, random weights, so its emissions are noise.

``layout="fine-tuning"`` writes the vocabulary of the common fine-tuning recipe instead (lower-case
letters and ``'``, ``|`` as word delimiter, ``[UNK]`` and ``[PAD]`` last, ``do_lower_case``);
``sampling_rate`` sets the preprocessor's rate (8000 for a telephone-band model).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_tiny_ctc_model", "CTC_VOCAB", "FINE_TUNING_VOCAB"]

# facebook/hubert-large-ls960-ft vocab.json, in id order; blank = "<pad>" = 0, "|" = word delimiter
CTC_VOCAB = ("<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R", "D", "L", "U",
             "M", "W", "C", "F", "G", "Y", "P", "B", "V", "K", "'", "X", "J", "Q", "Z")
_SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
FINE_TUNING_VOCAB = ("'",) + tuple("abcdefghijklmnopqrstuvwxyz") + ("|", "[UNK]", "[PAD]")
_FINE_TUNING_SPECIAL = {"unk_token": "[UNK]", "pad_token": "[PAD]"}


def write_tiny_ctc_model(directory, seed: int = 0, *, layout: str = "ls960", sampling_rate: int = 16000) -> Path:
    """Write a tiny random ``HubertForCTC`` (config.json, weights, vocab.json, tokenizer_config.json,
    special_tokens_map.json, preprocessor_config.json) to ``directory``; deterministic for ``seed``.
    ``layout``: ``"ls960"`` or ``"fine-tuning"`` vocabulary (module docstring)."""
    import torch
    from transformers import HubertConfig, HubertForCTC, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor

    if layout not in ("ls960", "fine-tuning"):
        raise ValueError(f"layout={layout!r}; expected 'ls960' or 'fine-tuning'")
    vocab, special = (CTC_VOCAB, _SPECIAL) if layout == "ls960" else (FINE_TUNING_VOCAB, _FINE_TUNING_SPECIAL)
    pad_id = vocab.index(special["pad_token"])
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = HubertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, conv_dim=(8,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, pad_token_id=pad_id, bos_token_id=1, eos_token_id=2,
        ctc_loss_reduction="sum", architectures=["HubertForCTC"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HubertForCTC(config).eval()
    model.save_pretrained(directory)
    vocab_path = directory / "vocab.json"
    vocab_path.write_text(json.dumps({label: i for i, label in enumerate(vocab)}))
    Wav2Vec2CTCTokenizer(str(vocab_path), word_delimiter_token="|", do_lower_case=layout == "fine-tuning",
                         **special).save_pretrained(directory)
    if not (directory / "special_tokens_map.json").exists():  # transformers 5 no longer writes it; the Hub copy has it
        (directory / "special_tokens_map.json").write_text(json.dumps(special))
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=sampling_rate, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(directory)
    return directory
