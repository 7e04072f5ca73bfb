import gzip
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from vitedu.data import (
    FASHION_CLASSES,
    FashionMNIST,
    balanced_subset,
    download_fashion_mnist,
    fashion_tensors,
    image_folder,
    list_photos,
    load_fashion_mnist,
    load_photo,
    make_scenes,
)
from vitedu.data.fashion import default_root, read_idx
from vitedu.data.loader import TensorLoader


def test_fashion_mnist_shapes_and_balance():
    images, labels = load_fashion_mnist("train")
    assert images.shape == (60_000, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [6000] * 10
    test_images, test_labels = load_fashion_mnist("test")
    assert test_images.shape == (10_000, 28, 28) and len(FASHION_CLASSES) == 10
    assert test_labels.min() == 0 and test_labels.max() == 9


def test_torchvision_style_dataset_applies_transforms():
    dataset = FashionMNIST(train=False, transform=lambda im: np.asarray(im).sum(), target_transform=lambda t: -t)
    value, target = dataset[0]
    images, labels = load_fashion_mnist("test")
    assert value == int(images[0].sum()) and target == -int(labels[0])
    assert len(dataset) == 10_000


def test_balanced_subset_is_seeded_and_balanced():
    x, y = fashion_tensors("test", 1000, seed=1)
    assert x.shape == (1000, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert torch.bincount(y).tolist() == [100] * 10
    _, y_again = fashion_tensors("test", 1000, seed=1)
    assert torch.equal(y, y_again)
    labels = torch.arange(10).repeat(5)
    assert not torch.equal(balanced_subset(labels, 20, 0), balanced_subset(labels, 20, 1))


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_fashion_mnist("train", root=tmp_path)
    message = str(error.value)
    assert "train-images-idx3-ubyte.gz" in message and "download_fashion_mnist" in message and "VITEDU_DATA" in message


def test_bad_split_is_rejected():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_fashion_mnist("validation")


def test_idx_reader_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x01\x02\x03\x04" + b"\x00" * 8)
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    truncated = tmp_path / "short.gz"
    with gzip.open(truncated, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + b"\x00" * 10)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(truncated)


def test_download_from_a_mirror(tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(default_root(), mirror)
    target = download_fashion_mnist(tmp_path / "downloaded", base_url=mirror.as_uri())
    images, labels = load_fashion_mnist("test", root=target)
    reference_images, reference_labels = load_fashion_mnist("test")
    assert torch.equal(images, reference_images) and torch.equal(labels, reference_labels)
    assert not list(target.glob("*.part"))


def test_scenes_are_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("VITEDU_CACHE", str(tmp_path))
    first = make_scenes(20, "train", image_size=32, clutter="medium", seed=5)
    assert list((tmp_path / "scenes").glob("*.npz"))
    again = make_scenes(20, "train", image_size=32, clutter="medium", seed=5)  # read back from the cache
    fresh = make_scenes(20, "train", image_size=32, clutter="medium", seed=5, cache=False)
    for a, b in [(first, again), (first, fresh)]:
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and torch.equal(a.masks, b.masks)
    other = make_scenes(20, "train", image_size=32, clutter="medium", seed=6, cache=False)
    assert not torch.equal(first.images, other.images)
    assert first.images.shape == (20, 3, 32, 32) and first.images.dtype == torch.uint8
    assert first.masks.shape == (20, 32, 32) and first.masks.dtype == torch.bool


def test_scene_masks_cover_the_object(tmp_path, monkeypatch):
    monkeypatch.setenv("VITEDU_CACHE", str(tmp_path))
    scenes = make_scenes(50, "test", image_size=48, clutter="clean", seed=0, cache=False)
    images = scenes.float_images()
    for image, mask in zip(images, scenes.masks):
        assert 0.02 < mask.float().mean() < 0.9
        background = image[:, ~mask].median(dim=1).values[:, None]
        inside = (image[:, mask] - background).abs().mean()
        outside = (image[:, ~mask] - background).abs().mean()
        assert inside > 3 * outside  # at clutter 0 the background is nearly flat and the object stands out


def test_clutter_makes_scenes_busier(tmp_path, monkeypatch):
    monkeypatch.setenv("VITEDU_CACHE", str(tmp_path))
    clean = make_scenes(100, "test", clutter=0.0, cache=False).float_images()
    full = make_scenes(100, "test", clutter=1.0, cache=False).float_images()
    roughness = lambda x: (x[..., 1:] - x[..., :-1]).abs().mean()  # noqa: E731
    assert roughness(full) > 2 * roughness(clean)


def test_scene_arguments_are_checked():
    with pytest.raises(ValueError, match="clean, easy"):
        make_scenes(4, clutter="impossible")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make_scenes(4, clutter=1.5)
    with pytest.raises(ValueError, match="split"):
        make_scenes(4, split="val")
    with pytest.raises(ValueError, match="at least 16"):
        make_scenes(4, image_size=8)


def test_every_photo_loads_offline():
    for name in list_photos():
        photo = load_photo(name)
        assert photo.ndim == 3 and photo.shape[2] == 3 and photo.dtype == np.uint8 and min(photo.shape[:2]) >= 256
    with pytest.raises(KeyError, match="astronaut"):
        load_photo("mona_lisa")


def test_image_folder_reads_a_generated_tree(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.JPEG")
    train = image_folder(tmp_path, "train", image_size=32)
    val = image_folder(tmp_path, "val", image_size=32)
    assert train.classes == ["cat", "dog"] and len(train) == 6 and len(val) == 6
    x, y = train[0]
    assert x.shape == (3, 32, 32) and y == 0
    v1, _ = val[0]
    v2, _ = val[0]
    assert torch.equal(v1, v2)  # evaluation transform is deterministic
    with pytest.raises(FileNotFoundError, match="ImageFolder"):
        image_folder(tmp_path / "nowhere", "train")


def test_tensor_loader_batches_and_reshuffles():
    x, y = torch.arange(10).float()[:, None], torch.arange(10)
    loader = TensorLoader(x, y, batch_size=4, shuffle=True, seed=0)
    epoch1 = torch.cat([b for _, b in loader])
    epoch2 = torch.cat([b for _, b in loader])
    assert len(loader) == 3 and sorted(epoch1.tolist()) == list(range(10))
    assert not torch.equal(epoch1, epoch2)
    assert torch.equal(epoch1, torch.cat([b for _, b in TensorLoader(x, y, 4, shuffle=True, seed=0)]))
    assert len(TensorLoader(x, y, 4, drop_last=True)) == 2
    with pytest.raises(ValueError, match="10 items but y has 9"):
        TensorLoader(x, y[:9], 4)
