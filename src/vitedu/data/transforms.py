"""Per-image train / eval transforms of the recipes (PIL in, normalised tensor out), and a data set that feeds them.

The pieces the book teaches are written here (3-Augment and the simple random crop of DeiT III); the rest are
torchvision's and timm's (random resized crop, RandAugment, colour jitter, random erasing). All work on 1-channel
('L') and RGB PIL images. Randomness comes from the global RNGs (python ``random``, ``numpy``, ``torch``), which the
training loader seeds per sample.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps
from timm.data import rand_augment_transform
from timm.data.random_erasing import RandomErasing
from torch.utils.data import Dataset
from torchvision import transforms

if TYPE_CHECKING:  # type hints only: importing vitedu.train here could close an import cycle
    from ..train.config import TrainConfig

BICUBIC = transforms.InterpolationMode.BICUBIC
MODES = ("L", "RGB")


def _check_mode(image: Image.Image) -> None:
    if image.mode not in MODES:
        raise ValueError(f"expected an 'L' or 'RGB' PIL image, got mode {image.mode!r}: convert it first, "
                         "e.g. image.convert('RGB').")


class ThreeAugment:
    """DeiT III's 3-Augment (Touvron et al. 2022; deit/augment.py): each image gets exactly one of grayscale,
    solarization (threshold 128) or Gaussian blur (radius ~ U(0.1, 2.0)), chosen uniformly.

    Grayscale keeps the channel count (an RGB image stays 3-channel; an 'L' image is already gray and passes through
    unchanged). Randomness: python's ``random`` (one ``randrange(3)`` for the op, then one ``uniform`` for the blur
    radius), as DeiT's own classes and torchvision's ``RandomChoice`` use. Returns a PIL image of the input's size and
    mode.
    """

    OPS = ("grayscale", "solarize", "blur")

    def __init__(self, solarize_threshold: int = 128, blur_radius: tuple[float, float] = (0.1, 2.0)):
        self.solarize_threshold = solarize_threshold
        self.blur_radius = blur_radius

    def apply(self, image: Image.Image, op: str, radius: float | None = None) -> Image.Image:
        """``image`` after the named op (``radius``: the blur's, drawn when None)."""
        _check_mode(image)
        if op == "grayscale":
            return ImageOps.grayscale(image).convert(image.mode)
        if op == "solarize":
            return ImageOps.solarize(image, self.solarize_threshold)
        if op == "blur":
            radius = random.uniform(*self.blur_radius) if radius is None else radius
            return image.filter(ImageFilter.GaussianBlur(radius=radius))
        raise ValueError(f"unknown op {op!r}: use one of {', '.join(self.OPS)}.")

    def __call__(self, image: Image.Image) -> Image.Image:
        return self.apply(image, self.OPS[random.randrange(len(self.OPS))])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(solarize_threshold={self.solarize_threshold}, blur_radius={self.blur_radius})"


def _resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize so the shorter side is ``size`` (torchvision's ``Resize(size)`` rule, long side truncated)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return image
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return image.resize((new_w, new_h), Image.Resampling.BICUBIC)


class SimpleRandomCrop:
    """DeiT III's simple random crop ("SRC", deit/augment.py with ``--src``; used for its ImageNet-21k pre-training):
    resize the short side to ``size`` (bicubic), reflect-pad by ``padding``, take a random ``size`` x ``size`` crop.
    Unlike the random resized crop it keeps almost all of a square image at its scale, so the crop rarely loses the
    labelled object.

    Equivalent to torchvision's ``Resize(size, bicubic)`` + ``RandomCrop(size, padding, padding_mode='reflect')``,
    drawing the offsets from torch's global RNG in the same order, so both give the same pixels for the same seed.
    Returns a PIL image of ``size`` x ``size`` in the input's mode.
    """

    def __init__(self, size: int, padding: int = 4):
        if size < 1 or padding < 0:
            raise ValueError(f"size must be positive and padding non-negative, got size={size}, padding={padding}.")
        self.size, self.padding = size, padding

    def crop(self, image: Image.Image, top: int, left: int) -> Image.Image:
        """The crop at (``top``, ``left``) of the resized image padded by ``padding`` on every side."""
        _check_mode(image)
        array = np.asarray(_resize_short_side(image, self.size))
        p = self.padding
        if p:
            array = np.pad(array, ((p, p), (p, p)) + ((0, 0),) * (array.ndim - 2), mode="reflect")
        h, w = array.shape[:2]
        if not (0 <= top <= h - self.size and 0 <= left <= w - self.size):
            raise ValueError(f"crop offset ({top}, {left}) does not fit a {self.size}-pixel crop in {h}x{w}.")
        return Image.fromarray(np.ascontiguousarray(array[top:top + self.size, left:left + self.size]))

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = _resize_short_side(image, self.size).size
        h, w = h + 2 * self.padding, w + 2 * self.padding
        if (h, w) == (self.size, self.size):  # nothing to choose: draw no random numbers (as torchvision)
            return self.crop(image, 0, 0)
        top = int(torch.randint(0, h - self.size + 1, size=(1,)))
        left = int(torch.randint(0, w - self.size + 1, size=(1,)))
        return self.crop(image, top, left)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, padding={self.padding})"


def _posterize(image: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    """timm's posterize op, also for 0 bits: PosterizeIncreasing asks for 0 at magnitude >= 10 (m9 with mstd 0.5 gets
    there ~2% of the time). Pillow < 13 returned a black image, what timm's recipes were tuned with; Pillow 13 raises.
    """
    if bits_to_keep >= 8:
        return image
    if bits_to_keep <= 0:
        return Image.new(image.mode, image.size, 0)
    return ImageOps.posterize(image, bits_to_keep)


def _rand_augment(config_str: str, hparams: dict) -> Callable:
    """timm's RandAugment with its posterize ops made safe for 0 bits (see ``_posterize``)."""
    if not config_str.startswith("rand-"):
        raise ValueError(f"rand_augment={config_str!r} is not a timm RandAugment string: use e.g. "
                         "'rand-m9-mstd0.5-inc1' (magnitude 9, magnitude noise 0.5, ops that grow with magnitude).")
    augment = rand_augment_transform(config_str, hparams)
    for op in augment.ops:
        if op.name.startswith("Posterize"):
            op.aug_fn = _posterize
    return augment


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != len(std) or len(mean) not in (1, 3):
        raise ValueError(f"mean and std need one value per channel (1 for 'L' images, 3 for RGB), "
                         f"got {len(mean)} and {len(std)}.")


def train_transform(config: TrainConfig, image_size: int, mean: Sequence[float], std: Sequence[float]) -> Callable:
    """The per-image training pipeline of ``config``: PIL image -> normalised float tensor (C, image_size, image_size).

    crop (``config.crop``) -> horizontal flip (unless ``augment == "none"``) -> RandAugment or 3-Augment
    (``config.augment``) -> colour jitter -> ToTensor + Normalize(mean, std) -> random erasing. ``mean`` and ``std``
    have one value per channel of the images (1 for 'L', 3 for RGB). Note that timm's own factory drops colour jitter
    when RandAugment is on; here ``config.color_jitter`` is applied whenever it is > 0, so recipes set it.
    """
    _check_stats(mean, std)
    steps: list[Callable] = []
    if config.crop == "rrc":
        steps.append(transforms.RandomResizedCrop(image_size, scale=tuple(config.crop_scale), interpolation=BICUBIC))
    elif config.crop == "src":
        steps.append(SimpleRandomCrop(image_size))
    else:  # no-ops on images that already have the size
        steps += [transforms.Resize(image_size, interpolation=BICUBIC), transforms.CenterCrop(image_size)]
    if config.augment != "none":
        steps.append(transforms.RandomHorizontalFlip())
    if config.augment == "randaugment":
        # timm's geometric ops fill with img_mean; PIL wants a single int for 'L' images, a 3-tuple for RGB.
        fill = tuple(min(255, round(255 * m)) for m in mean)
        # the rest as timm's create_transform with DeiT's train_interpolation='bicubic'
        hparams = {"img_mean": fill[0] if len(fill) == 1 else fill, "translate_const": int(image_size * 0.45),
                   "interpolation": Image.Resampling.BICUBIC}
        steps.append(_rand_augment(config.rand_augment, hparams))
    elif config.augment == "3augment":
        steps.append(ThreeAugment(blur_radius=tuple(config.blur_radius)))
    if config.color_jitter > 0:  # saturation is a no-op on 'L' images (PIL's Color enhance of a gray image)
        steps.append(transforms.ColorJitter(config.color_jitter, config.color_jitter, config.color_jitter))
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if config.random_erasing > 0:
        steps.append(RandomErasing(config.random_erasing, mode="pixel", device="cpu"))
    return transforms.Compose(steps)


def eval_transform(image_size: int, mean: Sequence[float], std: Sequence[float], crop_ratio: float = 0.875) -> Callable:
    """Resize to ``int(image_size / crop_ratio)`` then centre-crop ``image_size`` (bicubic; DeiT: 0.875, DeiT III: 1.0),
    ToTensor, Normalize. Returns the transform: PIL image -> float tensor (C, image_size, image_size)."""
    if not 0 < crop_ratio <= 1:
        raise ValueError(f"crop_ratio must lie in (0, 1], got {crop_ratio}.")
    _check_stats(mean, std)
    return transforms.Compose([
        transforms.Resize(int(image_size / crop_ratio), interpolation=BICUBIC),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


class TensorImages(Dataset):
    """In-memory uint8 images (N, H, W) or (N, C, H, W) with C in {1, 3} (Fashion-MNIST, Scenes) as a data set of
    ``(transform(PIL image), label)`` pairs; without ``transform``, ``(float tensor (C, H, W) in [0, 1], label)``.

    1-channel images become 'L' PIL images, 3-channel ones 'RGB', so the transforms above apply to either.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None):
        images, labels = torch.as_tensor(images), torch.as_tensor(labels)
        if images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (0-255), got {images.dtype}: pass e.g. Scenes.images, not "
                             "float_images(), or convert with (x * 255).round().to(torch.uint8).")
        if images.ndim == 3:
            images = images.unsqueeze(1)
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must have shape (N, H, W) or (N, C, H, W) with C = 1 or 3, got "
                             f"{tuple(images.shape)}.")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"labels must have shape ({len(images)},) to match the images, got {tuple(labels.shape)}.")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.images[index], int(self.labels[index])
        if self.transform is None:
            return image.float().div(255), label
        array = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
        pil = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)  # uint8: mode 'L' or 'RGB'
        return self.transform(pil), label
