"""Training the toys (backbone and SpiritLM): the prompt + answer sequences (text and speech) through the real prompt path, the check that the text pieces kept the backbone's ids, a fresh model with attention off in its first layers, length batches, the optimiser loop."""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from spiritlens.synthetic.toy.config import Distractor, ToyConfig, ToyFact


@dataclass
class _Sequence:
    ids: list[int]
    start: int  # first position whose next token is a target (the prompt's last position)
    form: str
    fact: int | None = None  # known_id


def _ends_in_speech(prompt) -> bool:
    return not isinstance(prompt, str) and prompt[-1][0] != "text"


def _with_answer(prompt, answer: str, space: bool = True):
    """The prompt with ``" " + answer`` appended to its last text segment, or, after speech, as a new
    text segment (``" " + answer``, or ``answer`` when not ``space``)."""
    if isinstance(prompt, str):
        return prompt + " " + answer
    prompt = list(prompt)
    if prompt[-1][0] == "text":
        return prompt[:-1] + [("text", prompt[-1][1] + " " + answer)]
    return prompt + [("text", (" " if space else "") + answer)]


def answer_ids(encode: Callable[[Any], list[int]], prompt, answer: str, *,
               space: bool = True) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) through a prompt path: ``encode`` (prompt -> ids; for the toy
    SpiritLM :meth:`HookedSpiritLM.encode`, for the backbone Llama-2's ``<s>`` + text) of the prompt
    and of the prompt with the answer appended (``space``: whether the text segment appended after
    a speech prompt starts with a space). ValueError if the answer is empty or the first is not a
    prefix of the second."""
    if not answer.strip():
        raise ValueError("the answer to append is empty")
    prompt_ids = list(encode(prompt))
    full_ids = list(encode(_with_answer(prompt, answer, space)))
    if full_ids[:len(prompt_ids)] != prompt_ids or len(full_ids) == len(prompt_ids):
        shown = prompt if isinstance(prompt, str) else [(m, c if m == "text" else "<speech>") for m, c in prompt]
        raise ValueError(f"the prompt path does not tokenise {answer!r} as a continuation of {shown!r}")
    return prompt_ids, full_ids[len(prompt_ids):]


def _sequences(encode: Callable[[Any], list[int]], eos: int, facts: Sequence[ToyFact],
               distractors: Sequence[Distractor], units: dict[str, Any] | None = None, *,
               interleaved: bool = False) -> tuple[list[_Sequence], list[list[_Sequence]]]:
    """Fact sequences, and for each distractor prompt one sequence per answer of its relation.

    ``encode``: the prompt path (prompt -> ids), ``eos``: the id closing each sequence. ``units``:
    the speech units of each fact's synthesised prompt (``"<known_id>_prompt"``) and, with
    ``interleaved``, subject (``"<known_id>_subject"``); None for text only (the backbone).

    A fact's answer has the same ids in every form: those after its text prompt. After a speech
    prompt's ``[Text]`` the answer is written with a leading space or without, whichever gives them
    (which one depends on the tokenizer layout: with added-token markers and ``legacy`` true,
    SentencePiece puts its ``▁`` before the text after a marker itself, so ``" CBS"`` there would
    start with a lone ``▁``); ValueError if neither does."""
    sequences = []

    def add(prompt, answer: str, form: str, fact: int | None = None, expect: list[int] | None = None) -> _Sequence:
        for space in (True, False) if expect is not None and _ends_in_speech(prompt) else (True,):
            prompt_ids, answer_part = answer_ids(encode, prompt, answer, space=space)
            if expect is None or answer_part == expect:
                break
        else:
            raise ValueError(f"the prompt path gives the {form} answer {answer!r} the ids {answer_part}, not "
                             f"{expect} as after its text prompt")
        sequence = _Sequence(prompt_ids + answer_part + [eos], len(prompt_ids) - 1, form, fact)
        if fact is not None:
            sequences.append(sequence)
        return sequence

    for fact in facts:
        text = add(fact.prompt, fact.attribute, "t2t", fact.known_id)
        expect = text.ids[text.start + 1:-1]
        for paraphrase in fact.paraphrases:
            add(paraphrase, fact.attribute, "t2t_paraphrase", fact.known_id, expect)
        if units is not None:
            add([("speech", units[f"{fact.known_id}_prompt"])], fact.attribute, "s2t", fact.known_id, expect)
        if units is not None and interleaved:
            start = fact.prompt.index(fact.subject)
            before, after = fact.prompt[:start].rstrip(), fact.prompt[start + len(fact.subject):]
            segments = ([("text", before)] if before else []) + [("speech", units[f"{fact.known_id}_subject"]),
                                                                  ("text", after)]
            add(segments, fact.attribute, "interleaved", fact.known_id, expect)
    answers: dict[str, list[str]] = collections.defaultdict(list)
    for fact in facts:
        if fact.attribute not in answers[fact.relation_id]:
            answers[fact.relation_id].append(fact.attribute)
    pool = [[add(d.prompt, a, "distractor") for a in answers[d.relation_id]] for d in distractors]
    return sequences, pool


def _fresh_llama(llama: dict, local_layers: int):
    """A newly initialised ``LlamaForCausalLM`` for ``llama`` (a config.json dict) with attention off
    in its first ``local_layers`` layers (zero ``o_proj``, frozen)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hf = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in llama.items() if k != "architectures"}))
    for layer in hf.model.layers[:local_layers]:  # attention off: each position sees only itself
        layer.self_attn.o_proj.weight.data.zero_()
        layer.self_attn.o_proj.weight.requires_grad_(False)
    return hf


def _state(hf) -> dict:
    return {k: v.detach().clone().contiguous() for k, v in hf.state_dict().items()}


def _check_text_ids(backbone: list, spiritlm: list, bos: int, text_marker: int) -> None:
    """Each text sequence of the toy SpiritLM is the backbone's with ``[Text]`` after ``<s>``: the
    vocabulary extension kept every text piece's id. ValueError naming the first that is not."""
    for b, s in zip(backbone, spiritlm, strict=True):
        if s.ids != [bos, text_marker] + b.ids[1:] or s.start != b.start + 1 or b.ids[:1] != [bos]:
            raise ValueError(f"the toy SpiritLM's tokenizer does not give the backbone's ids after its text marker "
                             f"({s.form} sequence {s.ids} vs the backbone's {b.ids})")


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
           max_steps: int, min_steps: int, lr: float, seed: int, progress: bool | None, desc: str,
           variants: Sequence[list[_Sequence]] = ()) -> dict:
    """Train ``hf`` in place for at most ``max_steps`` steps at peak learning rate ``lr`` (early stop
    as :class:`ToyConfig` says, not before ``min_steps``); ``seed`` seeds the distractors drawn at
    each step and then, per group of ``variants`` (fact sequences in several versions, e.g. with
    another recording's prosody), the one version trained at that step; a drawn version counts
    for its form's accuracy and for the early stop. Returns a summary: steps, stop reason, final
    loss and accuracy, the loop's wall-clock ``train_seconds`` and process CPU time
    ``train_cpu_seconds``. ``progress``: the bar (:mod:`spiritlens.progress`)."""
    import torch
    from tqdm.auto import tqdm

    from spiritlens.progress import tqdm_disable

    started, cpu_started = time.time(), time.process_time()
    generator = torch.Generator().manual_seed(seed)
    trained = [p for p in hf.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=lr, betas=(0.9, 0.98), weight_decay=config.weight_decay)
    warmup = 10

    def schedule(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, max_steps) / max_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    forms = sorted({s.form for s in sequences} | {s.form for group in variants for s in group})
    totals = collections.Counter(s.form for s in sequences) + collections.Counter(group[0].form for group in variants)
    history: list[dict] = []
    streak, stop, step = 0, "max_steps", 0
    hf.train()
    bar = tqdm(range(max_steps), desc=desc, unit="step", disable=tqdm_disable(progress), dynamic_ncols=True)
    for step in bar:
        chosen = []
        if pool and config.distractors_per_step:
            picks = torch.randint(len(pool), (config.distractors_per_step,), generator=generator).tolist()
            answers = torch.randint(1 << 30, (config.distractors_per_step,), generator=generator).tolist()
            chosen = [pool[p][a % len(pool[p])] for p, a in zip(picks, answers)]
        if variants:
            drawn = torch.randint(1 << 30, (len(variants),), generator=generator).tolist()
            chosen += [group[d % len(group)] for group, d in zip(variants, drawn)]
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
        accuracy = {form: correct[form] / totals[form] for form in forms}
        history.append({"step": step, "loss": round(loss_sum, 5), **{f"acc_{f}": round(a, 4) for f, a in accuracy.items()}})
        bar.set_postfix(loss=f"{loss_sum:.3f}", **{f"acc_{f}": f"{a:.2f}" for f, a in accuracy.items()})
        streak = streak + 1 if all(a == 1.0 for a in accuracy.values()) else 0
        if streak >= config.patience and step + 1 >= min_steps:
            stop = "every answer learnt"
            break
    bar.close()
    return {"steps": step + 1, "stop": stop, "final": history[-1], "history": history[::10] + history[-1:],
            "train_seconds": round(time.time() - started, 1),
            "train_cpu_seconds": round(time.process_time() - cpu_started, 1)}
