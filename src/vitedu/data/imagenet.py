"""ImageNet (or any ImageFolder tree: Imagenette, your own photos) with the standard train / eval transforms."""

from __future__ import annotations

from pathlib import Path

from torchvision import datasets

from .transforms import eval_transform, train_transform

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_folder(root: str | Path, split: str, image_size: int = 224, transform=None) -> datasets.ImageFolder:
    """``root/split/<class>/<image>``, the layout of ImageNet's ``train`` and ``val`` after the usual preparation."""
    if split not in ("train", "val"):
        raise ValueError(f"unknown split {split!r}: use 'train' or 'val'.")
    folder = Path(root).expanduser() / split
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no folder {folder}. Expected an ImageFolder tree: {Path(root) / split}/<class name>/<image>.JPEG. "
            "For ImageNet, download ILSVRC2012 from image-net.org and arrange val/ into class folders "
            "(e.g. with the valprep.sh script); for a small stand-in use Imagenette (fast.ai)."
        )
    if transform is None:  # the default recipe's crop + flip for training; resize + centre crop (ratio 0.875) for val
        from ..train.config import TrainConfig  # imported here: vitedu.train may import vitedu.data (a cycle)

        transform = (train_transform(TrainConfig(), image_size, IMAGENET_MEAN, IMAGENET_STD) if split == "train"
                     else eval_transform(image_size, IMAGENET_MEAN, IMAGENET_STD))
    return datasets.ImageFolder(str(folder), transform=transform)
