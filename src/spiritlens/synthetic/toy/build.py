"""A toy SpiritLM that knows facts, trained by spiritlens offline, in SpiritLM's checkpoint layout.

The tiny checkpoints of :mod:`spiritlens.synthetic.tiny` have random weights: they answer nothing, so a causal
trace on them shows no mechanism. The toy is a small Llama (8 layers by default) trained here, in
a minute or two on a CPU, on a subset of ROME's Known facts, and made the way SpiritLM was made
from Llama-2-7B, in two phases (:mod:`spiritlens.synthetic.toy.backbone`):

1. **the backbone**: a text-only toy Llama with its own SentencePiece tokenizer (no marker, no
   unit), in meta-llama/Llama-2-7b-hf's folder layout, trained on Llama-2's prompts
   ``<s><prompt> <attribute></s>`` (the Known prompt, the paraphrases and the distractors below);
2. **the toy SpiritLM**: the backbone's weights and tokenizer with the vocabulary extended (the text
   pieces keep their ids; ``[Text]``, ``[Speech]``, ``[Hu0]``..``[Hu500]`` appended as added tokens,
   their embedding and unembedding rows the mean of the backbone's plus noise), trained further on
   the facts presented the way SpiritLM was trained:

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
toy's tokenizer, speech through its speech tokenizer's ``encode``; for the backbone spiritlens'
slow-Llama tokenisation of ``<s>`` + text), so the toys are trained on exactly the ids inference
feeds them: the answer is appended to the prompt string and the prompt's own ids must be a prefix
of the result (an error otherwise). Each text sequence of the toy SpiritLM must be the backbone's
with ``[Text]`` after ``<s>`` (an error otherwise). The loss is the cross-entropy of the answer
tokens and the final ``</s>`` (``lm_weight`` adds the rest of the sequence; measured, it does not
change where the fact is found).

**A known mechanism, by design.** Attention is switched off in the first ``local_layers`` layers
of both toys (their output projections are zero and stay zero, through both phases), so there each position sees only its own token,
much as a large LM's first layers mostly build up each token. The subject's identity can then reach
the last position only through attention in a later layer, and a correct causal tracer must find
effects at the subject's positions in those first layers, none at the tokens after the subject, and
the answer at the last token only from layer ``local_layers`` on. (Measured without it: the toy reads
the subject straight off the embeddings in its first attention layer; restoring the last token's
state after block 0 alone brings back 80-98% of the answer, and no subject-token site shows.)

Layout (``root`` = a ``$SPIRITLM_CHECKPOINTS_DIR`` tree)::

    root/toy_manifest.json                         what was built: hash, inputs, facts, versions
    root/backbone/llama-2-7b-hf/                   config.json model.safetensors tokenizer.model ... (Llama-2's
                                                   layout), toy_report.json (its accuracy from text)
    root/spiritlm_model/spirit-lm-base-7b/         config.json pytorch_model.bin tokenizer.model ...
                                                   toy_report.json (accuracy by spiritlens' own filter)
    root/speech_tokenizer/hubert_25hz/             the tiny random speech front end (spiritlens.synthetic.tiny_units)
    root/speech/                                   the synthesised prompts and subjects (WAV + manifest)

and, with ``expressive`` (:mod:`spiritlens.synthetic.toy.expressive`, its own cache key)::

    root/spiritlm_model/spirit-lm-expressive-7b/   the toy SpiritLM Expressive (toy_report.json,
                                                   training_sequences.json)
    root/speech_tokenizer/{vqvae_f0_quantizer,style_encoder_w2v2}/   its tiny pitch and style encoders
    root/toy_expressive_manifest.json              written last: what was built, its hash

The backbone's tokenizer is :func:`spiritlens.synthetic.tiny.train_tokenizer_model` trained with the facts'
sentences; the toy SpiritLM's is the same ``tokenizer.model`` with SpiritLM's tokens added;
the speech front end is :func:`spiritlens.synthetic.tiny_units.write_tiny_speech_tokenizer` (random weights:
its units are a deterministic but meaningless code of the audio, which the toy memorises).

Determinism: weights are bit-identical for the same inputs and seed: the build runs on one torch
thread whatever the machine (with two threads on a busy 2-core machine it was 5x slower, and
reductions split across threads can round differently), ``torch.manual_seed`` seeds the
backbone's initialisation, seeded generators the new rows' noise and the distractors of each step
(``seed`` for the backbone, ``seed + 1`` for the toy SpiritLM). :func:`toy_checkpoints` caches the
tree (both toys) under ``toy-<hash>`` in the user cache
(``$SPIRITLENS_CACHE_DIR``, else ``$XDG_CACHE_HOME/spiritlens``, else ``~/.cache/spiritlens``); the hash
covers the configuration (both phases'), the facts, the versions of spiritlens, torch, transformers, sentencepiece
and espeak-ng, and the source of every module on the prompt path, so a change there retrains.
"""

from __future__ import annotations

import collections
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from spiritlens._io import remove_orphans, write_json_atomic
from spiritlens.synthetic.toy.backbone import (
    extend_vocabulary,
    llama2_prompt_path,
    write_backbone_files,
    write_spiritlm_files,
)
from spiritlens.synthetic.toy.cache import (
    MANIFEST,
    REPORT,
    _backbone_folder,
    _move_into_place,
    default_cache_dir,
    expressive_inputs,
    inputs_hash,
    model_dir,
    read_manifest,
    toy_inputs,
)
from spiritlens.synthetic.toy.config import (BACKBONE_TARGETS, Distractor, ExpressiveToyConfig, TARGETS, ToyConfig,
                                            ToyFact, select_facts)
from spiritlens.synthetic.toy.evaluation import evaluate_backbone, evaluate_toy
from spiritlens.synthetic.toy.training import _check_text_ids, _fresh_llama, _sequences, _state, _train
from spiritlens.models.spiritlm.tree import speech_tokenizer_folder


def make_toy(root: str | os.PathLike, config: ToyConfig | None = None, *, known: str | os.PathLike | None = None,
             progress: bool | None = None, log: Callable[[str], None] | None = None, force: bool = False,
             expressive: bool | ExpressiveToyConfig = False) -> Path:
    """Build (or reuse) a toy SpiritLM tree at ``root``; returns ``root``.

    ``root`` is reused as it is when its manifest records the same inputs hash (unless ``force``);
    a previous toy with other inputs is replaced; any other non-empty folder is an error. The tree
    is built in a temporary sibling folder and moved into place, so ``root`` is never half-written.
    ``known``: ROME's ``known_1000.json`` (default: the project's Known lookup). ``progress``: bars of
    synthesis, training, evaluation and model loading; None (default) only when stderr is a terminal
    (:mod:`spiritlens.progress`), so a notebook's first run is quiet. ``expressive``: also the toy
    SpiritLM Expressive beside it (True for :class:`ExpressiveToyConfig`'s defaults, or a config;
    :mod:`spiritlens.synthetic.toy.expressive`), reused under its own inputs hash. Raises ValueError
    for unusable inputs, :class:`~spiritlens.data.TTSUnavailable` when the speech synthesiser is missing.
    """
    config = config or ToyConfig()
    expressive = _expressive_config(expressive)
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
    else:
        _build_base(root, config, facts, distractors, inputs, digest, progress=progress, log=log)
        force = False  # a new tree: nothing Expressive in it to rebuild
    if expressive is not None:
        from spiritlens.synthetic.toy.expressive import build_expressive

        build_expressive(root, config, expressive, facts, distractors, digest, progress=progress, log=log, force=force)
    return root


def _expressive_config(expressive: bool | ExpressiveToyConfig | None) -> ExpressiveToyConfig | None:
    if isinstance(expressive, ExpressiveToyConfig):
        return expressive
    if expressive is True:
        return ExpressiveToyConfig()
    if expressive is False or expressive is None:
        return None
    raise ValueError(f"expressive must be True, False or an ExpressiveToyConfig, got {expressive!r}")


def _build_base(root: Path, config: ToyConfig, facts: list[ToyFact], distractors: list[Distractor], inputs: dict,
                digest: str, *, progress: bool | None, log: Callable[[str], None]) -> None:
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


def cached_toy(config: ToyConfig | None = None, *, known: str | os.PathLike | None = None,
               cache_dir: str | os.PathLike | None = None,
               expressive: bool | ExpressiveToyConfig = False) -> tuple[Path, bool]:
    """Where :func:`toy_checkpoints` keeps the toy for ``config`` (``<cache_dir>/toy-<hash12>``), and
    whether a finished toy with exactly these inputs is there (with ``expressive``, and the toy
    SpiritLM Expressive of that configuration beside it)."""
    config = config or ToyConfig()
    expressive = _expressive_config(expressive)
    facts, distractors = _choose(config, known)
    digest = inputs_hash(toy_inputs(config, facts, distractors))
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / f"toy-{digest[:12]}"
    try:
        ready = read_manifest(target)["hash"] == digest
    except ValueError:
        return target, False
    if ready and expressive is not None:
        from spiritlens.synthetic.toy.expressive import expressive_ready

        ready = expressive_ready(target, inputs_hash(expressive_inputs(digest, expressive)))
    return target, ready


def toy_checkpoints(config: ToyConfig | None = None, *, known: str | os.PathLike | None = None,
                    cache_dir: str | os.PathLike | None = None, progress: bool | None = None,
                    log: Callable[[str], None] | None = None,
                    expressive: bool | ExpressiveToyConfig = False) -> Path:
    """The toy tree for ``config`` under ``<cache_dir>/toy-<hash12>``, built on first use (see
    :func:`make_toy`); with ``expressive``, the toy SpiritLM Expressive is added to it on first use
    (:func:`~spiritlens.synthetic.toy.cache.expressive_model_dir` and
    :func:`~spiritlens.synthetic.toy.cache.expressive_speech_tokenizer_dir` find it)."""
    target, ready = cached_toy(config, known=known, cache_dir=cache_dir, expressive=expressive)
    if ready:
        return target
    if not cached_toy(config, known=known, cache_dir=cache_dir)[1]:
        (log or _stderr)(f"[toy] training a toy SpiritLM into {target} (cached for later runs)")
    return make_toy(target, config, known=known, progress=progress, log=log, expressive=expressive)


# ------------------------------------------------------------------ building
def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _choose(config: ToyConfig, known) -> tuple[list[ToyFact], list[Distractor]]:
    from spiritlens.data import load_known

    dataset = load_known(known)  # spiritlens.data.known's lookup rule when None
    return select_facts(dataset.records, config)


def _build(root: Path, config: ToyConfig, facts: list[ToyFact], distractors: list[Distractor], inputs: dict,
           digest: str, *, progress: bool | None, log: Callable[[str], None]) -> None:
    import torch

    from spiritlens.model import HookedSpiritLM
    from spiritlens.synthetic.tiny import write_weights
    from spiritlens.synthetic.tiny_units import write_tiny_speech_tokenizer

    started, cpu_started = time.time(), time.process_time()
    directory, backbone = model_dir(root), _backbone_folder(root)
    backbone_llama = write_backbone_files(backbone, config, facts)
    llama = write_spiritlm_files(directory, backbone, config)
    speech_dir = write_tiny_speech_tokenizer(speech_tokenizer_folder(root), seed=config.seed)
    audio = _synthesise(root / "speech", config, facts, progress=progress) if config.speech else {}

    # phase 1: the text-only backbone, on Llama-2's prompts (<s> + text)
    encode, tokenizer = llama2_prompt_path(backbone)
    text_sequences, text_pool = _sequences(encode, tokenizer.eos_token_id, facts, distractors)
    counts = collections.Counter(s.form for s in text_sequences)
    log(f"[toy] {len(facts)} facts, {len(distractors)} distractor prompts; backbone sequences {dict(counts)}; "
        f"model {config.n_layers} layers x d {config.d_model}")
    torch.manual_seed(config.seed)
    hf = _fresh_llama(backbone_llama, config.local_layers)
    backbone_training = _train(hf, text_sequences, text_pool, config, eos_id=tokenizer.eos_token_id,
                               max_steps=config.backbone_max_steps, min_steps=config.backbone_min_steps,
                               lr=config.backbone_lr, seed=config.seed, progress=progress, desc="training toy backbone")
    backbone_state = _state(hf.eval())
    write_weights(backbone_state, backbone, fmt="safetensors")
    backbone_report = evaluate_backbone(backbone, facts, progress=progress)
    backbone_report["training"] = {**backbone_training, "sequences": dict(counts),
                                   "distractor_prompts": len(distractors), "torch_threads": 1}
    write_json_atomic(backbone / REPORT, backbone_report)
    log(f"[toy] backbone trained in {backbone_training['train_cpu_seconds']} s of CPU "
        f"({backbone_training['steps']} steps, {backbone_training['stop']}); exact greedy answers: "
        f"t2t {backbone_report['accuracy']['t2t']:.0%}")

    # phase 2: the toy SpiritLM, the backbone's weights with the vocabulary extended, on the whole mix
    state = extend_vocabulary(backbone_state, llama["vocab_size"], std=config.new_rows_std, seed=config.seed)
    hf = _fresh_llama(llama, config.local_layers)
    hf.load_state_dict(state)
    write_weights(state, directory)
    encoder = HookedSpiritLM.from_pretrained(directory, speech_tokenizer=speech_dir, progress=progress)
    units = {key: encoder.speech_tokenizer.encode(path) for key, path in audio.items()} if config.speech else None
    sequences, pool = _sequences(lambda prompt: encoder.encode(prompt)[0][0].tolist(), encoder.vocab.eos_id, facts,
                                 distractors, units, interleaved=config.interleaved)
    texts = [s for s in sequences if s.form in ("t2t", "t2t_paraphrase")]
    _check_text_ids(text_sequences + [s for p in text_pool for s in p], texts + [s for p in pool for s in p],
                    encoder.vocab.bos_id, encoder.vocab.text_marker_id)
    counts = collections.Counter(s.form for s in sequences)
    log(f"[toy] toy SpiritLM continued from the backbone; sequences {dict(counts)}")
    encoder = None  # freed before training
    training = _train(hf, sequences, pool, config, eos_id=llama["eos_token_id"], max_steps=config.max_steps,
                      min_steps=config.min_steps, lr=config.lr, seed=config.seed + 1, progress=progress,
                      desc="training toy SpiritLM")
    hf.eval()
    write_weights(_state(hf), directory)
    report = evaluate_toy(root, facts, audio, speech_dir=speech_dir, progress=progress)
    backbone_summary = {k: backbone_training[k] for k in ("steps", "stop", "train_seconds", "train_cpu_seconds")}
    report["training"] = {**training, "seconds": round(time.time() - started, 1),
                          "cpu_seconds": round(time.process_time() - cpu_started, 1), "sequences": dict(counts),
                          "distractor_prompts": len(distractors), "torch_threads": 1,
                          "continued_from": str(backbone.relative_to(root)), "backbone": backbone_summary}
    write_json_atomic(directory / REPORT, report)
    manifest = {"hash": digest, "inputs": inputs, "model_dir": str(directory.relative_to(root)),
                "backbone_dir": str(backbone.relative_to(root)),
                "speech_tokenizer": "speech_tokenizer", "accuracy": report["accuracy"],
                "meets_targets": report["meets_targets"], "training": report["training"],
                "backbone": {"accuracy": backbone_report["accuracy"], "meets_targets": backbone_report["meets_targets"],
                             "training": {k: v for k, v in backbone_report["training"].items() if k != "history"}},
                "built": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json_atomic(root / MANIFEST, manifest)
    accuracy = ", ".join(f"{m} {a:.0%}" for m, a in report["accuracy"].items())
    log(f"[toy] built in {report['training']['seconds']} s ({report['training']['cpu_seconds']} s of CPU; "
        f"toy SpiritLM {training['steps']} steps, {training['stop']}); exact greedy answers: {accuracy}")
    if not report["meets_targets"]:
        log(f"[toy] WARNING: accuracy below the targets {TARGETS}")
    if not backbone_report["meets_targets"]:
        log(f"[toy] WARNING: the backbone's accuracy is below its target {BACKBONE_TARGETS}")


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


