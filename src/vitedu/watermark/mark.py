"""Marking: optimise an image's pixels so that its feature lands in the secret region (paper, section 3.2).

    x* = argmin_x  lambda_w L_w(phi(t(x))) + lambda_mse ||x - x0||^2 + lambda_ssim (1 - SSIM(x, x0)),

with t a random augmentation drawn at each step (so the mark survives those edits) and, after each step, the
perturbation x - x0 scaled down so that PSNR(x, x0) >= the target (the image-quality constraint). Watermark terms:
- zero-bit, one carrier a:   L_w = -(phi^T a)^2 + ||phi||^2 cos^2(theta)   (minus the depth inside the dual cone);
- multi-bit, message m:      L_w = sum_i max(0, mu - m_i phi^T a_i)          (a hinge of margin mu per bit).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .attacks import random_augmentation
from .detect import _carriers, _message, threshold
from .features import FeatureExtractor, check_images


def psnr(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of images in [0, 1], per image of a batch (B, 3, H, W): 10 log10(1 / MSE)."""
    if x.shape != reference.shape:
        raise ValueError(f"PSNR compares images of the same shape, got {tuple(x.shape)} and {tuple(reference.shape)}.")
    mse = (x - reference).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-20))


def ssim(x: torch.Tensor, reference: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004: Gaussian window of std 1.5, K1 = 0.01, K2 = 0.03) per image of a
    batch (B, 3, H, W) in [0, 1], averaged over channels and positions. Differentiable."""
    radius = math.ceil(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).expand(x.shape[1], 1, -1, -1)

    def filt(z):
        return F.conv2d(z, window, groups=x.shape[1])

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = filt(x), filt(reference)
    vx, vy, cxy = filt(x * x) - mx ** 2, filt(reference * reference) - my ** 2, filt(x * reference) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def project_psnr(delta: torch.Tensor, target_psnr: float) -> torch.Tensor:
    """The perturbation scaled down (per image) so that its PSNR is at least ``target_psnr`` (aiming 1e-3 dB above
    it, so that float rounding cannot land below)."""
    max_mse = 10 ** (-(target_psnr + 1e-3) / 10)
    mse = delta.pow(2).flatten(1).mean(1).clamp_min(1e-30)
    return delta * (max_mse / mse).sqrt().clamp(max=1).view(-1, 1, 1, 1)


def zero_bit_loss(features: torch.Tensor, carrier: torch.Tensor, tau: float) -> torch.Tensor:
    """-(phi^T a)^2 + ||phi||^2 cos^2(theta) per feature: negative inside the dual cone of half-angle theta."""
    a = carrier / carrier.norm()
    return -(features @ a) ** 2 + features.pow(2).sum(1) * tau ** 2


def multi_bit_loss(features: torch.Tensor, carriers: torch.Tensor, message: torch.Tensor,
                   margin: float) -> torch.Tensor:
    """sum_i max(0, mu - m_i phi^T a_i) per feature: zero once every projection has the bit's sign with margin mu."""
    return F.relu(margin - (features @ carriers.T) * message).sum(1)


@dataclass(frozen=True)
class MarkConfig:
    """Marking settings: Adam on the perturbation for ``steps`` steps, the PSNR constraint ``target_psnr`` (dB), the
    zero-bit cone set by ``fpr`` (the paper's 1e-6), the multi-bit margin, the loss weights, and whether a random
    augmentation is drawn at each step. ``seed`` fixes the augmentations drawn."""
    steps: int = 100
    lr: float = 0.01
    target_psnr: float = 42.0
    fpr: float = 1e-6  # sets the zero-bit cone's half-angle
    margin: float = 5.0  # mu, of the multi-bit hinge
    lambda_w: float = 1.0
    lambda_mse: float = 0.0  # the PSNR projection already bounds the distortion
    lambda_ssim: float = 0.0
    augment: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.lr <= 0:
            raise ValueError(f"marking needs steps >= 1 and lr > 0, got steps={self.steps}, lr={self.lr}.")
        if not 0 < self.fpr < 1:
            raise ValueError(f"fpr must lie strictly between 0 and 1, got {self.fpr}.")
        if self.target_psnr <= 0:
            raise ValueError(f"the target PSNR is in dB and must be positive (the paper uses 42), "
                             f"got {self.target_psnr}.")


@dataclass(frozen=True)
class Marked:
    """Marked images (B, 3, H, W) in [0, 1] (float: round to 8 bits with attacks.to_pil to save them), with their
    PSNR and SSIM against the originals and the watermark loss per step."""
    images: torch.Tensor
    psnr: torch.Tensor
    ssim: torch.Tensor
    losses: list[float]


def mark(images: torch.Tensor, extractor: FeatureExtractor, carriers: torch.Tensor,
         message: torch.Tensor | None = None, config: MarkConfig = MarkConfig(), progress: bool = False) -> Marked:
    """Mark ``images`` (B, 3, H, W) or one image (3, H, W), float in [0, 1]. Zero-bit with one carrier (1, d) or (d,)
    and ``message=None``; multi-bit with k carriers (k, d) and a ``message`` in {-1, 1}^k (the same for the batch)."""
    single = isinstance(images, torch.Tensor) and images.ndim == 3
    x0 = check_images(images[None] if single else images).detach()
    if x0.min() < 0 or x0.max() > 1:
        raise ValueError("images must lie in [0, 1] (vitedu.watermark.to_rgb converts 8-bit images).")
    carriers = _carriers(carriers, extractor.dim).to(x0)
    if message is None:
        if len(carriers) != 1:
            raise ValueError(f"zero-bit marking takes one carrier, got {len(carriers)}: pass a message in "
                             "{-1, 1}^k for multi-bit marking.")
        tau = threshold(config.fpr, extractor.dim)
    else:
        message = _message(message, len(carriers)).to(x0)
    rng = random.Random(config.seed)
    delta = torch.zeros_like(x0, requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=config.lr)
    losses = []
    from tqdm.auto import tqdm

    with torch.enable_grad():  # marking optimises pixels, so it needs gradients even inside a caller's no_grad
        for _ in tqdm(range(config.steps), desc="marking", disable=not progress):
            x = (x0 + delta).clamp(0, 1)
            seen = random_augmentation(x, rng) if config.augment else x
            features = extractor(seen)
            if message is None:
                loss_w = zero_bit_loss(features, carriers[0], tau)
            else:
                loss_w = multi_bit_loss(features, carriers, message, config.margin)
            loss = config.lambda_w * loss_w.sum()
            if config.lambda_mse:
                loss = loss + config.lambda_mse * (x - x0).pow(2).flatten(1).mean(1).sum()
            if config.lambda_ssim:
                loss = loss + config.lambda_ssim * (1 - ssim(x, x0)).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            with torch.no_grad():  # the image-quality constraint: PSNR >= target
                delta.copy_(project_psnr((x0 + delta).clamp(0, 1) - x0, config.target_psnr))
            losses.append(loss_w.mean().item())
    with torch.no_grad():
        marked = (x0 + delta).clamp(0, 1)
        out = Marked(marked[0] if single else marked, psnr(marked, x0), ssim(marked, x0), losses)
    return out
