"""Tiny SpiritLM checkpoint trees with random weights, in exactly SpiritLM's on-disk layout.

``make_tiny_checkpoints(root)`` writes, deterministically for a given seed::

    root/spiritlm_model/spirit-lm-base-7b/        config.json generation_config.json pytorch_model.bin
                                                  tokenizer.model tokenizer_config.json special_tokens_map.json
    root/spiritlm_model/spirit-lm-expressive-7b/  (same files; vocabulary with [Pi*] and [St*])
    root/speech_tokenizer/hubert_25hz/            mhubert_base_25hz.pt L11_quantizer_500.pt
    root/speech_tokenizer/vqvae_f0_quantizer/     config.yaml model.pt        (Expressive pitch)
    root/speech_tokenizer/style_encoder_w2v2/     config.json pytorch_model.bin (Expressive style)

The tokenizer is a real SentencePiece BPE model trained on the fly on text written below, then
extended, like SpiritLM's, with ``[Text]``, ``[Speech]``, ``[Hu0]``..``[Hu500]`` (and, for
Expressive, ``[Pi0]``..``[Pi63]``, ``[St0]``..``[St99]``). Where those live is the tokenizer
*layout* (:func:`write_tokenizer_files`; the real checkpoints' layout cannot be seen from here):

- ``"sentencepiece"`` (default): user-defined pieces appended to ``tokenizer.model``;
- ``"added_tokens"``: ``tokenizer.model`` holds only text pieces, and the SpiritLM tokens are
  added tokens with the ids after it, declared in ``tokenizer_config.json``
  (``added_tokens_decoder``), ``special_tokens_map.json`` (``additional_special_tokens``) or
  ``added_tokens.json``;

with ``legacy`` true, false or absent in ``tokenizer_config.json``. The Llama embedding has more
rows than the tokenizer has ids, as SpiritLM's does (32512 > 32503).
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Sequence
from pathlib import Path

import torch

from spiritlens._io import save_torch, write_atomic
from spiritlens.models.spiritlm.vocab import (
    N_HUBERT_TOKENS,
    N_PITCH_TOKENS,
    N_STYLE_TOKENS,
    SPEECH_MARKER,
    TEXT_MARKER,
    hubert_token,
    pitch_token,
    style_token,
)
from spiritlens.models.spiritlm.tree import VARIANTS, speech_tokenizer_folder, variant_dir

BASE, EXPRESSIVE = VARIANTS
TEXT_PIECES = 1024  # SentencePiece pieces before the SpiritLM additions (Llama-2 has 32000)

# Sentences the tiny tokenizer is trained on: fact-style English close to ROME's Known prompts.
_CORPUS_SENTENCES = [
    "The capital of Italy is Rome.",
    "The Space Needle is located in the city of Seattle.",
    "Vinson Massif is located in the continent of Antarctica.",
    "The mother tongue of Danielle Darrieux is French.",
    "Apple A5 was created by Apple.",
    "Toko Yasuda plays the guitar.",
    "Autonomous University of Madrid is located in Spain.",
    "The Eiffel Tower is in Paris, France.",
    "Thomas Joannes Stieltjes was born in the Netherlands.",
    "Anaal Nathrakh was founded in Birmingham in 1999.",
    "Windows Media Player is developed by Microsoft.",
    "Honda Civic is produced by Honda.",
    "BBC One is owned by the BBC.",
    "Kyoto University is a university in Kyoto, Japan.",
    "The official language of Brazil is Portuguese.",
    "Michael Jordan professionally plays the sport of basketball.",
    "Iron Man is a superhero created by Marvel Comics.",
    "Mount Everest is the highest mountain on Earth.",
    "The Louvre is an art museum in Paris.",
    "Pablo Picasso was a Spanish painter who worked in France.",
    "The Danube flows through Vienna and Budapest.",
    "Johann Sebastian Bach was a German composer.",
    "Toyota Corolla is a car made by Toyota in Japan.",
    "Nintendo Switch is a game console by Nintendo.",
    "The headquarters of Google is in Mountain View, California.",
    "Emmanuel Macron is a citizen of France.",
    "The Amazon River flows through Brazil and Peru.",
    "Sherlock Holmes is a character by Arthur Conan Doyle.",
    "In 2024, 75% of the 3,000 people spoke English & Spanish for $20.",
    "She was born on the 2nd of March, 1987, in Zürich.",
]


def _corpus(seed: int, sentences: Sequence[str] = ()) -> list[str]:
    rng = random.Random(seed)
    words = " ".join(_CORPUS_SENTENCES).replace(".", "").split()
    lines = (list(_CORPUS_SENTENCES) + list(sentences)) * 20
    lines += [" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) for _ in range(1500)]
    return lines


def train_tokenizer_model(*, expressive: bool, seed: int = 0, spirit_pieces: bool = True,
                          sentences: Sequence[str] = ()) -> bytes:
    """A serialized SentencePiece model: BPE text pieces, then SpiritLM's pieces appended
    (``spirit_pieces=False`` leaves a plain Llama-style text tokenizer). ``sentences``: more
    training text, weighted like the built-in sentences (the toy SpiritLM passes its facts, so
    that their words become whole pieces)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus(seed, sentences)),
        model_writer=buffer,
        vocab_size=TEXT_PIECES,
        model_type="bpe",
        byte_fallback=True,  # as Llama-2
        split_digits=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        character_coverage=1.0,
        num_threads=1,
        seed_sentencepiece_size=100_000,
        minloglevel=2,
    )
    proto = sp_pb2.ModelProto()
    proto.ParseFromString(buffer.getvalue())
    extra = [TEXT_MARKER, SPEECH_MARKER] + [hubert_token(u) for u in range(N_HUBERT_TOKENS)]
    if not spirit_pieces:
        extra = []
    elif expressive:
        extra += [pitch_token(u) for u in range(N_PITCH_TOKENS)]
        extra += [style_token(u) for u in range(N_STYLE_TOKENS)]
    for token in extra:
        piece = proto.pieces.add()
        piece.piece = token
        piece.score = 0.0
        piece.type = sp_pb2.ModelProto.SentencePiece.USER_DEFINED
    return proto.SerializeToString()


TOKENIZER_LAYOUTS = ("sentencepiece", "added_tokens")
DECLARATIONS = ("tokenizer_config", "special_tokens_map", "added_tokens_json")


def spirit_tokens(expressive: bool) -> list[str]:
    """SpiritLM's tokens in id order: markers, HuBERT units, then (Expressive) pitch and style."""
    tokens = [TEXT_MARKER, SPEECH_MARKER] + [hubert_token(u) for u in range(N_HUBERT_TOKENS)]
    if expressive:
        tokens += [pitch_token(u) for u in range(N_PITCH_TOKENS)] + [style_token(u) for u in range(N_STYLE_TOKENS)]
    return tokens


def _added_token_json(content: str, *, special: bool, **flags) -> dict:
    """One added token as transformers 4.x saves it."""
    entry = {"content": content, "lstrip": False, "normalized": not special, "rstrip": False,
             "single_word": False, "special": special}
    entry.update(flags)
    return entry


def write_tokenizer_files(directory: str | Path, *, expressive: bool = False, seed: int = 0,
                          layout: str = "sentencepiece", legacy: bool | None = True,
                          declare: str = "tokenizer_config", special: bool = False,
                          token_flags: dict[str, dict] | None = None, text_model: bytes | None = None) -> Path:
    """Write ``tokenizer.model``, ``tokenizer_config.json`` and ``special_tokens_map.json`` (and for
    ``declare="added_tokens_json"``, ``added_tokens.json``) for one tokenizer layout.

    ``layout``: ``"sentencepiece"`` or ``"added_tokens"`` (module docstring). ``legacy``: the
    ``legacy`` value written to ``tokenizer_config.json`` (None: the key is left out, so
    transformers 4.x's default, True, applies). For ``"added_tokens"``: ``declare`` names the
    file that declares them, ``special`` makes them special tokens (``decode(...,
    skip_special_tokens=True)`` then drops them), and ``token_flags`` sets ``lstrip``/``rstrip``/
    ``single_word`` per token (``tokenizer_config`` declarations only). ``text_model``: a serialized
    text-only SentencePiece model to use as ``tokenizer.model`` instead of training one (``"added_tokens"``
    only; the SpiritLM tokens then get the ids after its pieces, as SpiritLM's follow Llama-2's).
    Deterministic for a seed.
    """
    if layout not in TOKENIZER_LAYOUTS:
        raise ValueError(f"unknown tokenizer layout {layout!r}; use one of {', '.join(TOKENIZER_LAYOUTS)}")
    if declare not in DECLARATIONS:
        raise ValueError(f"unknown declaration {declare!r}; use one of {', '.join(DECLARATIONS)}")
    if token_flags and (layout != "added_tokens" or declare != "tokenizer_config"):
        raise ValueError("token_flags need layout='added_tokens' declared in tokenizer_config")
    if text_model is not None and layout != "added_tokens":
        raise ValueError("text_model needs layout='added_tokens' (its pieces stay as they are)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    in_model = layout == "sentencepiece"
    if text_model is None:
        text_model = train_tokenizer_model(expressive=expressive, seed=seed, spirit_pieces=in_model)
    write_atomic(directory / "tokenizer.model", text_model)
    first_id = _piece_count(text_model)
    special_map: dict = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    config: dict = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "clean_up_tokenization_spaces": False,
        "legacy": legacy,
        "model_max_length": 4096,
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
    }
    if legacy is None:
        del config["legacy"]
    if not in_model:
        tokens = spirit_tokens(expressive)
        if declare == "tokenizer_config":
            decoder = {str(i): _added_token_json(t, special=True) | {"normalized": False}
                       for i, t in enumerate(("<unk>", "<s>", "</s>"))}
            for k, token in enumerate(tokens):
                decoder[str(first_id + k)] = _added_token_json(token, special=special,
                                                                  **(token_flags or {}).get(token, {}))
            config["added_tokens_decoder"] = decoder
            if special:
                config["additional_special_tokens"] = tokens
        elif declare == "special_tokens_map":
            flag = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
            special_map["additional_special_tokens"] = [{"content": t, **flag} for t in tokens]
        else:
            write_atomic(directory / "added_tokens.json",
                         json.dumps({t: first_id + k for k, t in enumerate(tokens)}, indent=2))
            if special:
                special_map["additional_special_tokens"] = tokens
    write_atomic(directory / "special_tokens_map.json", json.dumps(special_map, indent=2))
    write_atomic(directory / "tokenizer_config.json", json.dumps(config, indent=2))
    return directory


def _piece_count(model: bytes) -> int:
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor()
    processor.LoadFromSerializedProto(model)
    return processor.get_piece_size()


def tiny_llama_config(vocab_size: int, **overrides) -> dict:
    """A Llama config.json dict shaped like SpiritLM's (Llama-2 conventions), but tiny."""
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 64,
        "intermediate_size": 160,
        "initializer_range": 0.5,  # peaked outputs, so tracing effects are large
        "max_position_embeddings": 4096,
        "num_attention_heads": 4,
        "num_hidden_layers": 4,
        "num_key_value_heads": 4,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": vocab_size,
    }
    config.update(overrides)
    return config


def write_weights(state_dict: dict[str, torch.Tensor], directory: Path, *, fmt: str = "bin",
                  shards: int = 1) -> None:
    """Write weights as HF does: ``pytorch_model.bin`` or ``model.safetensors``, optionally sharded."""
    if fmt not in ("bin", "safetensors"):
        raise ValueError(f"weights format must be 'bin' or 'safetensors', got {fmt!r}")
    names = list(state_dict)
    stem, ext = ("pytorch_model", "bin") if fmt == "bin" else ("model", "safetensors")

    def save(part: dict[str, torch.Tensor], path: Path) -> None:
        if fmt == "bin":
            save_torch(part, path)
        else:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in part.items()}, str(path), metadata={"format": "pt"})

    if shards <= 1:
        save(state_dict, directory / f"{stem}.{ext}")
        return
    weight_map = {}
    per_shard = -(-len(names) // shards)
    for i in range(shards):
        part_names = names[i * per_shard:(i + 1) * per_shard]
        file_name = f"{stem}-{i + 1:05d}-of-{shards:05d}.{ext}"
        save({n: state_dict[n] for n in part_names}, directory / file_name)
        weight_map.update({n: file_name for n in part_names})
    total = sum(t.numel() * t.element_size() for t in state_dict.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    write_atomic(directory / f"{stem}.{ext}.index.json", json.dumps(index, indent=2))


def write_tiny_model(directory: str | Path, *, expressive: bool = False, seed: int = 0,
                     fmt: str = "bin", shards: int = 1, dtype: torch.dtype = torch.float32,
                     tokenizer_layout: str = "sentencepiece", legacy: bool | None = True,
                     declare: str = "tokenizer_config", special: bool = False,
                     **config_overrides) -> Path:
    """Write one tiny SpiritLM model directory (weights, config, SentencePiece tokenizer).

    ``tokenizer_layout``, ``legacy``, ``declare``, ``special``: see :func:`write_tokenizer_files`.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    write_tokenizer_files(directory, expressive=expressive, seed=seed, layout=tokenizer_layout, legacy=legacy,
                          declare=declare, special=special)
    n_ids = TEXT_PIECES + 2 + N_HUBERT_TOKENS + (N_PITCH_TOKENS + N_STYLE_TOKENS if expressive else 0)
    vocab_size = -(-n_ids // 256) * 256  # padded, like SpiritLM's 32512 / 32768
    config_dict = tiny_llama_config(**{"vocab_size": vocab_size, **config_overrides})
    write_atomic(directory / "config.json", json.dumps(config_dict, indent=2))
    generation = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "do_sample": False}
    write_atomic(directory / "generation_config.json", json.dumps(generation, indent=2))
    torch.manual_seed(seed)
    config = LlamaConfig(**{k: v for k, v in config_dict.items() if k != "architectures"})
    model = LlamaForCausalLM(config)
    state = {k: v.detach().to(dtype).clone() for k, v in model.state_dict().items()}
    write_weights(state, directory, fmt=fmt, shards=shards)
    return directory


def check_nothing_to_overwrite(root: str | Path, *, speech: bool = True,
                               hint: str = "pass force=True, or --force on the command line") -> None:
    """FileExistsError naming the first folder :func:`make_tiny_checkpoints` would write under ``root``
    (both models; with ``speech``, ``hubert_25hz/``, ``vqvae_f0_quantizer/``, ``style_encoder_w2v2/``)
    that already holds files; ``hint`` says how to go on."""
    from spiritlens.units.pitch import F0_QUANTIZER_DIR
    from spiritlens.units.style import STYLE_DIR

    root = Path(root)
    targets = [variant_dir(root, BASE), variant_dir(root, EXPRESSIVE)]
    if speech:
        targets += [speech_tokenizer_folder(root) / name for name in ("hubert_25hz", F0_QUANTIZER_DIR, STYLE_DIR)]
    for target in targets:
        if target.is_dir() and any(target.iterdir()):
            raise FileExistsError(f"{target} already holds files: refusing to overwrite them ({hint})")


def make_tiny_checkpoints(root: str | Path, *, seed: int = 0, speech: bool = True, force: bool = False,
                          **tokenizer_options) -> Path:
    """Write a complete tiny ``$SPIRITLM_CHECKPOINTS_DIR`` tree under ``root``; returns ``root``.

    ``tokenizer_options`` (``tokenizer_layout``, ``legacy``, ``declare``, ``special``) choose the
    tokenizer layout of both models (:func:`write_tokenizer_files`; default: SentencePiece pieces).
    Raises FileExistsError (nothing written) when a model or speech-tokenizer folder the tree would
    write already holds files, unless ``force`` (then its files are overwritten).
    """
    root = Path(root)
    if not force:
        check_nothing_to_overwrite(root, speech=speech)
    write_tiny_model(variant_dir(root, BASE), expressive=False, seed=seed, **tokenizer_options)
    write_tiny_model(variant_dir(root, EXPRESSIVE), expressive=True, seed=seed + 1, **tokenizer_options)
    if speech:
        from spiritlens.synthetic.tiny_expressive import write_tiny_expressive
        from spiritlens.synthetic.tiny_units import write_tiny_speech_tokenizer

        write_tiny_speech_tokenizer(speech_tokenizer_folder(root), seed=seed)
        write_tiny_expressive(speech_tokenizer_folder(root), seed=seed)
    return root
