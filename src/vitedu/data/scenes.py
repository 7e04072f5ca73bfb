"""Scenes: Fashion-MNIST objects, coloured and scaled, pasted onto crops of real photos.

Each scene has one labelled object and a ground-truth mask of it, so a model's attention can be scored against
where the object really is. ``clutter`` (0 to 1) turns every difficulty up at once: background contrast, object
size and position range, distractor objects, transparency and noise. Generation is deterministic from the seed and cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..paths import cache_dir
from .fashion import CLASSES, load_fashion_mnist
from .photos import TEXTURES, load_photo

LEVELS = {"clean": 0.0, "easy": 0.25, "medium": 0.5, "hard": 0.75, "full": 1.0}
DEFAULT_LEVEL = "easy"
BACKGROUNDS = TEXTURES + ("coffee", "chelsea", "rocket", "astronaut", "china", "flower")
GENERATOR_VERSION = 2  # bump when the pictures change, so stale caches are not reused
MASK_THRESHOLD = 0.2  # Fashion-MNIST intensity above which a pixel belongs to the object


@dataclass
class Scenes:
    """``images`` uint8 (N, 3, S, S), ``labels`` int64 (N,), ``masks`` bool (N, S, S): the labelled object's pixels."""

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    clutter: float

    classes = CLASSES

    def __len__(self) -> int:
        return len(self.labels)

    def float_images(self) -> torch.Tensor:
        return self.images.float().div_(255)


def clutter_value(level: str | float) -> float:
    if isinstance(level, str):
        if level not in LEVELS:
            raise ValueError(f"unknown clutter level {level!r}: use one of {', '.join(LEVELS)} or a number in [0, 1].")
        return LEVELS[level]
    if not 0.0 <= float(level) <= 1.0:
        raise ValueError(f"clutter must lie in [0, 1], got {level}.")
    return float(level)


@lru_cache(maxsize=1)
def _background_photos() -> tuple[np.ndarray, ...]:
    return tuple(load_photo(name).astype(np.float32) / 255 for name in BACKGROUNDS)


def _resize(array: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a float array in [0, 1] (H, W) or (H, W, 3) to (size, size)."""
    mode_image = Image.fromarray(np.uint8(np.clip(array, 0, 1) * 255))
    return np.asarray(mode_image.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255


def _background(rng: np.random.Generator, size: int, clutter: float) -> np.ndarray:
    photos = _background_photos()
    photo = photos[rng.integers(len(photos))]
    h, w, _ = photo.shape
    crop = int(rng.integers(min(h, w) // 6, min(h, w) // 2))
    top, left = rng.integers(h - crop), rng.integers(w - crop)
    patch = _resize(photo[top:top + crop, left:left + crop], size)
    if rng.random() < 0.5:  # tint, so grayscale textures come in colours too
        patch = patch * rng.uniform(0.5, 1.2, size=3)
    mean = patch.mean(axis=(0, 1), keepdims=True)
    contrast = 0.15 + 0.85 * clutter
    return np.clip(mean + contrast * (patch - mean), 0, 1)


def _paste(canvas: np.ndarray, item: np.ndarray, colour: np.ndarray, opacity: float, top: int, left: int) -> np.ndarray:
    """Alpha-blend a coloured Fashion-MNIST item (float (k, k) in [0, 1]) onto the canvas; returns the item's mask."""
    k = item.shape[0]
    alpha = np.clip(item * 2.5, 0, 1)[:, :, None] * opacity
    shaded = colour * (0.45 + 0.55 * item[:, :, None])
    region = canvas[top:top + k, left:left + k]
    canvas[top:top + k, left:left + k] = (1 - alpha) * region + alpha * shaded
    mask = np.zeros(canvas.shape[:2], dtype=bool)
    mask[top:top + k, left:left + k] = item > MASK_THRESHOLD
    return mask


def _contrasting_colour(rng: np.random.Generator, background_mean: np.ndarray, clutter: float) -> np.ndarray:
    colour = rng.uniform(0, 1, size=3)
    # At low clutter push the object's colour away from the background's; at full clutter it may blend in.
    away = np.where(background_mean > 0.5, 0.0, 1.0)
    pull = 0.7 * (1 - clutter)
    return (1 - pull) * colour + pull * away


def _generate(n: int, split: str, image_size: int, clutter: float, seed: int) -> Scenes:
    items, labels = load_fashion_mnist(split)
    items = items.numpy().astype(np.float32) / 255
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    picks = rng.integers(len(labels), size=n)
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    masks = np.empty((n, image_size, image_size), dtype=bool)
    min_scale = 0.85 - 0.45 * clutter
    quiet = {"disable": True} if n < 2000 else {}  # an explicit disable=False would override TQDM_DISABLE
    for i, pick in enumerate(tqdm(picks, desc=f"generating {n} {split} scenes", leave=False, **quiet)):
        canvas = _background(rng, image_size, clutter)
        for _ in range(rng.binomial(3, clutter ** 2)):  # distractors are rare until the clutter is high
            k = int(image_size * rng.uniform(0.3, 0.5))
            distractor = _resize(items[rng.integers(len(labels))], k)
            _paste(canvas, distractor, rng.uniform(0, 1, size=3), rng.uniform(0.3, 0.7),
                   int(rng.integers(image_size - k + 1)), int(rng.integers(image_size - k + 1)))
        k = int(image_size * rng.uniform(min_scale, 0.9))
        item = _resize(items[pick], k)
        colour = _contrasting_colour(rng, canvas.mean(axis=(0, 1)), clutter)
        # Centred at clutter 0; anywhere in the image at clutter 1 (translation is what small data teaches slowest).
        free = image_size - k
        top, left = (int(round(free / 2 + rng.uniform(-1, 1) * clutter * free / 2)) for _ in range(2))
        masks[i] = _paste(canvas, item, colour, 1.0 - 0.3 * clutter, top, left)
        canvas += rng.normal(0, 0.08 * clutter, size=canvas.shape)
        images[i] = np.uint8(np.clip(canvas, 0, 1) * 255 + 0.5)
    return Scenes(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        labels=labels[torch.from_numpy(picks)].clone(),
        masks=torch.from_numpy(masks),
        clutter=clutter,
    )


def make_scenes(n: int, split: str = "train", image_size: int = 32, clutter: str | float = DEFAULT_LEVEL,
                seed: int = 0, cache: bool = True) -> Scenes:
    """``n`` scenes of ``image_size`` pixels; train scenes use Fashion-MNIST's train items, test scenes its test items."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}: use 'train' or 'test'.")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {image_size}.")
    if n < 1:
        raise ValueError(f"n must be a positive number of scenes, got {n}.")
    value = clutter_value(clutter)
    params = dict(n=n, split=split, image_size=image_size, clutter=value, seed=seed, version=GENERATOR_VERSION)
    path = cache_dir() / "scenes" / (hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16] + ".npz")
    if cache and path.is_file():
        stored = np.load(path)
        return Scenes(*(torch.from_numpy(stored[key]) for key in ("images", "labels", "masks")), clutter=value)
    scenes = _generate(n, split, image_size, value, seed)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
        os.close(fd)
        np.savez(tmp, images=scenes.images.numpy(), labels=scenes.labels.numpy(), masks=scenes.masks.numpy())
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    return scenes


class ScenesDataset(Dataset):
    """``(image, label, mask)`` triples; ``transform`` applies to the float image tensor."""

    def __init__(self, scenes: Scenes, transform=None):
        self.scenes = scenes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int):
        image = self.scenes.images[index].float() / 255
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.scenes.labels[index]), self.scenes.masks[index]
