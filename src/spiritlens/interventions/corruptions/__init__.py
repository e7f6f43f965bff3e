"""Corruptions of the run's input, one module each, registered by name.

A new corruption is one module with a :class:`~spiritlens.interventions.corruptions.base.Corruption`
subclass plus one line here."""

from spiritlens.interventions.corruptions.base import Corruption
from spiritlens.interventions.corruptions.mean import MeanEmbedding
from spiritlens.interventions.corruptions.noise import EmbeddingNoise
from spiritlens.interventions.corruptions.substitution import TokenSubstitution

CORRUPTIONS: dict[str, type[Corruption]] = {
    EmbeddingNoise.name: EmbeddingNoise,
    TokenSubstitution.name: TokenSubstitution,
    MeanEmbedding.name: MeanEmbedding,
}

__all__ = ["CORRUPTIONS", "Corruption", "EmbeddingNoise", "MeanEmbedding", "TokenSubstitution"]
