"""The toy SpiritLM Expressive: the toy's facts learnt from HuBERT, pitch and style tokens, beside the toy SpiritLM Base.

SpiritLM Expressive was continued from Llama-2-7B like SpiritLM Base, with pitch ``[Pi0]``..``[Pi63]``
and style ``[St0]``..``[St99]`` tokens after the HuBERT units. The toy mirrors that on demand
(``make_toy(..., expressive=True)``, ``spiritlens make-toy DIR --expressive``), in the same tree:

- **model** (:func:`~spiritlens.synthetic.toy.cache.expressive_model_dir`,
  ``spiritlm_model/spirit-lm-expressive-7b/``): continued from the same toy backbone as the Base
  (:func:`~spiritlens.synthetic.toy.backbone.write_spiritlm_files` with ``expressive=True``: the
  backbone's ``tokenizer.model``, then markers, HuBERT, pitch and style tokens as added tokens;
  :func:`~spiritlens.synthetic.toy.backbone.extend_vocabulary` for the new rows), attention off in
  the same first layers, trained on the same facts and distractors as the Base with the speech of the
  same synthesised prompts tokenised by SpiritLM Expressive's rule
  (:class:`~spiritlens.units.expressive.ExpressiveTokenizer`): text->text, speech->text and interleaved;
- **speech tokenizer** (:func:`~spiritlens.synthetic.toy.cache.expressive_speech_tokenizer_dir`,
  ``speech_tokenizer/``): the Base's tiny mHuBERT (``hubert_25hz/``, so the HuBERT units are the
  Base's) with the tiny random F0 VQ-VAE and style encoder of
  :func:`spiritlens.synthetic.tiny_expressive.write_tiny_expressive` beside it (FCPE is torchfcpe's real model).

**Can the toy's prosody carry the fact?** Its pitch and style codes are deterministic functions of
the espeak-ng recording, as its HuBERT units are: each prompt's pitch-code sequence alone tells the
prompts apart, so a toy trained on the recordings' own streams (``prosody="free"``) may answer from
pitch as well as from the words (measured: :func:`prosody_probes`
in ``toy_report.json``). The default design, ``prosody="decorrelated"``, makes the answer a
property of the words: each training step also shows every fact's spoken prompt and its interleaved
form once with the pitch and style streams of another fact's recording (:func:`with_prosody`, drawn at
random per sequence and step), so the prosody streams carry nothing about the answer that the HuBERT
units do not. The answer is then known in advance as the attention design's is: the fact is in the
subject's HuBERT tokens; the toy's pitch and style tokens are read (they are in every training
sequence) but carry no fact. What a trace of the toy can show is therefore whether a stream-level
tracer finds that, not whether a real SpiritLM Expressive's prosody carries facts: a toy's prosody
carries only what its training put there (one espeak-ng voice, no expressive variation, random encoders).

The build (:func:`build_expressive`) runs after the toy's, in a temporary sibling folder moved into the
tree when complete, ``toy_expressive_manifest.json`` written last; its cache key
(:func:`~spiritlens.synthetic.toy.cache.expressive_inputs`) is the toy's inputs hash, the
:class:`~spiritlens.synthetic.toy.config.ExpressiveToyConfig`, torchfcpe's version and the source of
the Expressive path's modules, so the Base-only build neither waits for it nor is invalidated by it.
Each recording is tokenised once (FCPE is the front end's slowest part) and those units are used for
training and evaluation. One torch thread, seeded (``seed + 2`` for the steps' draws): deterministic.
"""

from __future__ import annotations

import collections
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from spiritlens._io import remove_orphans, write_json_atomic
from spiritlens.models.spiritlm.tree import speech_tokenizer_folder, variant_dir
from spiritlens.synthetic.toy.cache import (
    EXPRESSIVE_MANIFEST,
    REPORT,
    backbone_dir,
    expressive_inputs,
    inputs_hash,
    read_expressive_manifest,
)
from spiritlens.synthetic.toy.config import (
    EXPRESSIVE_VARIANT,
    TARGETS,
    Distractor,
    ExpressiveToyConfig,
    ToyConfig,
    ToyFact,
)

SEQUENCES = "training_sequences.json"  # the fact sequences the toy Expressive was trained on (ids)
OTHER_PROSODY = "_other_prosody"  # form suffix of a sequence whose pitch and style are another recording's


PROSODY_STREAMS = ("pitch", "style")


def with_prosody(units, donor, streams: Sequence[str] = PROSODY_STREAMS):
    """``units``' HuBERT stream with ``donor``'s pitch and style streams (or only those in
    ``streams``), as SpiritLM would tokenise them.

    Both are :class:`~spiritlens.units.expressive.ExpressiveUnits` of one chunk (under 100 s). Their
    grids start at sample 0, so pitch code ``j`` (80 ms) and style code ``i`` (1 s) are the same time
    in both: the donor's per-code streams are taken index by index, cut to ``units``' lengths or
    padded with the donor's last code, and the three streams re-merged by
    :func:`~spiritlens.units.expressive.merge_units` (deduplication, time order, ties). Returns new
    ExpressiveUnits; ValueError for a recording of several chunks, a donor without codes or an
    unknown stream."""
    from spiritlens.units.expressive import merge_units

    if not streams or set(streams) - set(PROSODY_STREAMS):
        raise ValueError(f"with_prosody: streams must be some of {', '.join(PROSODY_STREAMS)}, got {list(streams)}")

    for item, what in ((units, "recording"), (donor, "donor")):
        if not len(item.hubert.chunks) == len(item.pitch_chunks) == len(item.style_chunks) == 1:
            raise ValueError(f"with_prosody: the {what} has {len(item.hubert.chunks)} chunks; one (under 100 s) needed")
        if not item.pitch or not item.style:
            raise ValueError(f"with_prosody: the {what} has no pitch or no style code")

    def aligned(codes: list[int], donor_codes: list[int]) -> list[int]:
        return list(donor_codes[:len(codes)]) + [donor_codes[-1]] * max(0, len(codes) - len(donor_codes))

    pitch = aligned(units.pitch, donor.pitch) if "pitch" in streams else units.pitch
    style = aligned(units.style, donor.style) if "style" in streams else units.style
    return merge_units(units.hubert, pitch, style,
                       units.pitch_chunks, units.style_chunks, chunk_ends=[units.num_samples],
                       pitch_code_samples=units.pitch_code_samples, style_code_samples=units.style_code_samples)


# probe -> (whose HuBERT units are heard, whose pitch/style, which streams are the other's): "own"/"donor"
PROBES = {"prosody_of_another_prompt": ("own", "donor", ("pitch", "style")),
          "pitch_of_another_prompt": ("own", "donor", ("pitch",)),
          "style_of_another_prompt": ("own", "donor", ("style",)),
          "words_of_another_prompt": ("donor", "own", ("pitch", "style"))}


def prosody_probes(model, facts: Sequence[ToyFact], units: dict[str, Any], *, max_new_tokens: int = 8) -> dict:
    """Where a toy SpiritLM Expressive's spoken answer comes from: the words or the prosody.

    Each fact is paired with a donor: the next fact (cyclically, in training order) with another
    attribute. ``units``: ``"<known_id>_prompt"`` -> the prompt's
    :class:`~spiritlens.units.expressive.ExpressiveUnits`. Four probes, each a greedy answer
    (``max_new_tokens``, SpiritLM's text rule) judged exact (:func:`spiritlens.data.judge`) against
    the attribute of the recording whose HuBERT units (the *words*) are heard and against that of the
    recording whose pitch or style (the *prosody*) is swapped in
    (:func:`with_prosody`):

    - ``prosody_of_another_prompt``: the fact's recording with the donor's pitch and style;
    - ``pitch_of_another_prompt`` / ``style_of_another_prompt``: with the donor's pitch (style) only;
    - ``words_of_another_prompt``: the donor's recording with the fact's pitch and style.

    Returns ``{probe: {"total", "words", "prosody", "neither", "entries"}}`` (counts of answers that
    follow the words, the prosody, or neither; ``entries``: words' and prosody's known ids, the
    generated text and which it follows). Facts without a donor (all attributes equal) are left out."""
    from spiritlens.data.judge import judge
    from spiritlens.data.normalize import normalize_words

    facts = list(facts)
    results = {name: {"total": 0, "words": 0, "prosody": 0, "neither": 0, "entries": []} for name in PROBES}
    for i, fact in enumerate(facts):
        donors = [facts[(i + k) % len(facts)] for k in range(1, len(facts))]
        donor = next((d for d in donors if normalize_words(d.attribute, drop_articles=True)
                      != normalize_words(fact.attribute, drop_articles=True)), None)
        if donor is None:
            continue
        pair = {"own": (fact, units[f"{fact.known_id}_prompt"]), "donor": (donor, units[f"{donor.known_id}_prompt"])}
        for name, (words_of, prosody_of, streams) in PROBES.items():
            (words, heard_words), (prosody, heard_prosody) = pair[words_of], pair[prosody_of]
            heard = with_prosody(heard_words, heard_prosody, streams)
            generated = model.decode_generated(model.generate_ids([("speech", heard)], max_new_tokens=max_new_tokens))
            follows = ("words" if judge(generated, words.attribute).label == "exact" else
                       "prosody" if judge(generated, prosody.attribute).label == "exact" else "neither")
            result = results[name]
            result["total"] += 1
            result[follows] += 1
            result["entries"].append({"words": words.known_id, "prosody": prosody.known_id, "generated": generated,
                                      "follows": follows})
    return results


def expressive_speech_parts(root: Path) -> tuple[Path, Path]:
    """The pitch quantizer's and style encoder's folders under ``root/speech_tokenizer``."""
    from spiritlens.units.pitch import F0_QUANTIZER_DIR
    from spiritlens.units.style import STYLE_DIR

    folder = speech_tokenizer_folder(root)
    return folder / F0_QUANTIZER_DIR, folder / STYLE_DIR


def expressive_ready(root: Path, digest: str) -> bool:
    """Whether ``root`` holds a finished toy SpiritLM Expressive with inputs hash ``digest``."""
    try:
        return read_expressive_manifest(root)["hash"] == digest
    except ValueError:
        return False


def build_expressive(root: Path, config: ToyConfig, expressive: ExpressiveToyConfig, facts: Sequence[ToyFact],
                     distractors: Sequence[Distractor], toy_hash: str, *, progress: bool | None,
                     log: Callable[[str], None], force: bool = False) -> bool:
    """Add the toy SpiritLM Expressive to the finished toy tree ``root`` (whose inputs hash is
    ``toy_hash``), unless it holds one with the same inputs (and not ``force``). Returns whether it
    was built. Raises ValueError when the toy has no speech (``config.speech`` false) or fewer than two
    facts (the decorrelated design swaps prosody between facts), or a prompt's recording is missing."""
    inputs = expressive_inputs(toy_hash, expressive)
    digest = inputs_hash(inputs)
    if expressive_ready(root, digest) and not force:
        log(f"[toy] the toy SpiritLM Expressive in {root} is up to date (inputs {digest[:12]})")
        return False
    if not config.speech:
        raise ValueError("the toy SpiritLM Expressive learns its facts from speech: the toy needs speech=True")
    if expressive.prosody == "decorrelated" and len(facts) < 2:
        raise ValueError("prosody='decorrelated' swaps prosody between facts: the toy needs at least two facts")
    for orphan in remove_orphans(root.parent, f".{root.name}.expressive-*"):
        log(f"[toy] removed {orphan}, left by a run that was killed")
    building = root.parent / f".{root.name}.expressive-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    log(f"[toy] training a toy SpiritLM Expressive into {variant_dir(root, EXPRESSIVE_VARIANT)} "
        f"(prosody {expressive.prosody})")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic, and fastest for models this small (see build.py)
    try:
        _build(building, root, config, expressive, facts, distractors, inputs, digest, progress=progress, log=log)
        _move_into_place(building, root, digest)
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(building, ignore_errors=True)
    return True


def _recordings(root: Path, facts: Sequence[ToyFact], interleaved: bool) -> dict[str, Path]:
    """The toy's synthesised prompts (and subjects), ``{item_id: wav}``; ValueError naming a missing one."""
    items = [f"{f.known_id}_{part}" for f in facts for part in (("prompt", "subject") if interleaved else ("prompt",))]
    audio = {item: root / "speech" / f"{item}.wav" for item in items}
    missing = [str(path) for path in audio.values() if not path.is_file()]
    if missing:
        raise ValueError(f"the toy's recording {missing[0]} is missing ({len(missing)} missing): rebuild the toy "
                         "with spiritlens make-toy --force")
    return audio


def _prosody_variants(encode: Callable, eos: int, facts: Sequence[ToyFact], units: dict, interleaved: bool) -> list:
    """For every fact's speech->text and interleaved sequence, its versions with the pitch and style of
    each other fact's recording (the prompt's, or the subject's for interleaved): one group per
    sequence, forms ``"s2t_other_prosody"`` and ``"interleaved_other_prosody"``."""
    from spiritlens.synthetic.toy.training import _sequences

    groups: dict[tuple, list] = collections.defaultdict(list)
    parts = ("prompt", "subject") if interleaved else ("prompt",)
    for shift in range(1, len(facts)):
        swapped = {}
        for i, fact in enumerate(facts):
            donor = facts[(i + shift) % len(facts)]
            for part in parts:
                swapped[f"{fact.known_id}_{part}"] = with_prosody(units[f"{fact.known_id}_{part}"],
                                                                  units[f"{donor.known_id}_{part}"])
        sequences, _ = _sequences(encode, eos, facts, [], swapped, interleaved=interleaved)
        for sequence in sequences:
            if sequence.form in ("s2t", "interleaved"):
                sequence.form += OTHER_PROSODY
                groups[(sequence.fact, sequence.form)].append(sequence)
    return list(groups.values())


def _build(building: Path, root: Path, config: ToyConfig, expressive: ExpressiveToyConfig, facts: Sequence[ToyFact],
           distractors: Sequence[Distractor], inputs: dict, digest: str, *, progress: bool | None,
           log: Callable[[str], None]) -> None:
    from safetensors.torch import load_file

    from spiritlens.model import HookedSpiritLM
    from spiritlens.synthetic.tiny import write_weights
    from spiritlens.synthetic.tiny_expressive import write_tiny_expressive
    from spiritlens.synthetic.toy.backbone import extend_vocabulary, llama2_prompt_path, write_spiritlm_files
    from spiritlens.synthetic.toy.evaluation import evaluate_toy
    from spiritlens.synthetic.toy.training import _check_text_ids, _fresh_llama, _sequences, _state, _train
    from spiritlens.units import SpeechTokenizer
    from spiritlens.units.expressive import ExpressiveTokenizer
    from spiritlens.units.pitch import PitchTokenizer
    from spiritlens.units.style import StyleEncoder

    started, cpu_started = time.time(), time.process_time()
    backbone = backbone_dir(root)
    directory = variant_dir(building, EXPRESSIVE_VARIANT)
    llama = write_spiritlm_files(directory, backbone, config, expressive=True)
    speech = write_tiny_expressive(speech_tokenizer_folder(building), seed=config.seed)
    tokenizer = ExpressiveTokenizer(SpeechTokenizer.from_dir(speech_tokenizer_folder(root)),
                                    PitchTokenizer.from_dir(speech), StyleEncoder.from_dir(speech))
    audio = _recordings(root, facts, config.interleaved)
    cpu = time.process_time()
    units = {item: tokenizer.encode(path) for item, path in audio.items()}  # once: training and evaluation
    units_cpu = round(time.process_time() - cpu, 1)

    state = extend_vocabulary(load_file(backbone / "model.safetensors"), llama["vocab_size"],
                              std=config.new_rows_std, seed=config.seed)
    hf = _fresh_llama(llama, config.local_layers)
    hf.load_state_dict(state)
    write_weights(state, directory)
    encoder = HookedSpiritLM.from_pretrained(directory, speech_tokenizer=tokenizer, progress=progress)
    encode = lambda prompt: encoder.encode(prompt)[0][0].tolist()  # noqa: E731
    sequences, pool = _sequences(encode, encoder.vocab.eos_id, facts, distractors, units,
                                 interleaved=config.interleaved)
    text_encode, text_tokenizer = llama2_prompt_path(backbone)
    text_sequences, text_pool = _sequences(text_encode, text_tokenizer.eos_token_id, facts, distractors)
    _check_text_ids(text_sequences + [s for p in text_pool for s in p],
                    [s for s in sequences if s.form in ("t2t", "t2t_paraphrase")] + [s for p in pool for s in p],
                    encoder.vocab.bos_id, encoder.vocab.text_marker_id)
    variants = (_prosody_variants(encode, encoder.vocab.eos_id, facts, units, config.interleaved)
                if expressive.prosody == "decorrelated" else [])
    counts = collections.Counter(s.form for s in sequences) + collections.Counter(g[0].form for g in variants)
    log(f"[toy] toy SpiritLM Expressive continued from the backbone; sequences per step {dict(counts)}"
        + (f" (each of the {len(variants)} with another prompt's prosody drawn from {len(variants[0])})"
           if variants else ""))
    encoder = None  # freed before training
    training = _train(hf, sequences, pool, config, eos_id=llama["eos_token_id"], max_steps=expressive.max_steps,
                      min_steps=expressive.min_steps, lr=expressive.lr, seed=config.seed + 2, progress=progress,
                      desc="training toy SpiritLM Expressive", variants=variants)
    hf.eval()
    write_weights(_state(hf), directory)
    model = HookedSpiritLM.from_pretrained(directory, speech_tokenizer=tokenizer, progress=progress)
    report = evaluate_toy(building, facts, {k: u for k, u in units.items() if k.endswith("_prompt")}, model=model,
                          progress=progress)
    report["prosody"] = {"design": expressive.prosody, "probes": prosody_probes(model, facts, units),
                         "statement": _statement(expressive.prosody)}
    report["training"] = {**training, "seconds": round(time.time() - started, 1),
                          "cpu_seconds": round(time.process_time() - cpu_started, 1), "units_cpu_seconds": units_cpu,
                          "sequences": dict(counts), "distractor_prompts": len(distractors), "torch_threads": 1,
                          "continued_from": str(backbone.relative_to(root))}
    write_json_atomic(directory / REPORT, report)
    write_json_atomic(directory / SEQUENCES, {"note": "the fact sequences trained at every step (token ids; the "
                                                       "answer is predicted from position start on)",
                                              "sequences": [{"known_id": s.fact, "form": s.form, "start": s.start,
                                                             "ids": s.ids} for s in sequences if s.fact is not None]})
    manifest = {"hash": digest, "inputs": inputs, "model_dir": str(directory.relative_to(building)),
                "speech_tokenizer": str(speech_tokenizer_folder(building).relative_to(building)),
                "accuracy": report["accuracy"], "meets_targets": report["meets_targets"], "prosody": report["prosody"],
                "training": {k: v for k, v in report["training"].items() if k != "history"},
                "built": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json_atomic(building / EXPRESSIVE_MANIFEST, manifest)
    accuracy = ", ".join(f"{m} {a:.0%}" for m, a in report["accuracy"].items())
    probes = "; ".join(f"{name.replace('_', ' ')}: {p['words']}/{p['total']} follow the words, {p['prosody']} the "
                       f"prosody" for name, p in report["prosody"]["probes"].items())
    log(f"[toy] toy SpiritLM Expressive built in {report['training']['seconds']} s "
        f"({report['training']['cpu_seconds']} s of CPU, {units_cpu} s of it tokenising {len(units)} recordings; "
        f"{training['steps']} steps, {training['stop']}); exact greedy answers: {accuracy}; {probes}")
    if not report["meets_targets"]:
        log(f"[toy] WARNING: the toy SpiritLM Expressive's accuracy is below the targets {TARGETS}")


def _statement(design: str) -> str:
    """What the toy SpiritLM Expressive can and cannot show, for its report."""
    if design == "decorrelated":
        trained = ("Trained with every spoken prompt also carrying another prompt's pitch and style (drawn at random "
                   "each step), the toy's pitch and style tokens tell nothing about the fact that its HuBERT units do "
                   "not: by design the fact is carried by the subject's HuBERT tokens, and a stream-level trace "
                   "should find it there, with pitch and style controls leaving the answer as it is.")
    else:
        trained = ("Trained on its recordings' own streams only, the toy could memorise a prompt by its pitch or style "
                   "codes as well as by its HuBERT units (all are deterministic functions of the recording): what "
                   "its traces find in the pitch and style tokens is what it memorised, measured by the probes.")
    return (trained + " It can show whether a stream-level tracer separates the streams; it cannot show whether a "
            "real SpiritLM Expressive's prosody carries facts: a toy's prosody carries only what its training put "
            "there (one espeak-ng voice without expressive variation, tiny random pitch and style encoders).")


def _move_into_place(building: Path, root: Path, digest: str) -> None:
    """Move the model folder and the pitch and style folders from ``building`` into ``root``, then the
    manifest (last: until it is there, the tree has no finished toy SpiritLM Expressive)."""
    if expressive_ready(root, digest):
        return  # another process built the same meanwhile
    (root / EXPRESSIVE_MANIFEST).unlink(missing_ok=True)
    old = root.parent / f".{root.name}.expressive-old-{os.getpid()}"
    moves = [(variant_dir(building, EXPRESSIVE_VARIANT), variant_dir(root, EXPRESSIVE_VARIANT))]
    moves += list(zip(expressive_speech_parts(building), expressive_speech_parts(root)))
    try:
        for k, (source, target) in enumerate(moves):
            if target.exists():
                old.mkdir(parents=True, exist_ok=True)
                os.replace(target, old / str(k))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        os.replace(building / EXPRESSIVE_MANIFEST, root / EXPRESSIVE_MANIFEST)
    finally:
        shutil.rmtree(old, ignore_errors=True)
