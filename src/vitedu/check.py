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


def _shape_or_type(value) -> str:
    """A wrong answer, described: its shape if it is a tensor, else its type."""
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


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
    if error is not None:
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
        if error is not None:
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
    if error is not None:
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
        if error is not None:
            return error
        if not isinstance(got, (int, float)) or not math.isclose(got, want, rel_tol=1e-6):
            return CheckResult(name, False, f"{optimizer}, lr {lr} at batch {reference} -> batch {batch}: expected "
                               f"{want:g}, got {got}. Linear: lr * b / B; LAMB: lr * sqrt(b / B).")
    return CheckResult(name, True, "linear for SGD and AdamW, square root for LAMB.")


def _keep_by_mass(maps: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """Patches of each (g, g) map, by decreasing value, kept while the mass ranked above them is < ``threshold``
    (an absolute amount, broadcast against (..., 1)). Returns a bool tensor shaped like ``maps``."""
    values, order = maps.flatten(-2).double().sort(dim=-1, descending=True, stable=True)
    keep = (values.cumsum(-1) - values) < threshold
    return torch.zeros_like(keep).scatter(-1, order, keep).reshape(maps.shape)


def mass_mask(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """Exercise (DINO, fig. 4): ``fn(maps (..., g, g) non-negative float, mass) -> bool tensor shaped like maps``:
    for each (g, g) map on its own, the smallest set of patches whose attention sums to at least ``mass`` of that
    map's total. Sorted by decreasing attention, a patch is kept while the patches ranked above it hold less than
    ``mass * total``, so the patch that crosses the threshold is kept and one that would come after an exact hit is
    not (``vitedu.viz.segmentation.mass_mask``)."""
    from .viz.segmentation import mass_mask as reference

    name = "mass mask"
    generator = torch.Generator().manual_seed(0)

    def peaked(*shape: int, total) -> torch.Tensor:  # like attention: a few large entries, many small ones
        maps = torch.rand(*shape, generator=generator) ** 3
        return maps / maps.sum((-2, -1), keepdim=True) * total

    # Dyadic values (multiples of 1/128) add up exactly: the three largest hold exactly 0.75 of the total.
    exact = (torch.tensor([40.0, 30, 26, 17, 5, 4, 3, 2, 1])[torch.randperm(9, generator=generator)] / 128).reshape(3, 3)
    batch_totals = 0.5 + 0.5 * torch.rand(2, 3, 1, 1, generator=generator)
    batch = peaked(2, 3, 5, 5, total=batch_totals)
    cases = [
        (peaked(6, 6, total=1.0), 0.6, "a (6, 6) map summing to 1"),
        (peaked(6, 6, total=1.0), 0.9, "a (6, 6) map summing to 1"),
        (exact, 0.75, "a (3, 3) map whose three largest patches hold exactly 0.75"),
        (peaked(6, 6, total=0.7), 0.6, "a (6, 6) map summing to 0.7 (a class token's row over the patches)"),
        (batch, 0.6, "a batch of (B=2, heads=3, 5, 5) maps, each with its own total"),
        (batch, 0.9, "a batch of (B=2, heads=3, 5, 5) maps, each with its own total"),
    ]
    for maps, mass, description in cases:
        got, error = _call(name, fn, maps.clone(), mass)
        if error is not None:
            return error
        where = f"on {description}, mass {mass}"
        if not isinstance(got, torch.Tensor):
            return CheckResult(name, False, f"return a torch.Tensor, not {type(got).__name__}.")
        if got.shape != maps.shape:
            return CheckResult(name, False, f"{where}: shape {tuple(got.shape)}, expected {tuple(maps.shape)}, the "
                               "shape of maps (one True/False per patch; flatten(-2) to sort, then reshape back).")
        if got.dtype != torch.bool:
            return CheckResult(name, False, f"return a bool mask (torch.bool), got {got.dtype}: the comparison "
                               "itself is bool, or convert with .bool().")
        want = reference(maps, mass)
        if torch.equal(got, want):
            continue
        differ = f"{int((got != want).sum())} of {got.numel()} patches differ {where}"
        if torch.equal(got, _keep_by_mass(maps, mass)):
            return CheckResult(name, False, f"{differ}: you compared with mass itself; measure it against each "
                               "map's own total (threshold mass * map.sum()), since a class token's attention over "
                               "the patches sums to less than 1.")
        extra = (got & ~want).flatten(-2).sum(-1)
        missing = (want & ~got).flatten(-2).sum(-1)
        if missing.sum() == 0 and extra.max() == 1:
            return CheckResult(name, False, f"one patch too many {where}: once the patches ranked above reach "
                               "mass * total exactly, the set is complete. Keep a patch only while the mass above it "
                               "is strictly below mass * total (<, not <=).")
        if extra.sum() == 0 and missing.max() == 1:
            return CheckResult(name, False, f"one patch too few {where}: keep the patch whose attention carries the "
                               "sum across mass * total too (compare the mass ranked above a patch, cumsum - value, "
                               "not the cumulative sum that includes it).")
        if maps.ndim > 2:
            return CheckResult(name, False, f"{differ}, though single maps pass: treat each (g, g) map on its own "
                               "(sort along flatten(-2)'s last dimension and use each map's own total), not the whole "
                               "batch or all heads together.")
        return CheckResult(name, False, f"{differ}: sort the patches by decreasing attention, accumulate, and keep "
                           "those ranked before the cumulative sum reaches mass * total, plus the one that reaches it.")
    return CheckResult(name, True, "the smallest set of patches holding the mass, map by map, as in DINO's figures.")


def jaccard(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """Exercise (DINO's segmentation score): ``fn(pred bool (B, H, W), target bool (B, H, W)) -> (B,) float``: per
    image, |pred & target| / |pred | target| (intersection over union), with 0/0 defined as 1: two empty masks agree
    (``vitedu.viz.segmentation.jaccard``)."""
    from .viz.segmentation import jaccard as reference

    name = "Jaccard"
    generator = torch.Generator().manual_seed(0)
    density = torch.tensor([0.2, 0.4, 0.6, 0.8])[:, None, None]
    pred = torch.rand(4, 8, 8, generator=generator) < density
    target = torch.rand(4, 8, 8, generator=generator) < density.flip(0)
    got, error = _call(name, fn, pred.clone(), target.clone())
    if error is not None:
        return error
    if not isinstance(got, torch.Tensor):
        return CheckResult(name, False, f"return a torch.Tensor, not {type(got).__name__}.")
    want = reference(pred, target).double()
    whole = (pred & target).sum() / (pred | target).sum()
    if got.numel() == 1 or (got.shape == want.shape and torch.allclose(got.double(), whole.double().expand(4))):
        return CheckResult(name, False, "one score per image: count the intersection and the union over H and W only "
                           "(sum over dims (-2, -1)), not over the whole batch. Expected shape (4,).")
    if got.shape != want.shape:
        return CheckResult(name, False, f"shape {tuple(got.shape)}, expected {tuple(want.shape)}: one score per image.")
    if not got.is_floating_point():
        return CheckResult(name, False, f"the scores are {got.dtype}: the counts of a bool mask are integers; divide "
                           "them with / (true division), not //, so 0.4 does not become 0.")
    got = got.double()
    if torch.allclose(got, want, atol=1e-6):
        pass
    elif torch.equal(got, want.floor()):
        return CheckResult(name, False, "the scores are rounded down to 0 or 1: divide the counts with / (true "
                           "division), not //.")
    elif torch.allclose(got, (pred & target).sum((-2, -1)) / pred.sum((-2, -1)).double(), atol=1e-6):
        return CheckResult(name, False, "that is intersection / |pred| (precision): divide by the union "
                           "|pred | target| instead.")
    elif torch.allclose(got, (pred & target).sum((-2, -1)) / target.sum((-2, -1)).double(), atol=1e-6):
        return CheckResult(name, False, "that is intersection / |target| (recall): divide by the union "
                           "|pred | target| instead.")
    else:
        return CheckResult(name, False, f"got {[round(v, 4) for v in got.tolist()]}, expected "
                           f"{[round(v, 4) for v in want.tolist()]}: (pred & target).sum((-2, -1)) / "
                           "(pred | target).sum((-2, -1)).")
    # Empty masks: both empty, only the prediction empty, neither.
    pred = torch.stack([torch.zeros(8, 8, dtype=torch.bool), torch.zeros(8, 8, dtype=torch.bool), pred[1]])
    target = torch.stack([torch.zeros(8, 8, dtype=torch.bool), target[0], target[1]])
    got, error = _call(name, fn, pred.clone(), target.clone())
    if error is not None:
        return CheckResult(name, False, f"{error.message} on a pair of empty masks: define 0/0 as 1, two empty masks "
                           "agree (e.g. torch.where(union == 0, 1.0, intersection / union.clamp(min=1))).")
    want = reference(pred, target).double()
    got = torch.as_tensor(got).double()
    if got.shape != want.shape or not torch.allclose(got, want, atol=1e-6):
        return CheckResult(name, False, f"on (empty, empty), (empty, non-empty) and (non-empty, non-empty) pairs: got "
                           f"{got.tolist()}, expected {[round(v, 4) for v in want.tolist()]}. Define 0/0 as 1: two "
                           "empty masks agree (torch.where(union == 0, 1.0, intersection / union.clamp(min=1))).")
    return CheckResult(name, True, "intersection over union per image, with two empty masks in full agreement.")


def _dino_loss_variant(student_output: torch.Tensor, teacher_output: torch.Tensor, center: torch.Tensor,
                       student_temp: float, teacher_temp: float, *, same_view: bool = False, centering: bool = True,
                       log: bool = True, pair_mean: bool = True, batch_mean: bool = True) -> torch.Tensor:
    """The DINO loss written out, with switches for the usual mistakes. Returns a scalar."""
    n_crops = len(student_output) // (len(teacher_output) // 2)
    student = (student_output / student_temp).log_softmax(-1) if log else (student_output / student_temp).softmax(-1)
    teacher = ((teacher_output - center if centering else teacher_output) / teacher_temp).softmax(-1)
    terms = [-(q * p).sum(-1).mean() if batch_mean else -(q * p).sum()
             for iq, q in enumerate(teacher.chunk(2)) for v, p in enumerate(student.chunk(n_crops))
             if same_view or v != iq]
    total = torch.stack(terms).sum()
    return total / len(terms) if pair_mean else total


def dino_loss(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float, float], torch.Tensor]) -> CheckResult:
    """Exercise (DINO, eq. 1-2, Algorithm 1): ``fn(student_output (n_crops * B, K), teacher_output (2 * B, K),
    center (1, K), student_temp, teacher_temp) -> scalar``. Both outputs are stacked crop-major (rows v*B:(v+1)*B are
    view v; the teacher's are the 2 global views, the student's views 0 and 1 are the same 2 global views). Teacher:
    P_t = softmax((t - center) / teacher_temp); student: log P_s = log_softmax(s / student_temp); the loss is the
    cross-entropy -sum_k P_t log P_s, averaged over the batch for each pair (teacher view iq, student view v != iq),
    then over the 2 * (n_crops - 1) pairs (``vitedu.ssl.dino.DINOLoss`` at a fixed teacher temperature)."""
    from .ssl.dino import DINOLoss

    name = "DINO loss"
    generator = torch.Generator().manual_seed(0)
    student_temp, teacher_temp = 0.1, 0.04
    for n_crops, batch, out_dim in ((4, 3, 8), (6, 2, 5)):
        student = 3 * torch.randn(n_crops * batch, out_dim, generator=generator)
        teacher = 3 * torch.randn(2 * batch, out_dim, generator=generator)
        center = torch.randn(1, out_dim, generator=generator)
        reference = DINOLoss(out_dim, n_crops, epochs=1, warmup_teacher_temp=teacher_temp, teacher_temp=teacher_temp,
                             warmup_teacher_temp_epochs=0, student_temp=student_temp)
        reference.center.copy_(center)  # forward updates the centre after computing the loss: this instance is used once
        want = reference(student, teacher, 0)
        got, error = _call(name, fn, student.clone(), teacher.clone(), center.clone(), student_temp, teacher_temp)
        if error is not None:
            return error
        try:
            got = torch.as_tensor(got).detach().to(want.dtype)
        except (TypeError, RuntimeError, ValueError):
            return CheckResult(name, False, f"return a scalar tensor, got {type(got).__name__}.")
        if got.numel() != 1:
            return CheckResult(name, False, f"return one number, the mean over the pairs of views, got shape "
                               f"{tuple(got.shape)}.")
        got = got.reshape(())
        if torch.allclose(got, want, rtol=1e-4, atol=1e-5):
            continue
        if n_crops != 4:
            return CheckResult(name, False, f"right with 4 views, wrong with {n_crops}: derive B = "
                               "len(teacher_output) // 2 and n_crops = len(student_output) // B from the shapes.")
        args = (student, teacher, center, student_temp, teacher_temp)
        crop_major = [x.reshape(batch, -1, out_dim).transpose(0, 1).reshape(-1, out_dim) for x in (student, teacher)]
        hints = [
            (_dino_loss_variant(*args, same_view=True), "you included the pairs where student and teacher see the "
             "same view: skip v == iq (each teacher view pairs with the n_crops - 1 other views)."),
            (_dino_loss_variant(*args, centering=False), "the teacher is not centred: subtract center from the "
             "teacher's output before dividing by teacher_temp."),
            (_dino_loss_variant(*args[:4], 1.0), "the teacher is not sharpened: divide the centred teacher output by "
             "teacher_temp before its softmax."),
            (_dino_loss_variant(student, teacher, center, teacher_temp, student_temp), "the temperatures are swapped: "
             "student_temp (0.1) divides the student's output, teacher_temp (0.04, sharper) the teacher's."),
            (_dino_loss_variant(*args, log=False), "the student's term uses softmax: the cross-entropy needs "
             "log-probabilities, log_softmax(student_output / student_temp)."),
            (_dino_loss_variant(*args, pair_mean=False), "you summed over the pairs of views: average over them "
             "(divide by the number of pairs, 2 * (n_crops - 1))."),
            (_dino_loss_variant(*args, batch_mean=False), "you summed over the batch: take each pair's mean over "
             "the B images."),
            (_dino_loss_variant(*crop_major, center, student_temp, teacher_temp), "the views are read image-major: "
             "the outputs are stacked crop-major, rows v*B:(v+1)*B are view v (use .chunk(n_crops) and .chunk(2))."),
        ]
        for variant, hint in hints:
            if torch.allclose(got, variant.to(want.dtype), rtol=1e-4, atol=1e-5):
                return CheckResult(name, False, f"got {got.item():.4f}, expected {want.item():.4f}: {hint}")
        return CheckResult(name, False, f"got {got.item():.4f}, expected {want.item():.4f}. Teacher: softmax((t - "
                           "center) / teacher_temp); student: log_softmax(s / student_temp); mean over the pairs "
                           "(iq, v != iq) of the batch mean of -sum(P_t * log P_s).")
    return CheckResult(name, True, "centred, sharpened teacher against every other view of the student, as in "
                       "DINO's Algorithm 1.")


# ---- Chapter 04 (LeViT) ----------------------------------------------------------------------------------------------


def attention_bias_index(fn: Callable[[int, int], torch.Tensor]) -> CheckResult:
    """Exercise: ``fn(resolution, stride)`` -> (N_q, N_k) table of offset indices |dy| * res + |dx|, queries on the
    key grid subsampled by ``stride`` (LeViT section 4.2; ``vitedu.models.levit.attention_bias_index``)."""
    from .models.levit import attention_bias_index as reference

    name = "attention bias index"
    for resolution, stride in ((4, 1), (5, 2), (7, 2)):
        want = reference(resolution, stride)
        got, error = _call(name, fn, resolution, stride)
        if error is not None:
            return error
        if not isinstance(got, torch.Tensor):
            return CheckResult(name, False, f"return a torch.Tensor, not {type(got).__name__}.")
        if got.shape != want.shape:
            hint = (" The queries sit on every stride-th row and column: N_q = ceil(res / stride)^2."
                    if got.shape[-1] == want.shape[-1] else " Shape (queries, keys).")
            return CheckResult(name, False, f"resolution {resolution}, stride {stride}: shape {tuple(got.shape)}, "
                               f"expected {tuple(want.shape)}.{hint}")
        if torch.equal(got.long(), want):
            continue
        n = resolution
        keys = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")).flatten(1)
        sub = torch.arange(0, n, stride)
        queries = torch.stack(torch.meshgrid(sub, sub, indexing="ij")).flatten(1)
        signed = queries[:, :, None] - keys[:, None, :]
        if (got < 0).any():
            return CheckResult(name, False, "negative indices: take the absolute offsets |dy|, |dx| (LeViT's bias is "
                               "symmetric, so res * res entries suffice).")
        if torch.equal(got.long(), signed[1].abs() * n + signed[0].abs()):
            return CheckResult(name, False, "dy and dx are swapped: the index is |dy| * res + |dx| (rows first).")
        if torch.equal(got.long(), (signed[0] + n - 1) * (2 * n - 1) + signed[1] + n - 1):
            return CheckResult(name, False, "that is a signed-offset table (2 res - 1)^2 entries, as in Swin: LeViT "
                               "uses absolute offsets, |dy| * res + |dx|.")
        return CheckResult(name, False, f"resolution {resolution}, stride {stride}: wrong entries. Query (i, j) sits "
                           "at pixel (stride * i, stride * j) of the key grid; keys and queries are numbered row by "
                           "row.")
    return CheckResult(name, True, "your table matches LeViT's, shrinking attention (stride 2) included.")


def fuse_linear_bn(fn: Callable[[torch.nn.Linear, torch.nn.BatchNorm1d], tuple[torch.Tensor, torch.Tensor]]
                   ) -> CheckResult:
    """Exercise: ``fn(linear, bn)`` for a Linear without bias followed by an eval-mode BatchNorm1d returns the fused
    ``(weight, bias)`` of one Linear with ``W' = s W`` (rows scaled) and ``b' = beta - s mu``,
    ``s = gamma / sqrt(var + eps)``."""
    name = "fuse Linear + BatchNorm"
    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(6, 4, bias=False).double()
    bn = torch.nn.BatchNorm1d(4, eps=1e-2).double().eval()  # a large eps, so that forgetting it shows
    with torch.no_grad():
        linear.weight.copy_(torch.randn(4, 6, generator=generator))
        bn.weight.copy_(torch.rand(4, generator=generator) + 0.5)
        bn.bias.copy_(torch.randn(4, generator=generator))
        bn.running_mean.copy_(torch.randn(4, generator=generator))
        bn.running_var.copy_(torch.rand(4, generator=generator) * 0.05 + 0.01)
    x = torch.randn(5, 6, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        want = bn(linear(x))
    got, error = _call(name, fn, linear, bn)
    if error is not None:
        return error
    if not (isinstance(got, tuple) and len(got) == 2):
        return CheckResult(name, False, "return a pair (weight, bias).")
    weight, bias = (torch.as_tensor(t).detach().double() for t in got)
    if weight.shape != (4, 6) or bias.shape != (4,):
        return CheckResult(name, False, f"weight {tuple(weight.shape)} / bias {tuple(bias.shape)}; expected "
                           "(out, in) = (4, 6) / (4,): the BN scales the linear layer's outputs, i.e. W's rows.")
    out = x @ weight.T + bias
    if torch.allclose(out, want, atol=1e-8):
        return CheckResult(name, True, "one Linear with bias computes exactly Linear then BatchNorm (eval mode).")
    with torch.no_grad():
        s = bn.weight / (bn.running_var + bn.eps).sqrt()
        right_weight = torch.allclose(weight, linear.weight * s[:, None])
        if not right_weight:
            if torch.allclose(weight, linear.weight * (bn.weight / bn.running_var.sqrt())[:, None]):
                return CheckResult(name, False, "the scale misses eps: s = gamma / sqrt(running_var + eps).")
            if torch.allclose(weight, linear.weight * (bn.weight / (bn.running_var + bn.eps))[:, None]):
                return CheckResult(name, False, "divide by the standard deviation, sqrt(running_var + eps), not by "
                                   "the variance.")
            return CheckResult(name, False, "wrong weight: scale each row i of W by s_i = gamma_i / sqrt(var_i + eps).")
        if torch.allclose(bias, bn.bias):
            return CheckResult(name, False, "the bias misses the running mean: b' = beta - s * running_mean.")
        if torch.allclose(bias, bn.bias - bn.running_mean):
            return CheckResult(name, False, "the running mean must be scaled too: b' = beta - s * running_mean.")
    return CheckResult(name, False, "the weight is right, the bias is not: b' = beta - s * running_mean.")


def levit_attention_bias_parameters(answer: int, model_name: str = "levit_128s") -> CheckResult:
    """Exercise: the number of attention-bias parameters of ``model_name`` at 224 px (every stage's attention and both
    shrinking attentions: heads x res^2 each, res the key grid's side)."""
    from .models import create_model
    from .models.levit import Attention, ShrinkAttention

    name = "LeViT attention-bias parameters"
    model = create_model(model_name)
    layers = [m for m in model.modules() if isinstance(m, (Attention, ShrinkAttention))]
    want = sum(m.attention_biases.numel() for m in layers)
    if answer == want:
        return CheckResult(name, True, f"{want} numbers replace the position embedding, a tiny fraction of the "
                           f"{sum(p.numel() for p in model.parameters()):,} parameters.")
    stage_only = sum(m.attention_biases.numel() for m in layers if isinstance(m, Attention))
    signed = sum(m.num_heads * (2 * m.resolution - 1) ** 2 for m in layers)
    per_layer = sum(m.resolution ** 2 for m in layers)
    hints = {stage_only: "you left out the two shrinking attentions: they have biases too (C / D heads each, over "
                         "the larger key grid).",
             signed: "LeViT indexes absolute offsets (|dy|, |dx|): res^2 of them per head, not (2 res - 1)^2.",
             per_layer: "each head has its own bias: multiply by the number of heads."}
    return CheckResult(name, False, hints.get(answer, f"{answer} is not it. Per layer: heads x res^2, res = 14, 7, 4 "
                       "for the three stages at 224 px; the shrinking attentions use their key grid (14, then 7)."))


# ---- Chapter 03 (ResMLP) ---------------------------------------------------------------------------------------------


def affine(cls: Callable[[int], torch.nn.Module]) -> CheckResult:
    """Exercise: ``cls(dim)`` is an ``nn.Module`` computing ResMLP's Aff(x) = alpha * x + beta per channel (the last
    axis of x (B, N, D)), with learnable ``alpha`` (init 1) and ``beta`` (init 0), and nothing else: no statistics of
    the data (``vitedu.models.resmlp.Affine``)."""
    name = "Affine"
    dim, patches = 6, 4
    module, error = _call(name, cls, dim)
    if error is not None:
        return error
    if not isinstance(module, torch.nn.Module):
        return CheckResult(name, False, f"cls(dim) must build an nn.Module, got {type(module).__name__}.")
    params = dict(module.named_parameters())
    if set(params) != {"alpha", "beta"}:
        hint = (" Wrap them in nn.Parameter so that the optimizer trains them." if not params else
                " Keep exactly two: alpha and beta, no weight of a LayerNorm or Linear.")
        return CheckResult(name, False, f"learnable parameters {sorted(params)}; expected ['alpha', 'beta'].{hint}")
    if params["alpha"].shape != (dim,) or params["beta"].shape != (dim,):
        return CheckResult(name, False, f"alpha {tuple(params['alpha'].shape)} / beta {tuple(params['beta'].shape)}; "
                           f"expected ({dim},) each: one scale and one shift per channel.")
    if not (torch.all(params["alpha"] == 1) and torch.all(params["beta"] == 0)):
        return CheckResult(name, False, "initialise alpha to ones and beta to zeros: the layer starts as the identity.")
    if list(module.buffers()):
        return CheckResult(name, False, "Affine keeps no buffers (no running statistics): that is what lets it fold "
                           "into a neighbouring linear layer.")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, patches, dim, generator=generator, dtype=torch.float64) * 2 + 1
    with torch.no_grad():
        module.double()
        params["alpha"].copy_(torch.rand(dim, generator=generator, dtype=torch.float64) + 0.5)
        params["beta"].copy_(torch.randn(dim, generator=generator, dtype=torch.float64))
    alpha, beta = params["alpha"].detach(), params["beta"].detach()
    with torch.no_grad():
        got, error = _call(name, module, x)
    if error is not None:
        return error
    want = alpha * x + beta
    if not isinstance(got, torch.Tensor) or got.shape != x.shape:
        return CheckResult(name, False, f"the output must have the input's shape {tuple(x.shape)}.")
    if torch.allclose(got, want, atol=1e-10):
        return CheckResult(name, True, "alpha * x + beta per channel: LayerNorm's place, without its statistics.")
    normalised = (x - x.mean(-1, keepdim=True)) / x.std(-1, unbiased=False, keepdim=True)
    if torch.allclose(got, alpha * normalised + beta, atol=1e-4):
        return CheckResult(name, False, "you normalised x, as LayerNorm does: Affine uses no statistics of x, only "
                           "alpha * x + beta.")
    if torch.allclose(got, alpha * x, atol=1e-10):
        return CheckResult(name, False, "beta is missing: add the shift.")
    if torch.allclose(got, x + beta, atol=1e-10):
        return CheckResult(name, False, "alpha is missing: scale x by alpha.")
    return CheckResult(name, False, "wrong values: alpha and beta act on the last axis (channels), every patch alike.")


def cross_patch_parameters(answer: int, model_name: str = "resmlp_12_224") -> CheckResult:
    """Exercise: the parameters of all cross-patch layers of ``model_name`` (each a ``Linear(N, N)`` with bias, N the
    number of patches), summed over the blocks."""
    from .models import create_model
    from .models.resmlp import ResMLPBlock

    name = "cross-patch parameters"
    with torch.device("meta"):
        model = create_model(model_name)
    blocks = [m for m in model.modules() if isinstance(m, ResMLPBlock)]
    n, depth, dim = model.num_patches, len(blocks), model.embed_dim
    want = depth * (n * n + n)
    total = sum(p.numel() for p in model.parameters())
    if answer == want:
        return CheckResult(name, True, f"{depth} x ({n}^2 + {n}) = {want:,}, {100 * want / total:.1f}% of the model's "
                           f"{total:,} parameters: patches are cheap to mix at 224 px, but N^2 grows fast with N.")
    grid = round(n ** 0.5)
    hints = {depth * n * n: "each cross-patch Linear has a bias too (one per patch): N^2 + N per layer.",
             n * n + n: f"that is one layer: there is one in each of the {depth} blocks.",
             n * n: f"one layer without its bias; and there are {depth} blocks.",
             depth * (grid * grid + grid): f"N is the number of patches, ({model.img_size} / {model.patch_size})^2 = "
                                            f"{n}, not the grid's side {grid}.",
             depth * (dim * dim + dim): "that is a channel-mixing Linear(D, D): the cross-patch layer mixes the N "
                                        "patches, Linear(N, N), the same for every channel.",
             depth * (n * n + n) * dim: "the cross-patch weights are shared by all channels: one N x N matrix per "
                                        "layer, not one per channel."}
    return CheckResult(name, False, hints.get(answer, f"{answer:,} is not it. N = ({model.img_size} / "
                       f"{model.patch_size})^2 patches; each of the {depth} blocks has one Linear(N, N) with bias."))


def cross_patch_matmul(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """Exercise: ``fn(x (B, N, D), weight (N, N), bias (N,)) -> (B, N, D)``, the cross-patch step written as a
    matrix product over the patch axis: ``out[b, n, d] = sum_m weight[n, m] x[b, m, d] + bias[n]``, the same as
    ``nn.Linear(N, N)`` applied to ``x.transpose(1, 2)`` and transposed back."""
    name = "cross-patch as a matmul"
    generator = torch.Generator().manual_seed(0)
    b, n, d = 2, 9, 5
    x = torch.randn(b, n, d, generator=generator, dtype=torch.float64)
    weight = torch.randn(n, n, generator=generator, dtype=torch.float64)
    bias = torch.randn(n, generator=generator, dtype=torch.float64)
    want = torch.nn.functional.linear(x.transpose(1, 2), weight, bias).transpose(1, 2)
    got, error = _call(name, fn, x.clone(), weight.clone(), bias.clone())
    if error is not None:
        return error
    if not isinstance(got, torch.Tensor):
        return CheckResult(name, False, f"return a torch.Tensor, not {type(got).__name__}.")
    if got.shape != want.shape:
        return CheckResult(name, False, f"shape {tuple(got.shape)}, expected {tuple(want.shape)}: the output keeps x's "
                           "(B, N, D) layout.")
    got = got.double()
    if torch.allclose(got, want, atol=1e-8):
        return CheckResult(name, True, "weight @ x mixes the patches of each channel alike: eq. (1)'s (A Z^T)^T.")
    if torch.allclose(got, torch.einsum("mn,bmd->bnd", weight, x) + bias[:, None], atol=1e-8):
        return CheckResult(name, False, "the weight is transposed: row n of the weight gathers the patches into patch "
                           "n, out[:, n] = sum_m weight[n, m] x[:, m].")
    if torch.allclose(got, want - bias[:, None], atol=1e-8):
        return CheckResult(name, False, "the bias is missing: add bias[n] to every channel of patch n.")
    if torch.allclose(got, want - bias[:, None] + bias[None, :d], atol=1e-8):
        return CheckResult(name, False, "the bias belongs to the patch axis (one per patch), not to the channels.")
    return CheckResult(name, False, "wrong values: out[b, n, d] = sum_m weight[n, m] x[b, m, d] + bias[n] (try "
                       "weight @ x, which multiplies over the patch axis of every batch item).")


# ---- Chapter 05 (PatchConvNet) ---------------------------------------------------------------------------------------


def _class_attention(x: torch.Tensor, cls: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor,
                     scale: bool = True, with_cls: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    u = torch.cat([cls, x], dim=1) if with_cls else x
    q, k, v = cls @ w_q.T, u @ w_k.T, u @ w_v.T
    scores = q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5 if scale else 1.0)
    attn = scores.softmax(dim=-1)
    return attn @ v, attn


def class_attention_pooling(fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> CheckResult:
    """Exercise: ``fn(x (B, N, D), cls (B, 1, D), w_q, w_k, w_v)`` -> ``(out (B, 1, D), attn (B, 1, N + 1))``, the
    pooling's class attention with one head and no bias: q = cls W_q^T, k = u W_k^T, v = u W_v^T over
    u = [cls; x], attn = softmax(q k^T / sqrt(D)), out = attn v (``nn.Linear``'s convention y = u W^T)."""
    name = "class-attention pooling"
    generator = torch.Generator().manual_seed(0)
    B, N, D = 2, 9, 8
    x = torch.randn(B, N, D, generator=generator, dtype=torch.float64)
    cls = torch.randn(B, 1, D, generator=generator, dtype=torch.float64)
    w_q, w_k, w_v = (torch.randn(D, D, generator=generator, dtype=torch.float64) for _ in range(3))
    want_out, want_attn = _class_attention(x, cls, w_q, w_k, w_v)
    got, error = _call(name, fn, x, cls, w_q, w_k, w_v)
    if error is not None:
        return error
    if not (isinstance(got, tuple) and len(got) == 2 and all(isinstance(t, torch.Tensor) for t in got)):
        return CheckResult(name, False, "return a pair of tensors (out, attn).")
    out, attn = (t.detach().double() for t in got)
    if attn.shape == (B, 1, N):
        return CheckResult(name, False, f"attn has {N} columns, one per patch: the class token attends to itself "
                           f"too, so the keys and values come from u = [cls; x], N + 1 = {N + 1} tokens.")
    if out.shape[1] != 1 or attn.shape[1] != 1:
        return CheckResult(name, False, f"out {tuple(out.shape)}, attn {tuple(attn.shape)}: only the class token "
                           f"asks a query, so out is (B, 1, D) = {(B, 1, D)} and attn (B, 1, N + 1) = {(B, 1, N + 1)}.")
    if out.shape != want_out.shape or attn.shape != want_attn.shape:
        return CheckResult(name, False, f"out {tuple(out.shape)}, attn {tuple(attn.shape)}; expected "
                           f"{tuple(want_out.shape)} and {tuple(want_attn.shape)}.")
    if torch.allclose(out, want_out) and torch.allclose(attn, want_attn):
        return CheckResult(name, True, "one query, N + 1 keys: the pooling's attention costs N + 1 scores, not "
                           "(N + 1)^2.")
    if not torch.allclose(attn.sum(-1), torch.ones_like(attn.sum(-1))):
        return CheckResult(name, False, "each attention row must sum to 1: softmax over the keys (the last "
                           "dimension) of the scores.")
    if torch.allclose(attn, _class_attention(x, cls, w_q, w_k, w_v, scale=False)[1]):
        return CheckResult(name, False, "scale the scores q k^T by 1 / sqrt(D) before the softmax.")
    if torch.allclose(attn, _class_attention(x, cls, w_q.T, w_k.T, w_v.T)[1]):
        return CheckResult(name, False, "the weights are in nn.Linear's layout (out, in): project with u @ W.T, "
                           "not u @ W.")
    if torch.allclose(attn, want_attn):
        return CheckResult(name, False, "attn is right but out is not: out = attn @ v, with v = u W_v^T over "
                           "all N + 1 tokens.")
    return CheckResult(name, False, "wrong attention weights: q from the class token only (cls W_q^T), k from "
                       "u = [cls; x] (u W_k^T), then softmax(q k^T / sqrt(D)).")


def attention_sizes(fn: Callable[[int, int, int, int], tuple[int, int, int]]) -> CheckResult:
    """Exercise: ``fn(img_size, patch_size, depth, num_heads)`` -> ``(tokens, vit_scores, pooling_scores)``: the
    number of patch tokens, the attention scores one image costs a ViT (class token included: ``depth`` blocks of
    ``num_heads`` (N + 1) x (N + 1) matrices) and PatchConvNet's pooling (one block, one head, one query over N + 1
    tokens)."""
    name = "attention sizes"
    for img_size, patch, depth, heads in ((224, 16, 12, 6), (448, 16, 12, 6), (384, 32, 24, 16)):
        n = (img_size // patch) ** 2
        want = (n, depth * heads * (n + 1) ** 2, n + 1)
        got, error = _call(name, fn, img_size, patch, depth, heads)
        if error is not None:
            return error
        if not (isinstance(got, (tuple, list)) and len(got) == 3):
            return CheckResult(name, False, "return three numbers: (tokens, vit_scores, pooling_scores).")
        try:
            tokens, vit, pool = (int(v) for v in got)
        except (TypeError, ValueError):
            return CheckResult(name, False, "return three whole numbers: (tokens, vit_scores, pooling_scores).")
        where = f"at {img_size} px, patch {patch}, {depth} blocks of {heads} heads"
        if tokens != n:
            hint = " (the grid is (side / patch) squared)" if tokens in (img_size // patch, n + 1) else ""
            return CheckResult(name, False, f"{where}: {tokens} tokens, expected {n}{hint}; count the patches only.")
        if vit != want[1]:
            hints = {depth * heads * n * n: "the class token takes part in the ViT's attention: (N + 1)^2 scores "
                                            "per head.",
                     heads * (n + 1) ** 2: "every block has its own attention: multiply by the depth.",
                     depth * (n + 1) ** 2: "every head has its own matrix: multiply by the number of heads.",
                     (n + 1) ** 2: "one (N + 1)^2 matrix per head and per block."}
            return CheckResult(name, False, f"{where}: ViT scores {vit}. " + hints.get(vit, "Count depth x heads x "
                               "(N + 1)^2."))
        if pool != want[2]:
            hint = ("the pooling has a single query (the class token): one row of N + 1 scores."
                    if pool in ((n + 1) ** 2, n * n) else "one block, one head, one query over the N + 1 tokens.")
            return CheckResult(name, False, f"{where}: pooling scores {pool}. {hint}")
    n = (448 // 16) ** 2
    return CheckResult(name, True, f"at 448 px a ViT-S computes {12 * 6 * (n + 1) ** 2:,} attention scores per image "
                       f"(and stores them unless its kernel is fused); the pooling {n + 1}.")


def attention_weighted_pooling(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """Exercise: ``fn(features (B, D, H, W), scores (B, H, W))`` -> (B, D): the features averaged with the weights
    softmax(scores) over all H x W positions (with equal scores: average pooling)."""
    name = "attention-weighted pooling"
    generator = torch.Generator().manual_seed(0)
    B, D, H, W = 2, 5, 3, 4
    features = torch.randn(B, D, H, W, generator=generator, dtype=torch.float64)
    scores = 2 * torch.randn(B, H, W, generator=generator, dtype=torch.float64)
    weights = scores.flatten(1).softmax(-1)
    want = torch.einsum("bdn,bn->bd", features.flatten(2), weights)
    got, error = _call(name, fn, features, scores)
    if error is not None:
        return error
    if not isinstance(got, torch.Tensor):
        return CheckResult(name, False, f"return a torch.Tensor, not {type(got).__name__}.")
    got = got.detach().double()
    if got.shape != want.shape:
        return CheckResult(name, False, f"shape {tuple(got.shape)}, expected (B, D) = {tuple(want.shape)}: one "
                           "pooled vector per image.")
    if torch.allclose(got, want):
        constant, error = _call(name, fn, features, torch.zeros_like(scores))
        if error is None and isinstance(constant, torch.Tensor) and not torch.allclose(
                constant.double(), features.mean((2, 3))):
            return CheckResult(name, False, "equal scores must give average pooling.")
        return CheckResult(name, True, "with equal scores this is average pooling; a trained pooling can give "
                           "a small object most of the weight instead of its share of the pixels.")
    if torch.allclose(got, features.mean((2, 3))):
        return CheckResult(name, False, "that is average pooling: weight each position by softmax(scores).")
    rows = torch.einsum("bdhw,bhw->bd", features, scores.softmax(-1))
    cols = torch.einsum("bdhw,bhw->bd", features, scores.softmax(-2))
    if torch.allclose(got, rows) or torch.allclose(got, cols):
        return CheckResult(name, False, "the softmax runs over one spatial axis only: flatten H x W and take it over "
                           "all positions, so the weights of an image sum to 1.")
    if torch.allclose(got, torch.einsum("bdhw,bhw->bd", features, scores)):
        return CheckResult(name, False, "the raw scores are not weights: turn them into a distribution with a "
                           "softmax first.")
    if torch.allclose(got, torch.einsum("bdhw,bhw->bd", features, scores.exp())):
        return CheckResult(name, False, "exp(scores) must be normalised: divide by its sum over the positions "
                           "(that is the softmax).")
    return CheckResult(name, False, "wrong values: out[b, d] = sum over (h, w) of softmax(scores[b])[h, w] * "
                       "features[b, d, h, w].")


# ---- Chapter 06 (Three things) ---------------------------------------------------------------------------------------


def block_parameters(fn: Callable[[int, float, int, bool], int]) -> CheckResult:
    """Exercise: ``fn(dim, mlp_ratio, num_parallel, layer_scale)`` -> the parameters of one ViT block with
    ``num_parallel`` attention and MLP branches (1: the sequential block), each branch with its LayerNorm, biases
    everywhere, and a LayerScale per branch when ``layer_scale`` (``vitedu.models.vit.Block`` / ``ParallelBlock``)."""
    from .models.vit import Block, ParallelBlock

    name = "parameters of a (parallel) block"
    for dim, ratio, parallel, scale in ((64, 2.0, 1, False), (64, 2.0, 2, True), (384, 4.0, 2, True),
                                        (48, 3.0, 3, False)):
        init = 1e-4 if scale else None
        block = (Block(dim, 4, ratio, init_values=init) if parallel == 1
                 else ParallelBlock(dim, 4, parallel, ratio, init_values=init))
        want = sum(p.numel() for p in block.parameters())
        got, error = _call(name, fn, dim, ratio, parallel, scale)
        if error is not None:
            return error
        if got == want:
            continue
        d, h, p = dim, int(dim * ratio), parallel
        attn, mlp, norms, scales = 4 * d * d + 4 * d, 2 * d * h + h + d, 4 * d, 2 * d * scale
        hints = {p * (attn + mlp + scales): "each branch has its own LayerNorm (weight and bias, 2 x dim), before its "
                                            "attention or MLP.",
                 p * (4 * d * d + 2 * d * h + norms + scales): "the linear layers have biases: qkv (3 dim), proj "
                                                                "(dim), fc1 (hidden), fc2 (dim).",
                 p * (attn + mlp + norms): "LayerScale adds one vector of dim numbers per branch (two per "
                                           "attention/MLP pair).",
                 attn + mlp + norms + scales: "a parallel block has num_parallel attention and num_parallel MLP "
                                              "branches: multiply by num_parallel.",
                 p * (attn + mlp + norms + scales // 2): "each branch (attention and MLP alike) has its own "
                                                         "LayerScale."}
        return CheckResult(name, False, f"dim {dim}, mlp_ratio {ratio}, {parallel} branch(es), layer_scale {scale}: "
                           f"{got}, expected {want}. " + hints.get(got, "Count, per branch: LayerNorm, qkv and proj "
                                                                   "of the attention, fc1 and fc2 of the MLP."))
    return CheckResult(name, True, "right for sequential and parallel blocks: 2 parallel branches at half the depth "
                       "have exactly the parameters of the sequential stack.")


def attention_only_trainable(fn: Callable[[torch.nn.Module], object]) -> CheckResult:
    """Exercise: ``fn(model)`` -> the names of the parameters that attention-only fine-tuning trains (Three things,
    section 3: every attention weight, plus head and position embedding; ``vitedu.train.set_trainable``)."""
    from .models import create_model
    from .train import set_trainable

    name = "attention-only trainable parameters"
    for model_name in ("vit_pico_patch4_32", "vit_pico_patch4_32_2x2", "deit_pico_distilled_patch4_32"):
        model = create_model(model_name)
        set_trainable(model, "attention")
        want = {n for n, p in model.named_parameters() if p.requires_grad}
        got, error = _call(name, fn, create_model(model_name))
        if error is not None:
            return error
        try:
            got = {str(n) for n in got}
        except TypeError:
            return CheckResult(name, False, "return the parameter names (a list or set of strings from "
                               "model.named_parameters()).")
        if got == want:
            continue
        missing, extra = want - got, got - want
        if any(n.startswith("head") for n in missing):
            hint = "the classifier trains too: head.* (and head_dist.* for a distilled model)."
        elif "pos_embed" in missing:
            hint = "the position embedding trains too (it must adapt to a new resolution)."
        elif any(".attns.1." in n for n in missing):
            hint = ("both attention branches of a parallel block train: the official code names the second one "
                    "'attn1', and a '.attn.' filter silently freezes it. Do not repeat that bug.")
        elif any("norm" in n for n in extra):
            hint = "the LayerNorms stay frozen, even those in front of the attention."
        elif any("mlp" in n for n in extra):
            hint = "the MLPs stay frozen: that is the point."
        elif extra & {"cls_token", "dist_token"} or any(n.startswith("patch_embed") for n in extra):
            hint = "the patch embedding and the class (and distillation) token stay frozen."
        else:
            hint = f"missing {sorted(missing)[:3]}, extra {sorted(extra)[:3]}."
        return CheckResult(name, False, f"{model_name}: {hint}")
    model = create_model("vit_pico_patch4_32")
    share = set_trainable(model, "attention") / sum(p.numel() for p in model.parameters())
    return CheckResult(name, True, f"the same set as vitedu's set_trainable: {100 * share:.0f}% of "
                       "vit_pico_patch4_32's "
                       "parameters, both parallel branches and the distillation head included.")


def patch_mask(fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]) -> CheckResult:
    """Exercise: ``fn(images (B, C, H, W), mask (B, N) bool, patch_size)`` -> the images with the pixels of every
    masked patch set to 0, patches numbered row by row (``vitedu.experiments.three_things.mask_patches``)."""
    from .experiments.three_things import mask_patches, masking_leak
    from .models import create_model

    name = "mask patches"
    generator = torch.Generator().manual_seed(0)
    for size, patch in ((8, 2), (12, 4)):
        grid = size // patch
        images = torch.randn(2, 3, size, size, generator=generator) + 3.0  # no pixel is already 0
        mask = torch.rand(2, grid * grid, generator=generator) < 0.5
        mask[:, 1], mask[:, grid] = True, False  # asymmetric, so that a transposed mask shows
        want = mask_patches(images, mask, patch)
        got, error = _call(name, fn, images.clone(), mask.clone(), patch)
        if error is not None:
            return error
        if not isinstance(got, torch.Tensor) or got.shape != images.shape:
            return CheckResult(name, False, f"return images of the input's shape {tuple(images.shape)}, got "
                               f"{_shape_or_type(got)}.")
        if torch.allclose(got, want):
            continue
        flipped = mask.reshape(2, grid, grid).transpose(1, 2).reshape(2, -1)
        if torch.allclose(got, mask_patches(images, flipped, patch)):
            return CheckResult(name, False, "rows and columns are swapped: patch n sits at row n // grid, column "
                               "n % grid.")
        if torch.allclose(got, mask_patches(images, ~mask, patch)):
            return CheckResult(name, False, "you zeroed the visible patches: True in the mask means masked.")
        return CheckResult(name, False, f"{size} x {size} images, {patch}-px patches: wrong pixels. Each True entry "
                           "n of the mask zeroes the P x P square at rows P*(n // grid) ..., columns P*(n % grid) ...")
    model = create_model("vit_pico_hmlp_patch4_32")
    images = torch.randn(2, 3, 32, 32, generator=generator)
    mask = torch.rand(2, 64, generator=generator) < 0.5
    leak = masking_leak(model, images, mask)
    return CheckResult(name, True, f"masking these pixels before the hMLP stem leaves its visible tokens unchanged "
                       f"(largest difference {leak['max_abs_diff']:.1g}): masking before or after the stem is the "
                       "same.")


# ---- Chapter 09 (compact codes) --------------------------------------------------------------------------------------

def code_memory(fn: Callable[[int, int], int]) -> CheckResult:
    """Exercise: ``fn(n_vectors, bits)`` -> bytes taken by ``n_vectors`` codes of ``bits`` bits, each code stored in
    whole bytes as faiss stores it (``ceil(bits / 8)`` bytes per vector)."""
    name = "code memory"
    for n, bits in ((1_000_000, 64), (1_000_000_000, 32), (10, 12), (3, 1), (7, 128)):
        want = n * ((bits + 7) // 8)
        got, error = _call(name, fn, n, bits)
        if error is not None:
            return error
        try:
            got = float(got)
        except (TypeError, ValueError):
            return CheckResult(name, False, f"return a number of bytes, not {type(got).__name__}.")
        if got == want:
            continue
        if got == n * bits:
            return CheckResult(name, False, f"{n} codes of {bits} bits: {got:.0f} is a number of bits; a byte "
                               "holds 8.")
        if abs(got - n * bits / 8) < 1e-6 * max(1.0, n * bits / 8) or got == -(-n * bits // 8):
            return CheckResult(name, False, f"{n} codes of {bits} bits: every code is stored on its own in whole "
                               f"bytes, so round up per vector: ceil({bits} / 8) = {(bits + 7) // 8} bytes each.")
        if got == n * bits * 4:
            return CheckResult(name, False, "that is the size of bits-dimensional float32 vectors: a code of b "
                               "bits takes b / 8 bytes (rounded up), not 4 bytes per bit.")
        return CheckResult(name, False, f"{n} codes of {bits} bits should take {want} bytes, got {got:.0f}.")
    return CheckResult(name, True, "1M vectors of 64 bits fit in 8 MB, where 1M float32 vectors of dimension 64 "
                       "take 256 MB: 32 times less.")


def _ls_reference(features, x):
    import numpy as np

    design = np.concatenate([features, np.ones((len(features), 1))], 1)
    return design, design @ np.linalg.lstsq(design, x, rcond=None)[0]


def least_squares_decoder(fn: Callable) -> CheckResult:
    """Exercise: ``fn(features (n, p), x (n, d))`` -> ``A`` of shape (p + 1, d), the least-squares decoder
    ``x_hat = [f, 1] A`` (last row: the bias) of the codes' features, for binary signs and for PQ's one-hot
    indicators (whose normal equations are singular)."""
    import numpy as np

    from .codes import LSH, ProductQuantizer

    name = "least-squares decoder"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 8)) * np.linspace(2.0, 0.2, 8) + 0.5
    for label, encoder in (("LSH signs", LSH(8, 6, seed=0).fit(x)), ("PQ one-hot", ProductQuantizer(8, 2, 3).fit(x))):
        features = encoder.features(encoder.encode(x))
        design, best = _ls_reference(features, x)
        got, error = _call(name, fn, features.copy(), x.copy())
        if error is not None:
            if "singular" in error.message.lower():
                return CheckResult(name, False, f"{label}: F^T F is singular (each block of one-hot columns adds "
                                   "up to the column of ones): solve with np.linalg.lstsq or np.linalg.pinv instead "
                                   "of inverting it.")
            return error
        A = np.asarray(got, dtype=np.float64)
        if A.shape == (features.shape[1], x.shape[1]):
            return CheckResult(name, False, f"{label}: A has {A.shape[0]} rows, one per feature; add a column of "
                               "ones to the features so that the last row of A is the bias (the data is not "
                               "centred).")
        if A.shape != (features.shape[1] + 1, x.shape[1]):
            return CheckResult(name, False, f"{label}: A must have shape (p + 1, d) = "
                               f"{(features.shape[1] + 1, x.shape[1])}, got {A.shape}.")
        if not np.isfinite(A).all():
            return CheckResult(name, False, f"{label}: A holds NaN or infinite values: the normal equations are "
                               "singular for one-hot features; use np.linalg.lstsq or np.linalg.pinv.")
        mine = design @ A
        if np.allclose(mine, best, atol=1e-6 * np.abs(best).max()):
            continue
        mse, best_mse = ((mine - x) ** 2).sum(1).mean(), ((best - x) ** 2).sum(1).mean()
        return CheckResult(name, False, f"{label}: your decoder's training MSE is {mse:.4f}, least squares reaches "
                           f"{best_mse:.4f}: minimise ||[F, 1] A - X||^2 over A.")
    return CheckResult(name, True, "the same reconstructions as the least-squares solution, for binary and PQ codes "
                       "(vitedu.codes.LinearDecoder solves the same normal equations by chunks).")


def recall_against_brute_force(fn: Callable) -> CheckResult:
    """Exercise: ``fn(queries, database, decoded, R)`` -> 1-recall@R, the fraction of queries whose exact nearest
    neighbour in ``database`` (squared L2, brute force) is among the ``R`` decoded vectors nearest to the query."""
    import numpy as np

    from .codes import ProductQuantizer, recall_at, search

    name = "recall@R"
    rng = np.random.default_rng(0)
    database = rng.standard_normal((400, 8)).astype(np.float32)
    queries = rng.standard_normal((60, 8)).astype(np.float32)
    pq = ProductQuantizer(8, 4, 5, seed=0).fit(database)  # 20-bit codes, no two decoded alike: no ties to break
    decoded = pq.decode(pq.encode(database)).astype(np.float32)
    _, truth = search(queries, database, 10)
    for R in (1, 5, 10):
        _, found = search(queries, decoded, R + 1)
        want = recall_at(found, truth, (R,))[R]
        got, error = _call(name, fn, queries.copy(), database.copy(), decoded.copy(), R)
        if error is not None:
            return error
        try:
            got = float(got)
        except (TypeError, ValueError):
            return CheckResult(name, False, f"return the recall as a number between 0 and 1, not "
                               f"{type(got).__name__}.")
        if abs(got - want) < 1e-9:
            continue
        if abs(got - 100 * want) < 1e-6:
            return CheckResult(name, False, "return a fraction between 0 and 1, not a percentage.")
        if got == 1.0:
            return CheckResult(name, False, f"R={R}: recall 1.0, but it is {want:.3f}: the ground truth must come "
                               "from the raw database (the exact neighbour), the ranking from the decoded vectors.")
        r_recall = float(np.mean([len(set(truth[i, :R]) & set(found[i, :R])) / R for i in range(len(queries))]))
        if abs(got - r_recall) < 1e-9 and R > 1:
            return CheckResult(name, False, f"R={R}: you measured the overlap of the R true and R found neighbours "
                               "(R-recall@R); 1-recall@R asks only whether the single nearest neighbour is found.")
        near = {r: recall_at(found, truth, (r,))[r] for r in (R - 1, R + 1) if r >= 1}
        if any(abs(got - v) < 1e-9 for v in near.values()) and got not in (want,):
            return CheckResult(name, False, f"R={R}: off by one: keep exactly the first R results (indices "
                               "0 ... R-1 of the sorted list).")
        return CheckResult(name, False, f"R={R}: expected {want:.3f}, got {got:.3f}: rank the decoded vectors by "
                           "squared L2 distance to each query.")
    return CheckResult(name, True, "the same recall as vitedu.codes.search + recall_at on a PQ-coded database.")


# ---- Chapter 08 (watermarking) ---------------------------------------------------------------------------------------

import functools  # noqa: E402  (the section's own import, kept with it)


def hypercone_threshold(fn: Callable[[float, int], float]) -> CheckResult:
    """Exercise: ``fn(fpr, d)`` -> the cosine threshold tau = cos(theta) of the dual hypercone whose false-positive
    rate is ``fpr`` for features uniform on the sphere of R^d (``vitedu.watermark.threshold``)."""
    import numpy as np
    from scipy import special

    from .watermark import false_positive_rate, threshold

    name = "hypercone threshold"
    for fpr, d in ((1e-6, 63), (1e-2, 8), (1e-3, 2048), (0.2, 3)):
        want = threshold(fpr, d)
        got, error = _call(name, fn, fpr, d)
        if error is not None:
            return error
        try:
            got = float(np.asarray(got, dtype=np.float64))
        except (TypeError, ValueError):
            return CheckResult(name, False, f"return one number (the cosine threshold), got {type(got).__name__}.")
        if abs(got - want) <= 1e-6 * max(1.0, abs(want)):
            continue
        hints = [
            (threshold(min(2 * fpr, 0.99), d), "that is the threshold of ONE cone: the detector flags |cos| >= tau, "
                                               "both cones around a and -a, and the formula I_{1 - tau^2}((d - 1)/2, "
                                               "1/2) already counts both."),
            (np.arccos(want), "that is the half-angle theta in radians: return its cosine, tau = cos(theta)."),
            (want ** 2, "that is tau^2 = 1 - I^{-1}: take the square root."),
            (np.sqrt(special.betaincinv(d / 2, 0.5, fpr)), "mixed up the variable: I is evaluated at 1 - tau^2, "
                                                           "so tau = sqrt(1 - I^{-1}_fpr((d - 1)/2, 1/2))."),
            (np.sqrt(1 - special.betaincinv(d / 2, 0.5, fpr)), "the first parameter of the beta function is "
                                                               "(d - 1) / 2, not d / 2."),
            (np.sqrt(1 - special.betaincinv(0.5, (d - 1) / 2, fpr)), "the two parameters are swapped: "
                                                                     "I_x((d - 1) / 2, 1 / 2)."),
        ]
        for value, hint in hints:
            if np.isfinite(value) and abs(got - value) <= 1e-6 * max(1.0, abs(value)):
                return CheckResult(name, False, f"fpr {fpr:g}, d {d}: {got:.6f}, expected {want:.6f}; {hint}")
        return CheckResult(name, False, f"fpr {fpr:g}, d {d}: {got:.6f}, expected {want:.6f}. Invert FPR(tau) = "
                           "I_{1 - tau^2}((d - 1)/2, 1/2) with scipy.special.betaincinv.")
    tau = threshold(1e-6, 2048)
    return CheckResult(name, True, f"at FPR 1e-6 the cone is tau = {threshold(1e-6, 63):.3f} wide in d = 63 but "
                       f"tau = {tau:.3f} in the paper's d = 2048 (a half-angle of {np.degrees(np.arccos(tau)):.1f} "
                       f"degrees; FPR check {false_positive_rate(tau, 2048):.1e}).")


def decode_bits(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """Exercise: ``fn(features (N, d), carriers (k, d))`` -> the bits (N, k) in {-1, 1} read as the signs of the
    projections phi^T a_i (``vitedu.watermark.decode``)."""
    from .watermark import decode, make_carriers

    name = "decode bits"
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(5, 12, generator=generator) * torch.rand(5, 1, generator=generator) * 3
    carriers = make_carriers(12, 7, seed=3, orthonormal=False)
    want = decode(features, carriers)
    got, error = _call(name, fn, features.clone(), carriers.clone())
    if error is not None:
        return error
    if not isinstance(got, torch.Tensor):
        return CheckResult(name, False, f"return a torch.Tensor, not {type(got).__name__}.")
    if got.shape == want.T.shape and got.shape != want.shape:
        return CheckResult(name, False, f"shape {tuple(got.shape)}: one row per image, one column per bit, (N, k) = "
                           f"{tuple(want.shape)} (project with features @ carriers.T).")
    if got.shape != want.shape:
        return CheckResult(name, False, f"shape {tuple(got.shape)}, expected (N, k) = {tuple(want.shape)}.")
    got = got.float()
    if torch.equal(got, want):
        return CheckResult(name, True, "the signs of the projections; they do not depend on the feature's norm, so "
                           "scaling an image's feature never flips a bit.")
    if torch.equal(got, (want + 1) / 2):
        return CheckResult(name, False, "bits in {0, 1}: the book's messages are in {-1, 1} (map b to 2 b - 1).")
    if torch.equal(got, -want):
        return CheckResult(name, False, "every bit is flipped: a positive projection reads as +1.")
    if torch.allclose(got, (features @ carriers.T).float()):
        return CheckResult(name, False, "those are the projections: keep only their signs.")
    return CheckResult(name, False, "wrong bits: bit i of image n is sign(features[n] . carriers[i]), +1 for 0.")


def bits_pvalue(fn: Callable[[int, int], float]) -> CheckResult:
    """Exercise: ``fn(correct, k)`` -> the p-value of ``correct`` right bits out of ``k``: the probability that an
    unmarked image (each bit right with probability 1/2) decodes at least that well, P(Bin(k, 1/2) >= correct)."""
    import numpy as np
    from scipy import stats

    from .watermark import bits_pvalue as reference

    name = "p-value of correct bits"
    for correct, k in ((25, 30), (30, 30), (15, 30), (0, 10), (7, 8)):
        want = float(reference(correct, k))
        got, error = _call(name, fn, correct, k)
        if error is not None:
            return error
        try:
            got = float(np.asarray(got, dtype=np.float64))
        except (TypeError, ValueError):
            return CheckResult(name, False, f"return one probability, got {type(got).__name__}.")
        if abs(got - want) <= 1e-9 + 1e-6 * want:
            continue
        hints = [
            (stats.binom.sf(correct, k, 0.5), "that is P(Bin > correct): the p-value includes the observed count, "
                                              "P(Bin(k, 1/2) >= correct) = sf(correct - 1)."),
            (stats.binom.pmf(correct, k, 0.5), "that is the probability of exactly that count: sum the tail, every "
                                               "count at least as good."),
            (stats.binom.cdf(correct, k, 0.5), "that is the lower tail: more correct bits is the stronger evidence, "
                                               "so sum upwards."),
            (0.5 ** correct, "(1/2)^correct ignores which bits were right: count the ways with the binomial."),
        ]
        for value, hint in hints:
            if abs(got - value) <= 1e-9 + 1e-6 * value:
                return CheckResult(name, False, f"{correct} of {k}: {got:.4g}, expected {want:.4g}; {hint}")
        return CheckResult(name, False, f"{correct} of {k}: {got:.4g}, expected {want:.4g} = sum over j >= correct "
                           "of C(k, j) / 2^k.")
    return CheckResult(name, True, f"25 of 30 bits right happens by chance with probability {reference(25, 30):.1e}, "
                       f"all 30 with {reference(30, 30):.1e}: a 30-bit message read without error is stronger "
                       "evidence than the zero-bit detector at FPR 1e-6.")


@functools.lru_cache(maxsize=1)
def _marked_for_attack() -> tuple:
    """Zero-bit marks on six held-out photo crops (PSNR 40 dB, 100 steps, augmentation on) and their extractor."""
    from .experiments.watermark_study import photo_crops
    from .watermark import MarkConfig, default_extractor, detect, make_carriers, mark

    extractor = default_extractor("DINO").fit_whitening(photo_crops(300, 64, seed=0))
    carrier = make_carriers(extractor.dim, 1, seed=1)
    images = photo_crops(8, 64, seed=1)
    marked = mark(images, extractor, carrier, config=MarkConfig(steps=100, target_psnr=40.0)).images
    with torch.no_grad():
        detected = detect(extractor(marked), carrier[0]).detected
    return extractor, carrier, marked[detected]


def break_mark(attack: Callable[[torch.Tensor], torch.Tensor]) -> CheckResult:
    """Exercise: ``attack(image (3, H, W) in [0, 1])`` -> an edited image of the same size that a viewer would call the
    same picture (SSIM >= 0.6 against the marked image) and on which the zero-bit detector (FPR 1e-6) no longer finds
    the mark, for every one of a few marked photo crops (marked with augmentation, as in the chapter)."""
    import numpy as np

    from .watermark import detect, psnr, ssim

    name = "break the mark"
    extractor, carrier, marked = _marked_for_attack()
    attacked = []
    for image in marked:
        got, error = _call(name, attack, image.clone())
        if error is not None:
            return error
        if not isinstance(got, torch.Tensor) or got.shape != image.shape:
            return CheckResult(name, False, f"return one image of the input's shape {tuple(image.shape)}, got "
                               f"{_shape_or_type(got)} "
                               "(keep the size, so that the edit can be compared with the image).")
        if not got.is_floating_point() or got.min() < 0 or got.max() > 1:
            return CheckResult(name, False, "return a float image in [0, 1] (clamp it).")
        attacked.append(got.detach().float())
    attacked = torch.stack(attacked)
    similarity, quality = ssim(attacked, marked), psnr(attacked, marked)
    with torch.no_grad():
        found = detect(extractor(attacked), carrier[0])
    survived = int(found.detected.sum())
    numbers = (f"SSIM {similarity.min():.2f} to {similarity.max():.2f}, PSNR {quality.mean():.1f} dB, mark still "
               f"found on {survived} of {len(marked)}")
    if similarity.min() < 0.6:
        return CheckResult(name, False, f"{numbers}: the edit changes the picture too much (SSIM < 0.6 against the "
                           "marked image); destroying an image always removes its mark. Find a milder edit.")
    if survived:
        return CheckResult(name, False, f"{numbers}: the mark survives that edit on some images. Try an edit the "
                           "marking never showed the extractor: a tiny translation, noise, a colour change...")
    return CheckResult(name, True, f"{numbers}; median p-value {float(np.median(found.pvalue)):.2g} (it was below "
                       "1e-6 before): the marking only learned invariance to the edits it was shown.")


# ---- Chapter 10 (GBDA) ----------------------------------------------------------------------------------------------

def gumbel_softmax(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """Exercise: ``fn(logits [..., V], temperature)`` -> one Gumbel-softmax sample per row, drawn with torch's global
    random generator: ``softmax((logits + g) / temperature)``, g ~ Gumbel(0, 1). Checked by its statistics: each
    sample is a distribution, its argmax follows ``softmax(logits)``, it nears a one-hot at a low temperature and
    the uniform distribution at a high one, and gradients reach ``logits``. The caller's random state is restored."""
    with torch.random.fork_rng(devices=[]):
        return _gumbel_softmax_check(fn)


def _gumbel_softmax_check(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> CheckResult:
    name = "Gumbel-softmax"
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    want = logits.softmax(-1)
    rows = logits.expand(20000, -1).clone()
    torch.manual_seed(0)
    got, error = _call(name, fn, rows, 1.0)
    if error is not None:
        return error
    if not isinstance(got, torch.Tensor) or got.shape != rows.shape:
        return CheckResult(name, False, f"return a tensor of the logits' shape {tuple(rows.shape)}, got "
                           f"{_shape_or_type(got)}.")
    got = got.detach().float()
    if got.min() < -1e-6 or not torch.allclose(got.sum(-1), torch.ones(len(got)), atol=1e-4):
        return CheckResult(name, False, "each sample must be a distribution over the last axis (non-negative, "
                           "summing to 1): finish with a softmax over dim=-1.")
    if ((got == 0) | (got == 1)).all():
        return CheckResult(name, False, "the samples are hard one-hots: return the relaxed sample softmax((logits + "
                           "g) / temperature) itself, which is differentiable (its argmax is the hard sample).")
    if torch.allclose(got, got[:1].expand_as(got)):
        return CheckResult(name, False, "every sample is the same: add fresh Gumbel noise g = -log(-log(U)), "
                           "U ~ Uniform(0, 1), to the logits before the softmax.")
    frequencies = torch.bincount(got.argmax(-1), minlength=4).float() / len(got)
    if (frequencies - want).abs().max() > 0.02:
        return CheckResult(name, False, f"the samples' argmax falls on each token with frequencies "
                           f"{[round(v, 3) for v in frequencies.tolist()]}, but it should follow softmax(logits) = "
                           f"{[round(v, 3) for v in want.tolist()]} (the Gumbel-max trick). Use Gumbel noise "
                           "-log(-log(U)), not Gaussian or -log(U), and add it to the logits (not the probabilities).")
    torch.manual_seed(1)
    cold, error = _call(name, fn, rows[:2000], 0.05)
    if error is not None:
        return error
    torch.manual_seed(2)
    hot, error = _call(name, fn, rows[:2000], 100.0)
    if error is not None:
        return error
    cold_max, hot_max = cold.detach().amax(-1).mean().item(), hot.detach().amax(-1).mean().item()
    if cold_max < 0.9 or hot_max > 0.3:
        return CheckResult(name, False, f"the largest probability averages {cold_max:.2f} at temperature 0.05 and "
                           f"{hot_max:.2f} at 100: it should near 1 (a one-hot) when the temperature falls and 1/4 "
                           "(uniform) when it grows. Divide (logits + g) by the temperature.")
    leaf = logits.clone().requires_grad_(True)
    torch.manual_seed(3)
    sample, error = _call(name, fn, leaf.expand(8, -1), 1.0)
    if error is not None:
        return error
    try:
        (sample * torch.arange(4.0)).sum().backward()
    except RuntimeError as problem:
        return CheckResult(name, False, f"no gradient reaches the logits ({problem}); keep the computation in torch.")
    if leaf.grad is None or not leaf.grad.abs().sum() > 0:
        return CheckResult(name, False, "no gradient reaches the logits: do not detach or round the sample.")
    return CheckResult(name, True, f"argmax frequencies {[round(v, 3) for v in frequencies.tolist()]} match "
                       f"softmax(logits); mean largest probability {cold_max:.2f} at T = 0.05, "
                       f"{hot_max:.2f} at T = 100.")


def margin_loss(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """Exercise: ``fn(logits [B, C], labels [B], kappa)`` -> [B], the Carlini-Wagner margin loss
    ``max(z_y - max_{k != y} z_k + kappa, 0)``."""
    name = "margin loss"
    logits = torch.tensor([[4.0, 1.0, 0.0], [0.0, 2.0, 9.0], [1.0, 1.5, 0.5], [3.0, -1.0, 3.0], [0.0, 0.0, 7.0]])
    labels = torch.tensor([0, 2, 0, 2, 1])
    true = logits.gather(1, labels[:, None])[:, 0]
    others = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    cases = []
    for kappa in (5.0, 0.0):
        want = (true - others + kappa).clamp_min(0)
        got, error = _call(name, fn, logits.clone(), labels.clone(), kappa)
        if error is not None:
            return error
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            return CheckResult(name, False, f"return one loss per row, a tensor of shape {tuple(want.shape)}, got "
                               f"{_shape_or_type(got)}.")
        got = got.detach().float()
        if torch.allclose(got, want, atol=1e-5):
            cases.append(kappa)
            continue
        hints = [
            (true - others + kappa, "some losses are negative: clamp at 0 (a margin beyond kappa is enough)."),
            ((others - true + kappa).clamp_min(0), "the sign is flipped: the loss is the true logit minus the best "
                                                   "other one (it pushes the true class down)."),
            ((true - logits.amax(1) + kappa).clamp_min(0), "the max must skip the true class: over k != y, else "
                                                           "the true logit can be its own rival."),
            ((true - others - kappa).clamp_min(0), "kappa is added, not subtracted: the loss stays positive until "
                                                   "the best other class leads by kappa."),
        ]
        for value, hint in hints:
            if torch.allclose(got, value, atol=1e-5):
                return CheckResult(name, False, f"kappa = {kappa}: {got.tolist()}, expected {want.tolist()}; {hint}")
        return CheckResult(name, False, f"kappa = {kappa}: {got.tolist()}, expected {want.tolist()} = "
                           "max(z_y - max_{k != y} z_k + kappa, 0) per row.")
    return CheckResult(name, True, "zero exactly when another class leads the true one by kappa or more, for "
                       "kappa 5 and 0.")


def bertscore(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple]) -> CheckResult:
    """Exercise: ``fn(sim [T_cand, T_ref], ref_idf [T_ref], cand_idf [T_cand])`` -> (precision, recall, F1), BERTScore
    with idf weights from the cosine similarities of the candidate's tokens (rows) to the reference's (columns):
    recall matches each reference token to its best candidate token, precision the other way, both idf-weighted
    averages, F1 their harmonic mean."""
    name = "BERTScore"
    generator = torch.Generator().manual_seed(0)
    sim = torch.rand(5, 7, generator=generator) * 1.6 - 0.6
    ref_idf = torch.rand(7, generator=generator) * 3 + 0.2
    cand_idf = torch.rand(5, generator=generator) * 3 + 0.2

    def f1(precision, recall):
        return 2 * precision * recall / (precision + recall)

    p = (sim.amax(1) * cand_idf).sum() / cand_idf.sum()
    r = (sim.amax(0) * ref_idf).sum() / ref_idf.sum()
    want = torch.stack([p, r, f1(p, r)])
    got, error = _call(name, fn, sim.clone(), ref_idf.clone(), cand_idf.clone())
    if error is not None:
        return error
    try:
        got = torch.as_tensor([float(v) for v in got])
    except (TypeError, ValueError):
        return CheckResult(name, False, "return three numbers: (precision, recall, F1).")
    if got.shape != (3,):
        return CheckResult(name, False, f"return three numbers (precision, recall, F1), got {len(got)}.")
    if torch.allclose(got, want, atol=1e-5):
        ones = torch.ones(4)
        same, error = _call(name, fn, torch.eye(4), ones, ones)
        if error is not None:
            return error
        return CheckResult(name, True, f"P {want[0]:.4f}, R {want[1]:.4f}, F1 {want[2]:.4f}; a sentence against itself "
                           f"(identity similarities) scores {[round(float(v), 3) for v in same]}.")
    plain_p, plain_r = sim.amax(1).mean(), sim.amax(0).mean()
    raw_p, raw_r = (sim.amax(1) * cand_idf).sum(), (sim.amax(0) * ref_idf).sum()
    mean_p, mean_r = (sim.mean(1) * cand_idf).sum() / cand_idf.sum(), (sim.mean(0) * ref_idf).sum() / ref_idf.sum()
    hints = [  # (precision, recall, F1 or None when any F1 fits the mistake, hint)
        (r, p, want[2], "precision and recall are swapped: recall covers the *reference* tokens (the max over the "
                        "candidate's rows, weighted by the reference's idf)."),
        (plain_p, plain_r, f1(plain_p, plain_r),
         "no idf weights: weight each token's best match by its idf, normalised to sum to 1."),
        (raw_p, raw_r, f1(raw_p, raw_r), "the idf weights must be normalised: divide by their sum."),
        (mean_p, mean_r, None, "take each token's *best* match (max), not its mean similarity."),
        (p, r, None, "F1 is the harmonic mean 2PR / (P + R), not the arithmetic mean."),
    ]
    for hint_p, hint_r, hint_f1, hint in hints:
        if torch.allclose(got[:2], torch.stack([hint_p, hint_r]), atol=1e-5) and (
                hint_f1 is None or torch.allclose(got[2], hint_f1, atol=1e-5)):
            return CheckResult(name, False, f"got {[round(float(v), 4) for v in got]}, expected "
                               f"{[round(float(v), 4) for v in want]}; {hint}")
    return CheckResult(name, False, f"got {[round(float(v), 4) for v in got]}, expected "
                       f"{[round(float(v), 4) for v in want]} (P, R, F1).")
