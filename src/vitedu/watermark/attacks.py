"""Edits a user might apply to a marked image, for evaluation (as PIL / torchvision apply them), and their
differentiable counterparts drawn at random at marking time (paper, section 3: data augmentation)."""

from __future__ import annotations

import io
import math
import random
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from .features import check_images


def to_pil(image: torch.Tensor) -> Image.Image:
    """A float image (3, H, W) in [0, 1] as an 8-bit PIL RGB image (rounded, as saving it would)."""
    array = (image.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def from_pil(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float() / 255


def _single(image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise ValueError(f"an attack takes one image (3, H, W), got {getattr(image, 'shape', type(image).__name__)}.")
    check_images(image[None])
    return image


def jpeg(image: torch.Tensor, quality: int = 50) -> torch.Tensor:
    """JPEG compression at ``quality`` (1..95) through PIL."""
    if not 1 <= quality <= 95:
        raise ValueError(f"JPEG quality must lie in 1..95, got {quality}.")
    buffer = io.BytesIO()
    to_pil(_single(image)).save(buffer, format="JPEG", quality=int(quality))
    return from_pil(Image.open(buffer))


def crop(image: torch.Tensor, area: float = 0.5) -> torch.Tensor:
    """The centre crop keeping ``area`` of the image's area (same aspect ratio)."""
    if not 0 < area <= 1:
        raise ValueError(f"the kept area must lie in (0, 1], got {area}.")
    h, w = _single(image).shape[1:]
    s = math.sqrt(area)
    return TF.center_crop(image, [max(1, round(h * s)), max(1, round(w * s))])


def resize(image: torch.Tensor, scale: float = 0.5) -> torch.Tensor:
    """Rescaled by ``scale`` on each side (bilinear, antialiased)."""
    if scale <= 0:
        raise ValueError(f"the scale must be positive, got {scale}.")
    h, w = _single(image).shape[1:]
    return TF.resize(image, [max(1, round(h * scale)), max(1, round(w * scale))], antialias=True).clamp(0, 1)


def rotate(image: torch.Tensor, degrees: float = 25.0) -> torch.Tensor:
    """Rotated by ``degrees`` about the centre (corners filled with black, as PIL does)."""
    return TF.rotate(_single(image), float(degrees))


def blur(image: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Gaussian blur of standard deviation ``sigma`` pixels."""
    if sigma <= 0:
        raise ValueError(f"the blur's sigma must be positive, got {sigma}.")
    size = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(_single(image), [size, size], [float(sigma)])


def brightness(image: torch.Tensor, factor: float = 1.5) -> torch.Tensor:
    return TF.adjust_brightness(_single(image), float(factor))


def contrast(image: torch.Tensor, factor: float = 1.5) -> torch.Tensor:
    return TF.adjust_contrast(_single(image), float(factor))


def compose(*attacks: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The attacks applied one after the other."""
    def combined(image: torch.Tensor) -> torch.Tensor:
        for attack in attacks:
            image = attack(image)
        return image
    return combined


ATTACKS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda x: x,
    "JPEG 50": lambda x: jpeg(x, 50),
    "JPEG 80": lambda x: jpeg(x, 80),
    "crop 50%": lambda x: crop(x, 0.5),
    "resize 0.5": lambda x: resize(x, 0.5),
    "rotation 25": lambda x: rotate(x, 25),
    "blur 1": lambda x: blur(x, 1.0),
    "brightness 1.5": lambda x: brightness(x, 1.5),
    "contrast 1.5": lambda x: contrast(x, 1.5),
    "crop 50% + JPEG 80": compose(lambda x: crop(x, 0.5), lambda x: jpeg(x, 80)),
}


def jpeg_straight_through(images: torch.Tensor, quality: int = 80) -> torch.Tensor:
    """JPEG in the forward pass, the identity in the backward one (JPEG is not differentiable)."""
    compressed = torch.stack([jpeg(x.clamp(0, 1), quality) for x in images]).to(images)
    return images + (compressed - images).detach()


def random_augmentation(images: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """One differentiable edit drawn at random for a batch (B, 3, H, W): identity, rotation, crop, resize, blur,
    brightness, contrast or (straight-through) JPEG, with the paper's ranges."""
    kind = rng.choice(["none", "rotation", "crop", "resize", "blur", "brightness", "contrast", "jpeg"])
    h, w = images.shape[2:]
    if kind == "rotation":
        return TF.rotate(images, rng.uniform(-30, 30))
    if kind == "crop":
        s = math.sqrt(rng.uniform(0.3, 1.0))
        ch, cw = max(8, round(h * s)), max(8, round(w * s))
        top, left = rng.randint(0, h - ch), rng.randint(0, w - cw)
        return images[:, :, top:top + ch, left:left + cw]
    if kind == "resize":
        s = rng.uniform(0.5, 1.0)
        return TF.resize(images, [max(8, round(h * s)), max(8, round(w * s))], antialias=True)
    if kind == "blur":
        sigma = rng.uniform(0.2, 1.5)
        size = 2 * math.ceil(3 * sigma) + 1
        return TF.gaussian_blur(images, [size, size], [sigma])
    if kind == "brightness":
        return TF.adjust_brightness(images, rng.uniform(0.5, 1.5))
    if kind == "contrast":
        return TF.adjust_contrast(images, rng.uniform(0.5, 1.5))
    if kind == "jpeg":
        return jpeg_straight_through(images, rng.randint(50, 95))
    return images
