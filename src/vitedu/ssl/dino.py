"""DINO: self-distillation with no labels (Caron et al., 2021, arXiv 2104.14294), the pieces of its training step.

A student network and a teacher network share an architecture (backbone + ``DINOHead``). The teacher is not trained
by gradients: it is an exponential moving average of the student (``update_teacher``, momentum 0.996 -> 1 on a cosine
schedule). Each image gives 2 global and several local crops (``MultiCropAugmentation``); the teacher sees the global
crops only, the student all of them, and ``DINOLoss`` asks the student's output on every view to match the teacher's
on every *other* view. Centering and sharpening the teacher's output are what keep this from collapsing.

Formulas and names follow the official code, facebookresearch/dino: ``main_dino.py`` (DINOLoss,
DataAugmentationDINO, the EMA step of train_one_epoch), ``utils.py`` (cosine_scheduler, GaussianBlur, Solarization,
cancel_gradients_last_layer, MultiCropWrapper) and ``vision_transformer.py`` (DINOHead).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from itertools import groupby

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageFilter, ImageOps
from torchvision import transforms

from ..data.transforms import BICUBIC, _check_mode
from ..train.engine import Objective
from .settings import DINOSettings

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
JITTER = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue (main_dino.py DataAugmentationDINO)


# ----------------------------------------------------------------------------------------------------------------------
# Multi-crop augmentation (paper section 3.1; main_dino.py DataAugmentationDINO)
# ----------------------------------------------------------------------------------------------------------------------

class GaussianBlur:
    """PIL Gaussian blur with probability ``p``, radius ~ U(radius_min, radius_max) (utils.py GaussianBlur).

    Randomness: python's ``random`` (one draw for the coin, one for the radius), as the official class. Returns a PIL
    image of the input's size and mode.
    """

    def __init__(self, p: float = 0.5, radius: tuple[float, float] = (0.1, 2.0)):
        self.p, self.radius = p, radius

    def __call__(self, image: Image.Image) -> Image.Image:
        if random.random() > self.p:  # official: do_it = random.random() <= p
            return image
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.radius)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p}, radius={self.radius})"


class Solarization:
    """``ImageOps.solarize`` (threshold 128: pixels >= 128 are inverted) with probability ``p`` (utils.py
    Solarization). Returns a PIL image of the input's size and mode."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, image: Image.Image) -> Image.Image:
        return ImageOps.solarize(image) if random.random() < self.p else image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class _MultiCropViews:
    """What both multi-crop implementations share: their settings, checked, and their repr."""

    def __init__(self, global_size: int, local_size: int, local_crops: int, global_scale: tuple[float, float],
                 local_scale: tuple[float, float], mean: Sequence[float], std: Sequence[float],
                 blur_radius: tuple[float, float]):
        _check_views(local_crops, global_scale, local_scale, mean, std)
        self.global_size, self.local_size, self.local_crops = global_size, local_size, local_crops
        self.global_scale, self.local_scale, self.blur_radius = global_scale, local_scale, blur_radius

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(global_size={self.global_size}, local_size={self.local_size}, "
                f"local_crops={self.local_crops})")


class MultiCropAugmentation(_MultiCropViews):
    """DINO's multi-crop views of one PIL image: ``[global_1, global_2, local_1, ..., local_n]``.

    Every view: random resized crop (bicubic) -> horizontal flip (p=0.5) -> colour jitter (brightness 0.4, contrast
    0.4, saturation 0.2, hue 0.1; applied with p=0.8) -> grayscale (p=0.2) -> view-specific ops -> ToTensor +
    Normalize(mean, std). The view-specific ops (main_dino.py DataAugmentationDINO):

    - global 1: ``global_size`` px, scale ``global_scale``, Gaussian blur with p=1.0;
    - global 2: same crop, blur with p=0.1, solarization with p=0.2;
    - each local: ``local_size`` px, scale ``local_scale``, blur with p=0.5.

    The official sizes are 224 / 96 px with blur radius U(0.1, 2.0) px; for small images scale ``blur_radius`` with the
    image (e.g. ``(0.1 * s, 2.0 * s)`` with s = size / 224). On 'L' (1-channel) images saturation, hue and grayscale
    do nothing, so the gray pipeline keeps only brightness and contrast jitter; ``mean`` and ``std`` must then have one
    value each. Randomness: python's ``random`` and torch's global RNG (torchvision), which vitedu's loaders seed per
    sample. Returns a list of ``2 + local_crops`` float tensors of shape (C, size, size).
    """

    def __init__(self, global_size: int, local_size: int, local_crops: int = 8,
                 global_scale: tuple[float, float] = (0.4, 1.0), local_scale: tuple[float, float] = (0.05, 0.4),
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 blur_radius: tuple[float, float] = (0.1, 2.0)):
        super().__init__(global_size, local_size, local_crops, global_scale, local_scale, mean, std, blur_radius)
        self.mean, self.std = tuple(mean), tuple(std)
        normalize = transforms.Compose([transforms.ToTensor(), transforms.Normalize(self.mean, self.std)])

        def pipeline(size: int, scale: tuple[float, float], gray: bool, *extra) -> transforms.Compose:
            if gray:  # saturation, hue and grayscale are no-ops on a 1-channel image
                colour = [transforms.RandomApply([transforms.ColorJitter(*JITTER[:2])], p=0.8)]
            else:
                colour = [transforms.RandomApply([transforms.ColorJitter(*JITTER)], p=0.8),
                          transforms.RandomGrayscale(p=0.2)]
            return transforms.Compose([transforms.RandomResizedCrop(size, scale=scale, interpolation=BICUBIC),
                                       transforms.RandomHorizontalFlip(p=0.5), *colour, *extra, normalize])

        self.transforms = {}
        for mode in ("L", "RGB"):
            gray = mode == "L"
            self.transforms[mode] = (
                pipeline(global_size, global_scale, gray, GaussianBlur(1.0, blur_radius)),
                pipeline(global_size, global_scale, gray, GaussianBlur(0.1, blur_radius), Solarization(0.2)),
                pipeline(local_size, local_scale, gray, GaussianBlur(0.5, blur_radius)),
            )

    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        _check_mode(image)
        channels = 1 if image.mode == "L" else 3
        if len(self.mean) != channels:
            raise ValueError(f"a {image.mode!r} image has {channels} channel(s) but mean/std have {len(self.mean)} "
                             f"values: pass mean and std with {channels} value(s) (the data set's channel statistics).")
        global1, global2, local = self.transforms[image.mode]
        return [global1(image), global2(image)] + [local(image) for _ in range(self.local_crops)]

class BatchMultiCrop(_MultiCropViews):
    """The views of :class:`MultiCropAugmentation`, computed for a whole batch of same-size images at once.

    For in-memory data sets (Scenes, Fashion-MNIST) on a CPU, where PIL's per-image calls cost more than the model:
    a ``TensorLoader(..., transform=BatchMultiCrop(...))`` gives the batches ``DINOObjective`` takes. Each image still
    draws its own crop, flip, jitter factors, grayscale, blur and solarization coins with MultiCropAugmentation's
    probabilities. Three differences from the PIL pipeline, all for speed: crops are resampled bilinearly (one
    ``grid_sample`` for crop, flip and resize) instead of bicubically; the jitter is applied in a fixed order
    (brightness, contrast, saturation, hue) instead of a random one; the hue shift is a rotation of the YIQ
    chrominance plane instead of a shift in HSV. Randomness: torch's global RNG, which fit's checkpoints save.

    Takes uint8 (B, C, H, W) or float images in [0, 1] (C = 1 or 3); returns ``2 + local_crops`` float tensors
    (B, C, size, size), normalised with ``mean`` and ``std``.
    """

    def __init__(self, global_size: int, local_size: int, local_crops: int = 8,
                 global_scale: tuple[float, float] = (0.4, 1.0), local_scale: tuple[float, float] = (0.05, 0.4),
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 blur_radius: tuple[float, float] = (0.1, 2.0)):
        super().__init__(global_size, local_size, local_crops, global_scale, local_scale, mean, std, blur_radius)
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        if images.ndim != 4 or images.shape[1] != len(self.mean):
            raise ValueError(f"expected a batch (B, {len(self.mean)}, H, W) matching mean/std's {len(self.mean)} "
                             f"channel(s), got shape {tuple(images.shape)}.")
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        g, lo = (self.global_size, self.global_scale), (self.local_size, self.local_scale)
        views = [self._view(x, *g, blur=1.0, solarize=0.0), self._view(x, *g, blur=0.1, solarize=0.2)]
        return views + [self._view(x, *lo, blur=0.5, solarize=0.0) for _ in range(self.local_crops)]

    def _view(self, x: torch.Tensor, size: int, scale: tuple[float, float], blur: float, solarize: float):
        b = len(x)
        view = resized_crops(x, random_boxes(b, scale), size, flip=torch.rand(b) < 0.5)
        factors = [torch.empty(b).uniform_(1 - s, 1 + s) for s in JITTER[:3]]
        hue = torch.empty(b).uniform_(-JITTER[3], JITTER[3])
        view = torch.where(_per_image(torch.rand(b) < 0.8), colour_jitter(view, *factors, hue), view)
        if view.shape[1] == 3:
            view = torch.where(_per_image(torch.rand(b) < 0.2), grayscale(view).expand_as(view), view)
        view = torch.where(_per_image(torch.rand(b) < blur), gaussian_blur(view, torch.empty(b).uniform_(*self.blur_radius)), view)
        view = torch.where(_per_image(torch.rand(b) < solarize), torch.where(view >= 0.5, 1 - view, view), view)
        return (view - self.mean) / self.std


def _per_image(flags: torch.Tensor) -> torch.Tensor:
    return flags.view(-1, 1, 1, 1)


def random_boxes(n: int, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """``n`` random resized crop boxes (x0, y0, w, h) as fractions of the image: area ~ U(scale), log aspect ratio ~
    U(log ratio), position uniform; a box that does not fit is shrunk to fit (torchvision retries instead)."""
    area = torch.empty(n).uniform_(*scale)
    log_ratio = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    w = (area * log_ratio.exp()).sqrt().clamp(max=1)
    h = (area / log_ratio.exp()).sqrt().clamp(max=1)
    return torch.stack([torch.rand(n) * (1 - w), torch.rand(n) * (1 - h), w, h], dim=1)


def resized_crops(x: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Crop each image to its box (x0, y0, w, h, fractions), mirror it where ``flip``, and resample it bilinearly to
    ``size`` px: one ``grid_sample``. Returns (B, C, size, size)."""
    x0, y0, w, h = boxes.unbind(1)
    sign = 1 - 2 * flip.float() if flip is not None else torch.ones_like(w)
    theta = torch.zeros(len(x), 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * sign, 2 * x0 + w - 1  # output [-1, 1] -> input [2 x0 - 1, 2 (x0 + w) - 1]
    theta[:, 1, 1], theta[:, 1, 2] = h, 2 * y0 + h - 1
    grid = F.affine_grid(theta.to(x), [len(x), x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma of RGB images (as PIL's 'L' conversion), (B, 1, H, W); 1-channel images pass through."""
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def colour_jitter(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor,
                  hue: torch.Tensor) -> torch.Tensor:
    """torchvision's brightness, contrast and saturation adjustments with one factor per image, then a hue rotation
    by ``hue`` turns (in [-0.5, 0.5]); saturation and hue only act on RGB images. Returns images in [0, 1]."""
    def blend(a, b, f):
        return (f.view(-1, 1, 1, 1) * a + (1 - f.view(-1, 1, 1, 1)) * b).clamp(0, 1)

    x = blend(x, torch.zeros_like(x), brightness)
    x = blend(x, grayscale(x).mean(dim=(1, 2, 3), keepdim=True), contrast)
    if x.shape[1] == 1:
        return x
    x = blend(x, grayscale(x), saturation)
    yiq = torch.einsum("ij,bjhw->bihw", _RGB_TO_YIQ.to(x), x)
    angle = 2 * math.pi * hue.view(-1, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], i * angle.cos() - q * angle.sin(), i * angle.sin() + q * angle.cos()], dim=1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_RGB_TO_YIQ).to(x), yiq).clamp(0, 1)


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one ``sigma`` (px) per image, kernel radius ceil(3 sigma_max), reflect padding
    (torchvision's gaussian_blur, per image). Returns (B, C, H, W)."""
    b, c, h, w = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma.to(x).view(-1, 1)) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B * C, k)
    out = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(b * c, 1, 1, -1), groups=b * c)
    out = F.conv2d(out, kernel.view(b * c, 1, -1, 1), groups=b * c)
    return out.view(b, c, h, w)


def _check_views(local_crops, global_scale, local_scale, mean, std) -> None:
    if local_crops < 0:
        raise ValueError(f"local_crops must be >= 0 (the official default is 8), got {local_crops}.")
    for name, scale in (("global_scale", global_scale), ("local_scale", local_scale)):
        if not (len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"{name} must be (min, max) with 0 < min <= max <= 1 (fractions of the image area), "
                             f"got {scale}.")
    if len(mean) != len(std) or len(mean) not in (1, 3):
        raise ValueError(f"mean and std need one value per channel (1 for 'L' images, 3 for RGB), "
                         f"got {len(mean)} and {len(std)}.")


# ----------------------------------------------------------------------------------------------------------------------
# Projection head (vision_transformer.py DINOHead) and the multi-crop forward pass (utils.py MultiCropWrapper)
# ----------------------------------------------------------------------------------------------------------------------

class DINOHead(nn.Module):
    """Projection head: MLP (``nlayers`` linear layers, GELU between, last one to ``bottleneck_dim``) -> L2
    normalisation -> weight-normalised linear layer to ``out_dim`` (= K, 65536 in the paper) without bias.

    The last layer is W = g * V / ||V|| per output row (weight normalisation); ``norm_last_layer`` fixes g = 1, so
    every output is a cosine similarity between the bottleneck vector and a prototype, which the paper found more
    stable. Returns (B, out_dim) logits.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, nlayers: int = 3,
                 norm_last_layer: bool = True, use_bn: bool = False):
        super().__init__()
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            def act() -> list[nn.Module]:
                return [nn.BatchNorm1d(hidden_dim), nn.GELU()] if use_bn else [nn.GELU()]

            layers = [nn.Linear(in_dim, hidden_dim), *act()]
            for _ in range(nlayers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), *act()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        # Created after apply(), as the official code, so V keeps nn.Linear's default init.
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        g = self.last_layer.parametrizations.weight.original0  # weight_g of the old nn.utils.weight_norm
        with torch.no_grad():
            g.fill_(1)
        g.requires_grad = not norm_last_layer

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)  # official trunc_normal_(std=.02), bounds [-2, 2]
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2)
        return self.last_layer(x)


def cancel_last_layer_gradients(head: nn.Module, epoch: int, freeze_last_layer_epochs: int = 1) -> None:
    """Drop the gradients of every parameter whose name contains ``last_layer`` while ``epoch <
    freeze_last_layer_epochs`` (utils.py cancel_gradients_last_layer; the paper freezes it during the first epoch).
    Call between ``backward()`` and ``optimizer.step()``; works on a head or on a module that contains one. Returns
    None."""
    if epoch >= freeze_last_layer_epochs:
        return
    for name, p in head.named_parameters():
        if "last_layer" in name:
            p.grad = None


def backbone_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The backbone's pooled image feature: the class token after the final norm for a vitedu ViT (``forward_head(...,
    pre_logits=True)``), else ``backbone(x)`` (a model with an identity head). Returns (B, D)."""
    if hasattr(backbone, "forward_features") and hasattr(backbone, "forward_head"):
        return backbone.forward_head(backbone.forward_features(x), pre_logits=True)
    out = backbone(x)
    return out[0] if isinstance(out, tuple) else out


class MultiCropWrapper(nn.Module):
    """Backbone + head on a list of crops (utils.py MultiCropWrapper).

    Consecutive crops of the same resolution are concatenated and go through the backbone together (one pass per
    resolution: the two global crops, then the local ones); the features of all crops then go through the head at
    once. A vitedu ViT resizes its position embedding for the local crops' smaller grid. Returns the head's output for
    all crops stacked crop-major, (n_crops * B, out_dim), which is the layout ``DINOLoss`` expects.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(crops, torch.Tensor):
            crops = [crops]
        if len(crops) == 0:
            raise ValueError("MultiCropWrapper got no crops: pass a list of (B, C, H, W) tensors.")
        features = [backbone_features(self.backbone, torch.cat(list(group)))
                    for _, group in groupby(crops, key=lambda c: tuple(c.shape[-2:]))]
        return self.head(torch.cat(features))


# ----------------------------------------------------------------------------------------------------------------------
# The loss (paper eq. 1-2, Algorithm 1; main_dino.py DINOLoss)
# ----------------------------------------------------------------------------------------------------------------------

def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each row of ``probs``: -sum_k p_k log p_k, with 0 log 0 = 0. Returns (B,)."""
    return -torch.special.xlogy(probs, probs).sum(dim=-1)


class DINOLoss(nn.Module):
    """DINO's cross-entropy between the centred, sharpened teacher and the student, over all pairs of different views.

    P_t = softmax((g_t(x) - c) / tau_t), P_s = softmax(g_s(x') / tau_s); loss = mean over pairs (global view i of the
    teacher, any view v != i of the student) of the batch mean of H(P_t, P_s) = -sum_k P_t log P_s (paper eq. 2).
    tau_t rises linearly from ``warmup_teacher_temp`` to ``teacher_temp`` over the first ``warmup_teacher_temp_epochs``
    epochs, then stays (0.04 -> 0.07 over 30 epochs in the paper); tau_s = ``student_temp`` = 0.1. The centre c
    (a buffer, saved in the state_dict) is an EMA of the teacher's batch mean: c <- m c + (1 - m) mean(g_t) with
    m = ``center_momentum`` = 0.9 (paper eq. 4), updated after the loss is computed, and averaged over processes under
    torch.distributed.

    ``forward(student_output, teacher_output, epoch)`` takes the student's output on all ``n_crops`` views, stacked
    crop-major ((n_crops * B, K), as ``MultiCropWrapper`` returns it), and the teacher's on the 2 global views
    ((2 * B, K)); it returns the scalar loss and keeps ``last_metrics``, detached scalar tensors ``teacher_entropy``
    and ``kl`` of this batch (see ``collapse_metrics``). ``epochs`` (the run's length, keyword-only and required, as
    the schedule is per epoch) has no default so that a short run cannot silently keep a 100-epoch warm-up.
    """

    def __init__(self, out_dim: int, n_crops: int, *, epochs: int, warmup_teacher_temp: float = 0.04,
                 teacher_temp: float = 0.07, warmup_teacher_temp_epochs: int = 30, student_temp: float = 0.1,
                 center_momentum: float = 0.9):
        super().__init__()
        if n_crops < 2:
            raise ValueError(f"n_crops counts all views (2 global + the local ones) and must be >= 2, got {n_crops}.")
        if not 0 <= warmup_teacher_temp_epochs <= epochs:
            raise ValueError(f"warmup_teacher_temp_epochs ({warmup_teacher_temp_epochs}) must lie in [0, epochs="
                             f"{epochs}]: shorten the warm-up for short runs (e.g. 30% of the epochs).")
        self.out_dim, self.n_crops = out_dim, n_crops
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))
        # Official teacher_temp_schedule: one temperature per epoch; a too-hot teacher early on makes training unstable.
        self.teacher_temp_schedule = np.concatenate((
            np.linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs),
            np.ones(epochs - warmup_teacher_temp_epochs) * teacher_temp,
        ))
        self.last_metrics: dict[str, torch.Tensor] = {}

    def teacher_temp(self, epoch: int) -> float:
        """tau_t at ``epoch`` (0-based). Returns a float."""
        if not 0 <= epoch < len(self.teacher_temp_schedule):
            raise ValueError(f"epoch {epoch} is outside the schedule of {len(self.teacher_temp_schedule)} epochs: "
                             "build DINOLoss with epochs= the run's number of epochs.")
        return float(self.teacher_temp_schedule[epoch])

    def _check(self, student_output: torch.Tensor, teacher_output: torch.Tensor) -> None:
        if student_output.ndim != 2 or teacher_output.ndim != 2:
            raise ValueError(f"expected 2-D outputs (N, K), got student {tuple(student_output.shape)} and teacher "
                             f"{tuple(teacher_output.shape)}.")
        if student_output.shape[-1] != self.out_dim or teacher_output.shape[-1] != self.out_dim:
            raise ValueError(f"outputs must have out_dim={self.out_dim} columns, got student "
                             f"{student_output.shape[-1]} and teacher {teacher_output.shape[-1]}: build DINOLoss with "
                             "the head's out_dim.")
        n, t = student_output.shape[0], teacher_output.shape[0]
        if n % self.n_crops or t * self.n_crops != 2 * n:
            raise ValueError(f"the student output has {n} rows and the teacher output {t}; expected n_crops * B = "
                             f"{self.n_crops} * B rows (all views) and 2 * B (the 2 global views only): pass the "
                             "teacher only images[:2], and build DINOLoss with n_crops = 2 + local crops.")

    def _distributions(self, student_output: torch.Tensor, teacher_output: torch.Tensor, epoch: int):
        student_log = F.log_softmax(student_output / self.student_temp, dim=-1).chunk(self.n_crops)
        # teacher centering and sharpening
        teacher = F.softmax((teacher_output - self.center) / self.teacher_temp(epoch), dim=-1).detach().chunk(2)
        return student_log, teacher

    def forward(self, student_output: torch.Tensor, teacher_output: torch.Tensor, epoch: int) -> torch.Tensor:
        self._check(student_output, teacher_output)
        student_log, teacher = self._distributions(student_output, teacher_output, epoch)
        total, n_terms = 0.0, 0
        for iq, q in enumerate(teacher):
            for v, log_p in enumerate(student_log):
                if v == iq:  # skip the pairs where student and teacher see the same view
                    continue
                total = total + torch.sum(-q * log_p, dim=-1).mean()
                n_terms += 1
        loss = total / n_terms
        # Every teacher view pairs with n_crops - 1 student views, so the mean of H(P_t) over the pairs is the mean
        # over the 2 teacher views, and H(P_t, P_s) = H(P_t) + KL(P_t || P_s) gives the mean KL for free.
        teacher_entropy = torch.stack([entropy(q).mean() for q in teacher]).mean()
        self.last_metrics = {"teacher_entropy": teacher_entropy.detach(), "kl": (loss - teacher_entropy).detach()}
        self.update_center(teacher_output)
        return loss

    @torch.no_grad()
    def collapse_metrics(self, student_output: torch.Tensor, teacher_output: torch.Tensor,
                         epoch: int) -> dict[str, float]:
        """The two quantities of the paper's collapse study (section 5.3, Fig. 7), with the current centre:
        ``teacher_entropy``, the batch mean of H(P_t) (collapse to the uniform distribution drives it to log K, to one
        dimension drives it to 0), and ``kl``, the mean over the loss's view pairs of KL(P_t || P_s) (0 at either
        collapse: the student then has nothing left to learn). Does not update the centre; ``forward`` stores the same
        values (before its centre update) in ``last_metrics``. Returns a dict of floats."""
        self._check(student_output, teacher_output)
        student_log, teacher = self._distributions(student_output, teacher_output, epoch)
        kls = [torch.sum(torch.special.xlogy(q, q) - q * log_p, dim=-1).mean()
               for iq, q in enumerate(teacher) for v, log_p in enumerate(student_log) if v != iq]
        return {"teacher_entropy": torch.stack([entropy(q).mean() for q in teacher]).mean().item(),
                "kl": torch.stack(kls).mean().item()}

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        """c <- m c + (1 - m) * (mean of the teacher outputs over the global batch) (main_dino.py update_center).
        Returns None."""
        batch_center = torch.sum(teacher_output.to(self.center.dtype), dim=0, keepdim=True)
        count = len(teacher_output)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)
            count *= dist.get_world_size()
        batch_center = batch_center / count
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


# ----------------------------------------------------------------------------------------------------------------------
# The training step, for vitedu.train.fit (the teacher is fit's EMA of the student)
# ----------------------------------------------------------------------------------------------------------------------

class DINOObjective(Objective):
    """DINO's loss for :func:`vitedu.train.fit`: the student (a :class:`MultiCropWrapper`) sees every crop, the teacher
    (fit's EMA of the student, momentum ``ema_decay`` -> ``ema_decay_end`` on a cosine, 0.996 -> 1 in the paper) the
    two global ones; ``DINOLoss`` compares them. The last layer of the head is frozen during the first
    ``freeze_last_layer_epochs`` epochs (main_dino.py). The centre is saved in checkpoints.

    Batches are ``(crops, labels)`` as a loader over :class:`MultiCropAugmentation` views gives them (labels unused).
    """

    def __init__(self, loss: DINOLoss, freeze_last_layer_epochs: int = 1):
        self.loss, self.freeze_last_layer_epochs = loss, freeze_last_layer_epochs
        self._sums: dict[str, float] = {}  # of the loss's collapse metrics over this epoch's steps
        self._steps = 0

    def __call__(self, model: nn.Module, batch, epoch: int, ema_model: nn.Module | None) -> tuple[torch.Tensor, int]:
        if ema_model is None:
            raise ValueError("DINO's teacher is the EMA of the student: train with ema_decay set (the paper: 0.996, "
                             "with ema_decay_end=1.0).")
        crops, _ = batch
        device = next(model.parameters()).device
        crops = [crop.to(device, non_blocking=True) for crop in crops]
        with torch.no_grad():
            teacher_output = ema_model(crops[:2])  # the teacher sees the global views only
        loss = self.loss(model(crops), teacher_output, epoch)
        for name, value in self.loss.last_metrics.items():
            self._sums[name] = self._sums.get(name, 0.0) + value.item()
        self._steps += 1
        return loss, len(crops[0])

    def after_backward(self, model: nn.Module, epoch: int) -> None:
        cancel_last_layer_gradients(model, epoch, self.freeze_last_layer_epochs)

    def epoch_metrics(self) -> dict[str, float]:
        """The epoch's mean ``teacher_entropy`` and ``kl`` (the collapse study's curves; see
        ``DINOLoss.collapse_metrics``), then a fresh start for the next epoch. Returns a dict of floats."""
        means = {name: total / max(1, self._steps) for name, total in self._sums.items()}
        self._sums, self._steps = {}, 0
        return means

    def state_dict(self) -> dict:
        return {"loss": self.loss.state_dict(), "metric_sums": dict(self._sums), "metric_steps": self._steps}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.loss.load_state_dict(state["loss"])
            self._sums, self._steps = dict(state["metric_sums"]), state["metric_steps"]


def build_dino(backbone: nn.Module, feature_dim: int, settings: DINOSettings, epochs: int
               ) -> tuple[MultiCropWrapper, DINOObjective]:
    """The student (``backbone`` under a ``DINOHead`` shaped by ``settings``) and the objective of a DINO run of
    ``epochs`` epochs; ``feature_dim``: the backbone's feature size. Train with ``fit(student, ..., objective=...)`` and
    ``ema_decay`` set: the teacher is fit's EMA of the student. Returns (student, objective)."""
    settings.check(epochs)
    head = DINOHead(feature_dim, settings.out_dim, settings.hidden_dim, settings.bottleneck_dim, settings.head_layers,
                    settings.norm_last_layer, settings.use_bn_in_head)
    loss = DINOLoss(settings.out_dim, settings.n_crops, epochs=epochs, warmup_teacher_temp=settings.warmup_teacher_temp,
                    teacher_temp=settings.teacher_temp, warmup_teacher_temp_epochs=settings.warmup_teacher_temp_epochs,
                    student_temp=settings.student_temp, center_momentum=settings.center_momentum)
    return MultiCropWrapper(backbone, head), DINOObjective(loss, settings.freeze_last_layer)
