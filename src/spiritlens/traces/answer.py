"""The traced answer: which token's probability the scores measure, and the rule that chose it.

Every :class:`~spiritlens.traces.TraceResult` records its rule in ``answer_rule``:

- ``"top1_text"`` (the default for prompts that end in text or ``[Text]``), ``"top1_speech"``,
  ``"top1_any"``: the most probable token of the clean run's last position **among the tokens the
  output modality allows**, i.e. SpiritLM's forbidden-token rule that :meth:`HookedSpiritLM.generate`
  applies (:meth:`~spiritlens.HookedSpiritLM.forbidden_token_ids`: no markers, no tokens of the other
  modality, no embedding rows without a token). It is therefore the first token greedy generation
  produces, which is what a filter judging the generated text judged. ROME took the top-1 over the
  whole vocabulary; for SpiritLM that can be a ``[Hu…]`` unit or a marker after a text prompt.
  ``high_score`` stays ROME's metric: that token's probability under the softmax over the full
  vocabulary.
- ``"id"``: an explicit token id (``target=1234``), range-checked.
- ``"generated_first_token"``: the first token of the greedy generation that a filter judged
  (``spiritlens experiment`` passes it, so the traced answer is the judged one by construction;
  :func:`generated_answer`).
- ``"target_first_token"`` and ``"target_sequence"``: a target string. It is tokenised **in
  context**, as the continuation of the prompt string (``prompt + target`` with SpiritLM's
  tokenizer, keeping the pieces after the prompt), so ``" 1999"`` after ``"of"`` is
  ``▁ 1 9 9 9`` as the tokenizer writes it, not ``1`` glued to ``of``. A target that does not
  start with whitespace starts a new word: one space is put in front unless the prompt string
  already ends with whitespace (``"Seattle"`` is read as ``" Seattle"``). ``target_rule``:
  ``"first_token"`` (ROME: the probability of the first piece at the last position) or
  ``"sequence"`` (the whole target's teacher-forced probability, below). A one-piece target needs
  no rule (and both rules give the same trace); a longer one without a rule is an error naming its
  pieces. The result records ``target`` (the text as tokenised), ``target_ids`` and
  ``target_tokens``.

**The whole target's score** (``"sequence"``, traced by :mod:`spiritlens.traces.tracer`): prompt
ids P (length T0), target pieces t_1..t_K. Each run (clean, corrupted, restored) is a forward of
the teacher-forced sequence ``P + t_1..t_{K-1}`` (``[S, T0 + K - 1]``; noise on the subject's
embeddings only), and its score is the mean over its S rows of ``prod_k p(t_k)`` at positions
``T0-1 .. T0+K-2`` (softmax over the full vocabulary in float32, product in float64): a mean of
products, not a product of means. ``high_score`` / ``low_score`` are the clean / corrupted run's
score (:func:`sequence_probability` computes them alone); the table's rows restore the prompt's
positions only, never the appended pieces; ``answer`` is the whole target's text and
``answer_id`` its first piece.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from spiritlens.tokens.trace_prompt import output_modality_of

TARGET_RULES = ("first_token", "sequence")
TOP1_RULES = {"text": "top1_text", "speech": "top1_speech", "arbitrary": "top1_any"}
ANSWER_RULES = (*TOP1_RULES.values(), "id", "generated_first_token", "target_first_token", "target_sequence")


@dataclass(frozen=True)
class AnswerRule:
    """How the answer is chosen (see the module docstring).

    ``rule``: one of ``ANSWER_RULES``. ``token_id``: the fixed answer (``id`` and target rules;
    None for the top-1 rules). ``output_modality``: the allowed tokens of the top-1 rules.
    ``target``/``target_ids``/``target_tokens``: a string target as tokenised after the prompt.
    """

    rule: str
    token_id: int | None = None
    output_modality: str = "text"
    target: str | None = None
    target_ids: tuple[int, ...] = ()
    target_tokens: tuple[str, ...] = field(default_factory=tuple)

    def choose(self, model, last_probs: torch.Tensor) -> int:
        """The answer id from the clean run's last-position probabilities ``[d_vocab]``."""
        if self.token_id is not None:
            return self.token_id
        allowed = model.allowed_token_mask(self.output_modality).to(last_probs.device)
        return int(torch.where(allowed, last_probs, torch.full_like(last_probs, -1.0)).argmax())

    def record(self) -> dict:
        """The result fields: ``answer_rule``, ``target``, ``target_ids``, ``target_tokens``."""
        return {"answer_rule": self.rule, "target": self.target, "target_ids": list(self.target_ids),
                "target_tokens": list(self.target_tokens)}


def resolve_answer(model, prompt, target: int | str | None = None, target_rule: str | None = None,
                   *, output_modality: str | None = None) -> AnswerRule:
    """The :class:`AnswerRule` for a prepared prompt (a :class:`~spiritlens.traces.TracePrompt`).

    Raises ValueError for an id outside the vocabulary, a target that tokenises to nothing or
    changes the prompt's own tokens, an unknown ``target_rule``, a rule without a target, and a
    multi-piece target without a rule (the message names the pieces).
    """
    if target_rule is not None and target_rule not in TARGET_RULES:
        raise ValueError(f"unknown target_rule {target_rule!r}; use 'first_token' (ROME) or 'sequence'")
    if isinstance(target, AnswerRule):
        return target
    modality = output_modality or getattr(prompt, "output_modality", None) or output_modality_of(model, prompt.input_ids)
    if target is None:
        if target_rule is not None:
            raise ValueError(f"target_rule={target_rule!r} needs a target string")
        return AnswerRule(TOP1_RULES[modality], output_modality=modality)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if target_rule is not None:
            raise ValueError(f"target_rule={target_rule!r} applies to target strings, not to the id {int(target)}")
        model.check_token_ids([int(target)], where="target id")
        return AnswerRule("id", int(target), output_modality=modality)
    if not isinstance(target, str):
        raise ValueError(f"target must be a token id or a string, got {type(target).__name__}")
    text, ids = target_pieces(model, prompt, target)
    tokens = tuple(model.tokenizer.convert_ids_to_tokens(list(ids)))
    if len(ids) > 1 and target_rule is None:
        raise ValueError(
            f"target {target!r} is {len(ids)} tokens {list(tokens)} after the prompt; choose "
            f"target_rule='first_token' (ROME: the probability of {tokens[0]!r}) or target_rule='sequence' "
            "(the whole target's probability); on the command line --target-rule first_token or sequence")
    rule = "target_sequence" if target_rule == "sequence" else "target_first_token"
    return AnswerRule(rule, int(ids[0]), output_modality=modality, target=text, target_ids=tuple(ids),
                      target_tokens=tokens)


def generated_answer(model, token_id: int, output_modality: str = "text") -> AnswerRule:
    """The answer rule for the first token of a judged greedy generation (range-checked)."""
    model.check_token_ids([int(token_id)], where="generated token id")
    return AnswerRule("generated_first_token", int(token_id), output_modality=output_modality)


def target_pieces(model, prompt, target: str) -> tuple[str, tuple[int, ...]]:
    """``(target text as tokenised, its ids after the prompt)``: ``prompt string + target`` tokenised
    in one call, the prompt's own ids checked to be unchanged (module docstring)."""
    if not target.strip():
        raise ValueError(f"target {target!r} tokenises to nothing")
    context = getattr(prompt, "prompt_string", "") or model.prompt_string(prompt.input_ids)
    text = target if target[:1].isspace() or context[-1:].isspace() else " " + target
    ids = list(prompt.input_ids)
    full = list(model.tokenizer(context + text).input_ids)
    if full[:len(ids)] != ids:
        at = next((k for k, (a, b) in enumerate(zip(full, ids)) if a != b), len(ids))
        shown = model.tokenizer.convert_ids_to_tokens(full[at:at + 2])
        raise ValueError(f"target {target!r} merges with the end of the prompt (position {at} becomes {shown} "
                         "when the target follows); give the target as a token id")
    pieces = tuple(full[len(ids):])
    if not pieces:
        raise ValueError(f"target {target!r} tokenises to nothing after the prompt")
    return text, pieces


def sequence_probability(model, input_ids: Sequence[int], target_ids: Sequence[int], *,
                         corruption=None) -> tuple[float, list[float]]:
    """The whole target's teacher-forced probability after a prompt, and each piece's.

    ``p = p(t_0 | prompt) * p(t_1 | prompt, t_0) * ...``: one forward over ``prompt + target[:-1]``
    (``[1, T + k - 1]``), scored by :class:`~spiritlens.interventions.metric.AnswerScore` (softmax over
    the full vocabulary at positions ``T - 1 ..``). With a ``corruption`` (e.g. the tracer's
    :class:`~spiritlens.interventions.corruptions.EmbeddingNoise` on the subject's positions) the
    probabilities are those of its rows: the mean over the rows of each row's product (and of each
    piece's probability).
    """
    from spiritlens.interventions import AnswerScore
    from spiritlens.interventions.run import forward

    ids, target_ids = list(input_ids), list(target_ids)
    if not target_ids:
        raise ValueError("target_ids is empty")
    sequence = torch.tensor([ids + target_ids[:-1]], device=model.device)
    model.check_token_ids(sequence)
    metric = AnswerScore(tuple(target_ids))
    logits, _ = forward(model, sequence, corruption)
    return metric.score(logits), metric.piece_probabilities(logits)
