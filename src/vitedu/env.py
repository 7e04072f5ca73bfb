"""``vitedu.setup()``: the first call of every chapter."""

from __future__ import annotations

import os
import platform
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch

from .budget import Budget, budget

# Colours that read on white and on dark pages (figures get a solid white face, so both themes show them as cards).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def in_colab() -> bool:
    return "google.colab" in sys.modules


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_figure_style() -> None:
    import matplotlib as mpl

    mpl.rcParams.update({
        "figure.facecolor": "white",
        "savefig.facecolor": "white",
        "axes.facecolor": "white",
        "axes.edgecolor": "#444444",
        "axes.labelcolor": "#222222",
        "text.color": "#222222",
        "xtick.color": "#444444",
        "ytick.color": "#444444",
        "axes.grid": True,
        "grid.color": "#dddddd",
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": mpl.cycler(color=PALETTE),
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "font.size": 10,
        "image.cmap": "viridis",
    })


@dataclass(frozen=True)
class Session:
    """What ``setup`` chose; chapters pass ``session.device`` and ``session.budget`` on."""

    seed: int
    device: torch.device
    budget: Budget


def setup(seed: int = 0, quiet: bool = False) -> Session:
    """Seed everything, pick the device, set the figure style and say what this run will do."""
    seed_everything(seed)
    set_figure_style()
    # Two threads on a two-core laptop; more only oversubscribes.
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    session = Session(seed=seed, device=pick_device(), budget=budget())
    if not quiet:
        from . import __version__

        print(f"vitedu {__version__} | torch {torch.__version__} | python {platform.python_version()}")
        print(f"budget: {session.budget} | device: {session.device} | threads: {torch.get_num_threads()} | seed: {seed}")
        if session.device.type == "cpu" and session.budget.name in ("gpu", "full"):
            print(f"note: the {session.budget} budget on a CPU will be slow; a GPU (Colab: Runtime > Change runtime type) helps.")
        elif session.device.type == "cpu":
            print("note: running on the CPU; with a GPU the default budget becomes 'gpu' (larger models, more epochs).")
    return session
