"""Settings of one Known experiment run, shared by the Python API and ``spiritlens experiment``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import __version__

MODALITIES = ("t2t", "s2t")
MODALITY_OF = {"t2t": "text", "s2t": "speech"}


@dataclass
class ExperimentConfig:
    """One run of the paper's pipeline.

    ``checkpoints``: a ``$SPIRITLM_CHECKPOINTS_DIR`` tree; None (and the variable unset) runs the
    embedded default: tiny random checkpoints built under ``out``, pocketsphinx's real US-English
    model as the aligner, a few Known prompts, every prompt kept (random weights answer nothing
    correctly). ``aligner``: a character CTC model directory (the paper's path, the default whenever
    one is given) or ``"pocketsphinx"``.
    """

    out: Path
    checkpoints: Path | None = None
    variant: str = "spirit-lm-base-7b"
    aligner: Path | str | None = None
    known: Path | None = None
    n_prompts: int | None = None
    subset_seed: int = 0
    modalities: tuple[str, ...] = MODALITIES
    kinds: tuple[str, ...] = ("hidden", "mlp", "attn")
    samples: int = 10
    noise: str = "3s"
    seed: int = 1
    window: int = 10
    speech_sigma: str = "speech"  # S->T noise sigma: over speech subject tokens ("speech") or the text sigma
    row_mode: str = "auto"  # S->T rows: "auto" = text-token groups (as trace's default), or positions/groups/mean
    mapping: str = "exact"
    tts: str = "espeak"
    asr: str = "pocketsphinx"
    keep_all: bool = False
    accept: tuple[str, ...] = ("exact",)
    max_new_tokens: int = 8
    dtype: str = "float32"
    device: str | None = None
    max_batch_cells: int | None = None
    sample_figures: int = 3
    embedded: bool = False
    version: str = field(default=__version__)

    def __post_init__(self):
        self.out = Path(self.out)
        self.modalities = tuple(self.modalities)
        self.kinds = tuple(self.kinds)
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown or not self.modalities:
            raise ValueError(f"modalities must be among {', '.join(MODALITIES)}, got {list(self.modalities)}")
        if self.speech_sigma not in ("speech", "text"):
            raise ValueError(f"speech_sigma must be 'speech' or 'text', got {self.speech_sigma!r}")
        if self.n_prompts is not None and self.n_prompts < 1:
            raise ValueError(f"n_prompts must be >= 1, got {self.n_prompts}")

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("out", "checkpoints", "aligner", "known"):
            data[key] = None if data[key] is None else str(data[key])
        return data
