"""Data sets of the book, all offline by default."""

from .fashion import CLASSES as FASHION_CLASSES
from .fashion import FashionMNIST, balanced_subset, download_fashion_mnist, fashion_tensors, load_fashion_mnist
from .imagenet import eval_transform, image_folder, train_transform
from .photos import list_photos, load_photo
from .scenes import LEVELS as SCENE_LEVELS
from .scenes import Scenes, ScenesDataset, make_scenes

__all__ = [
    "FASHION_CLASSES", "FashionMNIST", "balanced_subset", "download_fashion_mnist", "fashion_tensors",
    "load_fashion_mnist", "eval_transform", "image_folder", "train_transform", "list_photos", "load_photo",
    "SCENE_LEVELS", "Scenes", "ScenesDataset", "make_scenes",
]
