"""Batches of SpiritLM prompts: padding, attention masks and per-row token maps.

TransformerLens pads a list of strings into one ``[batch, pos]`` tensor (``to_tokens(list,
padding_side=...)``, by default on the tokenizer's ``padding_side``: ``"left"`` for Llama's) and
masks the padding in ``model(list)``, ``run_with_cache(list)`` and ``generate(list)``. spiritlens
does the same with SpiritLM's prompt path: every row is encoded on its own exactly as a single
prompt (BOS, markers, ``[Hu…]`` units, SpiritLM's tokenisation), then padded with the tokenizer's
pad id (EOS unless set otherwise) on the chosen side (``model.tokenizer.padding_side`` by default,
``"left"`` as on TransformerLens' bridge of the same checkpoint). The attention mask (1 = real token, 0 = padding) goes
to the model with every batched forward, and TransformerLens' bridge derives each row's position
ids from it, so a row's logits at its real positions equal the single-prompt logits (and
``LlamaForCausalLM`` with the same mask). Right padding needs no mask for causal attention at the
real positions; left padding does (without it the positions shift and the logits change).

A token-id tensor given without a mask is read as left-padded where a row starts with pad ids
followed by BOS (what :func:`pad_rows` writes): those leading positions are masked. Any other
hand-padded batch needs ``attention_mask=``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

PADDING_SIDES = ("right", "left")


def check_padding_side(padding_side: str | None, default: str = "right") -> str:
    """``"right"`` or ``"left"`` (``default`` for None); ValueError otherwise."""
    if padding_side is None:
        return default
    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    return padding_side


def _is_pair_list(item: Any) -> bool:
    """A sequence of ``(modality, content)`` pairs (one interleaved prompt)."""
    return (isinstance(item, (list, tuple)) and bool(item) and not isinstance(item[0], (int, str))
            and all(isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)
                    for pair in item))


def is_prompt_batch(value: Any) -> bool:
    """True for a list/tuple of prompts, each a string or a sequence of ``(modality, content)`` pairs
    (mixed batches too). A single prompt (a string, or pairs) and token ids are not.

    Raises ValueError for a bare ``("speech", "q.wav")`` / ``("text", "…")`` pair, which would otherwise
    read as a batch of two strings: one prompt is ``[("speech", "q.wav")]``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        return False
    if isinstance(value, tuple) and len(value) == 2 and value[0] in ("text", "speech"):
        raise ValueError(f"prompt {value!r:.80} is one (modality, content) pair, not a prompt: pass a list of "
                         f"pairs, [({value[0]!r}, ...)], for one prompt (a batch of strings is a list)")
    return all(isinstance(item, str) or _is_pair_list(item) for item in value)


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, padding_side: str = "right"
             ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Pad id lists into ``tokens [B, T]`` (long) and ``attention_mask [B, T]`` (long, 1 = real),
    T the longest row; ``offsets[i]`` is the column of row i's first token (0 on the right, the
    number of pads on the left). ValueError for no rows, an empty row or an unknown side."""
    padding_side = check_padding_side(padding_side)
    if not rows:
        raise ValueError("a batch needs at least one prompt")
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    offsets = []
    for i, row in enumerate(rows):
        if len(row) == 0:
            raise ValueError(f"prompt {i} of the batch has no tokens")
        start = 0 if padding_side == "right" else width - len(row)
        tokens[i, start:start + len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, start:start + len(row)] = 1
        offsets.append(start)
    return tokens, mask, offsets


def left_padding_mask(tokens: torch.Tensor, pad_id: int, bos_id: int) -> torch.Tensor | None:
    """The attention mask ``[B, T]`` of a batch whose rows start with ``pad_id`` runs followed by
    ``bos_id`` (left padding as :func:`pad_rows` writes it), or None when no row does."""
    if tokens.dim() != 2 or tokens.shape[0] < 2 or pad_id == bos_id:
        return None
    is_pad = tokens == pad_id
    leading = torch.cumprod(is_pad.long(), dim=1)  # 1 while the row is still in its leading pads
    n_pads = leading.sum(dim=1)
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    after = tokens[rows, n_pads.clamp(max=tokens.shape[1] - 1)]
    padded = (n_pads > 0) & (n_pads < tokens.shape[1]) & (after == bos_id)
    if not bool(padded.any()):
        return None
    mask = torch.ones_like(tokens, dtype=torch.long)
    mask[padded[:, None] & leading.bool()] = 0
    return mask


@dataclass
class PromptBatch:
    """Prompts encoded row by row through SpiritLM's path and padded.

    ``tokens`` ``[B, T]`` and ``attention_mask`` ``[B, T]`` (1 = real token) on the model's device;
    ``token_maps[i]``: row i's :class:`~spiritlens.tokens.prompt.TokenMap` as a single prompt;
    ``offsets[i]``: the column of its position 0, so TokenMap position ``p`` is column
    ``p + offsets[i]`` (with ``prepend_bos=False`` the first ``dropped[i]`` positions, BOS and
    SentencePiece's ``▁``, and a text prompt's ``[Text]``, are not in the tensor); ``lengths[i]``:
    row i's number of real tokens.
    """

    tokens: torch.Tensor
    attention_mask: torch.Tensor
    token_maps: list
    offsets: list[int]
    lengths: list[int]
    padding_side: str
    dropped: list[int]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def columns(self, row: int) -> slice:
        """The columns of row ``row``'s real tokens."""
        start = self.offsets[row] + self.dropped[row]
        return slice(start, start + self.lengths[row])

    def last_columns(self) -> torch.Tensor:
        """``[B]`` long: each row's last real column (where its next-token logits are)."""
        return torch.tensor([self.columns(i).stop - 1 for i in range(len(self))], device=self.tokens.device)


def continuation_start(token_map) -> int:
    """Positions a ``prepend_bos=False`` encoding drops from the front: BOS and SentencePiece's
    prefix ``▁``, the family's text marker when the prompt starts with text, and a ``▁`` SentencePiece
    put at the start of the text after an added-token marker (it covers no character): the string is then
    a piece of text to put after other tokens, as TransformerLens means ``prepend_bos=False``."""
    positions = token_map.positions
    kinds = [info.kind for info in positions]
    start = 0
    while start < len(kinds) and kinds[start] in ("bos", "prefix"):
        start += 1
    first_text = token_map.segments and token_map.segments[0].modality == "text"
    if first_text and start < len(kinds) and kinds[start] == "marker":
        start += 1
    while (first_text and start + 1 < len(kinds) and kinds[start] == "text" and positions[start].char_span is not None
           and positions[start].char_span[0] == positions[start].char_span[1]):
        start += 1
    if start >= len(kinds):
        raise ValueError("the prompt has no tokens after its BOS and marker")
    return start


def default_padding_side(model) -> str:
    """The side a batch is padded on when none is given: the tokenizer's ``padding_side`` (as
    TransformerLens' ``to_tokens``), ``"left"`` without a tokenizer."""
    side = getattr(getattr(model, "tokenizer", None), "padding_side", None) or "left"
    return check_padding_side(side)


def pad_id(model) -> int:
    """The id batches are padded with: the tokenizer's ``pad_token_id``, EOS when it has none."""
    value = getattr(getattr(model, "tokenizer", None), "pad_token_id", None)
    return model.vocab.eos_id if value is None else int(value)


def prompt_rows(model, prompts: Sequence[Any], output_modality: str = "text", *, prepend_bos: bool | None = None,
                check_context: bool = True) -> tuple[list[list[int]], list, list[int]]:
    """Each prompt through ``model.encode`` (SpiritLM's path): its ids (without its
    :func:`continuation_start` positions when ``prepend_bos=False``), TokenMap and dropped count.
    ValueError for an empty batch or a bad prompt (naming its index)."""
    if not prompts:
        raise ValueError("a batch needs at least one prompt")
    rows, maps, dropped = [], [], []
    for index, prompt in enumerate(prompts):
        try:
            ids, token_map = model.encode(prompt, output_modality, check_context=check_context,
                                          piece=prepend_bos is False)
        except ValueError as error:
            raise ValueError(f"prompt {index} of the batch: {error}") from None
        drop = 0 if prepend_bos is None or prepend_bos else continuation_start(token_map)
        rows.append(ids[0, drop:].tolist())
        maps.append(token_map)
        dropped.append(drop)
    return rows, maps, dropped


def encode_batch(model, prompts: Sequence[Any], output_modality: str = "text", *,
                 padding_side: str | None = None, prepend_bos: bool | None = None) -> PromptBatch:
    """Encode each prompt with ``model.encode`` (SpiritLM's path) and pad (module docstring).
    ``prepend_bos=False`` drops each row's :func:`continuation_start` positions. ValueError for an
    empty batch, a bad prompt (naming its index) or a bad ``padding_side``."""
    side = check_padding_side(padding_side, default_padding_side(model))
    rows, maps, dropped = prompt_rows(model, prompts, output_modality, prepend_bos=prepend_bos)
    tokens, mask, offsets = pad_rows(rows, pad_id(model), side)
    offsets = [o - d for o, d in zip(offsets, dropped)]
    return PromptBatch(tokens.to(model.device), mask.to(model.device), maps, offsets, [len(r) for r in rows],
                       side, dropped)
