import random

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter, ImageOps
from torch.utils.data import DataLoader
from torchvision import transforms

from vitedu.data import IMAGENET_MEAN, IMAGENET_STD
from vitedu.data.transforms import SimpleRandomCrop, TensorImages, ThreeAugment, eval_transform, train_transform
from vitedu.train.config import TrainConfig

GRAY_MEAN, GRAY_STD = (0.286,), (0.353,)


def rgb_image(size=(32, 32), seed=0) -> Image.Image:
    """Smooth colour gradients plus noise: colourful, with values on both sides of 128."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], axis=-1) * 255
    return Image.fromarray(np.uint8(np.clip(base + rng.normal(0, 30, base.shape), 0, 255)))


def gray_image(size=28, seed=0) -> Image.Image:
    return rgb_image((size, size), seed).convert("L")


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def total_variation(image: Image.Image) -> float:
    a = np.asarray(image, dtype=np.float64)
    return float(np.abs(np.diff(a, axis=0)).sum() + np.abs(np.diff(a, axis=1)).sum())


def test_three_augment_applies_exactly_one_op():
    image = rgb_image()
    pixels = np.asarray(image)
    gray = np.asarray(ImageOps.grayscale(image).convert("RGB"))
    solarized = np.where(pixels >= 128, 255 - pixels, pixels)
    augment, seen = ThreeAugment(), set()
    for seed in range(60):
        random.seed(seed)
        out = augment(image)
        assert out.mode == "RGB" and out.size == image.size
        a = np.asarray(out)
        is_gray = np.array_equal(a, gray) and np.array_equal(a[..., 0], a[..., 2])
        is_solarized = np.array_equal(a, solarized)
        is_blurred = not is_gray and not is_solarized and total_variation(out) <= total_variation(image)
        assert is_gray + is_solarized + is_blurred == 1
        op = "grayscale" if is_gray else "solarize" if is_solarized else "blur"
        seen.add(op)
        random.seed(seed)  # the documented draws: the op, then the blur radius
        assert op == ThreeAugment.OPS[random.randrange(3)]
        if op == "blur":
            radius = random.uniform(0.1, 2.0)
            assert np.array_equal(a, np.asarray(image.filter(ImageFilter.GaussianBlur(radius))))
    assert seen == set(ThreeAugment.OPS)


def test_three_augment_on_gray_images():
    image, augment = gray_image(), ThreeAugment()
    assert augment.apply(image, "grayscale") == image  # already gray: grayscale changes nothing
    for seed in range(10):
        random.seed(seed)
        out = augment(image)
        assert out.mode == "L" and out.size == image.size
    with pytest.raises(ValueError, match="convert"):
        augment(image.convert("RGBA"))
    with pytest.raises(ValueError, match="unknown op"):
        augment.apply(image, "sepia")


@pytest.mark.parametrize("image,size", [(gray_image(28), 28), (rgb_image((32, 32)), 32), (rgb_image((50, 40)), 32),
                                        (rgb_image((40, 50)), 32), (gray_image(20), 24)])
def test_simple_random_crop_matches_torchvision(image, size):
    ours = SimpleRandomCrop(size, padding=4)
    reference = transforms.Compose([transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
                                    transforms.RandomCrop(size, padding=4, padding_mode="reflect")])
    for seed in range(8):  # same RNG draws, so the same offsets
        torch.manual_seed(seed)
        a = ours(image)
        torch.manual_seed(seed)
        b = reference(image)
        assert a.mode == image.mode and a.size == (size, size)
        assert np.array_equal(np.asarray(a), np.asarray(b))
    resized = TF.resize(image, size, interpolation=transforms.InterpolationMode.BICUBIC)
    padded = TF.pad(resized, 4, padding_mode="reflect")
    for top, left in [(0, 0), (8, 8), (3, 5), (padded.height - size, padded.width - size)]:
        expected = TF.crop(padded, top, left, size, size)
        assert np.array_equal(np.asarray(ours.crop(image, top, left)), np.asarray(expected))
    with pytest.raises(ValueError, match="does not fit"):
        ours.crop(image, padded.height - size + 1, 0)


def test_simple_random_crop_without_padding_is_identity():
    image = rgb_image()
    state = torch.get_rng_state()
    assert np.array_equal(np.asarray(SimpleRandomCrop(32, padding=0)(image)), np.asarray(image))
    assert torch.equal(torch.get_rng_state(), state)  # nothing to choose, nothing drawn (as torchvision)


RECIPES = {
    "rrc+randaugment+erasing": TrainConfig(crop="rrc", augment="randaugment", random_erasing=0.25),
    "src+3augment+jitter": TrainConfig(crop="src", augment="3augment", color_jitter=0.3),
    "none": TrainConfig(crop="none", augment="none"),
}
IMAGES = {"L28": (gray_image(28), 28, GRAY_MEAN, GRAY_STD), "RGB32": (rgb_image((32, 32)), 32, IMAGENET_MEAN,
                                                                      IMAGENET_STD)}


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("kind", IMAGES)
def test_train_transform_shapes_and_determinism(recipe, kind):
    image, size, mean, std = IMAGES[kind]
    transform = train_transform(RECIPES[recipe], size, mean, std)
    outputs = []
    for seed in (0, 0, 1):
        seed_all(seed)
        outputs.append(transform(image))
    channels = len(mean)
    assert all(o.shape == (channels, size, size) and o.dtype == torch.float32 for o in outputs)
    assert torch.equal(outputs[0], outputs[1])
    if recipe == "none":  # nothing random: the normalised image itself
        expected = TF.normalize(TF.to_tensor(image), mean, std)
        assert torch.equal(outputs[0], expected) and torch.equal(outputs[2], expected)
    else:
        assert not torch.equal(outputs[0], outputs[2])


@pytest.mark.parametrize("kind", IMAGES)
def test_randaugment_runs_every_op_on_gray_and_rgb(kind):
    # timm's geometric ops fill with the mean colour, which PIL only accepts as one int for 'L' images
    image, size, mean, std = IMAGES[kind]
    config = TrainConfig(crop="none", augment="randaugment", rand_augment="rand-m9-n4-mstd0.5-inc1")
    transform = train_transform(config, size, mean, std)
    for seed in range(40):
        seed_all(seed)
        assert transform(image).shape == (len(mean), size, size)


@pytest.mark.parametrize("kind", IMAGES)
def test_randaugment_posterize_to_zero_bits_gives_black(kind):
    # PosterizeIncreasing keeps 0 bits at magnitude 10: a black image with Pillow < 13, an error with Pillow 13
    image, size, mean, std = IMAGES[kind]
    transform = train_transform(TrainConfig(augment="randaugment", rand_augment="rand-m10-mstd0-inc1"), size, mean, std)
    (augment,) = [t for t in transform.transforms if hasattr(t, "ops")]
    (posterize,) = [op for op in augment.ops if op.name == "PosterizeIncreasing"]
    posterize.prob = 1.0
    out = posterize(image)
    assert out.mode == image.mode and out.size == image.size and np.asarray(out).max() == 0


def test_train_transform_resizes_when_crop_is_none():
    out = train_transform(TrainConfig(crop="none"), 32, GRAY_MEAN, GRAY_STD)(gray_image(28))
    assert out.shape == (1, 32, 32)
    with pytest.raises(ValueError, match="one value per channel"):
        train_transform(TrainConfig(), 32, IMAGENET_MEAN, GRAY_STD)
    with pytest.raises(ValueError, match="RandAugment string"):
        train_transform(TrainConfig(augment="randaugment", rand_augment="m9-mstd0.5"), 32, GRAY_MEAN, GRAY_STD)


def test_eval_transform():
    image = rgb_image((40, 50))
    out = eval_transform(32, IMAGENET_MEAN, IMAGENET_STD, crop_ratio=0.8)(image)
    resized = TF.resize(image, 40, interpolation=transforms.InterpolationMode.BICUBIC)
    expected = TF.normalize(TF.to_tensor(TF.center_crop(resized, 32)), IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(out, expected)
    square = gray_image(28)
    assert torch.equal(eval_transform(28, GRAY_MEAN, GRAY_STD, crop_ratio=1.0)(square),
                       TF.normalize(TF.to_tensor(square), GRAY_MEAN, GRAY_STD))
    with pytest.raises(ValueError, match="crop_ratio"):
        eval_transform(32, IMAGENET_MEAN, IMAGENET_STD, crop_ratio=1.2)


def test_tensor_images_gray_and_rgb():
    generator = torch.Generator().manual_seed(0)
    gray = torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8, generator=generator)
    rgb = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.arange(6)
    x, y = TensorImages(gray, labels)[2]
    assert x.shape == (1, 28, 28) and y == 2 and torch.equal(x, gray[2].float()[None] / 255)
    seen = []
    pil, _ = TensorImages(rgb, labels, transform=lambda im: seen.append(im) or im)[4]
    assert pil.mode == "RGB" and np.array_equal(np.asarray(pil), rgb[4].permute(1, 2, 0).numpy())
    pil, _ = TensorImages(gray[:, None], labels, transform=lambda im: im)[1]
    assert pil.mode == "L" and np.array_equal(np.asarray(pil), gray[1].numpy())
    # with a training transform, through a DataLoader
    transform = train_transform(RECIPES["src+3augment+jitter"], 32, IMAGENET_MEAN, IMAGENET_STD)
    batch_x, batch_y = next(iter(DataLoader(TensorImages(rgb, labels, transform), batch_size=4)))
    assert batch_x.shape == (4, 3, 32, 32) and torch.equal(batch_y, labels[:4])


def test_tensor_images_rejects_bad_input():
    labels = torch.arange(4)
    with pytest.raises(ValueError, match="uint8"):
        TensorImages(torch.rand(4, 28, 28), labels)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        TensorImages(torch.zeros(4, 2, 28, 28, dtype=torch.uint8), labels)
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        TensorImages(torch.zeros(4, 28, 28, dtype=torch.uint8), labels[:3])
