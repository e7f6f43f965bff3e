"""HookedSpiritLM: a SpiritLM checkpoint behind TransformerLens 4's ``TransformerBridge`` API.

The bridge is held (``model.bridge``), not subclassed (TransformerLens' ``boot`` always builds a
plain bridge): the TransformerLens API (``forward``, ``run_with_cache``, ``run_with_hooks``,
``hooks``, ``cfg``...) is delegated to it, and spiritlens adds SpiritLM's prompts (markers,
HuBERT units, a TokenMap), modality-constrained generation and the speech tokenizer.

One way into the model: every method that takes a prompt (``model(p)``, ``run_with_cache``,
``run_with_hooks``, ``generate``, ``to_tokens``, ``to_str_tokens``) reads a string or
``(modality, content)`` pairs through SpiritLM's prompt path (markers, then SpiritLM's own
tokenisation, :mod:`spiritlens.tokens.llama`); token ids pass through after a range check. The
bridge's own string handling (its transformers tokenizer, no markers) is never used for a prompt:
bridge methods that would tokenise a string themselves refuse one. Delegated methods that return
the bridge (``to``, ``cuda``, ``cpu``, ``half``, ``float``, ``eval``, ``train``, ...) return the
HookedSpiritLM instead, so ``model = model.to("cuda")`` keeps SpiritLM's prompts.

Numerics: by default the weights are the raw checkpoint weights, so logits equal
``transformers.LlamaForCausalLM`` (eager attention, same dtype) on the same directory, and
``blocks.{l}.hook_resid_post`` equals the output of HF ``model.layers[l]``. TransformerLens'
weight processing (folded norms, centred weights) is opt-in with ``process_weights=True``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from spiritlens.checkpoints.tree import (
    check_device,
    check_model_dir,
    parse_dtype,
    resolve_model_dir,
    speech_tokenizer_dir,
)
from spiritlens.checkpoints.validate import check_finite, check_model_dir_weights, weight_files
from spiritlens.tokens.llama import SlowLlamaTokenizer
from spiritlens.tokens.layout import TokenizerLayout, check_tokenization, detect_layout
from spiritlens.tokens.prompt import MODALITIES, Segment, TokenMap, check_output_modality, encode_segments
from spiritlens.tokens.vocab import SpiritVocab

Prompt = str | Sequence[tuple[str, Any]]
logger = logging.getLogger("spiritlens")

# Bridge methods that would tokenise a string with the bridge's own tokenizer (no SpiritLM markers).
_BRIDGE_STRING_METHODS = frozenset({
    "input_to_embed", "get_token_position", "to_sentence_pair_tokens", "generate_stream", "hf_generate",
    "diffusion_generate", "tokens_to_residual_directions",
})
# generate() options spiritlens sets itself.
_GENERATE_RESERVED = {
    "suppress_tokens": "the output modality's forbidden tokens (forbidden_token_ids)",
    "bad_words_ids": "the output modality's forbidden tokens (forbidden_token_ids)",
    "pad_token_id": "the EOS id",
    "use_cache": "False (TransformerLens 4.3's bridge breaks HF's KV cache)",
    "attention_mask": "all ones (one unpadded prompt)",
}
_GENERATE_EXTRA = frozenset({"logits_processor", "stopping_criteria", "streamer"})


class HookedSpiritLM:
    """SpiritLM with TransformerLens hooks. Build it with :meth:`from_pretrained`.

    Attributes: ``bridge`` (the TransformerBridge, with its own transformers tokenizer),
    ``tokenizer`` (SpiritLM's text tokenizer: :class:`~spiritlens.tokens.llama.SlowLlamaTokenizer`,
    or the installed transformers' ``LlamaTokenizer`` with ``tokenization="transformers"``),
    ``tokenization`` (:class:`~spiritlens.tokens.layout.TokenizerLayout`: where the markers live,
    ``legacy``, which path tokenises), ``vocab`` (:class:`~spiritlens.tokens.vocab.SpiritVocab`),
    ``model_dir``, ``variant``.
    """

    def __init__(self, bridge, tokenizer, vocab: SpiritVocab, model_dir: Path,
                 speech_tokenizer: Any = None, tokenization: TokenizerLayout | None = None):
        self.bridge = bridge
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.model_dir = Path(model_dir)
        self.tokenization = tokenization
        self._speech_tokenizer_source = speech_tokenizer
        self._speech_tokenizer = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype = torch.float32,
        speech_tokenizer: Any = None,
        device_map: str | dict | None = None,
        n_devices: int | None = None,
        max_memory: dict | None = None,
        process_weights: bool = False,
        tokenization: str = "spiritlm",
    ) -> "HookedSpiritLM":
        """Load a SpiritLM model directory (or variant name under ``$SPIRITLM_CHECKPOINTS_DIR``).

        ``tokenization``: ``"spiritlm"`` (default) tokenises prompt strings exactly as SpiritLM's
        code does (transformers 4.x's slow ``LlamaTokenizer`` on the checkpoint's
        ``tokenizer.model``, ``tokenizer_config.json``, ``special_tokens_map.json``,
        ``added_tokens.json``); ``"transformers"`` uses the installed transformers'
        ``LlamaTokenizer`` instead (which differs when the markers are SentencePiece pieces). The
        detected layout is logged (logger ``"spiritlens"``, INFO) and kept as ``model.tokenization``.

        Before anything is built, ``config.json`` is compared with the weight files' tensor names and
        shapes (:func:`spiritlens.checkpoints.validate.check_model_dir_weights`): a missing, unexpected
        or mis-shaped tensor, a malformed config, an unreadable weight file or ``tokenizer.model`` is one
        ValueError naming the file; after loading, a weight holding NaN or inf is one too.

        ``dtype``: float32 (default), bfloat16 or float16; weights are loaded straight into it
        (a bf16 checkpoint never passes through a float32 copy). ``device``: "cpu", "cuda", ...;
        or ``device_map``/``n_devices``/``max_memory`` for the bridge's multi-GPU placement.
        ``speech_tokenizer``: a speech-tokenizer folder, a :class:`spiritlens.units.SpeechTokenizer`,
        or SpiritLM's own speech tokenizer object; by default the ``speech_tokenizer/`` folder of
        ``$SPIRITLM_CHECKPOINTS_DIR`` (or next to the model's ``spiritlm_model/``), loaded on first use.
        """
        from transformer_lens.model_bridge import TransformerBridge
        from transformers import LlamaTokenizer

        check_tokenization(tokenization)
        model_dir = resolve_model_dir(name_or_path)
        check_model_dir(model_dir)
        # config.json against the weight files' tensor names and shapes (headers only), before anything is built
        config = check_model_dir_weights(model_dir)
        torch_dtype = parse_dtype(dtype)
        if device is not None and (device_map is not None or n_devices is not None):
            raise ValueError("pass either device or device_map/n_devices, not both")
        try:
            check_device(device)
        except ValueError as error:
            raise ValueError(f"device {error}") from None
        # SpiritLM's own call; the bridge keeps the installed transformers' tokenizer for itself.
        slow = SlowLlamaTokenizer.from_pretrained(model_dir, add_bos_token=True, add_eos_token=False)
        bridge_tokenizer = LlamaTokenizer.from_pretrained(str(model_dir), add_bos_token=True, add_eos_token=False)
        tokenizer = slow if tokenization == "spiritlm" else bridge_tokenizer
        layout = detect_layout(slow, model_dir, tokenization=tokenization)
        logger.info("%s: %s", model_dir, layout.describe())
        vocab = SpiritVocab.from_tokenizer(tokenizer, source=f"tokenizer of {model_dir}")
        rows = int(config.get("vocab_size", 0))
        if rows <= vocab.max_id() or rows < len(tokenizer):
            raise ValueError(
                f"{model_dir}/config.json: vocab_size {rows} embedding rows is fewer than the "
                f"tokenizer's {max(len(tokenizer), vocab.max_id() + 1)} ids"
            )
        if device is None and device_map is None and n_devices is None:
            device = "cpu"
        bridge = TransformerBridge.boot_transformers(
            str(model_dir),
            device=device,
            dtype=torch_dtype,
            tokenizer=bridge_tokenizer,
            device_map=device_map,
            n_devices=n_devices,
            max_memory=max_memory,
        )
        embed_rows = bridge.original_model.get_input_embeddings().weight.shape[0]
        if embed_rows < len(tokenizer):
            raise ValueError(f"{model_dir}: the embedding has {embed_rows} rows, fewer than the "
                             f"tokenizer's {len(tokenizer)} ids")
        files = weight_files(model_dir)
        check_finite(((name.replace("._original_component", ""), p)  # HF names, not the bridge's wrappers
                      for name, p in bridge.original_model.named_parameters()),
                     str(files[0]) if len(files) == 1 else f"{model_dir} (weight shards)")
        bridge.eval()
        if process_weights:
            bridge.enable_compatibility_mode()
        return cls(bridge, tokenizer, vocab, model_dir, speech_tokenizer, layout)

    # ------------------------------------------------------- TransformerLens API
    @property
    def cfg(self):
        return self.bridge.cfg

    @property
    def device(self) -> torch.device:
        return self.bridge.original_model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.bridge.original_model.get_input_embeddings().weight.dtype

    @property
    def variant(self) -> str:
        return self.model_dir.name

    @property
    def hf_model(self):
        """The wrapped ``transformers.LlamaForCausalLM``."""
        return self.bridge.original_model

    def __call__(self, prompt: "Prompt | torch.Tensor", **kwargs) -> torch.Tensor:
        """Logits ``[batch, pos, d_vocab]`` for a prompt (string or ``(modality, content)`` pairs,
        through SpiritLM's prompt path) or token ids ``[batch, pos]`` / ``[pos]``."""
        return self.bridge(self.input_ids(prompt), **kwargs)

    forward = __call__

    def _check_hook_names(self, hooks: Iterable[tuple[Any, Any]]) -> None:
        known = self.bridge.hook_dict
        for name, _ in hooks:
            if isinstance(name, str) and name not in known:
                raise ValueError(f"unknown hook name {name!r} (e.g. 'blocks.0.hook_resid_post')")

    def run_with_hooks(self, prompt: "Prompt | torch.Tensor", *, fwd_hooks: Sequence = (),
                       bwd_hooks: Sequence = (), **kwargs):
        """Forward with temporary hooks ``[(name, fn(act, hook))]``; unknown names raise.
        ``prompt`` as for :meth:`__call__`."""
        self._check_hook_names(fwd_hooks)
        self._check_hook_names(bwd_hooks)
        return self.bridge.run_with_hooks(self.input_ids(prompt), fwd_hooks=list(fwd_hooks),
                                          bwd_hooks=list(bwd_hooks), **kwargs)

    def run_with_cache(self, prompt: "Prompt | torch.Tensor", **kwargs):
        """``(logits, ActivationCache)`` as in TransformerLens; ``prompt`` as for :meth:`__call__`."""
        return self.bridge.run_with_cache(self.input_ids(prompt), **kwargs)

    def hooks(self, fwd_hooks: Sequence = (), bwd_hooks: Sequence = (), **kwargs):
        self._check_hook_names(fwd_hooks)
        self._check_hook_names(bwd_hooks)
        return self.bridge.hooks(fwd_hooks=list(fwd_hooks), bwd_hooks=list(bwd_hooks), **kwargs)

    def __getattr__(self, name: str):
        # Everything else of the TransformerLens API (add_hook, reset_hooks, hook_dict, W_E, ...).
        if name.startswith("_") or name in ("bridge",):
            raise AttributeError(name)
        attribute = getattr(self.bridge, name)
        if not inspect.ismethod(attribute):
            return attribute

        @functools.wraps(attribute)
        def delegated(*args, **kwargs):
            if name in _BRIDGE_STRING_METHODS and any(_is_text(a) for a in (*args, *kwargs.values())):
                raise ValueError(
                    f"HookedSpiritLM.{name} takes token ids here, not text: the bridge would tokenise a string "
                    "without SpiritLM's markers; pass model.to_tokens(prompt) (or model.bridge."
                    f"{name}(...) for the bridge's own tokenizer)")
            out = attribute(*args, **kwargs)
            return self if out is self.bridge else out  # model.to(...), .half(), .eval(): keep the wrapper

        return delegated

    # ------------------------------------------------------------ token ids
    @property
    def n_token_ids(self) -> int:
        """Ids the tokenizer has a piece for: ``0 .. n_token_ids - 1`` (the embedding may have more rows)."""
        return len(self.tokenizer)

    def check_token_ids(self, ids: "torch.Tensor | Sequence[int]", where: str = "token ids") -> None:
        """Raise ValueError naming the first id outside ``0 .. n_token_ids - 1`` (negative, at or
        beyond the embedding's ``d_vocab`` rows, or a padding row no piece belongs to)."""
        tensor = torch.as_tensor(ids)
        if tensor.numel() == 0:
            raise ValueError(f"{where} are empty")
        if tensor.dtype.is_floating_point or tensor.dtype == torch.bool or tensor.is_complex():
            raise ValueError(f"{where} must be integers, got dtype {tensor.dtype}")
        limit = self.n_token_ids
        bad = (tensor < 0) | (tensor >= limit)
        if bool(bad.any()):
            index = tuple(int(i) for i in bad.nonzero()[0])
            value = int(tensor[index])
            rows = self.cfg.d_vocab
            why = ("negative" if value < 0 else f"beyond the embedding's {rows} rows" if value >= rows
                   else f"an embedding row with no token (the tokenizer has {limit} ids)")
            at = f" at position {index[-1]}" if tensor.numel() > 1 else ""
            raise ValueError(f"{where}: token id {value}{at} is {why}; valid ids are 0..{limit - 1}")

    def input_ids(self, prompt: "Prompt | torch.Tensor | Sequence[int]",
                  output_modality: str = "text") -> torch.Tensor:
        """Token ids ``[batch, pos]`` on the model's device: a prompt through SpiritLM's path
        (:meth:`to_tokens`), or ids (tensor ``[batch, pos]``/``[pos]``, a list of ints, or a list
        of equal-length lists) checked with :meth:`check_token_ids`."""
        if isinstance(prompt, torch.Tensor):
            ids = prompt
        elif _is_id_sequence(prompt):
            ids = torch.tensor(_id_lists(prompt), dtype=torch.long)
        else:
            return self.to_tokens(prompt, output_modality)
        if ids.dim() == 1:
            ids = ids[None]
        if ids.dim() != 2:
            raise ValueError(f"token ids must be [batch, pos] or [pos], got shape {tuple(ids.shape)}")
        self.check_token_ids(ids)
        return ids.to(self.device)

    def to_single_token(self, string: str) -> int:
        """The id of ``string`` if SpiritLM's tokenizer makes it exactly one token (no BOS)."""
        ids = self.tokenizer.encode(string, add_special_tokens=False)
        if len(ids) != 1:
            pieces = self.tokenizer.convert_ids_to_tokens(ids)
            raise ValueError(f"{string!r} is {len(ids)} tokens {pieces}, not one")
        return int(ids[0])

    def to_string(self, ids: "torch.Tensor | Sequence[int]") -> str:
        """Text of token ids ``[pos]`` (SpiritLM's decode, special tokens kept)."""
        ids = torch.as_tensor(ids).reshape(-1)
        self.check_token_ids(ids)
        return self.tokenizer.decode(ids.tolist(), clean_up_tokenization_spaces=False)

    # -------------------------------------------------------------- prompts
    @property
    def speech_tokenizer(self):
        """The speech tokenizer (audio -> deduplicated ``[Hu…]`` units), loaded on first use."""
        if self._speech_tokenizer is None:
            self._speech_tokenizer = _load_speech_tokenizer(self._speech_tokenizer_source, self.model_dir)
        return self._speech_tokenizer

    def segments(self, prompt: Prompt) -> list[Segment]:
        """Normalise a prompt into segments; speech content is turned into units here."""
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt is empty")
            return [Segment("text", prompt)]
        if isinstance(prompt, (bytes, torch.Tensor)) or not isinstance(prompt, Sequence):
            raise ValueError("prompt must be a string or a sequence of (modality, content) pairs, "
                             f"got {type(prompt).__name__}")
        if len(prompt) == 0:
            raise ValueError("prompt is empty: give at least one (modality, content) pair")
        segments = []
        for index, item in enumerate(prompt):
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise ValueError(f"prompt item {index} must be a (modality, content) pair, got {item!r:.60}")
            modality, content = item
            if modality not in MODALITIES:
                raise ValueError(f"prompt item {index}: unknown modality {modality!r}; use 'text' or 'speech'")
            if modality == "text":
                if not isinstance(content, str) or not content:
                    raise ValueError(f"prompt item {index}: text content must be a non-empty string")
                segments.append(Segment("text", content))
            else:
                segments.append(Segment("speech", self._speech_units(content, index)))
        return segments

    def _speech_units(self, content: Any, index: int):
        if hasattr(content, "tokens") and hasattr(content, "spans"):
            units = content
        else:
            audio, sample_rate = (content if isinstance(content, tuple) and len(content) == 2
                                  else (content, None))
            units = self.speech_tokenizer.encode(audio, sample_rate=sample_rate)
        if len(units.tokens) == 0:
            raise ValueError(f"prompt item {index}: speech gave no units")
        return units

    def encode(self, prompt: Prompt, output_modality: str = "text") -> tuple[torch.Tensor, TokenMap]:
        """Token ids ``[1, T]`` on the model's device and the prompt's :class:`TokenMap`."""
        check_output_modality(output_modality)
        ids, token_map = encode_segments(self.tokenizer, self.vocab, self.segments(prompt), output_modality)
        if len(ids) > self.cfg.n_ctx:
            raise ValueError(f"prompt has {len(ids)} tokens, more than the model's context of {self.cfg.n_ctx}")
        return torch.tensor([ids], dtype=torch.long, device=self.device), token_map

    def to_tokens(self, prompt: Prompt, output_modality: str = "text") -> torch.Tensor:
        """Token ids ``[1, T]``: BOS, markers where the modality changes, text and ``[Hu…]``
        tokens, and the output-modality marker (``[Text]`` after a speech prompt by default)."""
        return self.encode(prompt, output_modality)[0]

    def to_str_tokens(self, prompt: Prompt | torch.Tensor | Sequence[int], output_modality: str = "text"
                      ) -> list[str]:
        """One piece per position (``<s>``, ``[Text]``, ``▁capital``, ``[Hu12]``...) of a prompt
        (as :meth:`to_tokens` encodes it) or of one row of token ids (range-checked)."""
        ids = self.input_ids(prompt, output_modality)
        if ids.shape[0] != 1:
            raise ValueError(f"to_str_tokens takes one prompt, got a batch of {ids.shape[0]}")
        return self.tokenizer.convert_ids_to_tokens(ids[0].tolist())

    def prompt_string(self, ids: "torch.Tensor | Sequence[int]") -> str:
        """The prompt string whose tokenisation gives ``ids`` ``[pos]`` (BOS first); ValueError if
        none does (ids this tokenizer would not produce)."""
        ids = torch.as_tensor(ids).reshape(-1).tolist()
        self.check_token_ids(ids)
        if hasattr(self.tokenizer, "prompt_string"):
            return self.tokenizer.prompt_string(ids)
        text = self.tokenizer.decode(ids[1:], clean_up_tokenization_spaces=False)  # the transformers path
        if list(self.tokenizer(text).input_ids) != ids:
            raise ValueError("token ids are not this tokenizer's encoding of any string")
        return text

    # ----------------------------------------------------------- generation
    def forbidden_token_ids(self, output_modality: str = "text") -> list[int]:
        """Ids generation may not produce: SpiritLM's rule (markers; the other modality's tokens),
        plus embedding rows the tokenizer does not use."""
        check_output_modality(output_modality)
        if output_modality == "arbitrary":
            forbidden: set[int] = set()
        else:
            forbidden = set(self.vocab.marker_ids)
            speech = self.vocab.speech_ids
            if output_modality == "text":
                forbidden |= speech
            else:
                forbidden |= {i for i in range(len(self.tokenizer)) if i not in speech}
        rows = self.cfg.d_vocab
        forbidden |= set(range(len(self.tokenizer), rows))
        return sorted(forbidden)

    def allowed_token_mask(self, output_modality: str = "text") -> torch.Tensor:
        """Bool ``[d_vocab]`` on the model's device: True for the ids :meth:`generate` may produce
        in ``output_modality`` (the complement of :meth:`forbidden_token_ids`)."""
        mask = torch.ones(self.cfg.d_vocab, dtype=torch.bool, device=self.device)
        forbidden = self.forbidden_token_ids(output_modality)
        if forbidden:
            mask[torch.tensor(forbidden, device=self.device)] = False
        return mask

    @staticmethod
    def _check_generate_kwargs(kwargs: dict) -> None:
        """SpiritLM's rule (``_overwrite_generation_config``): extra options must be fields of
        ``transformers.GenerationConfig``; a one-line ValueError otherwise."""
        from transformers import GenerationConfig

        fields = {k for k in vars(GenerationConfig()) if not k.startswith("_")} - {"transformers_version"}
        for key in kwargs:
            if key in _GENERATE_RESERVED:
                raise ValueError(f"generate: {key} is set by spiritlens ({_GENERATE_RESERVED[key]}); "
                                 "leave it out")
            if key not in fields and key not in _GENERATE_EXTRA:
                close = sorted(f for f in fields if f.split("_")[0] == key.split("_")[0])[:4]
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ValueError(f"generate: unknown option {key!r}{hint}; options are fields of "
                                 "transformers.GenerationConfig (max_new_tokens, temperature, top_p, ...)")

    @torch.no_grad()
    def generate_ids(self, prompt: "Prompt | torch.Tensor", output_modality: str = "text", *,
                     max_new_tokens: int = 20, do_sample: bool = False, **generate_kwargs) -> torch.Tensor:
        """New token ids ``[n]`` (prompt excluded); greedy by default. ``prompt``: a prompt or one
        row of token ids; ``generate_kwargs``: ``transformers.GenerationConfig`` fields."""
        check_output_modality(output_modality)
        self._check_generate_kwargs(generate_kwargs)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        ids = self.input_ids(prompt, output_modality)
        if ids.shape[0] != 1:
            raise ValueError(f"generate takes one prompt, got a batch of {ids.shape[0]}")
        out = self.hf_model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            suppress_tokens=self.forbidden_token_ids(output_modality) or None,
            pad_token_id=self.vocab.eos_id,
            # TransformerLens 4.3's bridge breaks HF's KV cache (tokens after the first diverge
            # from plain LlamaForCausalLM), so every step runs the full prefix.
            use_cache=False,
            **generate_kwargs,
        )
        return out[0, ids.shape[1]:]

    def generate(self, prompt: "Prompt | torch.Tensor", output_modality: str = "text", *,
                 max_new_tokens: int = 20, do_sample: bool = False, **generate_kwargs) -> str:
        """The generated continuation as a string (speech output as ``[Hu…]`` tokens).

        Like SpiritLM, tokens of the other modality and the marker tokens are forbidden; greedy
        decoding unless ``do_sample=True``. Options other than ``transformers.GenerationConfig``
        fields raise ValueError, as SpiritLM's ``generate`` refuses them.
        """
        new = self.generate_ids(prompt, output_modality, max_new_tokens=max_new_tokens,
                                do_sample=do_sample, **generate_kwargs)
        return self.decode_generated(new)

    def decode_generated(self, ids: "torch.Tensor | Sequence[int]") -> str:
        """Generated ids ``[n]`` as text, with SpiritLM's decode call (``skip_special_tokens=True,
        clean_up_tokenization_spaces=False``)."""
        ids = torch.as_tensor(ids).reshape(-1).tolist()
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def __repr__(self) -> str:
        return (f"HookedSpiritLM({self.variant!r}, n_layers={self.cfg.n_layers}, d_model={self.cfg.d_model}, "
                f"dtype={self.dtype}, device={self.device})")


def _is_text(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, (list, tuple)) and bool(value)
                                      and all(isinstance(v, (str, tuple, list)) for v in value)
                                      and not _is_id_sequence(value))


def _is_id_sequence(value: Any) -> bool:
    """A list of ints, or a non-empty list of lists of ints (not a prompt)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        return False
    if all(_is_int(v) for v in value):
        return True
    return all(isinstance(v, (list, tuple)) and v and all(_is_int(i) for i in v) for v in value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _id_lists(value: Sequence) -> list:
    if all(_is_int(v) for v in value):
        return list(value)
    lengths = {len(v) for v in value}
    if len(lengths) != 1:
        raise ValueError(f"a batch of token-id lists must have equal lengths, got {sorted(lengths)}")
    return [list(v) for v in value]


def _load_speech_tokenizer(source: Any, model_dir: Path):
    from spiritlens.units import SpeechTokenizer

    if source is None:
        folder = speech_tokenizer_dir(model_dir)
        if folder is None:
            raise FileNotFoundError(
                "no speech tokenizer found: set $SPIRITLM_CHECKPOINTS_DIR (with speech_tokenizer/hubert_25hz/) "
                "or pass speech_tokenizer= to from_pretrained"
            )
        return SpeechTokenizer.from_dir(folder)
    if isinstance(source, (str, os.PathLike)):
        return SpeechTokenizer.from_dir(source)
    if isinstance(source, SpeechTokenizer):
        return source
    if hasattr(source, "encode_units"):
        return SpeechTokenizer.from_spiritlm(source)
    raise ValueError(f"speech_tokenizer must be a folder, a SpeechTokenizer or SpiritLM's speech "
                     f"tokenizer, got {type(source).__name__}")
