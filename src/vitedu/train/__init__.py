"""Training: one loop for every chapter and for ``vitedu train``; the papers' recipes as data."""

from .config import TrainConfig
from .engine import (
    EMA,
    History,
    Objective,
    evaluate,
    fit,
    learning_rate,
    make_optimizer,
    param_groups,
    set_trainable,
)
from .recipes import Recipe, get_recipe, list_recipes, load_run_config

__all__ = ["EMA", "History", "Objective", "Recipe", "TrainConfig", "evaluate", "fit", "get_recipe", "learning_rate",
           "list_recipes", "load_run_config", "make_optimizer", "param_groups", "set_trainable"]
