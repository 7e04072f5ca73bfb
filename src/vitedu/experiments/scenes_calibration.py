"""Data appendix: how hard is each Scenes clutter level for raw-pixel k-NN and for a small ViT trained briefly?"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from sklearn.neighbors import KNeighborsClassifier

from ..budget import Budget
from ..data.loader import TensorLoader
from ..data.scenes import LEVELS, make_scenes
from ..models import create_model
from ..train import fit


@dataclass(frozen=True)
class Config:
    model: str
    train_images: int
    test_images: int
    epochs: int
    image_size: int = 32
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0


CONFIGS = {
    "smoke": Config("vit_pico_patch4_32", train_images=400, test_images=200, epochs=1),
    "cpu": Config("vit_pico_patch4_32", train_images=15_000, test_images=1_000, epochs=6),
    "gpu": Config("vit_nano_patch4_32", train_images=20_000, test_images=2_000, epochs=20),
}


def config(budget: Budget) -> Config:
    return budget.select(CONFIGS)


def knn_pixel_accuracy(train, test, k: int = 5) -> float:
    """Accuracy of k-NN on raw pixels: how much the label shows through without learning anything."""
    knn = KNeighborsClassifier(n_neighbors=k).fit(train.images.flatten(1).numpy(), train.labels.numpy())
    return float(knn.score(test.images.flatten(1).numpy(), test.labels.numpy()))


def run_level(cfg: Config, level: str, device="cpu") -> dict:
    train = make_scenes(cfg.train_images, "train", cfg.image_size, level, seed=cfg.seed)
    test = make_scenes(cfg.test_images, "test", cfg.image_size, level, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, img_size=cfg.image_size)
    history = fit(model, TensorLoader(train.float_images(), train.labels, cfg.batch_size, shuffle=True, seed=cfg.seed),
                  TensorLoader(test.float_images(), test.labels, 500), epochs=cfg.epochs, lr=cfg.lr,
                  min_lr=cfg.lr / 100, warmup_lr=0.0, grad_clip=1.0, device=device, desc=f"clutter {level}")
    return {"level": level, "clutter": LEVELS[level], "knn_pixel_accuracy": knn_pixel_accuracy(train, test),
            "vit_accuracy_per_epoch": history["val_acc"], "vit_accuracy": history.last["val_acc"]}


def run(budget: Budget, device="cpu") -> dict:
    cfg = config(budget)
    start = time.perf_counter()
    levels = [run_level(cfg, level, device) for level in LEVELS]
    return {"config": asdict(cfg), "levels": levels, "seconds": time.perf_counter() - start}
