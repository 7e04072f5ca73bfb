"""Real photographs that ship inside scikit-image, scikit-learn and matplotlib, by name (no download)."""

from __future__ import annotations

import numpy as np

# name -> (package, loader key, what it shows)
PHOTOS = {
    "astronaut": ("scikit-image", "astronaut", "portrait of astronaut Eileen Collins"),
    "chelsea": ("scikit-image", "chelsea", "a cat"),
    "coffee": ("scikit-image", "coffee", "a cup of coffee"),
    "rocket": ("scikit-image", "rocket", "a rocket on its launch pad"),
    "camera": ("scikit-image", "camera", "a cameraman (grayscale)"),
    "brick": ("scikit-image", "brick", "brick wall texture (grayscale)"),
    "grass": ("scikit-image", "grass", "grass texture (grayscale)"),
    "gravel": ("scikit-image", "gravel", "gravel texture (grayscale)"),
    "china": ("scikit-learn", "china.jpg", "a temple in China"),
    "flower": ("scikit-learn", "flower.jpg", "a flower"),
    "grace_hopper": ("matplotlib", "grace_hopper.jpg", "portrait of Grace Hopper"),
}
TEXTURES = ("brick", "grass", "gravel")


def list_photos() -> list[str]:
    return sorted(PHOTOS)


def load_photo(name: str) -> np.ndarray:
    """The photo as an ``uint8`` array of shape (H, W, 3); grayscale photos are repeated over the channels."""
    if name not in PHOTOS:
        raise KeyError(f"no photo named {name!r}; available: {', '.join(list_photos())}")
    package, key, _ = PHOTOS[name]
    if package == "scikit-image":
        import skimage.data

        image = getattr(skimage.data, key)()
    elif package == "scikit-learn":
        from sklearn.datasets import load_sample_image

        image = load_sample_image(key)
    else:
        from matplotlib import cbook
        from PIL import Image

        with cbook.get_sample_data(key) as f:
            image = np.asarray(Image.open(f).convert("RGB"))
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3]).astype(np.uint8)
