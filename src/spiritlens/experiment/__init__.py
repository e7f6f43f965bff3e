"""The Known experiment: data, speech, filtering, sharded resumable tracing, report."""

from spiritlens.experiment.config import ExperimentConfig
from spiritlens.experiment.runner import Experiment, run_experiment

__all__ = ["Experiment", "ExperimentConfig", "run_experiment"]
