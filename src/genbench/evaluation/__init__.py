"""The evaluation stage: the same measurements for every family, through the shared interface only."""

from genbench.evaluation.stage import EvalConfig, Evaluation, evaluate

__all__ = ["EvalConfig", "Evaluation", "evaluate"]
