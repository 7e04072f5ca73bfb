"""The papers' training recipes as data, and the one rule that shrinks a recipe to a budget.

A :class:`Recipe` holds a paper's ImageNet run in a :class:`TrainConfig` (``recipe.imagenet``), where each value
comes from (``recipe.sources``, with the tags of ``notes/deit-family.md``: ``[code]`` read in the official code or
config, ``[README]`` the official commands, ``[csv]`` timm's results table, ``[issue #N]`` a maintainer's answer,
``[mem]`` from memory of the paper, *not checked against the PDF*) and where vitedu departs from the paper or its
code (``recipe.notes``). ``recipe.scaled(budget, train_images)`` is the same recipe as it runs at a budget on a small
data set; the rule is written out in :meth:`Recipe.scaled`.

The run configs in ``configs/*.toml`` (the papers' main runs, model by model) are read by :func:`load_run_config`.

>>> get_recipe("deit3").imagenet.lr
0.004
>>> get_recipe("deit3").scaled("cpu", train_images=50_000).lr  # LAMB: square-root scaling, 4e-3 * sqrt(128/2048)
0.001
"""

from __future__ import annotations

import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from ..budget import Budget
from ..paths import repo_root
from ..ssl.settings import DINOSettings
from .config import TrainConfig

IMAGENET_1K_IMAGES = 1_281_167  # ILSVRC-2012 train split
IMAGENET_21K_IMAGES = 14_197_122  # fall 2011 release, 21,841 classes [mem]

# Defaults of ``Recipe.scaled`` per budget; "full" is the paper's own batch and epochs.
BUDGET_BATCH_SIZE = {"smoke": 32, "cpu": 128, "gpu": 256}
BUDGET_EPOCHS = {"smoke": 1, "cpu": 10, "gpu": 30}
MIN_EMA_DECAY = 1e-4  # floor for very short runs (smoke), where the rescaled decay underflows: the EMA is the model

SOURCE_TAGS = ("[code", "[README", "[csv", "[issue", "[calc", "[mem")

# Settings every recipe states (with a source), whether or not they equal TrainConfig's defaults: the ingredients.
STATED = ("epochs", "batch_size", "lr", "min_lr", "warmup_epochs", "warmup_lr", "optimizer", "weight_decay", "loss",
          "label_smoothing", "crop", "augment", "color_jitter", "random_erasing", "repeated_aug", "eval_crop_ratio",
          "mixup_alpha", "cutmix_alpha", "drop_path", "drop_path_schedule", "ema_decay", "grad_clip", "amp",
          "distillation")


@dataclass(frozen=True)
class Recipe:
    """A paper's training recipe: its ImageNet settings, where each comes from, and how vitedu departs from it.

    ``imagenet``: the paper's run as a TrainConfig (``lr`` for the global batch ``batch_size``). ``sources``: setting
    name -> where the value comes from (a tag of notes/deit-family.md, then details). ``notes``: deviations and
    caveats. ``train_images``: the size of the paper's training set (for the EMA rescaling of :meth:`scaled`).
    """

    name: str
    paper: str  # arXiv id and title
    description: str  # one line
    imagenet: TrainConfig
    sources: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    train_images: int = IMAGENET_1K_IMAGES

    def scaled(self, budget: Budget | str, train_images: int, batch_size: int | None = None,
               epochs: int | None = None, strength: float = 1.0, lr: float | None = None) -> TrainConfig:
        """The recipe as it runs at ``budget`` on a training set of ``train_images`` images; returns a TrainConfig.

        At budget ``"full"`` (with no ``batch_size`` or ``epochs`` given) this is ``self.imagenet``, unchanged.
        Otherwise one rule, the same for every recipe:

        1. Every kind of ingredient stays, at the paper's strength: optimizer, weight decay, loss and smoothing, crop,
           augmentations, Mixup/CutMix, repeated augmentation (cheap, so kept; with 3 repeats an epoch sees about a
           third of the images, three times each, a strong regulariser on a small data set), drop path, LayerScale,
           clipping, precision, distillation, evaluation crop. These are what makes the recipe that recipe.
        2. ``batch_size``: the argument, else the budget's (smoke 32, cpu 128, gpu 256; full: the paper's).
        3. ``lr`` follows the batch, from the paper's global batch B to b: linear, ``lr * b / B``, for SGD and AdamW
           (the rule of the DeiT harness and of Goyal et al. 2017); square root, ``lr * sqrt(b / B)``, for LAMB, whose
           per-layer trust ratio makes it far less sensitive to the batch size (You et al. 2019, arXiv 1904.00962,
           scale LAMB's lr with the square root). ``min_lr`` and ``warmup_lr`` scale by the same factor, so the
           schedule keeps its shape.
        4. ``epochs``: the argument, else the budget's (smoke 1, cpu 10, gpu 30; full: the paper's) over the small data
           set, the same for every recipe so that recipes compare at equal cost. The papers' own schedule lengths (RSB
           A1 600 vs A3 100 epochs) are *not* kept; to keep them pass e.g. ``epochs=round(10 * r.imagenet.epochs /
           300)``.
        5. ``warmup_epochs``: the same fraction of training as in the paper (DeiT: 5/300 of the epochs).
        6. ``ema_decay``: ``decay ** (paper_steps / steps)``, so the EMA's horizon keeps the same fraction of training
           (exactly: the weight the average gives to the last x% of the steps is unchanged). Steps count an epoch as
           ``train_images`` samples, repeated augmentation included (it keeps the epoch length, as DeiT's RASampler
           and ``vitedu.data.loader`` do). Floored at ``MIN_EMA_DECAY`` for runs of a few steps.
        7. DINO (``extra["dino"]``): the teacher-temperature warm-up keeps its share of training and the last layer
           stays frozen for at most ``epochs - 1`` epochs (``vitedu.ssl.settings.DINOSettings.scaled``); the
           teacher's momentum is the ``ema_decay`` of rule 6.

        Two arguments depart from this rule on purpose, for small-scale studies:

        - ``strength`` (default 1, the paper's) scales the regularisation, as :func:`at_strength` writes out:
          the augmentations of an ImageNet recipe were set for 224-px images over 100-800 epochs of 1.3M images, and
          on a few thousand 28-px images they can destroy more than they teach (an 8% crop of a 28-px image is a
          few pixels). The *kinds* of ingredient stay; only their amounts shrink.
        - ``lr``: this peak lr instead of the batch rule (``min_lr`` and ``warmup_lr`` keep their ratio to it). The
          batch rules, applied from batch 1024-2048 down to 64, give learning rates far below what small models on
          small data train well with, so a comparison at those rates compares learning rates, not recipes.

        ``config.extra`` records the recipe, budget, data-set size, strength and the lr rule used.
        """
        budget = budget if isinstance(budget, Budget) else Budget(budget)
        paper = self.imagenet
        if budget.name == "full" and batch_size is None and epochs is None and strength == 1 and lr is None:
            return paper
        _check_positive_int(train_images=train_images, batch_size=batch_size, epochs=epochs)
        if lr is not None and not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}.")
        if budget.name == "full":
            batch_size = batch_size or paper.batch_size
            epochs = epochs or paper.epochs
        else:
            batch_size = batch_size or BUDGET_BATCH_SIZE[budget.name]
            epochs = epochs or BUDGET_EPOCHS[budget.name]

        lr_factor = lr / paper.lr if lr is not None else lr_scale(paper.optimizer, batch_size, paper.batch_size)
        changes: dict[str, Any] = {
            "batch_size": batch_size, "epochs": epochs, "lr": paper.lr * lr_factor, "min_lr": paper.min_lr * lr_factor,
            "warmup_lr": paper.warmup_lr * lr_factor, "warmup_epochs": paper.warmup_epochs * epochs / paper.epochs,
        }
        if paper.ema_decay is not None:
            paper_steps = paper.epochs * math.ceil(self.train_images / paper.batch_size)
            steps = epochs * math.ceil(train_images / batch_size)
            changes["ema_decay"] = min(max(paper.ema_decay ** (paper_steps / steps), MIN_EMA_DECAY), 1 - 1e-12)
        lr_rule = "given" if lr is not None else "sqrt" if paper.optimizer == "lamb" else "linear"
        changes["extra"] = {**paper.extra, "budget": budget.name, "train_images": train_images, "lr_rule": lr_rule,
                            "strength": strength}
        if "dino" in paper.extra:
            dino = DINOSettings.from_dict(paper.extra["dino"]).scaled(epochs, paper.epochs)
            changes["extra"]["dino"] = dino.to_dict()
        return at_strength(paper.replace(**changes), strength)

    def summary(self) -> str:
        """A few lines for a notebook: name, paper, description, the ImageNet settings and the notes."""
        c = self.imagenet
        settings = (f"  {c.optimizer} lr {c.lr:g} (batch {c.batch_size}), wd {c.weight_decay:g}, {c.epochs} epochs, "
                    f"{c.loss} (smoothing {c.label_smoothing:g}), {c.augment}, mixup {c.mixup_alpha:g} / cutmix "
                    f"{c.cutmix_alpha:g}, drop path {c.drop_path:g}")
        lines = [f"{self.name}: {self.description}", f"  paper: {self.paper}", settings]
        return "\n".join(lines + [f"  - {note}" for note in self.notes])


def at_strength(config: TrainConfig, strength: float) -> TrainConfig:
    """``config`` with its regularisation scaled by ``strength`` in [0, 1]; returns a TrainConfig.

    1 is ``config`` itself; 0 keeps only the structure of the recipe (which optimizer, loss, augmentation kinds,
    LayerScale) with every amount at zero. In between, each amount moves linearly towards "none":

    - Mixup and CutMix alpha, random-erasing probability, colour jitter and stochastic depth: times ``strength``;
    - RandAugment magnitude: times ``strength``, rounded (``rand-m9-...`` at 0.25 is ``rand-m2-...``);
    - random resized crop: the smallest area ``1 - (1 - low) * strength`` (0.08 at 0.25 becomes 0.77);
    - 3-Augment's blur radius: both ends times ``strength``;
    - repeated augmentation: ``1 + (repeats - 1) * strength``, rounded half up (3 at 0.25 becomes 2).

    Not scaled: the optimizer, weight decay, loss and label smoothing, LayerScale, EMA, clipping and schedule.
    """
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must lie in [0, 1] (1: the paper's regularisation, 0: none), got {strength}.")
    if strength == 1:
        return config
    magnitude = re.search(r"-m(\d+)", config.rand_augment)
    rand_augment = config.rand_augment
    if magnitude:
        rand_augment = rand_augment.replace(magnitude.group(0), f"-m{round(int(magnitude.group(1)) * strength)}", 1)
    low_area = config.crop_scale[0]
    return config.replace(
        mixup_alpha=config.mixup_alpha * strength, cutmix_alpha=config.cutmix_alpha * strength,
        random_erasing=config.random_erasing * strength, color_jitter=config.color_jitter * strength,
        drop_path=config.drop_path * strength, rand_augment=rand_augment,
        crop_scale=(1 - (1 - low_area) * strength, config.crop_scale[1]),
        blur_radius=(config.blur_radius[0] * strength, config.blur_radius[1] * strength),
        repeated_aug=1 + math.floor((config.repeated_aug - 1) * strength + 0.5))


def lr_scale(optimizer: str, batch_size: int, reference_batch_size: int) -> float:
    """The factor on the lr when the batch goes from ``reference_batch_size`` to ``batch_size``: square root for LAMB,
    linear otherwise (see :meth:`Recipe.scaled`)."""
    ratio = batch_size / reference_batch_size
    return math.sqrt(ratio) if optimizer == "lamb" else ratio


def _check_positive_int(**values: int | None) -> None:
    for name, value in values.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


# --------------------------------------------------------------------------------------------------------------------
# The recipes. Each value is written beside its source; a derived recipe (distill, finetune_attention) changes a few.

def _recipe(name: str, paper: str, description: str, notes: tuple[str, ...] = (), base: Recipe | None = None,
            train_images: int | None = None, extra: dict | None = None, **values: tuple[Any, str]) -> Recipe:
    """A recipe from ``setting=(value, source)`` pairs: a new one states every setting of STATED, a derived one
    (``base``) changes a few."""
    settings = {key: value for key, (value, _) in values.items()}
    sources = {key: source for key, (_, source) in values.items()}
    if base is None:
        missing = [key for key in STATED if key not in settings]
        if missing:
            raise ValueError(f"recipe {name!r} must state {', '.join(missing)} (with a source).")
        config = TrainConfig().replace(**settings)
    else:
        config = base.imagenet.replace(**settings)
        sources = {**base.sources, **sources}
        notes = base.notes + notes
        train_images = train_images or base.train_images
    extra = {**(base.imagenet.extra if base else {}), **(extra or {}), "recipe": name, "paper": paper.split()[0]}
    return Recipe(name, paper, description, config.replace(extra=extra), sources, notes,
                  train_images or IMAGENET_1K_IMAGES)


_HARNESS = "[code] deit main.py default (notes §0.2, §6.2)"
_TIMM_NO_CJ = ("color_jitter is 0 although the harness default is 0.4: timm's create_transform drops colour jitter "
               "when RandAugment is on, so the official runs had none, while vitedu's train_transform applies "
               "color_jitter whenever it is > 0.")
_RASAMPLER = ("Repeated augmentation: the official DeiT harness uses its RASampler only when distributed (since "
              "commit e2c7443); a single-process run of the official code silently samples plainly.")
_EMA_SAVED = "EMA: the official harness keeps an EMA copy but evaluates (and reports) the raw model."

_DEIT = _recipe(
    "deit", "2012.12877 Training data-efficient image transformers & distillation through attention",
    "DeiT: AdamW, CE + smoothing, RandAugment, random erasing, Mixup/CutMix, repeated aug, drop path, 300 epochs",
    notes=("lr is the global-batch value: --lr 5e-4 scaled by the harness to 5e-4 x 1024 / 512 = 1e-3.",
           _TIMM_NO_CJ, _RASAMPLER, _EMA_SAVED,
           "Drop path ramps linearly over depth: DeiT used timm's ViT."),
    epochs=(300, "[mem] DeiT Table 9; harness default"),
    batch_size=(1024, "[mem] DeiT Table 9"),
    lr=(1e-3, "[code] harness lr * batch / 512 with --lr 5e-4 (notes §0.2); [mem] 5e-4 x batch/512, Table 9"),
    min_lr=(1e-5, _HARNESS), warmup_epochs=(5, _HARNESS), warmup_lr=(1e-6, _HARNESS),
    optimizer=("adamw", "[mem] DeiT Table 9"), weight_decay=(0.05, "[mem] DeiT Table 9"),
    loss=("ce", "[code] soft-target CE with Mixup (notes §0.2)"),
    label_smoothing=(0.1, "[code] harness default (notes §3.2)"),
    crop=("rrc", "[code] timm create_transform, scale (0.08, 1)"),
    augment=("randaugment", "[code] harness default (notes §3.2)"),
    rand_augment=("rand-m9-mstd0.5-inc1", "[code] harness default (notes §3.2)"),
    color_jitter=(0.0, "[code] harness default 0.4 (notes §6.2), dropped by timm with RandAugment"),
    random_erasing=(0.25, "[code] harness default (notes §3.2)"),
    repeated_aug=(3, "[code] RASampler, 3 repeats (notes §0.2)"),
    eval_crop_ratio=(0.875, "[code] --eval-crop-ratio default (notes §0.2)"),
    mixup_alpha=(0.8, "[code] harness default (notes §3.2)"), cutmix_alpha=(1.0, "[code] harness default"),
    mixup_switch_prob=(0.5, "[code] timm Mixup switch_prob (notes §0.2)"),
    drop_path=(0.1, "[mem] DeiT Table 9 (stochastic depth 0.1)"),
    drop_path_schedule=("linear", "[code] DeiT builds timm's VisionTransformer (linear over depth, notes §0.2)"),
    ema_decay=(0.99996, "[code] --model-ema on by default (notes §0.2)"),
    grad_clip=(None, "[mem] DeiT Table 9 (no gradient clipping)"),
    amp=("auto", "[code] AMP autocast (notes §0.2)"),
    distillation=("none", "[mem] the base DeiT models are trained without distillation"),
)

_DEIT3 = _recipe(
    "deit3", "2204.07118 DeiT III: Revenge of the ViT",
    "DeiT III, ImageNet-1k (ViT-S): LAMB, BCE, 3-Augment, RRC, LayerScale, 800 epochs",
    notes=(("Values for ViT-S. B/L/H: lr 3e-3, drop path .2/.45/.6; B and L trained at 192 px and H at 160 px, then "
            "fine-tuned 20 epochs at 224 (recipe 'finetune'); see configs/deit3_*.toml."),
           ("BCE targets: the official loss binarises the mixed targets with targets.gt(0.0) "
            "(bce_target_threshold 0.0), which is right only with smoothing 0."),
           ("LAMB: the commands use apex fusedlamb; vitedu uses timm's Lamb, which also clips the global gradient "
            "norm at 1.0."),
           "Drop path is constant over depth in the official models (drop_path_schedule 'uniform').",
           "The README's ViT-S command reads '--repeated-aug--bce-loss' (missing space).",
           _RASAMPLER, _EMA_SAVED),
    epochs=(800, "[README] IN-1k commands (notes §1.3); the paper also reports 400 [mem]"),
    batch_size=(2048, "[README] 256 per GPU x 8 for S and B (notes §1.3)"),
    lr=(4e-3, "[README] ViT-S, absolute (--unscale-lr); B/L/H 3e-3"),
    min_lr=(1e-5, "[README] (notes §1.3)"), warmup_epochs=(5, "[README]"), warmup_lr=(1e-6, "[README]"),
    optimizer=("lamb", "[README] fusedlamb (apex); timm Lamb here"),
    weight_decay=(0.05, "[README]"),
    loss=("bce", "[README] --bce-loss"), label_smoothing=(0.0, "[README] smoothing 0 with BCE"),
    bce_target_threshold=(0.0, "[code] losses: targets.gt(0.0) after Mixup (notes §0.2)"),
    crop=("rrc", "[code] augment.py: RandomResizedCrop on IN-1k (notes §1.2)"),
    crop_scale=((0.08, 1.0), "[code] augment.py (notes §1.2)"),
    augment=("3augment", "[README] --ThreeAugment (notes §1.2, §1.3)"),
    color_jitter=(0.3, "[README] --color-jitter 0.3 (notes §1.2)"),
    random_erasing=(0.0, "[README] --reprob 0"),
    repeated_aug=(3, "[README] --repeated-aug; [code] 3 repeats"),
    eval_crop_ratio=(1.0, "[README] --eval-crop-ratio 1.0"),
    mixup_alpha=(0.8, "[README]"), cutmix_alpha=(1.0, "[README]"),
    mixup_switch_prob=(0.5, "[code] timm Mixup switch_prob (notes §0.2)"),
    drop_path=(0.05, "[README] ViT-S; B .2, L .45, H .6 (constant over depth)"),
    drop_path_schedule=("uniform", "[code] models_v2.py dpr=[rate]*depth (notes §0.2)"),
    layer_scale=(1e-4, "[code] models_v2.py init_scale=1e-4 (timm's deit3 weights: 1e-6)"),
    ema_decay=(0.99996, "[code] --model-ema on by default (notes §0.2)"),
    grad_clip=(None, "[code] harness default (no clipping; timm Lamb clips the global norm at 1.0)"),
    amp=("auto", "[code] AMP autocast (notes §0.2)"),
    distillation=("none", "[README] no distillation in DeiT III"),
)

_DEIT3_IN21K = _recipe(
    "deit3_in21k", "2204.07118 DeiT III: Revenge of the ViT",
    "DeiT III, ImageNet-21k pretraining (ViT-S): LAMB, CE + smoothing, simple random crop + 3-Augment, 240 epochs",
    notes=(("The 'imagenet' settings of this recipe are for ImageNet-21k (train_images: the fall 2011 release, "
            "14.2M images [mem]); the README's 21k commands still say --nb-classes 1000 and the repo has no 21k "
            "loader."),
           ("Followed by 50 epochs of fine-tuning on ImageNet-1k (LAMB lr 3e-4, wd 0.02, same augmentation, drop "
            "path S .05): not a separate recipe here."),
           _EMA_SAVED),
    train_images=IMAGENET_21K_IMAGES,
    epochs=(240, "[README] 21k commands (H: 90) (notes §1.3)"),
    batch_size=(2048, "[README] (notes §1.3)"),
    lr=(1e-3, "[README] (1.5e-3 for batch 4096)"),
    min_lr=(1e-5, _HARNESS), warmup_epochs=(5, "[README]"), warmup_lr=(1e-6, _HARNESS),
    optimizer=("lamb", "[README] fusedlamb"), weight_decay=(0.02, "[README]"),
    loss=("ce", "[README] (no --bce-loss)"), label_smoothing=(0.1, "[README]"),
    crop=("src", "[README] --src: simple random crop (notes §1.2)"),
    augment=("3augment", "[README] (notes §1.3)"), color_jitter=(0.3, "[README]"),
    random_erasing=(0.0, "[README]"), repeated_aug=(1, "[README] no repeated aug"),
    eval_crop_ratio=(1.0, "[README]"), mixup_alpha=(0.0, "[README]"), cutmix_alpha=(1.0, "[README]"),
    drop_path=(0.05, "[README] ViT-S; B .1, L .3, H .5"),
    drop_path_schedule=("uniform", "[code] models_v2.py dpr=[rate]*depth (notes §0.2)"),
    layer_scale=(1e-4, "[code] models_v2.py init_scale=1e-4"),
    ema_decay=(0.99996, "[code] --model-ema on by default (notes §0.2)"),
    grad_clip=(None, "[code] harness default"), amp=("auto", "[code] AMP autocast (notes §0.2)"),
    distillation=("none", "[README]"),
)

_RSB_PAPER = "2110.00476 ResNet strikes back: an improved training procedure in timm"
_RSB_COMMON = {
    "batch_size": (2048, "[code] mmpretrain 8 x 256 (notes §4.2)"),
    "lr": (5e-3, "[code] mmpretrain, PaddleClas"),
    "min_lr": (1e-6, "[code] mmpretrain CosineAnnealingLR eta_min=1e-6"),
    "warmup_epochs": (5, "[code] mmpretrain LinearLR over 5 epochs"),
    "warmup_lr": (5e-7, "[code] mmpretrain LinearLR start_factor=1e-4 (x lr 5e-3)"),
    "optimizer": ("lamb", "[code] mmpretrain, PaddleClas"),
    "loss": ("bce", "[code] mmpretrain use_sigmoid=True; PaddleClas BCELoss"),
    "bce_target_threshold": (0.2, "[code] published timm commands --bce-target-thresh 0.2 (notes §4.2 d)"),
    "crop": ("rrc", "[code] mmpretrain RandomResizedCrop (bicubic)"),
    "augment": ("randaugment", "[code] mmpretrain RandAugment"),
    "rand_augment": ("rand-m7-mstd0.5-inc1", "[code] mmpretrain timm_increasing, magnitude 7, std 0.5"),
    "color_jitter": (0.0, "[mem] Table 1 (none)"), "random_erasing": (0.0, "[mem] Table 1 (none)"),
    "eval_crop_ratio": (0.95, "[code] mmpretrain resize 236 -> crop 224; timm cfg crop_pct 0.95"),
    "cutmix_alpha": (1.0, "[code] mmpretrain, PaddleClas"),
    "mixup_switch_prob": (0.5, "[code] mmpretrain prob 0.5 each; PaddleClas"),
    "drop_path_schedule": ("linear", "[code] timm ResNet: rate * block index / (blocks - 1) (notes §0.2)"),
    "ema_decay": (None, "[mem] Table 1 (no EMA)"), "grad_clip": (None, "[mem] Table 1 (no clipping)"),
    "amp": ("auto", "[mem] Table 1 (mixed precision)"), "distillation": ("none", "[mem] no distillation"),
}
_RSB_NOTES = (
    ("Sources: 'mmpretrain' = open-mmlab/mmpretrain configs/resnet/resnet50_8xb256-rsb-a*.py and the rsb files of "
     "configs/_base_/{datasets,schedules}; 'PaddleClas' = ResNet50_rsb_a1.yaml; [mem] = paper Table 1."),
    ("bce_target_threshold 0.2 is from published timm commands for A2-style runs (notes §4.2 source d); for A1 and "
     "A3 it is assumed [mem]. With the threshold the targets are 0/1, so A1's smoothing 0.1 only nudges which mixed "
     "classes pass 0.2."),
    "Weight decay skips biases and BN parameters (mmpretrain bias/norm_decay_mult 0; vitedu's param_groups).",
    "Drop path ramps linearly with the block index in timm's ResNet (and in vitedu's resnet*).",
)


def _rsb(name: str, description: str, notes: tuple[str, ...] = (), **values: tuple[Any, str]) -> Recipe:
    return _recipe(name, _RSB_PAPER, description, notes=_RSB_NOTES + notes, **{**_RSB_COMMON, **values})


_RSB_A1 = _rsb(
    "rsb_a1", "ResNet strikes back A1: LAMB, BCE, RandAugment m7, Mixup 0.2 / CutMix 1.0, repeated aug, 600 epochs",
    epochs=(600, "[code] mmpretrain a1-600e; [mem] Table 1"),
    weight_decay=(0.01, "[code] mmpretrain a1, PaddleClas"),
    label_smoothing=(0.1, "[code] PaddleClas BCELoss epsilon 0.1; [mem] Table 1"),
    repeated_aug=(3, "[code] mmpretrain RepeatAugSampler"),
    mixup_alpha=(0.2, "[code] mmpretrain, PaddleClas"),
    drop_path=(0.05, "[code] mmpretrain drop_path_rate 0.05"),
)

_RSB_A2 = _rsb(
    "rsb_a2", "ResNet strikes back A2: A1 with 300 epochs, wd 0.02, Mixup 0.1, no smoothing",
    epochs=(300, "[code] mmpretrain a2-300e; [mem] Table 1"),
    weight_decay=(0.02, "[code] mmpretrain rsb schedule"),
    label_smoothing=(0.0, "[mem] Table 1 (smoothing only for A1)"),
    repeated_aug=(3, "[code] mmpretrain RepeatAugSampler"),
    mixup_alpha=(0.1, "[code] mmpretrain"),
    drop_path=(0.05, "[code] mmpretrain drop_path_rate 0.05"),
)

_RSB_A3 = _rsb(
    "rsb_a3", "ResNet strikes back A3: 100 epochs at 160 px, lr 8e-3, RandAugment m6, no repeated aug, no drop path",
    notes=(("Trains at 160 px and evaluates at 224 px (crop 0.95): the resolutions are model settings, in "
            "configs/rsb_a3_resnet50.toml; mmpretrain's own A3 trained at 224."),),
    epochs=(100, "[code] mmpretrain a3-100e; [mem] Table 1"),
    lr=(8e-3, "[code] mmpretrain a3"),
    warmup_lr=(8e-7, "[code] mmpretrain LinearLR start_factor=1e-4 (x lr 8e-3)"),
    weight_decay=(0.02, "[code] mmpretrain rsb schedule"),
    label_smoothing=(0.0, "[mem] Table 1"),
    rand_augment=("rand-m6-mstd0.5-inc1", "[code] mmpretrain rsb_a3: timm_increasing, magnitude 6, std 0.5"),
    repeated_aug=(1, "[code] mmpretrain a3 (default sampler)"),
    mixup_alpha=(0.1, "[code] mmpretrain a3"),
    drop_path=(0.0, "[code] mmpretrain a3 (no drop_path_rate)"),
)

_TORCHVISION_LEGACY = _recipe(
    "torchvision_legacy",
    ("2110.00476 ResNet strikes back (its 'PyTorch' baseline: torchvision references/classification, after "
     "1512.03385 He et al.)"),
    "The old ResNet recipe: SGD momentum 0.9, lr 0.1 per 256 images, wd 1e-4, 90 epochs, CE, crop + flip only",
    notes=(("The original schedule is a step decay (lr / 10 at epochs 30 and 60). TrainConfig only has warm-up + "
            "cosine, so this recipe decays with a cosine to 0 and no warm-up: the usual stand-in, not the same "
            "schedule."),
           ("torchvision's script decays every parameter; vitedu's param_groups exempts biases and BN (1-D) "
            "parameters."),
           "Reference result: resnet50.tv_in1k 76.16 top-1 [csv]; RSB's table lists 'PyTorch' 76.1 [mem]."),
    epochs=(90, "[mem] torchvision references (--epochs 90)"),
    batch_size=(256, "[mem] torchvision references: 32 per GPU x 8"),
    lr=(0.1, "[mem] torchvision references (0.1 for batch 256)"),
    min_lr=(0.0, "[mem] step decay ends at 1e-4; cosine to 0 here (see notes)"),
    warmup_epochs=(0, "[mem] no warm-up"), warmup_lr=(0.0, "[mem] no warm-up (unused)"),
    optimizer=("sgd", "[mem] torchvision references"), momentum=(0.9, "[mem] torchvision references"),
    weight_decay=(1e-4, "[mem] torchvision references"),
    loss=("ce", "[mem]"), label_smoothing=(0.0, "[mem]"),
    crop=("rrc", "[mem] RandomResizedCrop(224)"), augment=("flip", "[mem] RandomHorizontalFlip only"),
    color_jitter=(0.0, "[mem]"), random_erasing=(0.0, "[mem]"), repeated_aug=(1, "[mem]"),
    eval_crop_ratio=(0.875, "[mem] resize 256, centre crop 224"),
    mixup_alpha=(0.0, "[mem]"), cutmix_alpha=(0.0, "[mem]"), drop_path=(0.0, "[mem]"),
    drop_path_schedule=(None, "[mem] no drop path"),
    ema_decay=(None, "[mem]"), grad_clip=(None, "[mem]"), amp=("off", "[mem] fp32 in the original references"),
    distillation=("none", "[mem]"),
)

_FINETUNE = _recipe(
    "finetune", "2204.07118 DeiT III: Revenge of the ViT",
    "DeiT III fine-tuning (new resolution): AdamW lr 1e-5, 20 epochs, CE + smoothing, RandAugment, Mixup/CutMix",
    notes=(("Starts from a pretrained checkpoint (e.g. recipe 'deit3'), at the new resolution: 224 for B/L/H "
            "pretrained at 192/160, or 384."),
           "min_lr equals lr (the harness default 1e-5): after the warm-up from 1e-6 the 'cosine' schedule is flat.",
           "layer_scale is left to the checkpoint: its init value does not matter when the weights are loaded.",
           _TIMM_NO_CJ, _EMA_SAVED),
    epochs=(20, "[README] FT commands (notes §1.3)"),
    batch_size=(512, "[README] (notes §1.3)"),
    lr=(1e-5, "[README] absolute (--unscale-lr)"),
    min_lr=(1e-5, _HARNESS + "; the FT commands set no --min-lr [mem]"),
    warmup_epochs=(5, "[README]"), warmup_lr=(1e-6, _HARNESS),
    optimizer=("adamw", "[README]"), weight_decay=(0.1, "[README]"),
    loss=("ce", "[README]"), label_smoothing=(0.1, "[README]"),
    crop=("rrc", "[code] timm create_transform"),
    augment=("randaugment", "[README]"), rand_augment=("rand-m9-mstd0.5-inc1", "[README]"),
    color_jitter=(0.0, "[code] harness default 0.4 (notes §6.2), dropped by timm with RandAugment"),
    random_erasing=(0.0, "[README] --reprob 0"), repeated_aug=(1, "[README] --no-repeated-aug"),
    eval_crop_ratio=(1.0, "[README]"), mixup_alpha=(0.8, "[README]"), cutmix_alpha=(1.0, "[README]"),
    drop_path=(0.0, "[README] ViT-S; B .2 (@384 .15), L .45 (@384 .4), H .55"),
    drop_path_schedule=("uniform", "[code] models_v2.py dpr=[rate]*depth (notes §0.2)"),
    ema_decay=(0.99996, "[code] --model-ema on by default (notes §0.2)"),
    grad_clip=(None, "[code] harness default"), amp=("auto", "[code] AMP autocast"),
    distillation=("none", "[README]"),
)

_FINETUNE_ATTENTION = _recipe(
    "finetune_attention", "2203.09795 Three things everyone should know about Vision Transformers",
    "Attention-only fine-tuning: the DeiT III fine-tuning recipe, training only the attention weights",
    notes=(("The paper's exact attention-only hyperparameters are not in the notes: the DeiT III fine-tuning column "
            "is used, as notes §2.2 suggests [mem]."),
           ("In the official parallel blocks the second attention branch is named 'attn1' and is frozen by the "
            "'.attn.' filter; vitedu's parallel blocks keep both branches trainable.")),
    base=_FINETUNE,
    trainable=("attention", "[code] --attn-only: '.attn.' parameters, head and pos_embed (notes §0.2)"),
)

_DISTILL = _recipe(
    "distill", "2012.12877 Training data-efficient image transformers & distillation through attention",
    "DeiT hard distillation: the DeiT recipe with a distillation token trained on a RegNetY-16GF teacher's labels",
    notes=(("Teacher: RegNetY-16GF (timm regnety_160, config.extra['teacher']); TrainConfig has no teacher field, "
            "and there are no pretrained teacher weights offline."),
           ("The model needs a distillation head (deit_*_distilled_*); DeiT-S distilled: 81.2 top-1 [csv]. DeiT "
            "also reports 1000-epoch distilled runs [mem].")),
    base=_DEIT, extra={"teacher": "regnety_160"},
    distillation=("hard", "[code] losses.py hard: CE(dist head, teacher argmax) (notes §0.2)"),
    distillation_alpha=(0.5, "[code] default alpha 0.5"),
    distillation_tau=(1.0, "[code] default tau (unused by hard distillation)"),
)

_LEVIT = _recipe(
    "levit", "2104.01136 LeViT: a Vision Transformer in ConvNet's Clothing for Faster Inference",
    "LeViT: AdamW, hard distillation, AGC clipping, fp32, RandAugment, Mixup/CutMix, 1000 epochs",
    notes=(("The published models used 32 GPUs x 256 = 8192 images per step, so lr 5e-4 x 8192 / 512 = 8e-3 "
            "[issue #3]; the ablations used 8 GPUs, 100 epochs, no distillation [issue #12]."),
           "Teacher: RegNetY-16GF (timm regnety_160, config.extra['teacher']), not a TrainConfig field.",
           _TIMM_NO_CJ, _RASAMPLER, _EMA_SAVED),
    extra={"teacher": "regnety_160"},
    epochs=(1000, "[code] LeViT main.py default; [issue #3]"),
    batch_size=(8192, "[issue #3] 256 per GPU x 32 GPUs for the published models"),
    lr=(8e-3, "[code] 5e-4 x global batch / 512 (no --unscale-lr); [issue #3]"),
    min_lr=(1e-5, "[code] LeViT main.py"), warmup_epochs=(5, "[code]"), warmup_lr=(1e-6, "[code]"),
    optimizer=("adamw", "[code]"), weight_decay=(0.025, "[code] (attention_biases excluded)"),
    loss=("ce", "[code] soft-target CE with Mixup"), label_smoothing=(0.1, "[code]"),
    crop=("rrc", "[code] timm create_transform"),
    augment=("randaugment", "[code]"), rand_augment=("rand-m9-mstd0.5-inc1", "[code]"),
    color_jitter=(0.0, "[code] LeViT main.py default 0.4, dropped by timm with RandAugment"),
    random_erasing=(0.25, "[code]"), repeated_aug=(3, "[code] RASampler"),
    eval_crop_ratio=(0.875, "[code] inherited DeiT eval resize (notes §0.2)"),
    mixup_alpha=(0.8, "[code]"), cutmix_alpha=(1.0, "[code]"),
    drop_path=(0.0, "[code] LeViT-128S..256; LeViT-384: 0.1"),
    drop_path_schedule=("uniform", "[code] LeViT Residual(m, drop): one rate everywhere (notes §0.2)"),
    ema_decay=(0.99996, "[code] (saved, not evaluated)"),
    grad_clip=(0.01, "[code] --clip-grad 0.01 with --clip-mode agc (notes §6.2)"),
    clip_mode=("agc", "[code] adaptive gradient clipping"),
    amp=("off", "[code] fp32: 'if True:  # with torch.cuda.amp.autocast()' (notes §0.2)"),
    distillation=("hard", "[code] LeViT main.py default"),
    distillation_alpha=(0.5, "[code]"), distillation_tau=(1.0, "[code] default (unused by hard distillation)"),
)


_DINO_CODE = "[code] dino main_dino.py default"
_DINO_VIEWS = "not read by the DINO run: MultiCropAugmentation makes the views"

_DINO = _recipe(
    "dino", "2104.14294 Emerging Properties in Self-Supervised Vision Transformers",
    "DINO (ViT-S/16): self-distillation with no labels, EMA teacher, multi-crop, AdamW, wd 0.04 -> 0.4, 100 epochs",
    notes=(("The official 100-epoch ViT-S/16 run (main_dino.py defaults; the README's 2-node command, 16 GPUs x 64): "
            "69.3% k-NN [README]. The released ViT-S/16 (74.5% k-NN, 77.0% linear [README]) trained 800 epochs with "
            "teacher_temp 0.07 after a 30-epoch warm-up and norm_last_layer false [mem]: --budget full --set "
            "epochs=800 --set teacher_temp=0.07 --set warmup_teacher_temp_epochs=30 --set norm_last_layer=false."),
           ("DINO's own settings (head, local crops, temperatures, last-layer freeze) are vitedu.ssl.settings."
            "DINOSettings, carried in extra['dino']; the global crops' scale is crop_scale, their blur blur_radius "
            "(pixels, as for 224-px images: pass a smaller one for small images)."),
           ("The teacher is fit's EMA of the student (ema_decay 0.996 -> ema_decay_end 1.0). At small budgets "
            "Recipe.scaled shortens its horizon like any EMA (rule 6); --set ema_decay=0.996 keeps the paper's "
            "momentum. Evaluate the teacher: OUTPUT/ema.safetensors (vitedu knn / vitedu linear)."),
           ("Not read (DINO's views, flip + colour jitter 0.4/0.4/0.2/0.1 + grayscale + blur + solarization, are "
            "fixed in vitedu.ssl.dino.MultiCropAugmentation): augment, color_jitter, random_erasing, loss, "
            "label_smoothing; the DINO run refuses changes to them."),
           ("The official warm-up is linspace(0, lr, W) over its W steps, vitedu's (step + 1) / W x lr: the same "
            "ramp, shifted by less than one step. The official clips the gradients before cancelling the last "
            "layer's, vitedu after: the same result, as the clipping is per parameter.")),
    extra={"dino": DINOSettings().to_dict()},
    epochs=(100, _DINO_CODE + " --epochs 100; [README] the 100-epoch ViT-S/16 run"),
    batch_size=(1024, "[README] 2 nodes x 8 GPUs x --batch_size_per_gpu 64; the paper: 1024 on 16 GPUs [mem]"),
    lr=(2e-3, "[code] --lr 5e-4 x batch / 256 (linear scaling rule) = 5e-4 x 1024 / 256"),
    min_lr=(1e-6, _DINO_CODE), warmup_epochs=(10, _DINO_CODE),
    warmup_lr=(0.0, "[code] utils.cosine_scheduler start_warmup_value=0"),
    optimizer=("adamw", _DINO_CODE), weight_decay=(0.04, _DINO_CODE),
    weight_decay_end=(0.4, _DINO_CODE + " (cosine, per step)"),
    loss=("ce", "[code] DINOLoss: cross-entropy between teacher and student (vitedu.ssl.dino); " + _DINO_VIEWS),
    label_smoothing=(0.0, "[code] none in DINOLoss"),
    crop=("rrc", "[code] DataAugmentationDINO: RandomResizedCrop, bicubic"),
    crop_scale=((0.4, 1.0), "[code] --global_crops_scale 0.4 1 (the global crops); the paper's text not checked"),
    augment=("none", "[code] DataAugmentationDINO; " + _DINO_VIEWS),
    color_jitter=(0.4, "[code] ColorJitter(0.4, 0.4, 0.2, 0.1), p=0.8; " + _DINO_VIEWS),
    blur_radius=((0.1, 2.0), "[code] utils.GaussianBlur radius_min=0.1, radius_max=2.0"),
    random_erasing=(0.0, "[code] none"), repeated_aug=(1, "[code] DistributedSampler, no repeats"),
    eval_crop_ratio=(0.875, "[code] eval_knn.py / eval_linear.py Resize(256), CenterCrop(224)"),
    mixup_alpha=(0.0, "[code] none"), cutmix_alpha=(0.0, "[code] none"),
    drop_path=(0.1, _DINO_CODE + " --drop_path_rate 0.1 (student only)"),
    drop_path_schedule=("linear", "[code] vision_transformer.py dpr = linspace(0, rate, depth)"),
    ema_decay=(0.996, "[code] --momentum_teacher 0.996"),
    ema_decay_end=(1.0, "[code] momentum_schedule = cosine_scheduler(0.996, 1, ...)"),
    grad_clip=(3.0, "[code] --clip_grad 3.0"),
    clip_mode=("param", "[code] utils.clip_gradients: each parameter's norm on its own"),
    amp=("auto", "[code] --use_fp16 True (fp16 autocast + GradScaler); vitedu's auto takes bf16 where the GPU has it"),
    distillation=("none", "[code] self-distillation is the objective, not a supervised teacher"),
)


RECIPES: dict[str, Recipe] = {r.name: r for r in (_DEIT, _DEIT3, _DEIT3_IN21K, _RSB_A1, _RSB_A2, _RSB_A3,
                                                   _TORCHVISION_LEGACY, _FINETUNE, _FINETUNE_ATTENTION, _DISTILL,
                                                   _LEVIT, _DINO)}


def list_recipes() -> list[str]:
    """The names of the recipes, in the order above (DeiT, DeiT III, RSB, the old baseline, fine-tuning, LeViT,
    DINO)."""
    return list(RECIPES)


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; an unknown name raises a KeyError that lists the valid ones and the closest."""
    if name not in RECIPES:
        close = difflib.get_close_matches(name, list(RECIPES), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"unknown recipe {name!r}.{hint} Valid recipes: {', '.join(RECIPES)}.")
    return RECIPES[name]


# --------------------------------------------------------------------------------------------------------------------
# Run configs: configs/*.toml at the repository root, one per main ImageNet run of a paper.

RUN_KEYS = ("recipe", "model", "overrides", "extra")
# Settings of a run that TrainConfig does not hold, with their types.
EXTRA_KEYS: dict[str, type] = {"img_size": int, "eval_img_size": int, "num_classes": int, "finetune_from": str}


class RunConfig(NamedTuple):
    """A run config file, read: the recipe's name, the model's, the full-scale TrainConfig, and the extra settings."""

    recipe: str
    model: str
    config: TrainConfig
    extra: dict


def config_dir() -> Path | None:
    """The repository's ``configs/`` folder, or None for a plain pip install (the configs are not packaged)."""
    root = repo_root()
    return root / "configs" if root is not None and (root / "configs").is_dir() else None


def list_run_configs() -> list[Path]:
    """The run config files of ``configs/``, sorted; empty without a checkout."""
    folder = config_dir()
    return sorted(folder.glob("*.toml")) if folder else []


def _toml():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError("reading run configs needs Python >= 3.11 (tomllib) or `pip install tomli`."
                                      ) from error
    return tomllib


def load_run_config(path: str | Path) -> RunConfig:
    """Read a run config (a TOML file, or the name of one in ``configs/``); returns a :class:`RunConfig`.

    The file names a ``recipe`` and a ``model``; ``[overrides]`` replaces recipe settings (TrainConfig fields; the
    string ``"none"`` sets an optional one to None), ``[extra]`` holds what TrainConfig lacks (``EXTRA_KEYS``: image
    sizes, ...). The TrainConfig is the recipe at full scale with the overrides applied.
    """
    path = Path(path)
    if not path.is_file() and path.suffix == "" and len(path.parts) == 1 and config_dir() is not None:
        path = config_dir() / f"{path}.toml"
    if not path.is_file():
        available = ", ".join(p.stem for p in list_run_configs()) or "none found"
        raise FileNotFoundError(f"no run config at {str(path)!r}. Give a path to a .toml file or the name of one in "
                                f"configs/ ({available}).")
    toml = _toml()
    try:
        data = toml.loads(path.read_text(encoding="utf-8"))
    except toml.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from error

    unknown = set(data) - set(RUN_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(RUN_KEYS)}.")
    for key, example in (("recipe", '"deit3"'), ("model", '"deit3_small_patch16_224"')):
        if not isinstance(data.get(key), str):
            raise TypeError(f"{path}: {key!r} must be given as a string, e.g. {key} = {example}.")
    try:
        recipe = get_recipe(data["recipe"])
    except KeyError as error:
        raise ValueError(f"{path}: {error.args[0]}") from None
    overrides = _check_table(path, "overrides", data.get("overrides", {}))
    extra = _check_table(path, "extra", data.get("extra", {}))

    bad = set(extra) - set(EXTRA_KEYS)
    if bad:
        raise ValueError(f"{path}: unknown [extra] key(s) {', '.join(sorted(bad))}; valid: {', '.join(EXTRA_KEYS)}.")
    for key, value in extra.items():
        if not isinstance(value, EXTRA_KEYS[key]) or isinstance(value, bool):
            raise TypeError(f"{path}: [extra] {key} must be a {EXTRA_KEYS[key].__name__}, got {value!r}.")
    config = recipe.imagenet.replace(**_coerce_overrides(path, overrides))
    return RunConfig(recipe.name, data["model"], config, extra)


def _check_table(path: Path, name: str, table: Any) -> dict:
    if not isinstance(table, dict):
        raise TypeError(f"{path}: {name} must be a table ([{name}] followed by key = value lines).")
    return table


def _is(value: Any, kind: type) -> bool:
    """``isinstance`` for TOML scalars, where an int is a valid float but a bool is not a number."""
    if kind in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)


def _coerce_overrides(path: Path, overrides: dict) -> dict:
    """TOML values -> TrainConfig values: arrays to tuples, "none" to None for optional settings; checks types."""
    hints = typing.get_type_hints(TrainConfig)
    valid = [f.name for f in fields(TrainConfig) if f.name != "extra"]
    unknown = set(overrides) - set(valid)
    if unknown:
        raise ValueError(f"{path}: unknown [overrides] setting(s) {', '.join(sorted(unknown))}; valid: "
                         f"{', '.join(valid)}.")
    out = {}
    for key, value in overrides.items():
        hint = hints[key]
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
        kinds = [k for k in typing.get_args(hint) if k is not type(None)] if optional else [hint]
        if optional and value == "none":
            out[key] = None
        elif typing.get_origin(hint) is tuple:  # crop_scale = [0.35, 1.0]
            if not (isinstance(value, list) and len(value) == len(typing.get_args(hint))
                    and all(_is(v, float) for v in value)):
                raise TypeError(f"{path}: [overrides] {key} = {value!r} must be an array of "
                                f"{len(typing.get_args(hint))} numbers.")
            out[key] = tuple(float(v) for v in value)
        elif any(_is(value, kind) for kind in kinds):
            out[key] = float(value) if kinds == [float] else value
        else:
            raise TypeError(f"{path}: [overrides] {key} = {value!r} does not fit the setting's type {hint}"
                            + (' (use "none" for None)' if optional else "") + ".")
    return out


def differences(configs: dict[str, TrainConfig], skip: tuple[str, ...] = ("extra", "seed")) -> list[dict]:
    """The settings on which the named ``configs`` disagree, one dict per setting: ``{"setting": name, <config name>:
    value, ...}``, in TrainConfig's field order. For a side-by-side table of two or more recipes."""
    rows = []
    for f in fields(TrainConfig):
        if f.name in skip:
            continue
        values = {name: getattr(config, f.name) for name, config in configs.items()}
        if len({repr(v) for v in values.values()}) > 1:
            rows.append({"setting": f.name, **values})
    return rows
