"""The toy SpiritLM's configuration and the Known facts it is trained to know (chosen by relation pattern), with distractors."""

from __future__ import annotations

import collections
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

from spiritlens.models.spiritlm.tree import VARIANTS

TOY_FORMAT = 2  # 2: a text-only backbone first, the toy SpiritLM continued from it (1: one phase from scratch)


VARIANT = VARIANTS[0]  # the toy SpiritLM is a Base model
EXPRESSIVE_VARIANT = VARIANTS[1]  # the toy SpiritLM Expressive, built on demand beside it


# The backbone's folder inside a toy tree: the layout of meta-llama/Llama-2-7b-hf, from which SpiritLM was built.
BACKBONE_FOLDER = "backbone"
BACKBONE_VARIANT = "llama-2-7b-hf"


# Targets: greedy answers exact on >= 90% (text) and >= 70% (speech) of the facts.
TARGETS = {"t2t": 0.9, "s2t": 0.7}


# The backbone is judged on text only (Llama-2 reads no speech).
BACKBONE_TARGETS = {"t2t": 0.9}


@dataclass(frozen=True)
class ToyConfig:
    """What the toy is made of and how it is trained (every field is part of the cache key).

    Two phases, as SpiritLM was made from Llama-2: a text-only *backbone* trained first
    (``backbone_lr``, ``backbone_max_steps``, ``backbone_min_steps``), then the toy SpiritLM
    continued from it with the vocabulary extended by ``[Text]``, ``[Speech]`` and the units (each
    new embedding and unembedding row the mean of the backbone's rows plus Gaussian noise of std
    ``new_rows_std``) and trained on the whole mix at a lower peak rate (``lr``, ``max_steps``,
    ``min_steps``). Both phases share the other training fields.

    Facts: ``relations`` Known relations (those with the most records among the ones with at
    least ``paraphrases + 1`` prompt patterns used twice or more, and three or more attributes),
    ``facts_per_relation`` records from each, taken round-robin over the relation's attributes
    (so the prompt pattern alone never tells the answer). ``distractors``: other Known subjects per
    prompt pattern. Model: Llama with ``n_layers`` x ``d_model`` (``n_heads`` heads, MLP ``d_mlp``).
    ``local_layers``: the first layers, whose attention is off (see the module docstring).
    Training, each phase: AdamW (peak rate, warm-up then cosine over its maximum steps), each step
    every fact sequence plus ``distractors_per_step`` distractors; it stops early once every fact
    sequence's answer is the argmax for ``patience`` steps in a row (but not before its minimum steps).
    """

    relations: int = 4
    facts_per_relation: int = 3
    paraphrases: int = 2
    distractors: int = 6
    speech: bool = True
    interleaved: bool = True
    n_layers: int = 8
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 256
    local_layers: int = 2
    lm_weight: float = 0.0
    distractors_per_step: int = 32
    backbone_max_steps: int = 300
    backbone_min_steps: int = 60
    backbone_lr: float = 3e-3
    new_rows_std: float = 0.02
    max_steps: int = 300
    min_steps: int = 60
    patience: int = 20
    lr: float = 5e-4
    weight_decay: float = 0.0
    max_batch_tokens: int = 2048
    seed: int = 0
    tts: str = "espeak"

    def __post_init__(self):
        for name in ("relations", "facts_per_relation", "n_layers", "d_model", "n_heads", "d_mlp", "max_steps",
                     "backbone_max_steps", "max_batch_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"ToyConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("paraphrases", "distractors", "local_layers", "distractors_per_step", "min_steps",
                     "backbone_min_steps", "patience", "seed"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"ToyConfig.{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"ToyConfig.d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        for name in ("lm_weight", "weight_decay", "new_rows_std"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"ToyConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("lr", "backbone_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ToyConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.local_layers >= self.n_layers:
            raise ValueError(f"ToyConfig.local_layers {self.local_layers} must be below n_layers {self.n_layers}")
        if self.interleaved and not self.speech:
            raise ValueError("ToyConfig.interleaved needs speech=True")

    @classmethod
    def small(cls) -> "ToyConfig":
        """A few facts, trained in seconds: for tests and notebooks."""
        return cls(relations=2, facts_per_relation=3, paraphrases=1, distractors=6, d_model=64, d_mlp=256,
                   distractors_per_step=16, backbone_max_steps=250, backbone_min_steps=40, max_steps=250, min_steps=40)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ToyConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown toy configuration fields {unknown}")
        return cls(**data)


PROSODY_DESIGNS = ("decorrelated", "free")


@dataclass(frozen=True)
class ExpressiveToyConfig:
    """How the toy SpiritLM Expressive is trained (every field is part of its cache key; the rest,
    model size, facts, distractors, patience, batch size, new rows' noise, comes from the
    :class:`ToyConfig` of the toy it is built beside).

    ``prosody``: ``"decorrelated"`` (default): each step every fact's speech->text and interleaved
    sequence is also trained once more with the pitch and style streams of another fact's recording
    (drawn at random, one per sequence and step, :func:`spiritlens.synthetic.toy.expressive.with_prosody`),
    so its own pitch and style codes tell nothing about the answer that the HuBERT units do not;
    ``"free"``: the recordings' own streams only (the toy may then memorise a prompt by its pitch
    codes as well as by its HuBERT units). ``max_steps``, ``min_steps``, ``lr``: as
    :class:`ToyConfig`'s second phase.
    """

    prosody: str = "decorrelated"
    max_steps: int = 300
    min_steps: int = 60
    lr: float = 1e-3  # measured on the default toy: 66 steps to learn every answer, against 99 at the Base's 5e-4

    def __post_init__(self):
        if self.prosody not in PROSODY_DESIGNS:
            raise ValueError(f"ExpressiveToyConfig.prosody must be one of {', '.join(PROSODY_DESIGNS)}, "
                             f"got {self.prosody!r}")
        for name, low in (("max_steps", 1), ("min_steps", 0)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < low:
                raise ValueError(f"ExpressiveToyConfig.{name} must be an integer >= {low}, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"ExpressiveToyConfig.lr must be > 0, got {self.lr!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ToyFact:
    """One Known record the toy learns, with the paraphrased prompts it is also trained on."""

    known_id: int
    prompt: str
    subject: str
    attribute: str
    relation_id: str
    paraphrases: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {**asdict(self), "paraphrases": list(self.paraphrases)}

    @classmethod
    def from_dict(cls, data: dict) -> "ToyFact":
        return cls(int(data["known_id"]), data["prompt"], data["subject"], data["attribute"],
                   data.get("relation_id", ""), tuple(data.get("paraphrases", ())))


@dataclass(frozen=True)
class Distractor:
    """An unknown subject in one of a relation's prompt patterns; its answer is drawn per step."""

    relation_id: str
    prompt: str
    subject: str


# ------------------------------------------------------------------ choosing the facts
def _pattern(record) -> str | None:
    """The record's prompt with its subject replaced by ``{}``; None if unusable for the toy."""
    prompt, subject = record.prompt, record.subject
    if prompt.count(subject) != 1 or not prompt.replace(subject, "").strip() or "{" in prompt or "}" in prompt:
        return None
    pattern = prompt.replace(subject, "{}")
    return None if pattern.rstrip().endswith("{}") else pattern


def select_facts(records: Sequence, config: ToyConfig) -> tuple[list[ToyFact], list[Distractor]]:
    """The toy's facts and distractors from Known records (deterministic; see :class:`ToyConfig`).

    Raises ValueError if the records hold fewer eligible relations than ``config.relations``.
    """
    by_relation: dict[str, list] = collections.defaultdict(list)
    for record in records:
        if _pattern(record) is not None:
            by_relation[record.relation_id].append(record)
    eligible = []
    for relation, members in by_relation.items():
        counts = collections.Counter(_pattern(r) for r in members)
        patterns = [p for p, c in sorted(counts.items(), key=lambda pc: (-pc[1], pc[0])) if c >= 2]
        if len(patterns) >= config.paraphrases + 1 and len({r.attribute for r in members}) >= 3:
            eligible.append((relation, members, patterns[:config.paraphrases + 1]))
    if len(eligible) < config.relations:
        raise ValueError(f"the Known records hold {len(eligible)} relations usable for the toy, "
                         f"fewer than relations={config.relations}")
    eligible.sort(key=lambda item: (-len(item[1]), item[0]))
    facts: list[ToyFact] = []
    used_subjects: set[str] = set()
    chosen = eligible[:config.relations]
    for relation, members, patterns in chosen:
        by_attribute: dict[str, list] = collections.defaultdict(list)
        for record in sorted(members, key=lambda r: r.known_id):
            by_attribute[record.attribute].append(record)
        order = sorted(by_attribute, key=lambda a: (-len(by_attribute[a]), a))
        picked, depth = [], 0
        while len(picked) < config.facts_per_relation and any(depth < len(v) for v in by_attribute.values()):
            for attribute in order:
                if len(picked) < config.facts_per_relation and depth < len(by_attribute[attribute]):
                    record = by_attribute[attribute][depth]
                    if record.subject not in used_subjects:
                        picked.append(record)
                        used_subjects.add(record.subject)
            depth += 1
        for record in picked:
            own = _pattern(record)
            paraphrases = tuple(p.format(record.subject) for p in patterns if p != own)[:config.paraphrases]
            facts.append(ToyFact(record.known_id, record.prompt, record.subject, record.attribute,
                                 record.relation_id, paraphrases))
    rng = random.Random(config.seed)
    others = sorted({r.subject for r in records if r.subject not in used_subjects
                     and "{" not in r.subject and "}" not in r.subject})
    distractors = []
    for relation, _, patterns in chosen:
        for pattern in patterns:
            for subject in rng.sample(others, min(config.distractors, len(others))):
                distractors.append(Distractor(relation, pattern.format(subject), subject))
    return facts, distractors
