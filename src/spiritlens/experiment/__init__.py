"""The Known experiment: data, speech, filtering, sharded resumable tracing, report."""

from .config import ExperimentConfig
from .runner import Experiment, run_experiment

__all__ = ["Experiment", "ExperimentConfig", "run_experiment"]
