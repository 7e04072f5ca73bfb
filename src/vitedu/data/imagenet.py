"""ImageNet (or any ImageFolder tree: Imagenette, your own photos) with the standard train / eval transforms."""

from __future__ import annotations

from pathlib import Path

from torchvision import datasets, transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transform(image_size: int = 224, scale: tuple[float, float] = (0.08, 1.0)):
    """Random-resized crop and horizontal flip: the transform every recipe starts from."""
    return transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=scale, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform(image_size: int = 224, crop_ratio: float = 0.875):
    """Resize to ``image_size / crop_ratio`` then centre-crop ``image_size`` (DeiT: 0.875; DeiT III: 1.0)."""
    if not 0 < crop_ratio <= 1:
        raise ValueError(f"crop_ratio must lie in (0, 1], got {crop_ratio}.")
    return transforms.Compose([
        transforms.Resize(int(image_size / crop_ratio), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


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
    if transform is None:
        transform = train_transform(image_size) if split == "train" else eval_transform(image_size)
    return datasets.ImageFolder(str(folder), transform=transform)
