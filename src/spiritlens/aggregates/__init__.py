"""Stage 6: effects over prompts: the six token categories, AIE per layer, CIs, aie.json."""

from spiritlens.aggregates.aie import (
    CATEGORIES,
    CATEGORY_LABELS,
    KINDS,
    MODALITIES,
    MODALITY_LABELS,
    KindAggregate,
    aggregate,
    aggregate_all,
    aggregate_by_modality,
    categorize,
    check_result,
    load_results,
    parse_result,
    to_aie_json,
)

__all__ = [
    "CATEGORIES",
    "CATEGORY_LABELS",
    "KINDS",
    "MODALITIES",
    "MODALITY_LABELS",
    "KindAggregate",
    "aggregate",
    "aggregate_all",
    "aggregate_by_modality",
    "categorize",
    "check_result",
    "load_results", "parse_result",
    "to_aie_json",
]
