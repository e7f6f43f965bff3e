"""Settings of one Known experiment run, shared by the Python API and ``spiritlens experiment``.

:func:`check_config` checks every setting (and the files, folders and programs they name) before
any work starts, so a bad argument costs one line and no synthesis, transcription or filtering.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from spiritlens import __version__
from spiritlens.align.aligner import POCKETSPHINX
from spiritlens.checkpoints.tree import DTYPE_RULE
from spiritlens.models.spiritlm.tree import CHECKPOINTS_ENV, VARIANTS
from spiritlens.terms import DIRECTION_MODALITY, DIRECTIONS, KINDS, MAPPINGS, VERIFY_RANKS
from spiritlens.traces.methods import SCREENS
from spiritlens.traces.streams import STREAMS
from spiritlens.traces.tracer import ROW_MODES
from spiritlens.units.controls import CONTROLS
from spiritlens.traces.window import WINDOW_RULE, default_window  # the engine's default window, scaled to the depth
from spiritlens.models.spiritlm.tree import variant_dir

NO_BACKBONE = "none"  # --backbone none: no baseline row

__all__ = ["DIRECTIONS", "DIRECTION_MODALITY", "WINDOW_RULE", "ExperimentConfig", "check_environment", "check_settings",
           "default_window"]



@dataclass
class ExperimentConfig:
    """One run of the paper's pipeline.

    ``checkpoints``: a ``$SPIRITLM_CHECKPOINTS_DIR`` tree; or ``model``: one model folder of any registered
    family (:mod:`spiritlens.models`, detected), with ``speech_tokenizer`` its speech-tokenizer folder.
    With neither (and the variable unset) the
    run is the *embedded default*: the toy SpiritLM of :mod:`spiritlens.synthetic.toy.build` (``toy``: a toy tree
    built with ``spiritlens make-toy``; default: built once and cached under the user cache,
    ``~/.cache/spiritlens/toy-<hash>``), traced on the facts it was trained on, with pocketsphinx's
    real US-English model as the aligner. ``random_weights``: the tiny random-weight checkpoints
    instead (a plumbing check: a few Known prompts, every prompt kept). ``aligner``: a character CTC
    model directory (the paper's path, the default whenever one is given) or ``"pocketsphinx"``.
    ``window``: None scales ROME's 10 to the model's depth (:func:`default_window`). ``crossmodal``:
    after tracing, run :func:`spiritlens.experiment.crossmodal.run_experiment_dir` on the facts kept in both
    Known-t2t and Known-s2t and add its section to the report. ``expressive``: SpiritLM Expressive
    (the variant becomes its Expressive variant); after tracing, every kept S->T prompt is traced again
    with its subject's rows split by stream and the subject's ``noise_streams`` noised, under each of the
    ``prosody_controls`` (:mod:`spiritlens.experiment.expressive`), and the report gains its section.
    ``backbone``: the text-only Llama-2 folder SpiritLM was trained from, or ``"none"``; None: the embedded
    toy's backbone (or the tiny random one), and no baseline with real checkpoints
    (:mod:`spiritlens.experiment.baseline`).
    """

    out: Path = field(metadata={"help": "output folder (resumable: rerun to continue)"})
    checkpoints: Path | None = field(default=None, metadata={
        "help": "SpiritLM checkpoints folder (default: $SPIRITLM_CHECKPOINTS_DIR; neither: the embedded toy)"})
    variant: str = field(default=VARIANTS[0])  # one of checkpoints.tree.VARIANTS, under spiritlm_model/
    model: Path | None = field(default=None, metadata={
        "metavar": "DIR", "help": "a model folder of any registered family (e.g. SpeechGPT-7B-cm), instead of a "
                                  "SpiritLM checkpoints tree; its family is detected"})
    speech_tokenizer: Path | None = field(default=None, metadata={
        "metavar": "DIR", "help": "the speech-tokenizer folder of --model (e.g. SpeechGPT's speech2unit/); "
                                  "needed for s2t when the family keeps none beside the model"})
    aligner: Path | str | None = field(default=None, metadata={
        "help": "S->T forced aligner: a character CTC model directory (the paper's path, e.g. "
                "hubert-large-ls960-ft) or 'pocketsphinx' (the embedded default)"})
    known: Path | None = field(default=None, metadata={
        "help": "known_1000.json (default: $SPIRITLENS_KNOWN_PATH, the cache ~/.cache/spiritlens, "
                "../shared/data next to a source checkout, or a download)"})
    n_prompts: int | None = field(default=None, metadata={
        "flag": "--prompts", "metavar": "N",
        "help": "use N Known prompts (a deterministic subset; default: all, or 6 when embedded)"})
    subset_seed: int = field(default=0, metadata={"help": "seed of the --prompts subset"})
    modalities: tuple[str, ...] = field(default=DIRECTIONS, metadata={
        "help": "directions to run, comma-separated: t2t (text prompt) and/or s2t (spoken prompt)"})
    kinds: tuple[str, ...] = field(default=KINDS, metadata={"help": "what to restore, comma-separated: hidden,mlp,attn"})
    samples: int = field(default=10, metadata={"help": "noise samples per prompt (ROME: 10)"})
    noise: str = field(default="3s", metadata={"help": "noise scale: absolute, or Ks (K sigma, ROME's default 3s)"})
    seed: int = field(default=1, metadata={"help": "noise seed"})
    window: int | None = field(default=None, metadata={
        "help": "layers restored together for mlp/attn (default: ROME's 10 of 32 scaled to the model's depth, "
                "max(1, floor(10 * layers / 32 + 1/2)))"})
    speech_sigma: str = field(default="speech", metadata={
        "choices": ("speech", "text"), "help": "S->T noise sigma: over the subjects' speech tokens, or the text sigma"})
    row_mode: str = field(default="auto", metadata={
        "choices": ROW_MODES, "help": "S->T rows: auto (text-token groups, as spiritlens trace), positions, groups, mean"})
    mapping: str = field(default="exact", metadata={
        "choices": MAPPINGS, "help": "aligned seconds -> speech positions: exact unit frames or the paper's rounding"})
    tts: str = field(default="espeak", metadata={"help": "speech synthesis: espeak (offline default), flite, melotts"})
    asr: str = field(default="pocketsphinx", metadata={"help": "WER check: pocketsphinx, whisper, or none"})
    keep_all: bool = field(default=False, metadata={"help": "trace every prompt, not only correctly answered ones "
                                                            "(always so with --random-weights)"})
    accept: tuple[str, ...] = field(default=("exact",), metadata={"help": "judgements counted correct: exact,partial"})
    max_new_tokens: int = field(default=8, metadata={"help": "greedy tokens generated to judge an answer"})
    dtype: str = field(default="auto", metadata={"help": f"model dtype: {DTYPE_RULE}; or bfloat16, float32, float16"})
    device: str | None = field(default=None, metadata={"help": "torch device (default: cuda:$LOCAL_RANK if "
                                                                 "available, else cpu)"})
    max_batch_cells: int | None = field(default=None, metadata={
        "help": "restored cells per batch (default: by the suffix runner's memory budget)"})
    screen: str = field(default="none", metadata={
        "choices": SCREENS, "help": "none: trace every cell exactly; attribution / attribution_qk: estimate every "
                                    "cell by attribution patching (AtP / with the QK fix) and save that"})
    verify_top: int | None = field(default=None, metadata={
        "metavar": "K", "help": "with --screen: trace each prompt's top K screened cells per kind exactly and "
                                "report how many the exact trace confirms"})
    verify_rank: str = field(default="estimate", metadata={
        "choices": VERIFY_RANKS, "help": "which cells --verify-top takes: the largest estimated effects (estimate) "
                                         "or the largest GradDrop magnitudes (graddrop, one backward per layer)"})
    sample_figures: int = field(default=3, metadata={"help": "prompts per direction with heatmaps in the report"})
    backbone: Path | str | None = field(default=None, metadata={
        "help": "the text-only backbone SpiritLM was built from (a Hugging Face Llama-2 folder, meta-llama/"
                "Llama-2-7b-hf's layout), filtered and traced T->T as the paper's baseline row; 'none': no baseline "
                "(default: the toy's backbone when embedded, none with real checkpoints)"})
    crossmodal: bool = field(default=True, metadata={
        "help": "skip the cross-modal analyses (spiritlens crossmodal) of facts kept in both modalities"})
    expressive: bool = field(default=False, metadata={
        "help": f"SpiritLM Expressive (sets --variant {VARIANTS[1]}): also trace every S->T prompt with its "
                "subject's rows split into HuBERT, pitch and style tokens, under each prosody control"})
    noise_streams: tuple[str, ...] = field(default=STREAMS, metadata={
        "help": "with --expressive: the streams whose subject tokens are noised, comma-separated: hubert,pitch,style"})
    prosody_controls: tuple[str, ...] = field(default=("all",), metadata={
        "help": "with --expressive: the prosody controls traced, comma-separated, original required; all: "
                + ", ".join(CONTROLS)})
    control_kinds: tuple[str, ...] = field(default=("hidden",), metadata={
        "help": "with --expressive: the kinds traced under each prosody control other than the original (which "
                "is traced for every --kinds kind); every control's answer probabilities are measured regardless"})
    toy: Path | None = field(default=None, metadata={
        "help": "a toy SpiritLM tree (spiritlens make-toy DIR) for the embedded default"})
    random_weights: bool = field(default=False, metadata={
        "help": "embedded run on tiny random-weight checkpoints (plumbing check; keeps every prompt)"})
    embedded: bool = field(init=False, default=False, metadata={"cli": False})
    version: str = field(default=__version__, metadata={"cli": False})

    def __post_init__(self):
        self.out = Path(self.out)
        for key in _PATHS:
            if getattr(self, key) is not None and not (key == "aligner" and self.aligner == POCKETSPHINX) \
                    and not (key == "backbone" and self.backbone == NO_BACKBONE):
                setattr(self, key, Path(getattr(self, key)))
        # No checkpoints named anywhere: the embedded default (the toy, or tiny random weights).
        self.embedded = bool(self.random_weights or self.toy is not None or (
            self.checkpoints is None and self.model is None and not os.environ.get(CHECKPOINTS_ENV)))
        self.modalities = tuple(self.modalities)
        self.kinds = tuple(self.kinds)
        self.accept = tuple(self.accept)
        self.noise_streams = tuple(self.noise_streams)
        self.control_kinds = tuple(self.control_kinds)
        self.prosody_controls = CONTROLS if tuple(self.prosody_controls) == ("all",) else tuple(self.prosody_controls)
        if self.expressive and self.variant == VARIANTS[0]:  # the default: --expressive picks the variant
            self.variant = VARIANTS[1]
        check_settings(self)

    @property
    def keeps_all(self) -> bool:
        """Every prompt is traced: ``--keep-all``, or random weights (which answer nothing)."""
        return self.keep_all or self.random_weights

    @classmethod
    def from_dict(cls, data: dict) -> "ExperimentConfig":
        """The configuration a ``to_dict()`` (e.g. ``prepare.json``'s ``config``) recorded; unknown
        keys are ignored, so an older record still loads."""
        known = {f.name for f in fields(cls) if f.init}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("out", *_PATHS):
            data[key] = None if data[key] is None else str(data[key])
        return data


_PATHS = ("checkpoints", "model", "speech_tokenizer", "aligner", "known", "toy", "backbone")


def _int(config, name: str, flag: str, minimum: int, *, optional: bool = False) -> None:
    value = getattr(config, name)
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{flag} must be an integer >= {minimum}, got {value!r}")


def _subset(values: tuple, allowed: tuple, flag: str) -> None:
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise ValueError(f"{flag} must be a comma-separated list of {', '.join(allowed)}, got {','.join(values) or '(empty)'}"
                         + (f" (unknown: {', '.join(map(str, unknown))})" if unknown else ""))
    if len(set(values)) != len(values):
        raise ValueError(f"{flag} lists a value twice: {','.join(values)}")


def check_settings(config: ExperimentConfig) -> None:
    """Checks that need nothing but the values; ValueError naming the command-line flag."""
    from spiritlens.checkpoints.schema import check_samples
    from spiritlens.checkpoints.tree import check_dtype_name
    from spiritlens.data.asr import ASR_BACKENDS
    from spiritlens.data.judge import LABELS
    from spiritlens.data.tts.registry import BACKENDS
    from spiritlens.traces import parse_noise

    _subset(config.modalities, DIRECTIONS, "--modalities")
    _subset(config.kinds, KINDS, "--kinds")
    _subset(config.accept, LABELS, "--accept")
    _subset(config.noise_streams, STREAMS, "--noise-streams")
    _subset(config.prosody_controls, CONTROLS, "--prosody-controls (or all)")
    _subset(config.control_kinds, KINDS, "--control-kinds")
    if "original" not in config.prosody_controls:
        raise ValueError("--prosody-controls must include original (every control is measured against it)")
    if config.expressive and "s2t" not in config.modalities:
        raise ValueError("--expressive traces the spoken prompts: --modalities must include s2t")
    _int(config, "n_prompts", "--prompts", 1, optional=True)
    _int(config, "subset_seed", "--subset-seed", 0)
    _int(config, "samples", "--samples", 1)
    check_samples(config.samples, "--samples")
    _int(config, "seed", "--seed", 0)
    if config.seed >= 2**32:
        raise ValueError(f"--seed must be below 2**32 (numpy's RandomState), got {config.seed}")
    _int(config, "window", "--window", 1, optional=True)
    _int(config, "max_new_tokens", "--max-new-tokens", 1)
    _int(config, "max_batch_cells", "--max-batch-cells", 1, optional=True)
    _int(config, "verify_top", "--verify-top", 1, optional=True)
    if config.screen not in SCREENS:
        raise ValueError(f"--screen must be one of {', '.join(SCREENS)}, got {config.screen!r}")
    if config.verify_top is not None and config.screen == "none":
        raise ValueError("--verify-top checks a screen: give --screen attribution or attribution_qk")
    if config.verify_rank not in VERIFY_RANKS:
        raise ValueError(f"--verify-rank must be one of {', '.join(VERIFY_RANKS)}, got {config.verify_rank!r}")
    if config.verify_top is not None and config.row_mode == "mean":
        raise ValueError("--verify-top indexes the traced rows; --row-mode mean averages them afterwards "
                         "(use auto, positions or groups)")
    _int(config, "sample_figures", "--sample-figures", 0)
    if config.speech_sigma not in ("speech", "text"):
        raise ValueError(f"--speech-sigma must be 'speech' or 'text', got {config.speech_sigma!r}")
    if config.row_mode not in ROW_MODES:
        raise ValueError(f"--row-mode must be one of {', '.join(ROW_MODES)}, got {config.row_mode!r}")
    if config.mapping not in MAPPINGS:
        raise ValueError(f"--mapping must be one of {', '.join(MAPPINGS)}, got {config.mapping!r}")
    if config.asr not in (*ASR_BACKENDS, "none"):
        raise ValueError(f"--asr must be one of {', '.join((*ASR_BACKENDS, 'none'))}, got {config.asr!r}")
    if config.tts not in BACKENDS:
        raise ValueError(f"--tts must be one of {', '.join(BACKENDS)}, got {config.tts!r}")
    try:
        parse_noise(config.noise)
    except (ValueError, TypeError) as error:
        raise ValueError(f"--noise {config.noise!r}: {error}") from None
    try:
        check_dtype_name(config.dtype)  # "auto" is resolved on the model directory (checkpoints.tree.resolve_dtype)
    except (ValueError, TypeError) as error:
        raise ValueError(f"--dtype: {error}") from None
    if config.random_weights and config.toy is not None:
        raise ValueError("--random-weights and --toy exclude each other (random tiny checkpoints, or a trained toy)")
    if config.checkpoints is not None and (config.random_weights or config.toy is not None):
        flag = "--random-weights" if config.random_weights else "--toy"
        raise ValueError(f"{flag} replaces real checkpoints; do not combine it with --checkpoints")
    if config.model is not None:
        other = [flag for flag, given in (("--checkpoints", config.checkpoints is not None),
                                          ("--random-weights", config.random_weights), ("--toy", config.toy is not None),
                                          ("--variant", config.variant != VARIANTS[0])) if given]
        if other:
            raise ValueError(f"--model names the model folder itself; do not combine it with {other[0]}")
    elif config.speech_tokenizer is not None:
        raise ValueError("--speech-tokenizer goes with --model (a SpiritLM checkpoints tree keeps its own)")


def check_environment(config: ExperimentConfig) -> None:
    """Checks of what the settings name: folders and files exist, the TTS backend and device are
    usable. Run before any work (FileNotFoundError / ValueError naming the flag)."""
    from spiritlens.checkpoints.tree import check_device
    from spiritlens.models.spiritlm.tree import CHECKPOINTS_ENV, VARIANTS

    if config.out.exists() and not config.out.is_dir():
        raise NotADirectoryError(f"--out {str(config.out)!r} is an existing file, not a folder")
    if config.known is not None and not config.known.is_file():
        raise FileNotFoundError(f"--known {str(config.known)!r}: no such file (ROME's known_1000.json)")
    if config.aligner not in (None, POCKETSPHINX) and not config.aligner.is_dir():
        raise FileNotFoundError(f"--aligner {str(config.aligner)!r}: no such directory (a character CTC model "
                                f"directory, e.g. a local copy of facebook/hubert-large-ls960-ft, or {POCKETSPHINX!r})")
    if isinstance(config.backbone, Path):
        check_backbone_dir(config.backbone)
    if config.toy is not None:
        from spiritlens.synthetic.toy.cache import read_manifest

        try:
            read_manifest(config.toy)
            if config.backbone is None:  # the baseline row's default: the toy's own backbone
                from spiritlens.synthetic.toy.cache import backbone_dir

                backbone_dir(config.toy)
        except ValueError as error:
            raise ValueError(f"--toy: {error}" + (f" (or pass --backbone {NO_BACKBONE})" if "backbone" in str(error)
                                                  else "")) from None
    if config.embedded and not config.random_weights:
        built = VARIANTS if config.expressive else VARIANTS[:1]  # --expressive builds the toy's Expressive too
        if config.toy is None and config.variant not in built:
            raise ValueError(f"--variant {config.variant!r}: the embedded toy is {' or '.join(built)}; pass "
                             "--random-weights (tiny random checkpoints), --toy DIR (a toy tree with that variant) "
                             "or real checkpoints")
        if config.toy is not None and not variant_dir(config.toy, config.variant).is_dir():
            raise ValueError(f"--toy {str(config.toy)!r} has no {config.variant} model "
                             f"({variant_dir(config.toy, config.variant)})")
        from spiritlens.data.tts.espeak import EspeakTTS

        if config.toy is None and not EspeakTTS().available():
            from spiritlens.synthetic.toy.build import cached_toy

            if not cached_toy(known=config.known, expressive=config.expressive)[1]:
                raise ValueError("the embedded toy SpiritLM is trained on espeak-ng speech, which is not installed "
                                 "(apt-get install espeak-ng); or pass --toy DIR or --random-weights")
    if config.model is not None:
        for flag, folder in (("--model", config.model), ("--speech-tokenizer", config.speech_tokenizer)):
            if folder is not None and not folder.is_dir():
                raise FileNotFoundError(f"{flag} {str(folder)!r}: no such directory")
        if "s2t" in config.modalities and config.aligner is None:
            raise ValueError("--aligner is needed for S->T with --model: a character CTC model directory "
                             f"(the paper's path) or {POCKETSPHINX!r}")
    elif not config.embedded:
        root = config.checkpoints
        flag = "--checkpoints"
        if root is None:
            root, flag = Path(os.environ[CHECKPOINTS_ENV]), f"${CHECKPOINTS_ENV}"
        if not root.is_dir():
            raise FileNotFoundError(f"{flag} {str(root)!r}: no such directory")
        model_dir = variant_dir(root, config.variant)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"--variant {config.variant!r}: no model at {model_dir} ({flag} {str(root)!r})")
        if "s2t" in config.modalities and config.aligner is None:
            raise ValueError("--aligner is needed for S->T with real checkpoints: a character CTC model directory "
                             f"(the paper's path, e.g. a local copy of facebook/hubert-large-ls960-ft) or {POCKETSPHINX!r}")
    if "s2t" in config.modalities:
        from spiritlens.data.tts.registry import BACKENDS

        backend = BACKENDS[config.tts]()
        if not backend.available():
            needs = {"espeak": "the espeak-ng program (apt-get install espeak-ng)",
                     "flite": "libflite and its voices (apt-get install flite)",
                     "melotts": "the 'melo' Python package (MeloTTS, not installable offline)"}
            raise ValueError(f"--tts {config.tts}: not available here; it needs {needs.get(config.tts, 'its backend')}")
    try:
        check_device(config.device)
    except ValueError as error:
        raise ValueError(f"--device {error}") from None


def check_backbone_dir(path: Path, flag: str = "--backbone") -> None:
    """A ``--backbone`` folder is a text-only Llama checkpoint: config, weights and tokenizer present, and
    the model family :mod:`spiritlens.models.llama` (a SpiritLM folder is refused). FileNotFoundError /
    ValueError naming the flag; the weights are checked against the config when it is loaded."""
    from spiritlens.checkpoints.tree import check_model_dir
    from spiritlens.checkpoints.validate import read_config
    from spiritlens.models import detect_family
    from spiritlens.tokens.llama import SlowLlamaTokenizer

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{flag} {str(path)!r}: no such directory (a Hugging Face Llama-2 folder, "
                                f"meta-llama/Llama-2-7b-hf's layout, or {NO_BACKBONE!r})")
    try:
        check_model_dir(path)
        family = detect_family(path, read_config(path),
                               SlowLlamaTokenizer.from_pretrained(path, add_bos_token=True, add_eos_token=False))
    except (OSError, ValueError) as error:
        raise ValueError(f"{flag}: {error}") from None
    if family.name != "llama":
        raise ValueError(f"{flag} {str(path)!r} is a {family.label} checkpoint, not the text-only Llama-2 backbone")
