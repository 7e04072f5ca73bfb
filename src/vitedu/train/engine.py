"""The one training loop of the book: every chapter and ``vitedu train`` call ``fit``.

One epoch is: for each batch, Mixup/CutMix (if the recipe uses them), forward under autocast (if the device has
mixed precision), the recipe's loss (CE, BCE, with distillation), backward, clipping, an optimizer step (AdamW,
LAMB or SGD), the warm-up + cosine schedule, an EMA update; then evaluation, a line in the JSON-lines log, a
checkpoint, and the callbacks. Settings come from a ``TrainConfig`` (see ``vitedu.train.recipes`` for the papers').
A run whose loss is not supervised (DINO) passes an :class:`Objective`, which replaces the Mixup-forward-loss part of
the step; everything else, checkpoints and resuming included, stays the same.

Resuming: with ``output_dir`` the run writes checkpoints (every ``checkpoint_every`` steps and at the end of each
epoch); ``fit(..., resume=True)`` continues from the newest. Batches, augmentations and every RNG draw continue as if
the run had never stopped, so the final weights equal those of an uninterrupted run (tests/test_resume.py kills a run
mid-epoch and checks this bit for bit). That needs a loader with ``set_epoch`` and ``iter_from`` (``vitedu.data.Loader``
or ``TensorLoader``); with any other iterable a run resumes from its last finished epoch.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..env import seed_everything
from . import checkpoint
from .config import TrainConfig


@dataclass
class History:
    """One dict per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_acc`` (and ``ema_val_*`` with an EMA),
    ``lr``, ``seconds``, ``images_per_s``; ``step_losses`` has the loss of every step."""

    epochs: list[dict] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)

    def __getitem__(self, key: str) -> list:
        return [e[key] for e in self.epochs]

    @property
    def last(self) -> dict:
        return self.epochs[-1]


Callback = Callable[[History], None]


def learning_rate(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float = 0.0,
                  warmup_lr: float = 0.0) -> float:
    """The learning rate at ``step``: linear warm-up from ``warmup_lr`` to ``lr``, then a cosine decay to ``min_lr``."""
    if step < warmup_steps:
        return warmup_lr + (lr - warmup_lr) * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    return cosine(min(step - warmup_steps, decay_steps), decay_steps, lr, min_lr)


def cosine(step: int, total_steps: int, start: float, end: float) -> float:
    """``start`` at step 0, following half a cosine to ``end`` at ``total_steps`` (the decay of ``learning_rate``;
    DINO's cosine_scheduler without warm-up, used for its weight decay and teacher momentum)."""
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * (step / total_steps)))


class Objective:
    """What one training step minimises, when it is not the supervised loss of ``config`` (e.g. DINO's).

    ``fit`` calls ``objective(model, batch, epoch, ema_model)`` inside autocast, with the loader's raw batch and the
    EMA copy of the model (None without an EMA: DINO's teacher is that EMA), and expects ``(loss, samples in the
    batch)``. ``after_backward(model, epoch)`` runs between ``backward()`` and clipping; ``epoch_metrics()`` returns
    the objective's own numbers for the epoch that just ended (e.g. DINO's teacher entropy), which go into the epoch's
    History record; ``state_dict`` / ``load_state_dict`` hold the objective's own state (DINO's centre, the running
    sums of its metrics), which checkpoints save and resume restores.
    """

    def __call__(self, model: nn.Module, batch, epoch: int, ema_model: nn.Module | None) -> tuple[torch.Tensor, int]:
        raise NotImplementedError

    def after_backward(self, model: nn.Module, epoch: int) -> None:
        pass

    def epoch_metrics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def clip_each_parameter(parameters: Iterable[nn.Parameter], max_norm: float) -> None:
    """Scale each parameter's gradient to norm at most ``max_norm`` on its own (DINO's utils.clip_gradients)."""
    for p in parameters:
        if p.grad is not None:
            scale = max_norm / (p.grad.norm() + 1e-6)
            if scale < 1:
                p.grad.mul_(scale)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms, LayerScale / Affine and the names in ``model.no_weight_decay()`` (as DeiT and
    timm); frozen parameters are left out."""
    skip = getattr(model, "no_weight_decay", lambda: set())()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if config.optimizer == "lamb":
        from timm.optim import Lamb  # LAMB (You et al. 2020) as DeiT III and RSB use it, with its global clip at 1

        return Lamb(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


def set_trainable(model: nn.Module, mode: str) -> int:
    """``"all"``, ``"attention"`` (Three things, section 3): only the attention weights train, plus the head and
    the position embedding (the official ``--attn-only`` rule), or ``"head"``: only the classifier (``head*``
    parameters: a linear probe). Returns the number of trainable parameters."""
    if mode == "head":
        if not any(n.startswith("head") for n, _ in model.named_parameters()):
            raise ValueError(f"{type(model).__name__} has no parameters named 'head*': head-only training needs a "
                             "model whose classifier is called 'head'.")
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("head"))
    elif mode == "attention":
        keep = [n for n, _ in model.named_parameters() if ".attn." in n or n.startswith(("head", "pos_embed"))]
        if not any(".attn." in n for n in keep):
            raise ValueError(f"{type(model).__name__} has no parameters named '*.attn.*': attention-only fine-tuning "
                             "needs a transformer whose blocks call their attention 'attn' (ViT, DeiT, DeiT III).")
        for name, p in model.named_parameters():
            p.requires_grad_(name in keep)
    elif mode == "all":
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        raise ValueError(f"trainable must be 'all', 'attention' or 'head', got {mode!r}.")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class EMA:
    """Exponential moving average of the weights (Polyak averaging): ema <- decay * ema + (1 - decay) * weights."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema, live = self.module.state_dict(), model.state_dict()
        floats = [k for k, v in ema.items() if v.is_floating_point()]
        torch._foreach_lerp_([ema[k] for k in floats], [live[k] for k in floats], 1 - self.decay)
        for k, v in ema.items():
            if not v.is_floating_point():  # e.g. BatchNorm's batch counter
                v.copy_(live[k])


def _autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device | str = "cpu") -> dict:
    """Mean cross-entropy and top-1 accuracy over ``loader`` (summed over processes under torchrun)."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        totals += torch.tensor([F.cross_entropy(logits.float(), y, reduction="sum").item(),
                                (logits.argmax(1) == y).sum().item(), len(y)], dtype=torch.float64)
    if _distributed()[1] > 1:
        totals = totals.to(device)
        dist.all_reduce(totals)
        totals = totals.cpu()
    loss_sum, correct, count = totals.tolist()
    if count == 0:
        raise ValueError("the evaluation loader yielded no samples.")
    return {"loss": loss_sum / count, "acc": correct / count}


def _batches(loader: Iterable, epoch: int, step: int) -> Iterator:
    """The epoch's batches from ``step`` on, for a resumable loader; the whole epoch for any other iterable."""
    if hasattr(loader, "iter_from"):
        loader.set_epoch(epoch)
        return iter(loader.iter_from(step))
    if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    return iter(loader)


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None = None,
        config: TrainConfig | None = None, *, teacher: nn.Module | None = None, device: torch.device | str = "cpu",
        output_dir: str | Path | None = None, resume: bool = False, checkpoint_every: int | None = None,
        callbacks: Sequence[Callback] = (), log_path: str | Path | None = None, desc: str = "training",
        progress: bool = True, eval_every: int = 1, objective: Objective | None = None, **settings) -> History:
    """Train ``model`` with ``config`` (and any single ``settings`` changed, e.g. ``epochs=3, lr=1e-3``).

    - ``teacher``: the teacher of a distillation recipe (``config.distillation`` "hard" or "soft").
    - ``output_dir``: checkpoints (``checkpoints/``), the metrics log (``log.jsonl``) and the final weights
      (``model.safetensors``, ``ema.safetensors``). An existing run there is an error unless ``resume=True``.
    - ``checkpoint_every``: also checkpoint every this many steps inside an epoch.
    - ``log_path``: append each epoch's metrics to this JSON-lines file (default with ``output_dir``: its log.jsonl).
    - ``callbacks``: called with the History after every epoch (a live plot, early checks, ...).
    - ``eval_every``: evaluate after every this many epochs (and after the last one); the epochs between have no
      ``val_*`` entries.
    - ``progress``: one tqdm bar per epoch (also off with ``TQDM_DISABLE=1`` and on processes other than rank 0).
    - ``objective``: the loss of each step when it is not the supervised one (an :class:`Objective`, e.g.
      ``vitedu.ssl.dino.DINOObjective``); the loader's batches then go to it as they are.
    Returns the History; the model ends on ``device`` with its final (not EMA) weights.
    """
    from .losses import make_criterion, make_mixup

    config = (config or TrainConfig()).replace(**settings)
    device = torch.device(device)
    rank, world = _distributed()
    steps_per_epoch = len(train_loader)
    if eval_every < 1:
        raise ValueError(f"eval_every must be a positive number of epochs, got {eval_every}.")
    if steps_per_epoch == 0:
        raise ValueError("the training loader yields no batches: is the data set empty or the batch size too large?")
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)

    if objective is not None and (config.uses_mixup or config.distillation != "none"):
        raise ValueError("Mixup/CutMix and distillation belong to the supervised loss: turn them off (mixup_alpha=0, "
                         "cutmix_alpha=0, distillation='none') when training with an objective.")
    model.to(device)
    set_trainable(model, config.trainable)
    if config.distillation != "none":
        if teacher is None:
            raise ValueError(f"the recipe distils ({config.distillation}) but no teacher was given: fit(..., "
                             "teacher=a_trained_model).")
        if not hasattr(model, "distilled_training"):
            raise ValueError(f"{type(model).__name__} has no distillation head: create a distilled model, e.g. "
                             "'deit_tiny_distilled_patch16_224' or a LeViT.")
        model.distilled_training = True
        teacher.to(device).eval()
    num_classes = getattr(model, "num_classes", None)
    mixup = make_mixup(config, num_classes) if config.uses_mixup else None
    criterion = make_criterion(config, teacher)
    optimizer = make_optimizer(model, config)
    decayed = [i for i, group in enumerate(optimizer.param_groups) if group["weight_decay"] > 0]  # by index:
    # loading an optimizer's state (resume) replaces its group dicts
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate(
        s, total_steps, warmup_steps, config.lr, config.min_lr, config.warmup_lr) / config.lr)
    ema = EMA(model, config.ema_decay) if config.ema_decay else None
    dtype = _autocast_dtype(config.amp, device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    history = History()
    epoch, step, global_step, partial = 0, 0, 0, {"loss_sum": 0.0, "seen": 0, "seconds": 0.0}
    output_dir = Path(output_dir) if output_dir is not None else None
    if output_dir is not None and log_path is None:
        log_path = output_dir / "log.jsonl"
    found = checkpoint.latest(output_dir) if output_dir is not None else None
    if found is not None and not resume:
        raise FileExistsError(f"{output_dir} already holds a run ({found.name}). Pass resume=True to continue it, or "
                              "choose another output folder: nothing was overwritten.")
    meta = {"model": type(model).__name__, "model_config": getattr(model, "config", None), "config": config.to_dict(),
            "steps_per_epoch": steps_per_epoch, "world_size": world}
    if found is None:  # a fresh run draws its randomness (Mixup, stochastic depth, ...) from config.seed
        seed_everything(config.seed + rank)
    else:
        old = checkpoint.read_meta(found)
        if old.get("model") != meta["model"]:
            raise ValueError(f"the checkpoint in {found} was written by a {old.get('model')}, not a {meta['model']}: "
                             "resume with the same model, or choose another output folder.")
        state = checkpoint.load(found, model, ema.module if ema else None)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if objective is not None:
            objective.load_state_dict(state.get("objective", {}))
        epoch, step, global_step, partial = state["epoch"], state["step"], state["global_step"], state["partial"]
        history = History(list(state["history"]), list(state["step_losses"]))
        if step and not hasattr(train_loader, "iter_from"):
            warnings.warn("the training loader cannot start mid-epoch (no iter_from): epoch "
                          f"{epoch + 1} restarts from its first batch.", stacklevel=2)
            step, partial = 0, {"loss_sum": 0.0, "seen": 0, "seconds": 0.0}
        checkpoint.set_rng_state(state["rng"])
        if rank == 0 and log_path is not None:  # the log holds exactly the epochs the checkpoint knows
            checkpoint._write_text_atomic(Path(log_path), "".join(json.dumps(r) + "\n" for r in history.epochs))
        if rank == 0:
            print(f"resumed from {found} (epoch {epoch + 1}, step {step} of {steps_per_epoch})")

    def save_checkpoint(epoch_: int, step_: int) -> None:
        if output_dir is None:
            return
        if rank == 0:
            state = {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                     "scaler": scaler.state_dict() if scaler is not None else {}, "rng": checkpoint.rng_state(),
                     "epoch": epoch_, "step": step_, "global_step": global_step, "partial": dict(partial),
                     "history": history.epochs, "step_losses": history.step_losses,
                     "objective": objective.state_dict() if objective is not None else {}}
            checkpoint.save(output_dir, model=model, ema=ema.module if ema else None, state=state, meta=meta)
        if world > 1:
            dist.barrier()

    while epoch < config.epochs:
        model.train()
        start = time.perf_counter()
        quiet = {"disable": True} if rank != 0 or not progress else {}  # else tqdm's default: TQDM_DISABLE applies
        bar = tqdm(total=steps_per_epoch, initial=step, desc=f"{desc} {epoch + 1}/{config.epochs}",
                   dynamic_ncols=True, **quiet)
        for batch in _batches(train_loader, epoch, step):
            if config.weight_decay_end is not None:
                for i in decayed:
                    optimizer.param_groups[i]["weight_decay"] = cosine(global_step, total_steps, config.weight_decay,
                                                   config.weight_decay_end)
            with torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
                if objective is not None:
                    loss, samples = objective(train_model, batch, epoch, ema.module if ema else None)
                else:
                    x, y = (t.to(device, non_blocking=True) for t in batch)
                    targets = y
                    if mixup is not None:
                        if len(x) % 2:  # Mixup pairs each image with another: drop the odd one out
                            x, y = x[:-1], y[:-1]
                        x, targets = mixup(x, y)
                    outputs = train_model(x)
                    loss, samples = criterion(x, outputs, targets), len(y)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if objective is not None:
                objective.after_backward(model, epoch)
            if config.grad_clip is not None:
                if config.clip_mode == "agc":
                    from timm.utils import adaptive_clip_grad

                    adaptive_clip_grad(model.parameters(), config.grad_clip)
                elif config.clip_mode == "param":
                    clip_each_parameter(model.parameters(), config.grad_clip)
                else:
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            schedule.step()
            if ema is not None:
                if config.ema_decay_end is not None:
                    ema.decay = cosine(global_step, total_steps, config.ema_decay, config.ema_decay_end)
                ema.update(model)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                bar.close()
                raise FloatingPointError(f"loss became {loss_value} at epoch {epoch + 1}, step {step}: lower the "
                                         f"learning rate ({config.lr}) or enable gradient clipping (grad_clip=1.0).")
            history.step_losses.append(loss_value)
            partial["loss_sum"] += loss_value * samples
            partial["seen"] += samples
            step += 1
            global_step += 1
            bar.set_postfix(loss=f"{partial['loss_sum'] / partial['seen']:.3f}", refresh=False)
            bar.update(1)
            if checkpoint_every and global_step % checkpoint_every == 0 and step < steps_per_epoch:
                partial["seconds"] += time.perf_counter() - start
                start = time.perf_counter()
                save_checkpoint(epoch, step)
        seconds = partial["seconds"] + time.perf_counter() - start
        record = {"epoch": epoch + 1, "train_loss": partial["loss_sum"] / max(1, partial["seen"]),
                  "lr": optimizer.param_groups[0]["lr"], "seconds": seconds,
                  "images_per_s": partial["seen"] * world / seconds}
        if objective is not None:
            record.update(objective.epoch_metrics())
        if val_loader is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == config.epochs):
            metrics = evaluate(model, val_loader, device)
            record.update(val_loss=metrics["loss"], val_acc=metrics["acc"])
            if ema is not None:
                ema_metrics = evaluate(ema.module, val_loader, device)
                record.update(ema_val_loss=ema_metrics["loss"], ema_val_acc=ema_metrics["acc"])
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", val_acc=f"{metrics['acc']:.3f}")
        bar.close()
        history.epochs.append(record)
        epoch, step, partial = epoch + 1, 0, {"loss_sum": 0.0, "seen": 0, "seconds": 0.0}
        save_checkpoint(epoch, 0)
        if rank == 0 and log_path is not None:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        for callback in callbacks:
            callback(history)
    if config.distillation != "none":
        model.distilled_training = False
    if output_dir is not None and rank == 0:
        checkpoint.save_weights(model, output_dir / "model.safetensors")
        if ema is not None:
            checkpoint.save_weights(ema.module, output_dir / "ema.safetensors")
    return history
