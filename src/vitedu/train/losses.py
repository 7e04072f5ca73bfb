"""Losses of the recipes: cross-entropy, binary cross-entropy (DeiT III, ResNet strikes back), DeiT's distillation.

Every criterion the engine uses comes from :func:`make_criterion` and is called the same way,
``criterion(inputs, outputs, targets)``, whether or not a teacher is involved (DeiT's ``DistillationLoss`` signature).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from .config import TrainConfig

DISTILLATION_KINDS = ("none", "hard", "soft")
REDUCTIONS = ("mean", "sum", "none")


class BinaryCrossEntropy(nn.Module):
    """One sigmoid per class instead of a softmax over classes (DeiT III; Wightman et al. 2021, "ResNet strikes back").

    ``logits`` (B, K); ``targets`` either class indices (B,) or dense targets (B, K), e.g. Mixup's mixed and smoothed
    ones. Index targets become one-hot with label smoothing as timm does: off value ``smoothing / K``, on value
    ``1 - smoothing + smoothing / K``; dense targets are used as given (Mixup has smoothed them already).
    ``target_threshold`` binarises the targets with ``target > threshold``: after Mixup/CutMix both mixed classes
    become 1 (DeiT III binarises with ``> 0``, RSB with ``> 0.2``). With label smoothing, a threshold below
    ``smoothing / K`` turns every target into 1.

    Returns the loss ``-[y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))]`` averaged over batch *and* classes
    (``reduction="mean"``, as timm's ``BinaryCrossEntropy``), summed (``"sum"``) or per element (``"none"``, (B, K)).
    """

    def __init__(self, smoothing: float = 0.0, target_threshold: float | None = None, reduction: str = "mean"):
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must lie in [0, 1), got {smoothing}.")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction={reduction!r} is not one of {', '.join(REDUCTIONS)}.")
        self.smoothing = smoothing
        self.target_threshold = target_threshold
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 2:
            raise ValueError(f"logits must have shape (batch, classes), got {tuple(logits.shape)}.")
        batch, num_classes = logits.shape
        if targets.shape == (batch,):
            off = self.smoothing / num_classes
            on = 1.0 - self.smoothing + off
            targets = torch.full_like(logits, off).scatter_(1, targets.long().view(-1, 1), on)
        elif targets.shape != logits.shape:
            raise ValueError(f"targets must be class indices of shape ({batch},) or dense targets of shape "
                             f"({batch}, {num_classes}) like the logits, got {tuple(targets.shape)}.")
        if self.target_threshold is not None:
            targets = targets.gt(self.target_threshold).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}, target_threshold={self.target_threshold}, reduction={self.reduction!r}"


class DistillationLoss(nn.Module):
    """DeiT's distillation (Touvron et al. 2021, deit/losses.py): ``(1 - alpha) * base + alpha * distillation``.

    ``forward(inputs, outputs, targets)``: ``inputs`` the images the model saw (the teacher sees the same ones),
    ``outputs`` the model's ``(cls_logits, dist_logits)`` while training with distillation, ``targets`` what ``base``
    expects. The base loss reads the class logits and the targets; the distillation term reads the distillation logits:

    - ``"hard"``: cross-entropy against the teacher's argmax (DeiT's hard-label distillation, its best);
    - ``"soft"``: ``KL(softmax(t / tau) || softmax(s / tau)) * tau^2``, summed and divided by ``s.numel()``
      (i.e. per batch *and* class, exactly DeiT's formula);
    - ``"none"``: no teacher, the base loss alone (a plain tensor output, or the first of a tuple, as DeiT does).

    The teacher runs without gradients and always in eval mode (``train()`` on this module leaves it in eval).
    Returns the scalar loss.
    """

    def __init__(self, base: nn.Module, teacher: nn.Module | None = None, kind: str = "none", alpha: float = 0.5,
                 tau: float = 1.0):
        super().__init__()
        if kind not in DISTILLATION_KINDS:
            raise ValueError(f"kind={kind!r} is not one of {', '.join(DISTILLATION_KINDS)}.")
        if kind != "none" and teacher is None:
            raise ValueError(f"{kind} distillation needs a teacher model: pass teacher=... (e.g. a trained convnet).")
        if kind == "none" and teacher is not None:
            raise ValueError("a teacher was given but distillation is 'none': use kind='hard' or 'soft' "
                             "(config.distillation) to learn from it, or drop the teacher.")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}.")
        if not tau > 0:
            raise ValueError(f"tau must be positive, got {tau}.")
        self.base = base
        self.teacher = teacher.eval() if teacher is not None else None
        self.kind, self.alpha, self.tau = kind, alpha, tau

    def train(self, mode: bool = True) -> DistillationLoss:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # a teacher in train mode would use batch statistics and dropout
        return self

    def forward(self, inputs: torch.Tensor, outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
                targets: torch.Tensor) -> torch.Tensor:
        outputs_dist = None
        if not isinstance(outputs, torch.Tensor):
            outputs, outputs_dist = outputs
        base_loss = self.base(outputs, targets)
        if self.kind == "none":
            return base_loss
        if outputs_dist is None:
            raise ValueError(
                f"{self.kind} distillation needs the model to return (class logits, distillation logits) while "
                "training, but it returned one tensor. Create a distilled model (e.g. "
                "create_model('deit_tiny_distilled_patch16_224')) and set model.distilled_training = True.")
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        if self.kind == "soft":
            tau = self.tau
            log_s, log_t = F.log_softmax(outputs_dist / tau, dim=1), F.log_softmax(teacher_logits / tau, dim=1)
            distillation = F.kl_div(log_s, log_t, reduction="sum", log_target=True) * (tau * tau) / log_s.numel()
        else:
            distillation = F.cross_entropy(outputs_dist, teacher_logits.argmax(dim=1))
        return (1 - self.alpha) * base_loss + self.alpha * distillation

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, alpha={self.alpha}, tau={self.tau}"


def make_criterion(config: TrainConfig, teacher: nn.Module | None = None) -> DistillationLoss:
    """The training loss of ``config``, always a :class:`DistillationLoss` called as ``criterion(inputs, outputs,
    targets)`` (with ``config.distillation == "none"`` it passes the outputs straight to the base loss).

    Base loss: ``"ce"`` is cross-entropy with ``config.label_smoothing``, or timm's ``SoftTargetCrossEntropy`` when
    Mixup/CutMix is on (Mixup then hands over smoothed dense targets, so smoothing again would count it twice);
    ``"bce"`` is :class:`BinaryCrossEntropy` with ``config.bce_target_threshold`` (smoothing only without Mixup, for
    the same reason). ``teacher`` is required when ``config.distillation`` is ``"hard"`` or ``"soft"``.
    """
    if config.loss == "ce":
        base = SoftTargetCrossEntropy() if config.uses_mixup else nn.CrossEntropyLoss(
            label_smoothing=config.label_smoothing)
    elif config.loss == "bce":
        base = BinaryCrossEntropy(smoothing=0.0 if config.uses_mixup else config.label_smoothing,
                                  target_threshold=config.bce_target_threshold)
    else:
        raise ValueError(f"loss={config.loss!r} is not one of ce, bce.")
    if config.distillation != "none" and teacher is None:
        raise ValueError(f"config.distillation={config.distillation!r} needs a teacher: pass make_criterion(config, "
                         "teacher=model) with a trained model, or use distillation='none'.")
    return DistillationLoss(base, teacher, config.distillation, config.distillation_alpha, config.distillation_tau)


def make_mixup(config: TrainConfig, num_classes: int) -> Mixup | None:
    """timm's batch Mixup/CutMix of ``config`` (DeiT's settings: prob 1, one lambda per batch), or None when off.

    Called as ``images, targets = mixup(images, labels)``; it returns dense (B, ``num_classes``) targets, already
    label-smoothed with ``config.label_smoothing``. It mixes the batch with its flipped copy, so every batch must be
    even (timm asserts it): use an even ``batch_size`` with ``drop_last=True``, or drop the odd image out of a batch
    before mixing (the engine does).
    """
    if not config.uses_mixup:
        return None
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"Mixup/CutMix needs the number of classes (an int >= 2) to build its targets, got "
                         f"{num_classes!r}: pass the model's num_classes.")
    return Mixup(mixup_alpha=config.mixup_alpha, cutmix_alpha=config.cutmix_alpha, prob=1.0,
                 switch_prob=config.mixup_switch_prob, mode="batch", label_smoothing=config.label_smoothing,
                 num_classes=num_classes)
