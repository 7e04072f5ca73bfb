"""Chapter 07 (DINO): a small ViT trained with DINO on Scenes, and what its features and attention are worth.

One seed of the study trains the same ViT twice on the same Scenes images for the same number of epochs: with DINO
(no labels) and with labels (plain supervised training, ``recipe_study.plain_config``). Four feature extractors are
then scored on the test scenes: the DINO teacher, the supervised ViT, the ViT with its random initial weights, and the
raw pixels. Each gets a weighted k-NN (k = 20, T = 0.07) and a linear probe, and each ViT the Jaccard index of its
last block's attention masks (the patches holding ``mass`` of the class token's attention) against the objects'
ground-truth masks; a centre prior (the same mass of a Gaussian bump in the middle of the image) is the Jaccard any
model should beat, since Scenes centres its objects loosely. ``collapse_study`` shows why DINO needs both centering
and sharpening: short runs without either.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..budget import Budget
from ..data.loader import TensorLoader
from ..data.scenes import make_scenes
from ..models import create_model
from ..paths import data_root
from ..ssl.dino import BatchMultiCrop, build_dino
from ..ssl.knn import extract_features, knn_accuracy
from ..ssl.linear import linear_probe
from ..ssl.settings import DINOSettings
from ..train import TrainConfig, fit
from ..viz.segmentation import jaccard, mask_jaccard_scores, masks_at
from .recipe_study import Prepared, StudyData, plain_config, prepare, train_variant

EXTRACTORS = ("DINO", "supervised", "random weights", "raw pixels")


@dataclass(frozen=True)
class Config:
    model: str
    data: StudyData
    epochs: int  # of both the DINO and the supervised run
    seeds: tuple[int, ...]  # of the reference run (``vitedu reproduce``)
    live_seeds: tuple[int, ...] = (0,)  # of the chapter's own run, so that it fits the budget's time
    batch_size: int = 64
    lr: float = 5e-4  # AdamW peak, warm-up over the first epoch, cosine to ``lr / 100``
    teacher_momentum: float = 0.996  # -> 1 on a cosine (paper: 0.996)
    dino: DINOSettings = field(default_factory=DINOSettings)
    mass: float = 0.6  # of the class token's attention kept in a mask (paper: 0.6)
    linear_epochs: int = 100
    collapse_epochs: int = 6
    collapse_images: int = 1000


SMALL_DINO = DINOSettings(out_dim=256, hidden_dim=256, bottleneck_dim=64, norm_last_layer=False, local_crops=4,
                          local_size=16, local_scale=(0.1, 0.4), warmup_teacher_temp=0.02, teacher_temp=0.02,
                          warmup_teacher_temp_epochs=0)

CONFIGS = {
    "smoke": Config("vit_pico_patch4_32", StudyData("scenes", 128, 128, 32), epochs=2, seeds=(0,), batch_size=32,
                    dino=replace(SMALL_DINO, local_crops=2), linear_epochs=5, collapse_epochs=2, collapse_images=64),
    "cpu": Config("vit_pico_patch4_32", StudyData("scenes", 4000, 1000, 32), epochs=8, seeds=(0, 1, 2),
                  dino=SMALL_DINO),
    "gpu": Config("vit_pico_patch4_32", StudyData("scenes", 20000, 2000, 32), epochs=30, seeds=(0, 1, 2),
                  batch_size=128, lr=1e-3, dino=SMALL_DINO, collapse_epochs=10, collapse_images=4000),
}


def config(budget: Budget) -> Config:
    return budget.select(CONFIGS)


TRAINED = ("DINO", "supervised")  # the models ``run`` keeps (seed 0), for the chapter's figures


def checkpoint_path(kind: str = "DINO", budget_name: str = "cpu", folder: Path | None = None) -> Path:
    """Where ``run`` keeps a trained model of seed 0 (``kind``: "DINO", the teacher's backbone, or "supervised"):
    ``data/checkpoints/07_dino_KIND_BUDGET.safetensors`` (or in ``folder``)."""
    if kind not in TRAINED:
        raise ValueError(f"kind must be one of {', '.join(TRAINED)}, got {kind!r}.")
    folder = folder or data_root() / "checkpoints"
    return folder / f"07_dino_{kind.lower()}_{budget_name}.safetensors"


def dino_train_config(cfg: Config, seed: int = 0, epochs: int | None = None) -> TrainConfig:
    """DINO's optimisation at small scale: AdamW at ``cfg.lr`` (warm-up over the first epoch, cosine to 1% of it),
    weight decay 0.04 -> 0.4 and the teacher's momentum ``cfg.teacher_momentum`` -> 1 on cosines, each parameter's
    gradient clipped to norm 3 (the paper's values, but the lr and momentum)."""
    return TrainConfig(epochs=epochs or cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, min_lr=cfg.lr / 100,
                       warmup_epochs=1, warmup_lr=0.0, optimizer="adamw", weight_decay=0.04, weight_decay_end=0.4,
                       ema_decay=cfg.teacher_momentum, ema_decay_end=1.0, grad_clip=3.0, clip_mode="param",
                       crop="none", augment="none", seed=seed)


def multi_crop(cfg: Config, prepared: Prepared, settings: DINOSettings | None = None) -> BatchMultiCrop:
    """The multi-crop views of the study's images (blur radius scaled from the paper's 224 px)."""
    settings = settings or cfg.dino
    size = prepared.train_images.shape[-1]
    return BatchMultiCrop(size, settings.local_size_for(size), settings.local_crops, (0.4, 1.0), settings.local_scale,
                          prepared.mean, prepared.std, blur_radius=(0.1 * size / 224, 2.0 * size / 224))


def train_dino(cfg: Config, prepared: Prepared, seed: int = 0, settings: DINOSettings | None = None,
               epochs: int | None = None, images: int | None = None, desc: str = "DINO", callbacks=(),
               device="cpu") -> dict:
    """A DINO run on the first ``images`` training images (default all): the student and teacher backbones (on the
    CPU), the epochs' records (loss, teacher entropy, KL) and the time. ``settings`` replaces ``cfg.dino`` (the
    collapse study's variants); training runs on ``device``."""
    settings = settings or cfg.dino
    config = dino_train_config(cfg, seed, epochs)
    torch.manual_seed(seed)
    backbone = create_model(cfg.model, num_classes=0, in_chans=prepared.in_chans)
    student, objective = build_dino(backbone, backbone.num_features, settings, config.epochs)
    objective.loss.to(device)
    x, y = prepared.train_images[:images], prepared.train_labels[:images]
    loader = TensorLoader(x, y, cfg.batch_size, shuffle=True, seed=seed, transform=multi_crop(cfg, prepared, settings),
                          drop_last=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:  # fit writes the teacher (its EMA) there
        history = fit(student, loader, None, config, objective=objective, output_dir=folder, desc=f"{desc} seed {seed}",
                      callbacks=callbacks, device=device)
        teacher = create_model(cfg.model, num_classes=0, in_chans=prepared.in_chans)
        weights = load_file(Path(folder) / "ema.safetensors")
        teacher.load_state_dict({k.removeprefix("backbone."): v for k, v in weights.items()
                                 if k.startswith("backbone.")})
    return {"student": backbone.cpu().eval(), "teacher": teacher.eval(), "history": history.epochs,
            "seconds": time.perf_counter() - start}


def train_supervised(cfg: Config, prepared: Prepared, seed: int = 0, device="cpu") -> dict:
    """The same ViT trained with labels for the same epochs (plain supervised training, no augmentation); the model
    comes back on the CPU."""
    run = train_variant(cfg.model, plain_config(cfg.epochs, cfg.batch_size), prepared, seed=seed, name="supervised",
                        device=device)
    return {**run, "model": run["model"].cpu().eval()}


def random_vit(cfg: Config, prepared: Prepared, seed: int = 0) -> torch.nn.Module:
    """The ViT with the initial weights the DINO and supervised runs of ``seed`` start from."""
    torch.manual_seed(seed)
    return create_model(cfg.model, num_classes=0, in_chans=prepared.in_chans).eval()


def test_masks(cfg: Config) -> torch.Tensor:
    """The objects' ground-truth masks of the test scenes, bool (N, S, S)."""
    data = cfg.data
    return make_scenes(data.test_images, "test", data.image_size, data.level, seed=data.seed).masks


def features(model: torch.nn.Module | None, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """A model's pooled features (its class token) of normalised float images, unnormalised (``extract_features``),
    or the raw pixels for ``None``."""
    if model is None:
        return images.flatten(1)
    loader = TensorLoader(images, torch.zeros(len(images), dtype=torch.long), batch_size)
    return extract_features(model, loader, normalize=False)[0]


def train_features(prepared: Prepared) -> torch.Tensor:
    """The training images as the models see them at test time: float, normalised with the training statistics."""
    mean = torch.tensor(prepared.mean).view(-1, 1, 1)
    std = torch.tensor(prepared.std).view(-1, 1, 1)
    return (prepared.train_images.float() / 255 - mean) / std


def score(model: torch.nn.Module | None, cfg: Config, prepared: Prepared, masks: torch.Tensor, seed: int = 0) -> dict:
    """k-NN and linear-probe accuracy of a feature extractor (``None``: raw pixels) and, for a ViT, the Jaccard of its
    attention masks: ``best head`` (per image, as the paper), ``fixed head`` (the one best on average), ``mean of
    heads`` and ``rollout``."""
    train_x = features(model, train_features(prepared))
    test_x = features(model, prepared.test_images)
    y, y_test = prepared.train_labels, prepared.test_labels
    result = {"knn": knn_accuracy(train_x, y, test_x, y_test),
              "linear": linear_probe(train_x, y, test_x, y_test, epochs=cfg.linear_epochs, seed=seed)[0]}
    if model is not None:
        scores = mask_jaccard_scores(model, prepared.test_images, masks, mass=cfg.mass)
        result["jaccard"] = {"best head": scores["best_head"].mean().item(),
                             "fixed head": scores["fixed_head"].mean().item(),
                             "mean of heads": scores["mean_heads"].mean().item(),
                             "rollout": scores["rollout"].mean().item()}
    return result


def centre_prior(grid: int, sigma: float = 0.25) -> torch.Tensor:
    """A Gaussian bump (standard deviation ``sigma`` of the image side) centred on the image, as a (grid, grid) map."""
    centres = (torch.arange(grid) + 0.5) / grid - 0.5
    return torch.exp(-(centres[:, None] ** 2 + centres[None, :] ** 2) / (2 * sigma ** 2))


def centre_prior_jaccard(masks: torch.Tensor, grid: int, mass: float = 0.6) -> float:
    """The Jaccard of the centre prior's mass mask against every ground-truth mask: what 'look at the middle' scores."""
    predicted = masks_at(centre_prior(grid), masks.shape[-1], mass).expand_as(masks)
    return jaccard(predicted, masks).mean().item()


def run_seed(cfg: Config, prepared: Prepared, masks: torch.Tensor, seed: int, device="cpu") -> dict:
    """One seed of the study: DINO and supervised training (on ``device``), then every extractor scored (on the CPU).
    Returns the numbers and the trained models (``models``: name -> backbone, not stored in the ledger)."""
    dino = train_dino(cfg, prepared, seed, device=device)
    supervised = train_supervised(cfg, prepared, seed, device=device)
    models = {"DINO": dino["teacher"], "supervised": supervised["model"], "random weights": random_vit(cfg, prepared,
                                                                                                      seed)}
    scores = {name: score(model, cfg, prepared, masks, seed) for name, model in models.items()}
    scores["raw pixels"] = score(None, cfg, prepared, masks, seed)
    scores["DINO student"] = score(dino["student"], cfg, prepared, masks, seed)
    return {"seed": seed, "scores": scores, "dino_history": dino["history"], "dino_seconds": dino["seconds"],
            "supervised_accuracy": supervised["val_acc"], "supervised_seconds": supervised["seconds"],
            "models": {**models, "DINO student": dino["student"]}}


def summarize(runs: list[dict]) -> list[dict]:
    """Per extractor: mean and standard deviation over seeds of every score (accuracies and Jaccards in %)."""
    rows = []
    for name in runs[0]["scores"]:
        values: dict[str, list[float]] = {}
        for run in runs:
            s = run["scores"][name]
            flat = {"k-NN": s["knn"], "linear": s["linear"],
                    **{f"Jaccard, {k}": v for k, v in s.get("jaccard", {}).items()}}
            for key, value in flat.items():
                values.setdefault(key, []).append(100 * value)
        row = {"extractor": name, "seeds": len(runs)}
        for key, vals in values.items():
            row[key] = float(np.mean(vals))
            row[f"{key} sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        rows.append(row)
    return rows


COLLAPSE_VARIANTS = {
    "centering + sharpening": {},
    "no centering": {"center_momentum": 1.0},  # the centre stays at its start, 0
    "no sharpening": {"warmup_teacher_temp": 0.1, "teacher_temp": 0.1},  # the teacher as soft as the student
}


def collapse_study(cfg: Config, prepared: Prepared, seed: int = 0, device="cpu") -> dict[str, list[dict]]:
    """Short DINO runs (``cfg.collapse_epochs`` epochs on ``cfg.collapse_images`` images) with both of DINO's guards
    against collapse and with either removed; returns each variant's epoch records (teacher entropy, KL, loss)."""
    return {name: train_dino(cfg, prepared, seed, replace(cfg.dino, **changes), cfg.collapse_epochs,
                             cfg.collapse_images, desc=name, device=device)["history"]
            for name, changes in COLLAPSE_VARIANTS.items()}


def plot_collapse(curves: dict[str, list[dict]], out_dim: int, axes=None):
    """The paper's Fig. 7 at small scale: the teacher's entropy (log K: uniform collapse, 0: one dimension) and the
    KL between teacher and student (0: collapse, nothing left to learn) per epoch, for each variant."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for name, records in curves.items():
        epochs = [r["epoch"] for r in records]
        axes[0].plot(epochs, [r["teacher_entropy"] for r in records], marker="o", label=name)
        axes[1].plot(epochs, [r["kl"] for r in records], marker="o", label=name)
    axes[0].axhline(math.log(out_dim), color="gray", ls="--", lw=1)
    axes[0].text(epochs[0], math.log(out_dim), " log K (uniform)", va="bottom", fontsize=8, color="gray")
    axes[0].set(xlabel="epoch", ylabel="teacher entropy (nats)", ylim=(0, None))
    axes[1].set(xlabel="epoch", ylabel="KL(teacher || student)", ylim=(0, None))
    axes[0].legend(fontsize=8)
    return axes


def save_model(model: torch.nn.Module, path: Path) -> Path:
    """A model's weights as safetensors, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)
    return path


def load_model(cfg: Config, kind: str = "DINO", path: Path | None = None, in_chans: int = 3) -> torch.nn.Module:
    """A model ``run`` kept (default: the committed one of the cpu reference run, ``checkpoint_path(kind)``): the DINO
    teacher's backbone or the supervised ViT, in eval mode."""
    path = path or checkpoint_path(kind)
    if not path.is_file():
        raise FileNotFoundError(f"no {kind} checkpoint at {path}: run `vitedu reproduce 07 --budget cpu` to make it.")
    model = create_model(cfg.model, num_classes=0 if kind == "DINO" else 10, in_chans=in_chans)
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def ledger_run(run: dict) -> dict:
    return {k: v for k, v in run.items() if k != "models"}


def run(budget: Budget, device="cpu", checkpoint_folder: Path | None = None) -> dict:
    """The chapter's study as stored in the ledger: per-extractor summaries over ``cfg.seeds``, every seed's scores and
    DINO curves, the centre prior's Jaccard, the collapse study, and the files of the DINO teacher and supervised ViT
    of seed 0, saved with ``checkpoint_path(kind, budget.name, checkpoint_folder)``."""
    cfg = config(budget)
    start = time.perf_counter()
    prepared = prepare(cfg.data)
    masks = test_masks(cfg)
    runs = [run_seed(cfg, prepared, masks, seed, device) for seed in cfg.seeds]
    saved = [save_model(runs[0]["models"][kind], checkpoint_path(kind, budget.name, checkpoint_folder)).name
             for kind in TRAINED]
    grid = int(round(runs[0]["models"]["DINO"].patch_embed.num_patches ** 0.5))
    return {"config": asdict(cfg), "summary": summarize(runs), "runs": [ledger_run(r) for r in runs],
            "centre_prior_jaccard": 100 * centre_prior_jaccard(masks, grid, cfg.mass),
            "collapse": collapse_study(cfg, prepared, device=device), "checkpoints": saved,
            "seconds": time.perf_counter() - start}
