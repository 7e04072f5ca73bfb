"""Fashion-MNIST (Xiao et al., 2017), read from the raw IDX files vendored under ``data/fashion-mnist``."""

from __future__ import annotations

import gzip
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..paths import data_root

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SPLIT_SIZES = {"train": 60_000, "test": 10_000}
DOWNLOAD_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_IDX_DTYPE = {0x08: np.uint8}


def default_root() -> Path:
    return data_root() / "fashion-mnist"


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array, checking its header."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file's name
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPE:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad magic number); delete it and fetch it again.")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, file holds {data.size} values; fetch it again.")
    return data.reshape(shape)


def _missing_error(root: Path, missing: list[str]) -> FileNotFoundError:
    return FileNotFoundError(
        f"Fashion-MNIST files not found in {root}: missing {', '.join(missing)}.\n"
        "They ship with the vitedu repository under data/fashion-mnist. To get them:\n"
        "  - work from a clone of the repository (pip install -e . keeps data/ next to the package), or\n"
        "  - point VITEDU_DATA at a folder that has a fashion-mnist/ subfolder with the four IDX .gz files, or\n"
        "  - download them (needs internet): vitedu.data.download_fashion_mnist()"
    )


def load_fashion_mnist(split: str = "train", root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as a ``uint8`` tensor of shape (N, 28, 28) and labels as ``int64`` (N,)."""
    if split not in FILES:
        raise ValueError(f"unknown split {split!r}: use 'train' or 'test'.")
    root = Path(root) if root is not None else default_root()
    paths = [root / name for name in FILES[split]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise _missing_error(root, missing)
    images, labels = (read_idx(p) for p in paths)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(f"{paths[0]} and {paths[1]} do not form a Fashion-MNIST split: shapes {images.shape}, {labels.shape}.")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def download_fashion_mnist(root: str | Path | None = None, base_url: str = DOWNLOAD_URL) -> Path:
    """Download the four IDX files into ``root`` (needs internet; used in Colab without a clone).

    Each file is written to a temporary name, checked, then renamed, so an interrupted download leaves nothing half-written.
    """
    from tqdm.auto import tqdm

    root = Path(root) if root is not None else default_root()
    root.mkdir(parents=True, exist_ok=True)
    for split, names in FILES.items():
        for name in names:
            target = root / name
            if target.is_file():
                continue
            with tempfile.NamedTemporaryFile(dir=root, suffix=".part", delete=False) as tmp:
                with urllib.request.urlopen(base_url.rstrip("/") + "/" + name) as response:
                    total = int(response.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc=name) as bar:
                        for chunk in iter(lambda: response.read(1 << 16), b""):
                            tmp.write(chunk)
                            bar.update(len(chunk))
            array = read_idx(tmp.name)
            if len(array) != SPLIT_SIZES[split]:
                Path(tmp.name).unlink()
                raise ValueError(f"{name} from {base_url} holds {len(array)} items, expected {SPLIT_SIZES[split]}.")
            shutil.move(tmp.name, target)
    return root


class FashionMNIST(Dataset):
    """torchvision-style dataset: ``(PIL image, label)`` pairs, with optional ``transform`` / ``target_transform``."""

    classes = list(CLASSES)

    def __init__(self, root: str | Path | None = None, train: bool = True, transform=None, target_transform=None):
        self.data, self.targets = load_fashion_mnist("train" if train else "test", root)
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        from PIL import Image

        image = Image.fromarray(self.data[index].numpy(), mode="L")
        target = int(self.targets[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target


def fashion_tensors(split: str, n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A float (n, 1, 28, 28) tensor in [0, 1] and labels; a seeded class-balanced subset when ``n`` is given."""
    images, labels = load_fashion_mnist(split)
    if n is not None and n < len(labels):
        index = balanced_subset(labels, n, seed)
        images, labels = images[index], labels[index]
    return images.unsqueeze(1).float().div_(255), labels


def balanced_subset(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``n`` items with the classes as equal as possible, chosen with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    classes = labels.unique()
    per_class = [n // len(classes) + (i < n % len(classes)) for i in range(len(classes))]
    picks = []
    for c, k in zip(classes, per_class):
        members = (labels == c).nonzero().squeeze(1)
        picks.append(members[torch.randperm(len(members), generator=generator)[:k]])
    index = torch.cat(picks)
    return index[torch.randperm(len(index), generator=generator)]
