"""A toy SpiritLM that knows facts, trained by spiritlens offline, in SpiritLM's checkpoint layout.

The tiny checkpoints of :mod:`spiritlens.synthetic.tiny` have random weights: they answer nothing, so a causal
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
    root/speech_tokenizer/hubert_25hz/             the tiny random speech front end (spiritlens.synthetic.tiny_units)
    root/speech/                                   the synthesised prompts and subjects (WAV + manifest)

The tokenizer is :func:`spiritlens.synthetic.tiny.train_tokenizer_model` trained with the facts' sentences;
the speech front end is :func:`spiritlens.synthetic.tiny_units.write_tiny_speech_tokenizer` (random weights:
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
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from spiritlens._io import remove_orphans, write_json_atomic
from spiritlens.synthetic.toy.cache import (
    MANIFEST,
    REPORT,
    _move_into_place,
    default_cache_dir,
    inputs_hash,
    model_dir,
    read_manifest,
    toy_inputs,
)
from spiritlens.synthetic.toy.config import Distractor, TARGETS, ToyConfig, ToyFact, select_facts
from spiritlens.synthetic.toy.evaluation import evaluate_toy
from spiritlens.synthetic.toy.training import _sequences, _train
from spiritlens.models.spiritlm.tree import speech_tokenizer_folder


def make_toy(root: str | os.PathLike, config: ToyConfig | None = None, *, known: str | os.PathLike | None = None,
             progress: bool | None = None, log: Callable[[str], None] | None = None, force: bool = False) -> Path:
    """Build (or reuse) a toy SpiritLM tree at ``root``; returns ``root``.

    ``root`` is reused as it is when its manifest records the same inputs hash (unless ``force``);
    a previous toy with other inputs is replaced; any other non-empty folder is an error. The tree
    is built in a temporary sibling folder and moved into place, so ``root`` is never half-written.
    ``known``: ROME's ``known_1000.json`` (default: the project's Known lookup). ``progress``: bars of
    synthesis, training, evaluation and model loading; None (default) only when stderr is a terminal
    (:mod:`spiritlens.progress`), so a notebook's first run is quiet. Raises ValueError
    for unusable inputs, :class:`~spiritlens.data.TTSUnavailable` when the speech synthesiser is missing.
    """
    config = config or ToyConfig()
    log = log or _stderr
    root = Path(root)
    for pattern in (f".{root.name}.building-*", f".{root.name}.old-*"):  # left by a killed make-toy
        for orphan in remove_orphans(root.parent, pattern):
            log(f"[toy] removed {orphan}, left by a run that was killed")
    existing = None  # the folder is checked before anything is read or built
    if root.exists():
        if not root.is_dir():
            raise NotADirectoryError(f"toy folder {str(root)!r} is a file")
        if any(root.iterdir()):
            try:
                existing = read_manifest(root)
            except ValueError:
                raise ValueError(f"{str(root)!r} exists and is not a toy SpiritLM: give a new or empty folder") from None
    facts, distractors = _choose(config, known)
    inputs = toy_inputs(config, facts, distractors)
    digest = inputs_hash(inputs)
    if existing is not None and existing["hash"] == digest and not force:
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
                    cache_dir: str | os.PathLike | None = None, progress: bool | None = None,
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
    from spiritlens.data import load_known

    dataset = load_known(known)  # spiritlens.data.known's lookup rule when None
    return select_facts(dataset.records, config)


def _write_model_files(directory: Path, config: ToyConfig, facts: Sequence[ToyFact]) -> dict:
    """Tokenizer and config files in SpiritLM's layout; returns the Llama config dict."""
    from spiritlens.synthetic.tiny import tiny_llama_config, train_tokenizer_model

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
           digest: str, *, progress: bool | None, log: Callable[[str], None]) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from spiritlens.model import HookedSpiritLM
    from spiritlens.synthetic.tiny import write_weights
    from spiritlens.synthetic.tiny_units import write_tiny_speech_tokenizer

    started = time.time()
    directory = model_dir(root)
    llama = _write_model_files(directory, config, facts)
    speech_dir = write_tiny_speech_tokenizer(speech_tokenizer_folder(root), seed=config.seed)
    torch.manual_seed(config.seed)
    hf = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in llama.items() if k != "architectures"}))
    for layer in hf.model.layers[:config.local_layers]:  # attention off: each position sees only itself
        layer.self_attn.o_proj.weight.data.zero_()
        layer.self_attn.o_proj.weight.requires_grad_(False)
    write_weights({k: v.detach().clone() for k, v in hf.state_dict().items()}, directory)
    encoder = HookedSpiritLM.from_pretrained(directory, speech_tokenizer=speech_dir, progress=progress)
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


def _synthesise(out: Path, config: ToyConfig, facts: Sequence[ToyFact], *, progress: bool | None) -> dict[str, Path]:
    """Speech for every fact's prompt (and subject, for interleaved sequences): ``{item_id: wav}``."""
    from spiritlens.data import get_backend, synthesize_corpus

    items = [(f"{f.known_id}_prompt", f.prompt) for f in facts]
    if config.interleaved:
        items += [(f"{f.known_id}_subject", f.subject) for f in facts]
    result = synthesize_corpus(items, get_backend(config.tts), out, progress=progress)
    if result.failed:
        item, reason = result.failed[0]
        raise ValueError(f"speech synthesis failed for {len(result.failed)} toy item(s), e.g. {item}: {reason}")
    return {item_id: Path(path) for item_id, _, path in result.ok_items()}


