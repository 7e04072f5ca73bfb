"""Chapter 02 (DeiT III): the DeiT and DeiT III recipes on one small ViT, and DeiT III with one ingredient swapped.

Every variant trains the same model on the same images for the same number of epochs, over several seeds. The
recipes run twice: at the paper's regularisation strength and at ``Config.strength`` (``Recipe.scaled``'s rule, see
``vitedu.train.recipes.at_strength``); the one-ingredient ablations use the scaled strength. Learning rates are
``recipe_study.SMALL_SCALE_LR``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..budget import Budget
from ..train import TrainConfig
from .recipe_study import StudyData, plain_config, recipe_at, run_reference


@dataclass(frozen=True)
class Config:
    model: str
    data: StudyData
    epochs: int
    seeds: tuple[int, ...]  # of the reference run (``vitedu reproduce``)
    live_seeds: tuple[int, ...] = (0,)  # of the chapter's own run, so that it fits the budget's time
    batch_size: int = 64
    strength: float = 0.25  # the regularisation of the scaled variants (1: the paper's)
    num_workers: int = 1  # augmentation runs in a worker process beside training
    eval_every: int = 5


CONFIGS = {
    "smoke": Config("vit_pico_patch4_28", StudyData("fashion", 256, 256, 28), epochs=1, seeds=(0,), num_workers=0,
                    eval_every=1),
    "cpu": Config("vit_pico_patch4_28", StudyData("fashion", 1000, 2000, 28), epochs=15, seeds=(0, 1, 2)),
    "gpu": Config("vit_pico_patch4_28", StudyData("fashion", 2000, 10000, 28), epochs=20, seeds=(0, 1, 2),
                  num_workers=2),
}


def config(budget: Budget) -> Config:
    return budget.select(CONFIGS)


def variants(cfg: Config, budget: Budget) -> dict[str, TrainConfig]:
    """Variant name -> TrainConfig: plain training (no recipe, ``recipe_study.plain_config``), both recipes at the
    paper's strength, both at ``cfg.strength``, then DeiT III at
    ``cfg.strength`` with one ingredient swapped: DeiT's RandAugment for 3-Augment, cross-entropy for BCE, no
    LayerScale, the simple random crop for the random resized crop (which DeiT III shares with DeiT on
    ImageNet-1k), and no Mixup/CutMix."""
    def recipe(name: str, strength: float, **changes) -> TrainConfig:
        return recipe_at(name, budget, cfg.data.train_images, cfg.batch_size, cfg.epochs, strength, **changes)

    light = cfg.strength
    return {
        "plain": plain_config(cfg.epochs, cfg.batch_size),
        "DeiT, paper strength": recipe("deit", 1.0),
        "DeiT III, paper strength": recipe("deit3", 1.0),
        "DeiT": recipe("deit", light),
        "DeiT III": recipe("deit3", light),
        "DeiT III, RandAugment": recipe("deit3", light, augment="randaugment"),  # DeiT's RandAugment, same strength
        "DeiT III, CE": recipe("deit3", light, loss="ce"),
        "DeiT III, no LayerScale": recipe("deit3", light, layer_scale=None),
        "DeiT III, simple crop": recipe("deit3", light, crop="src"),
        "DeiT III, no Mixup/CutMix": recipe("deit3", light, mixup_alpha=0.0, cutmix_alpha=0.0),
    }


def run(budget: Budget, device="cpu") -> dict:
    """The chapter's study, as stored in the ledger: per-variant summaries (final model and EMA) and every run."""
    cfg = config(budget)
    return run_reference(cfg, variants(cfg, budget), device)
