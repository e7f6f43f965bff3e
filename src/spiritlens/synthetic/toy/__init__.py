"""The toy SpiritLM: a small Llama in SpiritLM's layout that spiritlens trains on Known facts, written and spoken, so that causal tracing has a mechanism to find; continued, as SpiritLM was from Llama-2, from a text-only toy backbone (build, backbone, cache, evaluation)."""

from spiritlens.synthetic.toy.config import (
    TOY_FORMAT,
    VARIANT,
    TARGETS,
    BACKBONE_TARGETS,
    ToyConfig,
    ToyFact,
    Distractor,
    select_facts,
)
from spiritlens.synthetic.toy.cache import (
    MANIFEST,
    REPORT,
    CACHE_ENV,
    PROMPT_PATH_MODULES,
    prompt_path_digest,
    toy_inputs,
    inputs_hash,
    default_cache_dir,
    read_manifest,
    toy_facts,
    model_dir,
    backbone_dir,
)
from spiritlens.synthetic.toy.build import make_toy, cached_toy, toy_checkpoints
from spiritlens.synthetic.toy.backbone import extend_vocabulary
from spiritlens.synthetic.toy.evaluation import evaluate_backbone, evaluate_toy

__all__ = [
    "TOY_FORMAT",
    "VARIANT",
    "TARGETS",
    "BACKBONE_TARGETS",
    "ToyConfig",
    "ToyFact",
    "Distractor",
    "select_facts",
    "MANIFEST",
    "REPORT",
    "CACHE_ENV",
    "PROMPT_PATH_MODULES",
    "prompt_path_digest",
    "toy_inputs",
    "inputs_hash",
    "default_cache_dir",
    "read_manifest",
    "toy_facts",
    "model_dir",
    "backbone_dir",
    "make_toy",
    "cached_toy",
    "toy_checkpoints",
    "evaluate_toy",
    "evaluate_backbone",
    "extend_vocabulary",
]
