"""Training: one loop for every chapter."""

from .engine import History, evaluate, fit, param_groups, warmup_cosine

__all__ = ["History", "evaluate", "fit", "param_groups", "warmup_cosine"]
