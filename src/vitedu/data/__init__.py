"""Data sets of the book, all offline by default."""

from .fashion import CLASSES as FASHION_CLASSES
from .fashion import FashionMNIST, balanced_subset, download_fashion_mnist, fashion_tensors, load_fashion_mnist
from .imagenet import IMAGENET_MEAN, IMAGENET_STD, image_folder
from .photos import list_photos, load_photo
from .scenes import LEVELS as SCENE_LEVELS
from .scenes import Scenes, ScenesDataset, make_scenes
from .transforms import SimpleRandomCrop, TensorImages, ThreeAugment, eval_transform, train_transform

__all__ = [
    "FASHION_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD", "SCENE_LEVELS", "FashionMNIST", "Scenes", "ScenesDataset",
    "SimpleRandomCrop", "TensorImages", "ThreeAugment", "balanced_subset", "download_fashion_mnist", "eval_transform",
    "fashion_tensors", "image_folder", "list_photos", "load_fashion_mnist", "load_photo", "make_scenes",
    "train_transform",
]
