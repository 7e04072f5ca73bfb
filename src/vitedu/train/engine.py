"""The training loop every chapter uses: AdamW, warm-up + cosine schedule, label smoothing, evaluation each epoch."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm


@dataclass
class History:
    """One dict per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_acc``, ``lr``, ``seconds``, ``images_per_s``."""

    epochs: list[dict] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)

    def __getitem__(self, key: str) -> list:
        return [e[key] for e in self.epochs]

    @property
    def last(self) -> dict:
        return self.epochs[-1]


Callback = Callable[[History], None]


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_factor: float = 0.01) -> float:
    """Learning-rate factor: linear warm-up to 1, then a cosine decay to ``min_factor``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms and the names in ``model.no_weight_decay()`` (as DeiT and timm do)."""
    skip = getattr(model, "no_weight_decay", lambda: set())()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device | str = "cpu") -> dict:
    """Mean cross-entropy and top-1 accuracy over ``loader``."""
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += len(y)
    if count == 0:
        raise ValueError("the evaluation loader yielded no samples.")
    return {"loss": loss_sum / count, "acc": correct / count}


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None = None, *, epochs: int, lr: float,
        weight_decay: float = 0.05, warmup_epochs: float = 1.0, label_smoothing: float = 0.0, grad_clip: float | None = 1.0,
        device: torch.device | str = "cpu", callbacks: Sequence[Callback] = (), log_path: str | Path | None = None,
        desc: str = "training") -> History:
    """Train ``model`` for ``epochs`` and evaluate after each; progress as one bar per epoch, metrics in the History.

    ``log_path`` appends each epoch's metrics to a JSON-lines file. ``callbacks`` are called with the History after
    every epoch (a live plot, early checks, ...).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}.")
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError("the training loader yields no batches: is the data set empty or the batch size too large?")
    total_steps = epochs * steps_per_epoch
    model.to(device)
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    warmup_steps = max(1, int(warmup_epochs * steps_per_epoch))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total_steps, warmup_steps))
    history = History()
    for epoch in range(1, epochs + 1):
        model.train()
        start, loss_sum, seen = time.perf_counter(), 0.0, 0
        # A bar we close ourselves, so the epoch's validation accuracy can still be written on it.
        bar = tqdm(total=steps_per_epoch, desc=f"{desc} {epoch}/{epochs}", dynamic_ncols=True)
        for x, y in train_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            schedule.step()
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                bar.close()
                raise FloatingPointError(f"loss became {loss_value} at epoch {epoch}: lower the learning rate ({lr}).")
            history.step_losses.append(loss_value)
            loss_sum, seen = loss_sum + loss_value * len(y), seen + len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", refresh=False)
            bar.update(1)
        seconds = time.perf_counter() - start
        record = {"epoch": epoch, "train_loss": loss_sum / seen, "lr": optimizer.param_groups[0]["lr"],
                  "seconds": seconds, "images_per_s": seen / seconds}
        if val_loader is not None:
            metrics = evaluate(model, val_loader, device)
            record.update(val_loss=metrics["loss"], val_acc=metrics["acc"])
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", val_acc=f"{metrics['acc']:.3f}")
        bar.close()
        history.epochs.append(record)
        if log_path is not None:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        for callback in callbacks:
            callback(history)
    return history
