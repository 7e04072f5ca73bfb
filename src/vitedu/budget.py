"""One knob, ``VITEDU_BUDGET``, sets the size of every experiment in the book.

- ``smoke``: CI. Every code path on tiny data, each chapter under two minutes on two cores.
- ``cpu``: the default without a GPU. A chapter's small-scale reproduction, about 15 minutes on two cores.
- ``gpu``: the default when CUDA is present (Colab). Larger models, images and epochs.
- ``full``: the paper's recipe at ImageNet scale, from the command line only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, TypeVar

import torch

BUDGETS = ("smoke", "cpu", "gpu", "full")
ENV_VAR = "VITEDU_BUDGET"

T = TypeVar("T")


@dataclass(frozen=True)
class Budget:
    name: str

    def __post_init__(self):
        if self.name not in BUDGETS:
            raise ValueError(
                f"unknown budget {self.name!r}: valid budgets are {', '.join(BUDGETS)}. "
                f"Set {ENV_VAR} to one of them (for example `export {ENV_VAR}=cpu`) or unset it."
            )

    def select(self, table: Mapping[str, T]) -> T:
        """Pick this budget's entry of ``table`` (a mapping from budget name to sizes)."""
        if self.name not in table:
            raise ValueError(
                f"this experiment has no {self.name!r} budget; it defines {', '.join(table)}. "
                f"Run it with {ENV_VAR} set to one of those."
            )
        return table[self.name]

    def __str__(self) -> str:
        return self.name


def default_budget_name() -> str:
    return "gpu" if torch.cuda.is_available() else "cpu"


def budget(name: str | None = None) -> Budget:
    """The current budget: ``name`` if given, else ``$VITEDU_BUDGET``, else ``gpu`` with CUDA and ``cpu`` without."""
    if name is None:
        name = os.environ.get(ENV_VAR, "").strip().lower() or default_budget_name()
    return Budget(name)
