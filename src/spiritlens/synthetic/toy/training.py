"""Training the toy SpiritLM: the prompt + answer sequences (text and speech) through the real prompt path, length batches, the optimiser loop."""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from spiritlens.synthetic.toy.config import Distractor, ToyConfig, ToyFact


@dataclass
class _Sequence:
    ids: list[int]
    start: int  # first position whose next token is a target (the prompt's last position)
    form: str
    fact: int | None = None  # known_id


def _with_answer(prompt, answer: str):
    """The prompt with ``" " + answer`` appended to its last text segment (or as a new text segment)."""
    if isinstance(prompt, str):
        return prompt + " " + answer
    prompt = list(prompt)
    if prompt[-1][0] == "text":
        return prompt[:-1] + [("text", prompt[-1][1] + " " + answer)]
    return prompt + [("text", " " + answer)]


def answer_ids(model, prompt, answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) through the prompt path: ``model.encode`` of the prompt and of the
    prompt with the answer appended. ValueError if the answer is empty or the first is not a
    prefix of the second."""
    if not answer.strip():
        raise ValueError("the answer to append is empty")
    prompt_ids = model.encode(prompt)[0][0].tolist()
    full_ids = model.encode(_with_answer(prompt, answer))[0][0].tolist()
    if full_ids[:len(prompt_ids)] != prompt_ids or len(full_ids) == len(prompt_ids):
        shown = prompt if isinstance(prompt, str) else [(m, c if m == "text" else "<speech>") for m, c in prompt]
        raise ValueError(f"the prompt path does not tokenise {answer!r} as a continuation of {shown!r}")
    return prompt_ids, full_ids[len(prompt_ids):]


def _sequences(model, config: ToyConfig, facts: Sequence[ToyFact], distractors: Sequence[Distractor],
               audio: dict[str, Path]) -> tuple[list[_Sequence], list[list[_Sequence]]]:
    """Fact sequences, and for each distractor prompt one sequence per answer of its relation."""
    eos = model.vocab.eos_id
    sequences = []

    def add(prompt, answer: str, form: str, fact: int | None = None) -> _Sequence:
        prompt_ids, answer_part = answer_ids(model, prompt, answer)
        sequence = _Sequence(prompt_ids + answer_part + [eos], len(prompt_ids) - 1, form, fact)
        if fact is not None:
            sequences.append(sequence)
        return sequence

    units: dict[str, Any] = {}
    for fact in facts:
        add(fact.prompt, fact.attribute, "t2t", fact.known_id)
        for paraphrase in fact.paraphrases:
            add(paraphrase, fact.attribute, "t2t_paraphrase", fact.known_id)
        if config.speech:
            key = f"{fact.known_id}_prompt"
            units[key] = model.speech_tokenizer.encode(audio[key])
            add([("speech", units[key])], fact.attribute, "s2t", fact.known_id)
        if config.interleaved:
            key = f"{fact.known_id}_subject"
            units[key] = model.speech_tokenizer.encode(audio[key])
            start = fact.prompt.index(fact.subject)
            before, after = fact.prompt[:start].rstrip(), fact.prompt[start + len(fact.subject):]
            segments = ([("text", before)] if before else []) + [("speech", units[key]), ("text", after)]
            add(segments, fact.attribute, "interleaved", fact.known_id)
    answers: dict[str, list[str]] = collections.defaultdict(list)
    for fact in facts:
        if fact.attribute not in answers[fact.relation_id]:
            answers[fact.relation_id].append(fact.attribute)
    pool = [[add(d.prompt, a, "distractor") for a in answers[d.relation_id]] for d in distractors]
    return sequences, pool


def _batches(sequences: list[_Sequence], max_tokens: int) -> list[list[_Sequence]]:
    """Micro-batches of sequences of similar length, each at most ``max_tokens`` padded tokens."""
    ordered = sorted(sequences, key=lambda s: len(s.ids))
    batches, current = [], []
    for sequence in ordered:
        if current and len(sequence.ids) * (len(current) + 1) > max_tokens:
            batches.append(current)
            current = []
        current.append(sequence)
    return batches + ([current] if current else [])


def _train(hf, sequences: list[_Sequence], pool: list[list[_Sequence]], config: ToyConfig, *, eos_id: int,
           progress: bool | None) -> dict:
    """Train ``hf`` in place; returns a summary (steps, stop reason, final loss and accuracy)."""
    import torch
    from tqdm.auto import tqdm

    from spiritlens.progress import tqdm_disable

    generator = torch.Generator().manual_seed(config.seed)
    trained = [p for p in hf.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.lr, betas=(0.9, 0.98), weight_decay=config.weight_decay)
    warmup = 10

    def schedule(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, config.max_steps) / config.max_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    forms = sorted({s.form for s in sequences})
    history: list[dict] = []
    streak, stop, step = 0, "max_steps", 0
    hf.train()
    bar = tqdm(range(config.max_steps), desc="training toy SpiritLM", unit="step", disable=tqdm_disable(progress),
               dynamic_ncols=True)
    for step in bar:
        chosen = []
        if pool and config.distractors_per_step:
            picks = torch.randint(len(pool), (config.distractors_per_step,), generator=generator).tolist()
            answers = torch.randint(1 << 30, (config.distractors_per_step,), generator=generator).tolist()
            chosen = [pool[p][a % len(pool[p])] for p, a in zip(picks, answers)]
        step_sequences = sequences + chosen
        total_weight = sum(len(s.ids) - 1 - s.start + config.lm_weight * s.start for s in step_sequences)
        optimizer.zero_grad(set_to_none=True)
        loss_sum, correct = 0.0, collections.Counter()
        for batch in _batches(step_sequences, config.max_batch_tokens):
            length = max(len(s.ids) for s in batch)
            ids = torch.full((len(batch), length), eos_id, dtype=torch.long)
            weights = torch.zeros(len(batch), length - 1)
            for row, sequence in enumerate(batch):
                ids[row, :len(sequence.ids)] = torch.tensor(sequence.ids)
                weights[row, :sequence.start] = config.lm_weight
                weights[row, sequence.start:len(sequence.ids) - 1] = 1.0
            logits = hf(ids).logits[:, :-1].float()
            log_probs = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
            loss = -(log_probs * weights).sum() / total_weight
            loss.backward()
            loss_sum += float(loss.detach())
            hits = (logits.argmax(-1) == ids[:, 1:]) | (weights < 1)
            for row, sequence in enumerate(batch):
                if sequence.fact is not None:
                    correct[sequence.form] += bool(hits[row, sequence.start:len(sequence.ids) - 1].all())
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        scheduler.step()
        totals = collections.Counter(s.form for s in sequences)
        accuracy = {form: correct[form] / totals[form] for form in forms}
        history.append({"step": step, "loss": round(loss_sum, 5), **{f"acc_{f}": round(a, 4) for f, a in accuracy.items()}})
        bar.set_postfix(loss=f"{loss_sum:.3f}", **{f"acc_{f}": f"{a:.2f}" for f, a in accuracy.items()})
        streak = streak + 1 if all(a == 1.0 for a in accuracy.values()) else 0
        if streak >= config.patience and step + 1 >= config.min_steps:
            stop = "every answer learnt"
            break
    bar.close()
    return {"steps": step + 1, "stop": stop, "final": history[-1], "history": history[::10] + history[-1:]}
