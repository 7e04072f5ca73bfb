"""Automatic checks for the exercises: a correct answer passes, a wrong one gets a hint.

Each check returns a :class:`CheckResult`: a notebook shows its verdict when the check is a cell's last line
(``print`` it elsewhere), and it is truthy when the answer passes, so a grader can write
``assert vitedu.check.patchify(student_patchify)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CheckResult:
    exercise: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        mark = "PASS" if self.passed else "NOT YET"
        return f"[{mark}] {self.exercise}: {self.message}"


def _call(exercise: str, fn: Callable, *args):
    try:
        return fn(*args), None
    except Exception as error:  # the student's code may raise anything; report it as a hint
        return None, CheckResult(exercise, False, f"your function raised {type(error).__name__}: {error}")


def patchify(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> CheckResult:
    """Exercise: ``fn(images (B, C, H, W), P) -> (B, N, C*P*P)``, patches row by row, each flattened as (C, P, P)."""
    name = "patchify"
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 12, 8, generator=generator)
    expected = F.unfold(images, kernel_size=4, stride=4).transpose(1, 2)  # (B, N, C*P*P), channel-major
    got, error = _call(name, fn, images, 4)
    if error is not None:
        return error
    if not isinstance(got, torch.Tensor):
        return CheckResult(name, False, f"return a torch.Tensor, not {type(got).__name__}.")
    if got.shape != expected.shape:
        return CheckResult(name, False, f"shape {tuple(got.shape)}, expected {tuple(expected.shape)} = (batch, "
                        "number of patches (H/P)*(W/P), values per patch C*P*P). Non-square images count too.")
    if torch.allclose(got, expected):
        return CheckResult(name, True, "your patches match the strided convolution's view of the image.")
    if torch.allclose(got.sort(dim=-1).values, expected.sort(dim=-1).values):
        return CheckResult(name, False, "each patch holds the right pixels in another order: flatten every patch "
                        "channel first, as (C, P, P), the order of a Conv2d kernel.")
    if torch.allclose(got.flatten(1).sort().values, expected.flatten(1).sort().values):
        return CheckResult(name, False, "the right pixels, but patches are cut or ordered differently: go row by row "
                        "(top-left, then to the right), and reshape height before width.")
    return CheckResult(name, False, "the values differ from the image's pixels: check the reshape/permute sequence "
                    "(B, C, H/P, P, W/P, P) -> (B, H/P, W/P, C, P, P).")


def attention(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> CheckResult:
    """Exercise: ``fn(q, k, v)`` with (B, h, T, d) inputs returns ``(output, weights)`` of scaled dot-product attention."""
    name = "attention"
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    scores = q @ k.transpose(-2, -1)
    weights = (scores / 8 ** 0.5).softmax(-1)
    got, error = _call(name, fn, q, k, v)
    if error is not None:
        return error
    if not (isinstance(got, tuple) and len(got) == 2):
        return CheckResult(name, False, "return a pair (output, attention weights).")
    out, w = got
    if w.shape != weights.shape or out.shape != v.shape:
        return CheckResult(name, False, f"output {tuple(out.shape)} / weights {tuple(w.shape)}; expected "
                        f"{tuple(v.shape)} / {tuple(weights.shape)}.")
    if torch.allclose(w, weights) and torch.allclose(out, weights @ v):
        return CheckResult(name, True, "softmax(QK^T / sqrt(d)) V, as in the paper.")
    if torch.allclose(w, scores.softmax(-1)):
        return CheckResult(name, False, "the weights are unscaled: divide the scores by sqrt(d) before the softmax.")
    if torch.allclose(w, (scores / 8 ** 0.5).softmax(-2)):
        return CheckResult(name, False, "the softmax runs over the queries: each query's weights over the keys must sum "
                        "to 1 (softmax over the last dimension).")
    if torch.allclose(w, weights):
        return CheckResult(name, False, "the weights are right; the output must be weights @ v.")
    return CheckResult(name, False, "the weights differ from softmax(q @ k^T / sqrt(d)); check the transpose of k.")


def vit_parameter_count(answer: int, model_name: str = "vit_pico_patch4_28") -> CheckResult:
    """Exercise: the number of parameters of ``model_name``, worked out by hand from its configuration."""
    from .models import create_model

    name = f"parameter count of {model_name}"
    model = create_model(model_name)
    total = sum(p.numel() for p in model.parameters())
    if answer == total:
        return CheckResult(name, True, f"{total:,} parameters.")
    parts = {
        "the class token": model.cls_token.numel(),
        "the position embedding": model.pos_embed.numel(),
        "the biases": sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias")),
        "the LayerNorm weights and biases": sum(p.numel() for n, p in model.named_parameters() if "norm" in n),
        "the classification head": sum(p.numel() for p in model.head.parameters()),
    }
    for part, count in parts.items():
        if answer == total - count:
            return CheckResult(name, False, f"close: you left out {part}.")
    block = sum(p.numel() for p in model.blocks[0].parameters())
    if (total - answer) % block == 0 and answer < total:
        return CheckResult(name, False, f"you are {(total - answer) // block} block(s) short: count all {len(model.blocks)}.")
    return CheckResult(name, False, f"off by {answer - total:+,}. Count per block: qkv (3 D^2 + 3 D), projection "
                    "(D^2 + D), two LayerNorms (4 D), MLP (2 D H + H + D with H = mlp_ratio * D); then patch "
                    "embedding, class token, position embedding, final norm and head.")


def bce_loss(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """Exercise (DeiT III, ResNet strikes back): ``fn(logits (B, K), mixed targets (B, K)) -> scalar``: binary
    cross-entropy on the targets binarised with ``target > 0`` (every class present in the mixed image is a 1),
    averaged over the batch and the classes."""
    from .train.losses import BinaryCrossEntropy

    name = "BCE on Mixup targets"
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=generator)
    labels, partners = torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([0, 3, 2, 1, 0, 4])
    targets = 0.7 * F.one_hot(labels, 5).float() + 0.3 * F.one_hot(partners, 5).float()
    got, error = _call(name, fn, logits, targets)
    if error:
        return error
    want = BinaryCrossEntropy(target_threshold=0.0)(logits, targets)
    got = torch.as_tensor(got, dtype=want.dtype)
    if got.numel() != 1:
        return CheckResult(name, False, f"return one number (the mean), got shape {tuple(got.shape)}.")
    if torch.allclose(got, want, atol=1e-5):
        return CheckResult(name, True, f"loss {want.item():.4f}.")
    soft = F.binary_cross_entropy_with_logits(logits, targets)
    if torch.allclose(got, soft, atol=1e-5):
        return CheckResult(name, False, "that is BCE on the soft targets (0.7 / 0.3): binarise them first with "
                           "targets > 0, so both mixed classes count as present.")
    if torch.allclose(got, want * 5, atol=1e-4):
        return CheckResult(name, False, "you sum over the classes: average over them too (mean over B and K).")
    return CheckResult(name, False, f"got {got.item():.4f}, expected {want.item():.4f}. Use "
                       "F.binary_cross_entropy_with_logits(logits, (targets > 0).float()).")


def solarize(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> CheckResult:
    """Exercise (DeiT III, 3-Augment): ``fn(image uint8 (C, H, W), threshold) -> uint8 image``: every pixel at or
    above the threshold is inverted (255 - value), the others are kept (PIL's ImageOps.solarize)."""
    import numpy as np
    from PIL import Image, ImageOps

    name = "solarize"
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for threshold in (128, 200):
        got, error = _call(name, fn, image.clone(), threshold)
        if error:
            return error
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        want = torch.from_numpy(np.asarray(ImageOps.solarize(pil, threshold))).permute(2, 0, 1)
        got = torch.as_tensor(got)
        if got.shape != want.shape:
            return CheckResult(name, False, f"keep the shape {tuple(want.shape)}, got {tuple(got.shape)}.")
        if not torch.equal(got.to(torch.uint8), want):
            wrong = (got.to(torch.uint8) != want).float().mean().item()
            return CheckResult(name, False, f"{100 * wrong:.0f}% of the pixels differ at threshold {threshold}: "
                               "invert (255 - v) the pixels with v >= threshold and keep the others.")
    return CheckResult(name, True, "matches PIL's ImageOps.solarize.")


def layer_scale_parameters(answer: int, model_name: str = "vit_pico_patch4_28") -> CheckResult:
    """Exercise (DeiT III): how many parameters LayerScale adds to ``model_name``."""
    from .models import create_model

    name = f"LayerScale parameters of {model_name}"
    added = (sum(p.numel() for p in create_model(model_name, init_values=1e-4).parameters())
             - sum(p.numel() for p in create_model(model_name, init_values=None).parameters()))
    if answer == added:
        return CheckResult(name, True, f"{added} parameters: one gamma of D values per residual branch.")
    blocks = len(create_model(model_name).blocks)
    if answer * 2 == added:
        return CheckResult(name, False, "each block has two residual branches (attention and MLP), each its own gamma.")
    return CheckResult(name, False, f"got {answer}: LayerScale multiplies each residual branch by a learned diagonal "
                       f"matrix diag(gamma), gamma of size D; count the branches of all {blocks} blocks.")


def mixup(fn: Callable[[torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]) -> CheckResult:
    """Exercise (ResNet strikes back): ``fn(images (B, C, H, W), one-hot targets (B, K), lam) -> (images, targets)``:
    Mixup as timm does it in 'batch' mode, each image mixed with the batch flipped (image i with image B-1-i)."""
    name = "Mixup"
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 3, 3, generator=generator)
    y = F.one_hot(torch.tensor([0, 1, 2, 1]), 3).float()
    got, error = _call(name, fn, x.clone(), y.clone(), 0.7)
    if error:
        return error
    if not isinstance(got, tuple) or len(got) != 2:
        return CheckResult(name, False, "return a pair (mixed images, mixed targets).")
    want_x, want_y = 0.7 * x + 0.3 * x.flip(0), 0.7 * y + 0.3 * y.flip(0)
    if not torch.allclose(torch.as_tensor(got[0]), want_x, atol=1e-6):
        return CheckResult(name, False, "the images are not lam * x + (1 - lam) * x.flip(0).")
    if not torch.allclose(torch.as_tensor(got[1]), want_y, atol=1e-6):
        return CheckResult(name, False, "the images are right; mix the targets with the same lam and partner.")
    return CheckResult(name, True, "images and targets mixed with the flipped batch.")


def lr_scaling(fn: Callable[[str, float, int, int], float]) -> CheckResult:
    """Exercise (ResNet strikes back): ``fn(optimizer, lr, batch, reference_batch) -> lr``: the lr for another
    batch size, linear for SGD / AdamW and square-root for LAMB (the rule of ``Recipe.scaled``)."""
    import math

    name = "lr scaling"
    cases = [("sgd", 0.1, 64, 256, 0.025), ("adamw", 1e-3, 2048, 1024, 2e-3), ("lamb", 4e-3, 128, 2048, 1e-3)]
    for optimizer, lr, batch, reference, want in cases:
        got, error = _call(name, fn, optimizer, lr, batch, reference)
        if error:
            return error
        if not isinstance(got, (int, float)) or not math.isclose(got, want, rel_tol=1e-6):
            return CheckResult(name, False, f"{optimizer}, lr {lr} at batch {reference} -> batch {batch}: expected "
                               f"{want:g}, got {got}. Linear: lr * b / B; LAMB: lr * sqrt(b / B).")
    return CheckResult(name, True, "linear for SGD and AdamW, square root for LAMB.")
