"""Chapter 00: a tiny ViT trained on Fashion-MNIST, sized by the budget."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from ..budget import Budget
from ..data import fashion_tensors
from ..data.loader import TensorLoader
from ..models import create_model
from ..train import History, TrainConfig, fit


@dataclass(frozen=True)
class Config:
    model: str
    train_images: int
    test_images: int
    epochs: int
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr: float = 2e-5  # the cosine ends at 1% of the peak
    grad_clip: float = 1.0
    seed: int = 0


CONFIGS = {
    "smoke": Config("vit_pico_patch4_28", train_images=2_000, test_images=1_000, epochs=1),
    "cpu": Config("vit_pico_patch4_28", train_images=60_000, test_images=10_000, epochs=6),
    "gpu": Config("vit_nano_patch4_28", train_images=60_000, test_images=10_000, epochs=20),
}


def config(budget: Budget) -> Config:
    return budget.select(CONFIGS)


def train_config(cfg: Config) -> TrainConfig:
    """The engine's settings: AdamW, warm-up from 0 then cosine, clipping at 1, plain cross-entropy."""
    return TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, min_lr=cfg.min_lr, warmup_lr=0.0,
                       warmup_epochs=cfg.warmup_epochs, weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip,
                       seed=cfg.seed)


def loaders(cfg: Config) -> tuple[TensorLoader, TensorLoader]:
    x_train, y_train = fashion_tensors("train", cfg.train_images, seed=cfg.seed)
    x_test, y_test = fashion_tensors("test", cfg.test_images, seed=cfg.seed)
    return (TensorLoader(x_train, y_train, cfg.batch_size, shuffle=True, seed=cfg.seed),
            TensorLoader(x_test, y_test, 500))


def train(cfg: Config, device="cpu", callbacks=()) -> tuple[torch.nn.Module, History]:
    torch.manual_seed(cfg.seed)
    train_loader, test_loader = loaders(cfg)
    model = create_model(cfg.model)
    history = fit(model, train_loader, test_loader, train_config(cfg), device=device, callbacks=callbacks)
    return model, history


def run(budget: Budget, device="cpu") -> dict:
    """The chapter's reproduction, as stored in the ledger."""
    cfg = config(budget)
    start = time.perf_counter()
    model, history = train(cfg, device)
    train_seconds = time.perf_counter() - start
    return {
        "config": asdict(cfg),
        "parameters": sum(p.numel() for p in model.parameters()),
        "test_accuracy": history.last["val_acc"],
        "train_seconds": train_seconds,
        "images_per_s": sum(e["images_per_s"] for e in history.epochs) / len(history.epochs),
        "history": history.epochs,
    }
