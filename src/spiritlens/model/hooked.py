"""HookedSpiritLM: a SpiritLM checkpoint as a TransformerLens 4 ``TransformerBridge``.

The bridge is held, not subclassed (TransformerLens' ``boot`` always builds a plain bridge):
the TransformerLens API (``forward``, ``run_with_cache``, ``run_with_hooks``, ``hooks``,
``cfg``...) is delegated to it, and spiritlens adds SpiritLM's prompts (markers, HuBERT units,
a TokenMap), modality-constrained generation and the speech tokenizer.

Numerics: by default the weights are the raw checkpoint weights, so logits equal
``transformers.LlamaForCausalLM`` (eager attention, same dtype) on the same directory, and
``blocks.{l}.hook_resid_post`` equals the output of HF ``model.layers[l]``. TransformerLens'
weight processing (folded norms, centred weights) is opt-in with ``process_weights=True``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from ..checkpoints import (
    check_model_dir,
    parse_dtype,
    resolve_model_dir,
    speech_tokenizer_dir,
)
from ..tokens import MODALITIES, Segment, TokenMap, check_output_modality, encode_segments
from ..vocab import SpiritVocab

Prompt = str | Sequence[tuple[str, Any]]


class HookedSpiritLM:
    """SpiritLM with TransformerLens hooks. Build it with :meth:`from_pretrained`.

    Attributes: ``bridge`` (the TransformerBridge), ``tokenizer`` (SpiritLM's LlamaTokenizer),
    ``vocab`` (:class:`~spiritlens.vocab.SpiritVocab`), ``model_dir``, ``variant``.
    """

    def __init__(self, bridge, tokenizer, vocab: SpiritVocab, model_dir: Path,
                 speech_tokenizer: Any = None):
        self.bridge = bridge
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.model_dir = Path(model_dir)
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
    ) -> "HookedSpiritLM":
        """Load a SpiritLM model directory (or variant name under ``$SPIRITLM_CHECKPOINTS_DIR``).

        ``dtype``: float32 (default), bfloat16 or float16; weights are loaded straight into it
        (a bf16 checkpoint never passes through a float32 copy). ``device``: "cpu", "cuda", ...;
        or ``device_map``/``n_devices``/``max_memory`` for the bridge's multi-GPU placement.
        ``speech_tokenizer``: a speech-tokenizer folder, a :class:`spiritlens.units.SpeechTokenizer`,
        or SpiritLM's own speech tokenizer object; by default the ``speech_tokenizer/`` folder of
        ``$SPIRITLM_CHECKPOINTS_DIR`` (or next to the model's ``spiritlm_model/``), loaded on first use.
        """
        from transformer_lens.model_bridge import TransformerBridge
        from transformers import LlamaTokenizer

        model_dir = resolve_model_dir(name_or_path)
        check_model_dir(model_dir)
        torch_dtype = parse_dtype(dtype)
        if device is not None and (device_map is not None or n_devices is not None):
            raise ValueError("pass either device or device_map/n_devices, not both")
        tokenizer = LlamaTokenizer.from_pretrained(str(model_dir), add_bos_token=True, add_eos_token=False)
        vocab = SpiritVocab.from_tokenizer(tokenizer, source=f"tokenizer of {model_dir}")
        config = json.loads((model_dir / "config.json").read_text())
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
            tokenizer=tokenizer,
            device_map=device_map,
            n_devices=n_devices,
            max_memory=max_memory,
        )
        embed_rows = bridge.original_model.get_input_embeddings().weight.shape[0]
        if embed_rows < len(tokenizer):
            raise ValueError(f"{model_dir}: the embedding has {embed_rows} rows, fewer than the "
                             f"tokenizer's {len(tokenizer)} ids")
        bridge.eval()
        if process_weights:
            bridge.enable_compatibility_mode()
        return cls(bridge, tokenizer, vocab, model_dir, speech_tokenizer)

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

    def __call__(self, tokens: torch.Tensor, **kwargs) -> torch.Tensor:
        """Logits ``[batch, pos, d_vocab]`` for token ids ``[batch, pos]``."""
        return self.bridge(tokens, **kwargs)

    forward = __call__

    def _check_hook_names(self, hooks: Iterable[tuple[Any, Any]]) -> None:
        known = self.bridge.hook_dict
        for name, _ in hooks:
            if isinstance(name, str) and name not in known:
                raise ValueError(f"unknown hook name {name!r} (e.g. 'blocks.0.hook_resid_post')")

    def run_with_hooks(self, tokens: torch.Tensor, *, fwd_hooks: Sequence = (), bwd_hooks: Sequence = (),
                       **kwargs):
        """Forward with temporary hooks ``[(name, fn(act, hook))]``; unknown names raise."""
        self._check_hook_names(fwd_hooks)
        self._check_hook_names(bwd_hooks)
        return self.bridge.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks), bwd_hooks=list(bwd_hooks), **kwargs)

    def run_with_cache(self, tokens: torch.Tensor, **kwargs):
        """``(logits, ActivationCache)`` as in TransformerLens."""
        return self.bridge.run_with_cache(tokens, **kwargs)

    def hooks(self, fwd_hooks: Sequence = (), bwd_hooks: Sequence = (), **kwargs):
        self._check_hook_names(fwd_hooks)
        self._check_hook_names(bwd_hooks)
        return self.bridge.hooks(fwd_hooks=list(fwd_hooks), bwd_hooks=list(bwd_hooks), **kwargs)

    def __getattr__(self, name: str):
        # Everything else of the TransformerLens API (add_hook, reset_hooks, hook_dict, W_E, ...).
        if name.startswith("_") or name in ("bridge",):
            raise AttributeError(name)
        return getattr(self.bridge, name)

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
        """One string per position (``<s>``, ``[Text]``, ``▁capital``, ``[Hu12]``...)."""
        if isinstance(prompt, torch.Tensor):
            ids = prompt.reshape(-1).tolist()
        elif isinstance(prompt, Sequence) and not isinstance(prompt, str) and all(
                isinstance(i, int) for i in prompt):
            ids = list(prompt)
        else:
            ids = self.to_tokens(prompt, output_modality)[0].tolist()
        return self.tokenizer.convert_ids_to_tokens(ids)

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

    @torch.no_grad()
    def generate_ids(self, prompt: Prompt, output_modality: str = "text", *, max_new_tokens: int = 20,
                     do_sample: bool = False, **generate_kwargs) -> torch.Tensor:
        """New token ids ``[n]`` (prompt excluded); greedy by default."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        ids = self.to_tokens(prompt, output_modality)
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

    def generate(self, prompt: Prompt, output_modality: str = "text", *, max_new_tokens: int = 20,
                 do_sample: bool = False, **generate_kwargs) -> str:
        """The generated continuation as a string (speech output as ``[Hu…]`` tokens).

        Like SpiritLM, tokens of the other modality and the marker tokens are forbidden; greedy
        decoding unless ``do_sample=True``.
        """
        new = self.generate_ids(prompt, output_modality, max_new_tokens=max_new_tokens,
                                do_sample=do_sample, **generate_kwargs)
        return self.tokenizer.decode(new.tolist(), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def __repr__(self) -> str:
        return (f"HookedSpiritLM({self.variant!r}, n_layers={self.cfg.n_layers}, d_model={self.cfg.d_model}, "
                f"dtype={self.dtype}, device={self.device})")


def _load_speech_tokenizer(source: Any, model_dir: Path):
    from ..units import SpeechTokenizer

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
