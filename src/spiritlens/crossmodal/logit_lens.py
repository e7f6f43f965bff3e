"""Logit lens on speech positions: do the subject's speech tokens come to stand for its text tokens?

Which residual: for layer ``l`` and position ``p`` of a clean run, ``blocks.{l}.hook_resid_post``
(the output of decoder block ``l``, before the final norm; layer ``L - 1`` is the state the model's
head reads). The lens applies the model's own head to it, ``lm_head(norm(resid_post[l][p]))``,
with the final RMSNorm computed from that state's own statistics (not the last layer's cached
scale, the TransformerLens ``accumulated_resid`` pitfall, TransformerLens issue #1076).

Which tokens: the logits are restricted to SpiritLM's text vocabulary, every id ``generate`` may
produce for text output (all ids except the ``[Text]``/``[Speech]`` markers, the speech tokens
and the embedding's unused rows: ``model.forbidden_token_ids("text")``), ``n_text_tokens`` ids.
The targets are the subject's own LM text tokens (the ids of ``fact.subject_tokens`` in the text
run), ``K`` of them. ``rank = 1 + the number of text tokens with a strictly larger logit`` (1 is
the top; ties share the better rank). ``log_probs`` are log-softmax over the text vocabulary
(renormalised to it). At the last layer both equal the model's own output distribution
restricted to text tokens.

Rows: every position of the spoken run's subject range ``[b_s, e_s)`` (``ranks [P, L, K]``,
``aligned_tokens[p]``: which subject token's speech group holds the position, None for silence),
and as a reference the text run's subject positions (``text_ranks``). Per fact and layer,
``reciprocal_rank[l]`` is the mean over the subject's speech positions of ``1 / best_rank``
(``best_rank = min_k ranks``); its mean over facts is the mean reciprocal rank (MRR) per layer.
``chance_reciprocal_rank`` is the same expectation for a uniformly random ranking of the text
vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from spiritlens.crossmodal.fact import SPEECH, TEXT, CrossModalFact, ResultFile, check_values

_RANK_CHUNK = 1 << 24  # comparisons per block when counting ranks (bounds memory)


def text_vocabulary(model) -> torch.Tensor:
    """Ids SpiritLM may generate as text (sorted ``[n_text_tokens]``): the complement of
    ``model.forbidden_token_ids("text")`` in ``range(d_vocab)``."""
    forbidden = set(model.forbidden_token_ids("text"))
    return torch.tensor([i for i in range(model.cfg.d_vocab) if i not in forbidden], device=model.device)


def lens_logits(model, states: torch.Tensor) -> torch.Tensor:
    """``[..., d_vocab]`` float32 logits of residual states ``[..., d_model]``: the model's final
    norm (each state's own statistics) and unembedding."""
    hf = model.hf_model
    with torch.inference_mode():
        return hf.lm_head(hf.model.norm(states.to(model.dtype))).float()


def rank_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[..., K]`` ranks (1 = top) of the columns ``targets`` ``[K]`` in ``logits`` ``[..., V]``:
    1 + the number of entries strictly larger than the target's."""
    flat = logits.reshape(-1, logits.shape[-1])
    chosen = flat[:, targets]
    out = torch.empty(chosen.shape, dtype=torch.long, device=flat.device)
    rows = max(1, _RANK_CHUNK // max(1, flat.shape[1] * len(targets)))
    for first in range(0, flat.shape[0], rows):
        block = flat[first:first + rows]
        out[first:first + rows] = 1 + (block[:, None, :] > chosen[first:first + rows, :, None]).sum(dim=-1)
    return out.reshape(*logits.shape[:-1], len(targets))


def chance_reciprocal_rank(n: int, k: int) -> float:
    """E[1 / min rank] of ``k`` distinct targets placed uniformly at random among ``n`` ranks:
    P(min >= r) = C(n - r + 1, k) / C(n, k)."""
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    r = np.arange(1, n - k + 2, dtype=np.float64)
    survival = np.prod([(n - r + 1 - i) / (n - i) for i in range(k)], axis=0)
    pmf = survival - np.append(survival[1:], 0.0)
    return float((pmf / r).sum())


@dataclass
class LogitLensResult(ResultFile):
    """Ranks of the subject's text tokens at its speech positions, per layer (module doc).

    ``ranks`` ``[P, L, K]`` and ``log_probs`` ``[P, L, K]`` at the spoken run's ``positions``;
    ``text_ranks`` / ``text_log_probs`` ``[P_t, L, K]`` at the text run's ``text_positions``.
    """

    ANALYSIS = "logit_lens"

    name: str
    prompt: str
    subject: str
    n_layers: int
    n_text_tokens: int
    subject_token_ids: list
    subject_tokens: list
    positions: list
    position_labels: list
    aligned_tokens: list
    ranks: np.ndarray
    log_probs: np.ndarray
    text_positions: list
    text_ranks: np.ndarray
    text_log_probs: np.ndarray
    settings: dict = field(default_factory=dict)

    def __post_init__(self):
        K = len(self.subject_token_ids)
        self.ranks = np.asarray(self.ranks, dtype=np.int64).reshape(len(self.positions), self.n_layers, K)
        self.text_ranks = np.asarray(self.text_ranks, dtype=np.int64).reshape(len(self.text_positions),
                                                                              self.n_layers, K)
        self.log_probs = np.asarray(self.log_probs, dtype=np.float64).reshape(self.ranks.shape)
        self.text_log_probs = np.asarray(self.text_log_probs, dtype=np.float64).reshape(self.text_ranks.shape)

    def validate(self) -> None:
        """One label and aligned token per speech position, one label per subject token id; ranks integers in
        [1, ``n_text_tokens``]; log-probabilities finite and <= 0."""
        where, P, K = f"logit_lens result {self.name}", len(self.positions), len(self.subject_token_ids)
        if len(self.position_labels) != P or len(self.aligned_tokens) != P or len(self.subject_tokens) != K:
            raise ValueError(f"{where}: {P} positions with {len(self.position_labels)} labels and "
                             f"{len(self.aligned_tokens)} aligned tokens; {K} subject ids with "
                             f"{len(self.subject_tokens)} labels")
        for prefix in ("", "text_"):
            check_values(where, f"{prefix}ranks", getattr(self, f"{prefix}ranks"), low=1, high=self.n_text_tokens)
            check_values(where, f"{prefix}log_probs", getattr(self, f"{prefix}log_probs"), high=1e-6)

    @property
    def best_rank(self) -> np.ndarray:
        """``[P, L]`` best rank of any subject text token at each speech position."""
        return self.ranks.min(axis=-1)

    @property
    def reciprocal_rank(self) -> np.ndarray:
        """``[L]`` mean over the subject's speech positions of ``1 / best_rank``."""
        return (1.0 / self.best_rank).mean(axis=0)

    @property
    def text_reciprocal_rank(self) -> np.ndarray:
        """``[L]`` the same at the text run's subject positions (the written reference)."""
        return (1.0 / self.text_ranks.min(axis=-1)).mean(axis=0)

    @property
    def chance(self) -> float:
        """Expected reciprocal rank of a uniformly random ranking (see :func:`chance_reciprocal_rank`)."""
        return chance_reciprocal_rank(self.n_text_tokens, len(set(self.subject_token_ids)))


def speech_logit_lens(model, fact: CrossModalFact) -> LogitLensResult:
    """The logit lens at the subject's speech positions (and text positions), every layer."""
    vocab = text_vocabulary(model)
    column = {int(i): c for c, i in enumerate(vocab.tolist())}
    ids = [fact.text_ids[fact.text_positions[i]] for i in fact.subject_tokens]
    outside = [i for i in ids if i not in column]
    if outside:
        raise ValueError(f"subject token ids {outside} are not in the text vocabulary")
    targets = torch.tensor([column[i] for i in ids], device=vocab.device)

    def lens(modality: str, positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
        states = fact.clean_run(model, modality).resid_post[:, positions]  # [L, P, d]
        ranks, log_probs = [], []
        for layer_states in states:  # one layer at a time bounds the [P, d_vocab] logits
            logits = lens_logits(model, layer_states)[:, vocab]
            ranks.append(rank_of(logits, targets))
            log_probs.append(torch.log_softmax(logits, dim=-1)[:, targets])
        return (torch.stack(ranks, dim=1).cpu().numpy(),
                torch.stack(log_probs, dim=1).double().cpu().numpy())  # [P, L, K]

    b, e = fact.speech_subject_range
    positions = list(range(b, e))
    text_positions = [fact.text_positions[i] for i in fact.subject_tokens]
    ranks, log_probs = lens(SPEECH, positions)
    text_ranks, text_log_probs = lens(TEXT, text_positions)
    aligned = [fact.aligned_token(p, fact.subject_tokens) for p in positions]
    pieces = model.tokenizer.convert_ids_to_tokens([fact.speech_ids[p] for p in positions])
    silence = {fact.speech.speech_offset + k for k in fact.speech.silence_tokens()}
    labels = [f"{p}: {piece} ({'silence' if p in silence else 'no subject token'})" if k is None
              else f"{p}: {piece} → {fact.token_labels[k].strip() or repr(fact.token_labels[k])}"
              for p, piece, k in zip(positions, pieces, aligned)]
    return LogitLensResult(
        fact.name, fact.prompt, fact.subject, model.cfg.n_layers, len(vocab), ids,
        [fact.token_labels[i] for i in fact.subject_tokens], positions, labels,
        [None if k is None else fact.subject_tokens.index(k) for k in aligned], ranks, log_probs,
        text_positions, text_ranks, text_log_probs,
        settings={"states": "resid_post", "vocabulary": "text (SpiritLM's text-output rule)"},
    )
