"""Train one model under several recipes (or recipe variants) and several seeds, on the same small data set.

For the recipe chapters (ResNet strikes back, DeiT III): a *variant* is a name and a TrainConfig;
``run_study`` trains every variant with every seed, ``summarize`` gives the mean and spread per variant, and
``plot_study`` draws them with error bars.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch

from ..data import fashion_tensors
from ..data.loader import Loader, TensorLoader
from ..data.scenes import make_scenes
from ..data.transforms import TensorImages, train_transform
from ..models import create_model
from ..train import TrainConfig, fit
from ..train.recipes import get_recipe

# One peak lr per optimizer for the small-scale studies (batch 64, models under 1M parameters, a few thousand images),
# instead of the papers' batch rules, which from batch 1024-2048 down to 64 give AdamW 6e-5 and LAMB 7e-4: far below
# what these models train well with, so a comparison at those rates would compare learning rates, not recipes.
# Chosen before any recipe was compared, as the best of a sweep of plain training (no augmentation, CE, 1 000
# Fashion-MNIST images x 15 epochs, batch 64, seed 0; test accuracy on 2 000 images):
#   vit_pico_patch4_28  AdamW 1e-3 62.7, 2e-3 67.8, 4e-3 50.4 | LAMB 2e-3 47.4, 4e-3 59.3, 8e-3 63.2, 1.6e-2 64.8
#   resnet_pico_28      SGD 0.02 65.9, 0.05 76.3, 0.1 79.1, 0.2 80.9 | LAMB 2e-3 74.4, 4e-3 79.6, 8e-3 80.3, 1.6e-2 80.9
# LAMB's and SGD's best values are the largest tried: larger ones may be better still.
SMALL_SCALE_LR = {"adamw": 2e-3, "lamb": 1.6e-2, "sgd": 0.2}


@dataclass(frozen=True)
class StudyData:
    """The small data set of a study: Scenes (RGB, ``level`` of clutter) or Fashion-MNIST (gray, 28 px)."""

    dataset: str = "scenes"
    train_images: int = 10_000
    test_images: int = 2_000
    image_size: int = 32
    level: str = "easy"
    seed: int = 0


@dataclass
class Prepared:
    train_images: torch.Tensor  # uint8 (N, C, S, S): the per-image augmentations work on PIL images
    train_labels: torch.Tensor
    test_images: torch.Tensor  # float, normalised
    test_labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int = 10

    @property
    def in_chans(self) -> int:
        return self.train_images.shape[1]


def prepare(data: StudyData) -> Prepared:
    """Load (or generate) the data and normalise with the training set's per-channel mean and std."""
    if data.dataset == "scenes":
        train = make_scenes(data.train_images, "train", data.image_size, data.level, seed=data.seed)
        test = make_scenes(data.test_images, "test", data.image_size, data.level, seed=data.seed)
        x_train, y_train, x_test, y_test = train.images, train.labels, test.images, test.labels
    elif data.dataset == "fashion":
        if data.image_size != 28:
            raise ValueError(f"Fashion-MNIST images are 28 px, got image_size={data.image_size}.")
        x_train, y_train = fashion_tensors("train", data.train_images, seed=data.seed)
        x_test, y_test = fashion_tensors("test", data.test_images, seed=data.seed)
        x_train, x_test = (x.mul(255).round().to(torch.uint8) for x in (x_train, x_test))
    else:
        raise ValueError(f"unknown dataset {data.dataset!r}: use 'scenes' or 'fashion'.")
    pixels = x_train.float().div(255).transpose(0, 1).flatten(1)
    mean, std = pixels.mean(1), pixels.std(1)
    test = (x_test.float().div(255) - mean[:, None, None]) / std[:, None, None]
    return Prepared(x_train, y_train, test, y_test, tuple(mean.tolist()), tuple(std.tolist()))


def plain_config(epochs: int, batch_size: int, optimizer: str = "adamw") -> TrainConfig:
    """Training without a recipe, the baseline of the studies and the setting of the lr sweep above: the optimizer at
    its ``SMALL_SCALE_LR`` (warm-up from 0 over the first epoch, cosine to 1% of it), weight decay 0.05,
    cross-entropy, no augmentation of any kind."""
    lr = SMALL_SCALE_LR[optimizer]
    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, min_lr=lr / 100, warmup_epochs=1, warmup_lr=0.0,
                       optimizer=optimizer, weight_decay=0.05, crop="none", augment="none")


def recipe_at(name: str, budget, train_images: int, batch_size: int, epochs: int, strength: float = 1.0,
              **changes) -> TrainConfig:
    """Recipe ``name`` scaled to a small study (``Recipe.scaled`` at ``strength``, with the optimizer's
    ``SMALL_SCALE_LR``), then ``changes`` (the one ingredient an ablation swaps)."""
    recipe = get_recipe(name)
    config = recipe.scaled(budget, train_images, batch_size=batch_size, epochs=epochs, strength=strength,
                           lr=SMALL_SCALE_LR[recipe.imagenet.optimizer])
    if "optimizer" in changes and "lr" not in changes:  # the swapped-in optimizer brings its own small-scale lr
        factor = SMALL_SCALE_LR[changes["optimizer"]] / config.lr
        changes.update(lr=config.lr * factor, min_lr=config.min_lr * factor, warmup_lr=config.warmup_lr * factor)
    return config.replace(**changes)


def train_variant(model_name: str, config: TrainConfig, prepared: Prepared, *, seed: int = 0, name: str = "",
                  device="cpu", num_workers: int = 0, callbacks=(), model_overrides: dict | None = None,
                  eval_every: int = 1, image_size: int | None = None,
                  teacher: torch.nn.Module | None = None) -> dict:
    """Train ``model_name`` with ``config`` (its seed replaced by ``seed``); return the run's numbers.

    ``teacher``: the trained model a distilling ``config`` (``distillation`` "hard" or "soft") learns from; the
    student (``model_name``) must then have a distillation head (e.g. ``resmlp_pico_distilled_32``).
    ``image_size``: train at this size (the crop's output) instead of the images' own; testing stays at the images'
    size, as when ResNet strikes back's A3 trains at 160 px and tests at 224."""
    config = config.replace(seed=seed)
    torch.manual_seed(seed)
    size = image_size or prepared.train_images.shape[-1]
    model = create_model(model_name, num_classes=prepared.num_classes, in_chans=prepared.in_chans,
                         **{**config.model_overrides(model_name), **(model_overrides or {})})
    train_set = TensorImages(prepared.train_images, prepared.train_labels,
                             train_transform(config, size, prepared.mean, prepared.std))
    train_loader = Loader(train_set, config.batch_size, shuffle=True, seed=seed, drop_last=True,
                          repeats=config.repeated_aug, num_workers=num_workers)
    test_loader = TensorLoader(prepared.test_images, prepared.test_labels, 500)
    start = time.perf_counter()
    history = fit(model, train_loader, test_loader, config, device=device, desc=f"{name} seed {seed}".strip(),
                  callbacks=callbacks, eval_every=eval_every, teacher=teacher)
    return {"variant": name, "seed": seed, "val_acc": history.last["val_acc"],
            "ema_val_acc": history.last.get("ema_val_acc"), "seconds": time.perf_counter() - start,
            "history": history.epochs, "model": model}


def train_models(cfg, seeds: tuple[int, ...] | list[int], device="cpu", prepared: Prepared | None = None) -> list[dict]:
    """Every model of ``cfg.models`` with every seed (seed-major), the same plain training
    (``plain_config(cfg.epochs, cfg.batch_size)``) on ``cfg.data``; one dict per run (``"model"``: the trained model).
    ``cfg`` is a chapter study's Config with those fields and ``eval_every``."""
    prepared = prepared or prepare(cfg.data)
    train_config = plain_config(cfg.epochs, cfg.batch_size)
    return [train_variant(name, train_config, prepared, seed=seed, name=name, device=device,
                          eval_every=cfg.eval_every)
            for seed in seeds for name in cfg.models]


def run_study(model_name: str, variants: dict[str, TrainConfig], data: StudyData, seeds: list[int] | tuple[int, ...],
              device="cpu", num_workers: int = 0, eval_every: int = 1) -> list[dict]:
    """Every variant with every seed (seed-major, so a partial study still covers all variants); one dict per run
    (the trained model under ``"model"``)."""
    prepared = prepare(data)
    return [train_variant(model_name, config, prepared, seed=seed, name=name, device=device, num_workers=num_workers,
                          eval_every=eval_every)
            for seed in seeds for name, config in variants.items()]


def run_reference(cfg, variants: dict[str, TrainConfig], device="cpu") -> dict:
    """A chapter's study as ``vitedu reproduce`` stores it: ``cfg`` (a chapter's Config with model, data, seeds,
    num_workers, eval_every), per-variant summaries (and of the EMA where the recipes keep one), every run without
    its model, and the wall time."""
    start = time.perf_counter()
    runs = run_study(cfg.model, variants, cfg.data, cfg.seeds, device=device, num_workers=cfg.num_workers,
                     eval_every=cfg.eval_every)
    record = {"config": asdict(cfg), "summary": summarize(runs)}
    ema = summarize(runs, "ema_val_acc")
    if ema:
        record["ema_summary"] = ema
    return {**record, "runs": ledger_rows(runs), "seconds": time.perf_counter() - start}


def summarize(runs: list[dict], key: str = "val_acc") -> list[dict]:
    """Per variant, in first-seen order: mean, sample standard deviation (0 with one seed), min, max, n, values."""
    groups: dict[str, list[float]] = {}
    for run in runs:
        if run.get(key) is not None:  # e.g. no EMA accuracy for a recipe without an EMA
            groups.setdefault(run["variant"], []).append(run[key])
    return [{"variant": name, "mean": statistics.fmean(values),
             "std": statistics.stdev(values) if len(values) > 1 else 0.0, "min": min(values), "max": max(values),
             "n": len(values), "values": values} for name, values in groups.items()]


def plot_study(summary: list[dict], title: str = "", reference: list[dict] | None = None, ax=None):
    """Mean accuracy per variant with one-standard-deviation error bars and every seed as a dot; ``reference``
    (e.g. the committed cpu run) drawn beside it in grey."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(1.4 * len(summary) + 2, 3.2))
    names = [s["variant"] for s in summary]
    width = 0.38 if reference else 0.6
    for offset, rows, colour, label in [(0, summary, "C0", "this run"), (width, reference or [], "0.6", "reference")]:
        by_name = {r["variant"]: r for r in rows}
        xs = [i + offset for i, n in enumerate(names) if n in by_name]
        picked = [by_name[n] for n in names if n in by_name]
        if not picked:
            continue
        ax.bar(xs, [100 * r["mean"] for r in picked], width, yerr=[100 * r["std"] for r in picked], color=colour,
               alpha=0.8, capsize=3, label=label)
        for x, r in zip(xs, picked):
            ax.plot([x] * len(r["values"]), [100 * v for v in r["values"]], "k.", ms=3)
    ax.set_xticks([i + (width / 2 if reference else 0) for i in range(len(names))], names, rotation=20, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    if reference:
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


def plot_curves(runs: list[dict], title: str = "", ax=None):
    """Test accuracy against epochs, one line per run (live runs or a ledger's ``runs``), one colour per variant."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.6))
    variants = list(dict.fromkeys(run["variant"] for run in runs))
    palette = plt.get_cmap("tab10" if len(variants) <= 10 else "tab20")
    colours = {name: palette(i % palette.N) for i, name in enumerate(variants)}
    labelled: set[str] = set()
    for run in runs:
        first = run["variant"] not in labelled
        labelled.add(run["variant"])
        colour = colours[run["variant"]]
        evaluated = [epoch for epoch in run["history"] if "val_acc" in epoch]
        ax.plot([e["epoch"] for e in evaluated], [100 * e["val_acc"] for e in evaluated], "o-", ms=3, color=colour,
                alpha=0.75, label=run["variant"] if first else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return ax


def ledger_rows(runs: list[dict]) -> list[dict]:
    """The runs without their models, for the results ledger."""
    return [{k: v for k, v in run.items() if k != "model"} for run in runs]
