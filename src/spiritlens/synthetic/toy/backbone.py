"""The toy backbone and the vocabulary extension that turns it into the toy SpiritLM.

SpiritLM was made by continuing Llama-2-7B's training on interleaved speech and text, with
``[Text]``, ``[Speech]`` and ``[Hu0]``..``[Hu500]`` appended to Llama-2's 32,000 text pieces. The toy
mirrors that: a text-only toy Llama (the *backbone*) in meta-llama/Llama-2-7b-hf's folder layout is
trained first, then its weights and its SentencePiece model become the toy SpiritLM's:

- :func:`write_backbone_files`: ``tokenizer.model`` (text pieces with ``<unk>``/``<s>``/``</s>``,
  no marker, no unit), ``tokenizer_config.json`` and ``special_tokens_map.json`` as Llama-2-7b-hf
  has them (``LlamaTokenizer``, ``add_bos_token`` true, ``legacy`` false), ``config.json``
  (``LlamaForCausalLM``, ``vocab_size`` = its pieces, as Llama-2's 32000) and
  ``generation_config.json``; the weights come as ``model.safetensors``;
- :func:`write_spiritlm_files`: the toy SpiritLM's tokenizer is the backbone's own
  ``tokenizer.model`` (byte for byte) with the markers and units as *added tokens* with the ids after
  its pieces, declared in ``tokenizer_config.json``'s ``added_tokens_decoder`` (a layout SpiritLM's
  tokenizer call, transformers 4.x's slow ``LlamaTokenizer``, reads, and spiritlens reads exactly:
  :mod:`spiritlens.tokens.added_tokens`). The markers are split off before SentencePiece runs, so
  the text after ``[Text]`` gets the backbone's pieces and ids (``legacy`` true: with ``legacy``
  false the first word after a marker loses its ``▁`` and is another piece than the backbone's);
- :func:`extend_vocabulary`: the backbone's weights with the embedding and unembedding grown to the
  toy SpiritLM's rows (the rule is in its docstring);
- :func:`llama2_prompt_path`: a prompt for the backbone is Llama-2's, ``<s>`` + the prompt text
  (no ``[Text]``), tokenised by spiritlens' slow-Llama path on the backbone's files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from typing import TYPE_CHECKING

from spiritlens.synthetic.toy.config import ToyConfig, ToyFact

if TYPE_CHECKING:
    from spiritlens.tokens.llama import SlowLlamaTokenizer

# meta-llama/Llama-2-7b-hf's tokenizer files (their special tokens as transformers 4.31 saved them).
_SPECIAL = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
_LLAMA2_MAX_LENGTH = 1000000000000000019884624838656  # Llama-2-7b-hf's model_max_length (no limit)


def _special(content: str) -> dict:
    return {"__type": "AddedToken", "content": content, **_SPECIAL}


def _fact_sentences(facts: Sequence[ToyFact]) -> list[str]:
    """The sentences the toy's SentencePiece model is trained with besides the built-in ones."""
    return [f"{f.prompt} {f.attribute}." for f in facts] + [f"{p} {f.attribute}." for f in facts for p in f.paraphrases]


def _llama_config(config: ToyConfig, vocab_size: int) -> dict:
    from spiritlens.synthetic.tiny import tiny_llama_config

    return tiny_llama_config(vocab_size, hidden_size=config.d_model, intermediate_size=config.d_mlp,
                             num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
                             num_key_value_heads=config.n_heads, initializer_range=0.02, torch_dtype="float32")


def _write_json(directory: Path, files: dict) -> None:
    for name, content in files.items():
        (directory / name).write_text(json.dumps(content, indent=2) + "\n")


_GENERATION = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "do_sample": False}


def write_backbone_files(directory: str | Path, config: ToyConfig, facts: Sequence[ToyFact]) -> dict:
    """The backbone's tokenizer and config files in Llama-2-7b-hf's layout (weights come later);
    returns its ``config.json`` dict. The SentencePiece model is
    :func:`spiritlens.synthetic.tiny.train_tokenizer_model` trained with the facts' sentences,
    without SpiritLM's pieces."""
    import sentencepiece as spm

    from spiritlens.synthetic.tiny import train_tokenizer_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = train_tokenizer_model(expressive=False, seed=config.seed, spirit_pieces=False,
                                  sentences=_fact_sentences(facts))
    (directory / "tokenizer.model").write_bytes(model)
    processor = spm.SentencePieceProcessor()
    processor.LoadFromSerializedProto(model)
    llama = _llama_config(config, processor.get_piece_size())  # Llama-2: vocab_size = its 32000 pieces
    _write_json(directory, {
        "config.json": llama,
        "generation_config.json": _GENERATION,
        "special_tokens_map.json": {"bos_token": {"content": "<s>", **_SPECIAL},
                                    "eos_token": {"content": "</s>", **_SPECIAL},
                                    "unk_token": {"content": "<unk>", **_SPECIAL}},
        "tokenizer_config.json": {"add_bos_token": True, "add_eos_token": False, "bos_token": _special("<s>"),
                                  "clean_up_tokenization_spaces": False, "eos_token": _special("</s>"),
                                  "legacy": False, "model_max_length": _LLAMA2_MAX_LENGTH, "pad_token": None,
                                  "padding_side": "right", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
                                  "unk_token": _special("<unk>")},
    })
    return llama


def write_spiritlm_files(directory: str | Path, backbone: str | Path, config: ToyConfig, *,
                         expressive: bool = False) -> dict:
    """The toy SpiritLM's tokenizer and config files: the backbone's ``tokenizer.model`` with
    ``[Text]``, ``[Speech]``, ``[Hu0]``..``[Hu500]`` (``expressive``: then the pitch and style tokens,
    as SpiritLM Expressive's) as added tokens after its pieces
    (:func:`spiritlens.synthetic.tiny.write_tokenizer_files`, layout ``"added_tokens"`` declared in
    ``tokenizer_config.json``, ``legacy`` true), and a ``config.json`` whose ``vocab_size`` is the
    ids rounded up to a multiple of 256 (SpiritLM: 32503 ids, 32512 rows). Returns the config dict."""
    from spiritlens.synthetic.tiny import spirit_tokens, write_tokenizer_files

    directory = Path(directory)
    text_model = (Path(backbone) / "tokenizer.model").read_bytes()
    write_tokenizer_files(directory, expressive=expressive, layout="added_tokens", declare="tokenizer_config",
                          legacy=True, text_model=text_model)
    backbone_rows = json.loads((Path(backbone) / "config.json").read_text())["vocab_size"]
    n_ids = backbone_rows + len(spirit_tokens(expressive=expressive))
    llama = _llama_config(config, -(-n_ids // 256) * 256)
    _write_json(directory, {"config.json": llama, "generation_config.json": _GENERATION})
    return llama


EXTENDED = ("model.embed_tokens.weight", "lm_head.weight")


def extend_vocabulary(state: dict, rows: int, *, std: float, seed: int) -> dict:
    """The backbone's weights for a vocabulary of ``rows`` ids (its own ids first, unchanged).

    Rule: every tensor is copied; ``model.embed_tokens.weight`` and ``lm_head.weight`` [V, d] grow
    to [rows, d], their new rows ``V..rows-1`` each the mean of the tensor's V backbone rows plus
    ``std`` times standard normal noise [rows - V, d] drawn from ``torch.Generator().manual_seed(seed)``,
    the embedding's noise first, then the unembedding's. (The mean row keeps a new token's logit
    and its input near the backbone's average; the noise tells the new tokens apart. Hewitt 2021,
    "Initializing new word embeddings for pretrained language models", argues for the mean.)

    Raises ValueError when ``rows`` is not above the backbone's rows or the two tensors disagree in rows.
    """
    import torch

    sizes = {name: state[name].shape[0] for name in EXTENDED}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"the backbone's embedding and unembedding rows differ: {sizes}")
    old = sizes[EXTENDED[0]]
    if rows <= old:
        raise ValueError(f"the extended vocabulary must have more rows than the backbone's {old}, got {rows}")
    generator = torch.Generator().manual_seed(seed)
    extended = {name: tensor.detach().clone() for name, tensor in state.items()}
    for name in EXTENDED:
        base = state[name].detach()
        noise = torch.randn((rows - old, base.shape[1]), generator=generator, dtype=torch.float32)
        new = base.float().mean(dim=0, keepdim=True) + std * noise
        extended[name] = torch.cat([base.clone(), new.to(base.dtype)], dim=0).contiguous()
    return extended


def llama2_prompt_path(directory: str | Path) -> tuple[Callable[[str], list[int]], "SlowLlamaTokenizer"]:
    """Llama-2's prompt for the backbone in ``directory``: ``(encode, tokenizer)``, where ``encode(text)``
    is ``<s>`` + the text's ids by spiritlens' slow-Llama tokenisation
    (:class:`spiritlens.tokens.llama.SlowLlamaTokenizer`, the call SpiritLM makes) of the backbone's
    files. ``encode`` raises ValueError for a prompt that is not text (the backbone reads no speech)."""
    from spiritlens.tokens.llama import SlowLlamaTokenizer

    tokenizer = SlowLlamaTokenizer.from_pretrained(directory, add_bos_token=True, add_eos_token=False)

    def encode(prompt) -> list[int]:
        if not isinstance(prompt, str):
            raise ValueError(f"the toy backbone reads text prompts only, got {type(prompt).__name__}")
        return tokenizer.encode(prompt)

    return encode, tokenizer
