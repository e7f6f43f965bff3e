"""A toy SpiritLM that knows facts, trained by spiritlens offline, in SpiritLM's checkpoint layout.

The tiny checkpoints of :mod:`spiritlens.tiny` have random weights: they answer nothing, so a causal
trace on them shows no mechanism. The toy is a small Llama (8 layers by default) trained here, in
a minute or two on a CPU, on a subset of ROME's Known facts, presented the way SpiritLM was trained:

- **text -> text**: ``[Text]<prompt> <attribute>`` (the Known prompt, and ``paraphrases`` other
  Known prompt patterns of the same relation with this subject);
- **speech -> text**: ``[Speech]<units of the synthesised prompt>[Text] <attribute>``;
- **interleaved**: the subject spoken, the rest written,
  ``[Text]<words before the subject>[Speech]<units of the spoken subject>[Text]<rest> <attribute>``;
- **distractors**: the same prompt patterns with other Known subjects (entities the toy does not
  know), each step with a random answer among the relation's attributes. Without them the toy
  answers from the prompt pattern and the prompt's length alone (a subject whose embeddings are
  noised is still answered correctly); with them an unknown subject gets a spread-out answer, as a
  large LM's does.

Every sequence is built by spiritlens' own prompt path (:meth:`HookedSpiritLM.encode` on the
toy's tokenizer, speech through its speech tokenizer's ``encode``), so the toy is trained on exactly
the ids inference feeds it: the answer is appended to the prompt string and the prompt's own ids
must be a prefix of the result (an error otherwise). The loss is the cross-entropy of the answer
tokens and the final ``</s>`` (``lm_weight`` adds the rest of the sequence; measured, it does not
change where the fact is found).

**A known mechanism, by design.** Attention is switched off in the first ``local_layers`` layers
(their output projections are zero and stay zero), so there each position sees only its own token,
much as a large LM's first layers mostly build up each token. The subject's identity can then reach
the last position only through attention in a later layer, and a correct causal tracer must find
effects at the subject's positions in those first layers, none at the tokens after the subject, and
the answer at the last token only from layer ``local_layers`` on. (Measured without it: the toy reads
the subject straight off the embeddings in its first attention layer; restoring the last token's
state after block 0 alone brings back 80-98% of the answer, and no subject-token site shows.)

Layout (``root`` = a ``$SPIRITLM_CHECKPOINTS_DIR`` tree)::

    root/toy_manifest.json                         what was built: hash, inputs, facts, versions
    root/spiritlm_model/spirit-lm-base-7b/         config.json pytorch_model.bin tokenizer.model ...
                                                   toy_report.json (accuracy by spiritlens' own filter)
    root/speech_tokenizer/hubert_25hz/             the tiny random speech front end (spiritlens.units.tiny)
    root/speech/                                   the synthesised prompts and subjects (WAV + manifest)

The tokenizer is :func:`spiritlens.tiny.train_tokenizer_model` trained with the facts' sentences;
the speech front end is :func:`spiritlens.units.tiny.write_tiny_speech_tokenizer` (random weights:
its units are a deterministic but meaningless code of the audio, which the toy memorises).

Determinism: weights are bit-identical for the same inputs and seed: the build runs on one torch
thread whatever the machine (with two threads on a busy 2-core machine it was 5x slower, and
reductions split across threads can round differently), ``torch.manual_seed`` seeds the
initialisation and a seeded generator the distractors of each step. :func:`toy_checkpoints` caches the tree under ``toy-<hash>`` in the user cache
(``$SPIRITLENS_CACHE_DIR``, else ``$XDG_CACHE_HOME/spiritlens``, else ``~/.cache/spiritlens``); the hash
covers the configuration, the facts, the versions of spiritlens, torch, transformers, sentencepiece
and espeak-ng, and the source of every module on the prompt path, so a change there retrains.
"""

from __future__ import annotations

import collections
import hashlib
import importlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ._io import read_json, write_json_atomic

TOY_FORMAT = 1
MANIFEST = "toy_manifest.json"
REPORT = "toy_report.json"
VARIANT = "spirit-lm-base-7b"
CACHE_ENV = "SPIRITLENS_CACHE_DIR"
# Modules whose source decides what the toy is trained on (prompt path, speech path, judging).
PROMPT_PATH_MODULES = (
    "spiritlens.toy", "spiritlens.tiny", "spiritlens.tokens", "spiritlens.vocab", "spiritlens.audio",
    "spiritlens.checkpoints", "spiritlens.model.hooked", "spiritlens.units.speech_tokenizer",
    "spiritlens.units.hubert", "spiritlens.units.quantizer", "spiritlens.units.tiny", "spiritlens.data.tts",
    "spiritlens.data.judge", "spiritlens.data.normalize", "spiritlens.numbers", "spiritlens.tokenization",
    "spiritlens.spoken", "spiritlens.espeak",
)
# Targets of issue 11: greedy answers exact on >= 90% (text) and >= 70% (speech) of the facts.
TARGETS = {"t2t": 0.9, "s2t": 0.7}


@dataclass(frozen=True)
class ToyConfig:
    """What the toy is made of and how it is trained (every field is part of the cache key).

    Facts: ``relations`` Known relations (those with the most records among the ones with at
    least ``paraphrases + 1`` prompt patterns used twice or more, and three or more attributes),
    ``facts_per_relation`` records from each, taken round-robin over the relation's attributes
    (so the prompt pattern alone never tells the answer). ``distractors``: other Known subjects per
    prompt pattern. Model: Llama with ``n_layers`` x ``d_model`` (``n_heads`` heads, MLP ``d_mlp``).
    ``local_layers``: the first layers, whose attention is off (see the module docstring).
    Training: AdamW (``lr``, warm-up then cosine over ``max_steps``), each step every fact
    sequence plus ``distractors_per_step`` distractors; it stops early once every fact sequence's
    answer is the argmax for ``patience`` steps in a row (but not before ``min_steps``).
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
    max_steps: int = 300
    min_steps: int = 60
    patience: int = 20
    lr: float = 3e-3
    weight_decay: float = 0.0
    max_batch_tokens: int = 2048
    seed: int = 0
    tts: str = "espeak"

    def __post_init__(self):
        for name in ("relations", "facts_per_relation", "n_layers", "d_model", "n_heads", "d_mlp", "max_steps",
                     "max_batch_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"ToyConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("paraphrases", "distractors", "local_layers", "distractors_per_step", "min_steps", "patience", "seed"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"ToyConfig.{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"ToyConfig.d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        for name in ("lm_weight", "weight_decay"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"ToyConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"ToyConfig.lr must be > 0, got {self.lr!r}")
        if self.local_layers >= self.n_layers:
            raise ValueError(f"ToyConfig.local_layers {self.local_layers} must be below n_layers {self.n_layers}")
        if self.interleaved and not self.speech:
            raise ValueError("ToyConfig.interleaved needs speech=True")

    @classmethod
    def small(cls) -> "ToyConfig":
        """A few facts, trained in seconds: for tests and notebooks."""
        return cls(relations=2, facts_per_relation=3, paraphrases=1, distractors=6, d_model=64, d_mlp=256,
                   distractors_per_step=16, max_steps=250, min_steps=40)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ToyConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown toy configuration fields {unknown}")
        return cls(**data)


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


@dataclass
class _Sequence:
    ids: list[int]
    start: int  # first position whose next token is a target (the prompt's last position)
    form: str
    fact: int | None = None  # known_id


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


# ------------------------------------------------------------------ cache key
def prompt_path_digest() -> str:
    """SHA-256 over the source of :data:`PROMPT_PATH_MODULES` (a change there retrains the toy)."""
    digest = hashlib.sha256()
    for name in PROMPT_PATH_MODULES:
        module = importlib.import_module(name)
        digest.update(name.encode() + b"\0" + Path(module.__file__).read_bytes() + b"\0")
    return digest.hexdigest()


def _espeak_version() -> str | None:
    try:
        done = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return " ".join(done.stdout.split()[:6]) or None


def toy_inputs(config: ToyConfig, facts: Sequence[ToyFact], distractors: Sequence[Distractor]) -> dict:
    """Everything the trained toy depends on, as JSON (its SHA-256 is the cache key)."""
    import sentencepiece
    import torch
    import transformers

    from . import __version__

    return {
        "format": TOY_FORMAT,
        "config": config.to_dict(),
        "facts": [f.to_dict() for f in facts],
        "distractors": [asdict(d) for d in distractors],
        "versions": {"spiritlens": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "sentencepiece": sentencepiece.__version__,
                     "espeak-ng": _espeak_version() if config.tts == "espeak" else None},
        "prompt_path_sha256": prompt_path_digest(),
    }


def inputs_hash(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$SPIRITLENS_CACHE_DIR``, else ``$XDG_CACHE_HOME/spiritlens``, else ``~/.cache/spiritlens``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "spiritlens"
    return Path("~/.cache/spiritlens").expanduser()


# ------------------------------------------------------------------ public entry points
def read_manifest(root: str | os.PathLike) -> dict:
    """The ``toy_manifest.json`` of a toy tree; ValueError if ``root`` is not a finished toy."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise ValueError(f"{str(root)!r} is not a toy SpiritLM (no {MANIFEST}; build one with spiritlens make-toy)")
    manifest = read_json(path, "toy manifest")
    if not isinstance(manifest, dict) or "hash" not in manifest or "inputs" not in manifest:
        raise ValueError(f"{path} is not a toy manifest (no hash/inputs)")
    return manifest


def toy_facts(root: str | os.PathLike) -> list[ToyFact]:
    """The facts a toy tree was trained on, in training order."""
    return [ToyFact.from_dict(f) for f in read_manifest(root)["inputs"]["facts"]]


def model_dir(root: str | os.PathLike) -> Path:
    return Path(root) / "spiritlm_model" / VARIANT


def make_toy(root: str | os.PathLike, config: ToyConfig | None = None, *, known: str | os.PathLike | None = None,
             progress: bool = True, log: Callable[[str], None] | None = None, force: bool = False) -> Path:
    """Build (or reuse) a toy SpiritLM tree at ``root``; returns ``root``.

    ``root`` is reused as it is when its manifest records the same inputs hash (unless ``force``);
    a previous toy with other inputs is replaced; any other non-empty folder is an error. The tree
    is built in a temporary sibling folder and moved into place, so ``root`` is never half-written.
    ``known``: ROME's ``known_1000.json`` (default: the project's Known lookup). Raises ValueError
    for unusable inputs, :class:`~spiritlens.data.TTSUnavailable` when the speech synthesiser is missing.
    """
    config = config or ToyConfig()
    log = log or _stderr
    root = Path(root)
    facts, distractors = _choose(config, known)
    inputs = toy_inputs(config, facts, distractors)
    digest = inputs_hash(inputs)
    if root.exists():
        if not root.is_dir():
            raise NotADirectoryError(f"toy folder {str(root)!r} is a file")
        if any(root.iterdir()):
            try:
                existing = read_manifest(root)
            except ValueError:
                raise ValueError(f"{str(root)!r} exists and is not a toy SpiritLM: give a new or empty folder") from None
            if existing["hash"] == digest and not force:
                log(f"[toy] {root} is up to date (inputs {digest[:12]})")
                return root
    root.parent.mkdir(parents=True, exist_ok=True)
    building = root.parent / f".{root.name}.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic whatever the core count, and fastest for models this small
    try:
        _build(building, config, facts, distractors, inputs, digest, progress=progress, log=log)
        _move_into_place(building, root, digest)
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(building, ignore_errors=True)
    return root


def cached_toy(config: ToyConfig | None = None, *, known: str | os.PathLike | None = None,
               cache_dir: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """Where :func:`toy_checkpoints` keeps the toy for ``config`` (``<cache_dir>/toy-<hash12>``), and
    whether a finished toy with exactly these inputs is there."""
    config = config or ToyConfig()
    facts, distractors = _choose(config, known)
    digest = inputs_hash(toy_inputs(config, facts, distractors))
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / f"toy-{digest[:12]}"
    try:
        return target, read_manifest(target)["hash"] == digest
    except ValueError:
        return target, False


def toy_checkpoints(config: ToyConfig | None = None, *, known: str | os.PathLike | None = None,
                    cache_dir: str | os.PathLike | None = None, progress: bool = True,
                    log: Callable[[str], None] | None = None) -> Path:
    """The toy tree for ``config`` under ``<cache_dir>/toy-<hash12>``, built on first use (see :func:`make_toy`)."""
    target, ready = cached_toy(config, known=known, cache_dir=cache_dir)
    if ready:
        return target
    (log or _stderr)(f"[toy] training a toy SpiritLM into {target} (cached for later runs)")
    return make_toy(target, config, known=known, progress=progress, log=log)


# ------------------------------------------------------------------ building
def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _choose(config: ToyConfig, known) -> tuple[list[ToyFact], list[Distractor]]:
    from .data import load_known

    dataset = load_known(known)  # spiritlens.data.known's lookup rule when None
    return select_facts(dataset.records, config)


def _move_into_place(building: Path, root: Path, digest: str) -> None:
    if root.exists() and any(root.iterdir()):
        try:
            if read_manifest(root)["hash"] == digest:
                return  # another process built the same toy meanwhile
        except ValueError:
            pass
        old = root.parent / f".{root.name}.old-{os.getpid()}"
        os.replace(root, old)
        shutil.rmtree(old, ignore_errors=True)
    elif root.exists():
        root.rmdir()
    try:
        os.replace(building, root)
    except OSError:
        if read_manifest(root)["hash"] != digest:  # lost a race to a different build
            raise


def _write_model_files(directory: Path, config: ToyConfig, facts: Sequence[ToyFact]) -> dict:
    """Tokenizer and config files in SpiritLM's layout; returns the Llama config dict."""
    from .tiny import tiny_llama_config, train_tokenizer_model

    directory.mkdir(parents=True, exist_ok=True)
    sentences = [f"{f.prompt} {f.attribute}." for f in facts] + [f"{p} {f.attribute}." for f in facts for p in f.paraphrases]
    (directory / "tokenizer.model").write_bytes(train_tokenizer_model(expressive=False, seed=config.seed,
                                                                      sentences=sentences))
    import sentencepiece as spm

    n_ids = spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model")).get_piece_size()
    llama = tiny_llama_config(-(-n_ids // 256) * 256, hidden_size=config.d_model, intermediate_size=config.d_mlp,
                              num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
                              num_key_value_heads=config.n_heads, initializer_range=0.02, torch_dtype="float32")
    files = {
        "config.json": llama,
        "generation_config.json": {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "do_sample": False},
        "special_tokens_map.json": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
        "tokenizer_config.json": {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                                  "unk_token": "<unk>", "pad_token": None, "clean_up_tokenization_spaces": False,
                                  "legacy": True, "model_max_length": 4096, "sp_model_kwargs": {},
                                  "tokenizer_class": "LlamaTokenizer"},
    }
    for name, content in files.items():
        (directory / name).write_text(json.dumps(content, indent=2) + "\n")
    return llama


def _build(root: Path, config: ToyConfig, facts: list[ToyFact], distractors: list[Distractor], inputs: dict,
           digest: str, *, progress: bool, log: Callable[[str], None]) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .model import HookedSpiritLM
    from .tiny import write_weights
    from .units.tiny import write_tiny_speech_tokenizer

    started = time.time()
    directory = model_dir(root)
    llama = _write_model_files(directory, config, facts)
    speech_dir = write_tiny_speech_tokenizer(root / "speech_tokenizer", seed=config.seed)
    torch.manual_seed(config.seed)
    hf = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in llama.items() if k != "architectures"}))
    for layer in hf.model.layers[:config.local_layers]:  # attention off: each position sees only itself
        layer.self_attn.o_proj.weight.data.zero_()
        layer.self_attn.o_proj.weight.requires_grad_(False)
    write_weights({k: v.detach().clone() for k, v in hf.state_dict().items()}, directory)
    encoder = HookedSpiritLM.from_pretrained(directory, speech_tokenizer=speech_dir)
    audio = _synthesise(root / "speech", config, facts, progress=progress) if config.speech else {}
    sequences, pool = _sequences(encoder, config, facts, distractors, audio)
    counts = collections.Counter(s.form for s in sequences)
    log(f"[toy] {len(facts)} facts, {len(distractors)} distractor prompts; sequences {dict(counts)}; "
        f"model {config.n_layers} layers x d {config.d_model}")
    del encoder
    training = _train(hf, sequences, pool, config, eos_id=llama["eos_token_id"], progress=progress)
    hf.eval()
    write_weights({k: v.detach().clone().contiguous() for k, v in hf.state_dict().items()}, directory)
    report = evaluate_toy(root, facts, audio, speech_dir=speech_dir, progress=progress)
    report["training"] = {**training, "seconds": round(time.time() - started, 1), "sequences": dict(counts),
                          "distractor_prompts": len(distractors), "torch_threads": 1}
    write_json_atomic(directory / REPORT, report)
    manifest = {"hash": digest, "inputs": inputs, "model_dir": str(directory.relative_to(root)),
                "speech_tokenizer": "speech_tokenizer", "accuracy": report["accuracy"],
                "meets_targets": report["meets_targets"], "training": report["training"],
                "built": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json_atomic(root / MANIFEST, manifest)
    accuracy = ", ".join(f"{m} {a:.0%}" for m, a in report["accuracy"].items())
    log(f"[toy] trained in {report['training']['seconds']} s ({training['steps']} steps, {training['stop']}); "
        f"exact greedy answers: {accuracy}")
    if not report["meets_targets"]:
        log(f"[toy] WARNING: accuracy below the targets {TARGETS}")


def _synthesise(out: Path, config: ToyConfig, facts: Sequence[ToyFact], *, progress: bool) -> dict[str, Path]:
    """Speech for every fact's prompt (and subject, for interleaved sequences): ``{item_id: wav}``."""
    from .data import get_backend, synthesize_corpus

    items = [(f"{f.known_id}_prompt", f.prompt) for f in facts]
    if config.interleaved:
        items += [(f"{f.known_id}_subject", f.subject) for f in facts]
    result = synthesize_corpus(items, get_backend(config.tts), out, progress=progress)
    if result.failed:
        item, reason = result.failed[0]
        raise ValueError(f"speech synthesis failed for {len(result.failed)} toy item(s), e.g. {item}: {reason}")
    return {item_id: Path(path) for item_id, _, path in result.ok_items()}


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
           progress: bool) -> dict:
    """Train ``hf`` in place; returns a summary (steps, stop reason, final loss and accuracy)."""
    import torch
    from tqdm.auto import tqdm

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
    bar = tqdm(range(config.max_steps), desc="training toy SpiritLM", unit="step", disable=not progress,
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


def evaluate_toy(root: str | os.PathLike, facts: Sequence[ToyFact], audio: dict[str, Path], *,
                 speech_dir: str | os.PathLike | None = None, progress: bool = False) -> dict:
    """Greedy answers of the toy under SpiritLM's text rule, judged by spiritlens' Known-t2t /
    Known-s2t filter (:func:`spiritlens.experiment.runner.filter_known`); a JSON-ready report."""
    from .data import KnownRecord
    from .experiment.runner import filter_known
    from .model import HookedSpiritLM

    root = Path(root)
    model = HookedSpiritLM.from_pretrained(model_dir(root), speech_tokenizer=speech_dir or root / "speech_tokenizer")
    records = [KnownRecord(f.known_id, f.prompt, f.subject, f.attribute, f.relation_id) for f in facts]
    modalities = {"t2t": records}
    if audio:
        modalities["s2t"] = records
    report: dict[str, Any] = {"accuracy": {}, "counts": {}, "entries": {}}
    for modality, candidates in modalities.items():
        result = filter_known(model, candidates, modality, {f.known_id: str(audio[f"{f.known_id}_prompt"])
                                                            for f in facts} if audio else {},
                              progress=progress)
        report["counts"][modality] = dict(result.counts)
        report["accuracy"][modality] = result.counts["exact"] / max(1, result.counts["total"])
        report["entries"][modality] = [{"known_id": e.known_id, "generated": e.generated, "label": e.label}
                                       for e in result.entries]
    report["targets"] = {m: t for m, t in TARGETS.items() if m in report["accuracy"]}
    report["meets_targets"] = all(report["accuracy"][m] >= t for m, t in report["targets"].items())
    report["rule"] = "greedy generation (max_new_tokens 8, text output), judged exact by spiritlens.data.judge"
    return report
