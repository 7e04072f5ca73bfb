"""Chapter 01 (ResNet strikes back): the old torchvision recipe and procedures A1, A2, A3 on one small ResNet.

The schedules keep the paper's proportions (torchvision 90, A3 100, A2 300, A1 600 epochs become
``epochs_per_100 * paper_epochs / 100``), so the longer procedures also cost more here, as on ImageNet. The
procedures run at the paper's regularisation strength, plus A1 at ``Config.strength`` (``Recipe.scaled``'s rule) and
A2 with cross-entropy instead of BCE. Learning rates are ``recipe_study.SMALL_SCALE_LR``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..budget import Budget
from ..data.loader import TensorLoader
from ..train import TrainConfig, evaluate, get_recipe
from .recipe_study import StudyData, prepare, recipe_at, run_reference, train_variant

PROCEDURES = {"torchvision": "torchvision_legacy", "A3": "rsb_a3", "A2": "rsb_a2", "A1": "rsb_a1"}


@dataclass(frozen=True)
class Config:
    model: str
    data: StudyData
    epochs_per_100: float  # the small-scale epochs for 100 of the paper's ImageNet epochs
    seeds: tuple[int, ...]  # of the reference run (``vitedu reproduce``)
    live_seeds: tuple[int, ...] = (0,)  # of the chapter's own run, so that it fits the budget's time
    batch_size: int = 64
    strength: float = 0.25  # the regularisation of "A1, scaled strength" (1: the paper's)
    num_workers: int = 1
    eval_every: int = 3

    def epochs(self, recipe_name: str) -> int:
        return max(1, round(self.epochs_per_100 * get_recipe(recipe_name).imagenet.epochs / 100))


CONFIGS = {
    "smoke": Config("resnet_pico_28", StudyData("fashion", 256, 256, 28), epochs_per_100=0.2, seeds=(0,),
                    num_workers=0, eval_every=1),
    "cpu": Config("resnet_pico_28", StudyData("fashion", 1000, 2000, 28), epochs_per_100=5, seeds=(0, 1, 2)),
    "gpu": Config("resnet_pico_28", StudyData("fashion", 2000, 10000, 28), epochs_per_100=8, seeds=(0, 1, 2),
                  num_workers=2),
}


def config(budget: Budget) -> Config:
    return budget.select(CONFIGS)


def variants(cfg: Config, budget: Budget) -> dict[str, TrainConfig]:
    """Variant name -> TrainConfig: the four procedures as the paper has them, A1 at ``cfg.strength``, A2 with CE."""
    def recipe(name: str, strength: float = 1.0, **changes) -> TrainConfig:
        return recipe_at(name, budget, cfg.data.train_images, cfg.batch_size, cfg.epochs(name), strength, **changes)

    chosen = {short: recipe(name) for short, name in PROCEDURES.items()}
    chosen["A1, scaled strength"] = recipe("rsb_a1", cfg.strength)
    chosen["A2, CE"] = recipe("rsb_a2", loss="ce", bce_target_threshold=None)
    return chosen


def train_low_test_high(cfg: Config, budget: Budget, train_size: int = 20, test_sizes=(16, 20, 24, 28), seed: int = 0,
                        device="cpu") -> dict:
    """A3's resolution trick at small scale: train A3 at ``train_size`` px (160/224 of 28 is 20), then test the same
    model on the test images resized to each of ``test_sizes`` (bicubic). Returns the run and {size: accuracy}.

    The random resized crop zooms in during training, so objects look larger than in a centre view of the same
    size; testing at a higher resolution makes them look as large again (Touvron et al. 2019, FixRes)."""
    prepared = prepare(cfg.data)
    config = recipe_at("rsb_a3", budget, cfg.data.train_images, cfg.batch_size, cfg.epochs("rsb_a3"))
    run = train_variant(cfg.model, config, prepared, seed=seed, name=f"A3 at {train_size} px", device=device,
                        num_workers=cfg.num_workers, eval_every=config.epochs, image_size=train_size)
    accuracy = {}
    for size in test_sizes:
        images = F.interpolate(prepared.test_images, size=(size, size), mode="bicubic", antialias=True,
                               align_corners=False)
        with torch.no_grad():
            accuracy[size] = evaluate(run["model"], TensorLoader(images, prepared.test_labels, 500), device)["acc"]
    return {"run": run, "accuracy": accuracy}


def run(budget: Budget, device="cpu") -> dict:
    """The chapter's study, as stored in the ledger: per-variant summaries, every run, and each procedure's epochs."""
    cfg = config(budget)
    record = run_reference(cfg, variants(cfg, budget), device)
    return {**record, "epochs": {short: cfg.epochs(name) for short, name in PROCEDURES.items()}}
