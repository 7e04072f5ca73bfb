"""BatchMultiCrop: each of its batched operations equals torchvision's per-image one."""

import pytest
import torch
import torchvision.transforms.functional as TF

from vitedu.ssl.dino import BatchMultiCrop, colour_jitter, gaussian_blur, grayscale, random_boxes, resized_crops


def _images(b=4, c=3, size=20, seed=0):
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_a_full_box_without_flip_is_the_identity():
    x = _images()
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(4, 4)
    torch.testing.assert_close(resized_crops(x, boxes, 20), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("box,size", [((2, 3, 16, 12), 8), ((0, 0, 20, 20), 10), ((5, 1, 10, 15), 10)])
def test_crops_equal_torchvision_resized_crop(box, size):
    left, top, width, height = box
    x = _images()
    boxes = torch.tensor([[left / 20, top / 20, width / 20, height / 20]]).expand(4, 4)
    ours = resized_crops(x, boxes, size)
    reference = TF.resized_crop(x, top, left, height, width, [size, size], antialias=False)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    flipped = resized_crops(x, boxes, size, flip=torch.tensor([True, False, True, False]))
    torch.testing.assert_close(flipped[0], reference[0].flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(flipped[1], reference[1], atol=1e-5, rtol=0)


def test_random_boxes_lie_inside_the_image_with_the_asked_area():
    torch.manual_seed(0)
    boxes = random_boxes(2000, (0.05, 0.4))
    x0, y0, w, h = boxes.unbind(1)
    assert torch.all(x0 >= 0) and torch.all(y0 >= 0) and torch.all(x0 + w <= 1 + 1e-6) and torch.all(y0 + h <= 1 + 1e-6)
    area = w * h
    assert area.min() >= 0.05 - 1e-6 and area.max() <= 0.4 + 1e-6
    assert (w / h).min() >= 3 / 4 - 1e-5 and (w / h).max() <= 4 / 3 + 1e-5


def test_jitter_equals_torchvision_per_image():
    x = _images()
    b, c, s = torch.tensor([0.6, 1.0, 1.3, 0.9]), torch.tensor([1.4, 0.7, 1.0, 0.8]), torch.tensor([0.8, 1.2, 1.0, 0.9])
    ours = colour_jitter(x, b, c, s, torch.zeros(4))
    for i in range(4):
        ref = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[i], b[i].item()), c[i].item()),
                                   s[i].item())
        torch.testing.assert_close(ours[i], ref, atol=1e-4, rtol=0)  # the hue rotation's round trip: ~1e-5
    gray = _images(c=1)
    ours = colour_jitter(gray, b, c, s, torch.full((4,), 0.1))  # saturation and hue do nothing on one channel
    for i in range(4):
        torch.testing.assert_close(ours[i], TF.adjust_contrast(TF.adjust_brightness(gray[i], b[i].item()),
                                                                c[i].item()), atol=1e-5, rtol=0)


def test_the_hue_rotation_keeps_luma_and_turns_colour():
    x = 0.3 + 0.4 * _images()  # away from 0 and 1, so nothing is clamped
    ones = torch.ones(4)
    turned = colour_jitter(x, ones, ones, ones, torch.full((4,), 0.1))
    torch.testing.assert_close(grayscale(turned), grayscale(x), atol=1e-5, rtol=0)
    assert (turned - x).abs().max() > 0.01
    full_turn = colour_jitter(x, ones, ones, ones, torch.full((4,), 0.5))
    back = colour_jitter(full_turn, ones, ones, ones, torch.full((4,), -0.5))
    torch.testing.assert_close(back, x, atol=1e-4, rtol=0)


def test_blur_equals_torchvision_per_image():
    x = _images()
    sigma = torch.tensor([0.5, 1.0, 1.5, 0.8])
    ours = gaussian_blur(x, sigma)
    radius = 5  # ceil(3 * 1.5)
    for i in range(4):
        ref = TF.gaussian_blur(x[i], [2 * radius + 1] * 2, [sigma[i].item()] * 2)
        torch.testing.assert_close(ours[i], ref, atol=1e-5, rtol=0)


def test_views_have_the_paper_layout_and_are_reproducible():
    images = (_images(b=6, size=32) * 255).to(torch.uint8)
    augment = BatchMultiCrop(32, 16, local_crops=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    torch.manual_seed(0)
    views = augment(images)
    assert [tuple(v.shape) for v in views] == [(6, 3, 32, 32)] * 2 + [(6, 3, 16, 16)] * 3
    assert all(v.min() >= -2 - 1e-5 and v.max() <= 2 + 1e-5 for v in views)  # normalised [0, 1] images
    torch.manual_seed(0)
    again = augment(images.float() / 255)  # uint8 and float inputs are the same images
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(views, again))
    assert not torch.allclose(views[0], views[1])


def test_batch_multicrop_rejects_mismatched_channels():
    with pytest.raises(ValueError, match="channel"):
        BatchMultiCrop(32, 16, mean=(0.5,), std=(0.25,))(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="local_crops"):
        BatchMultiCrop(32, 16, local_crops=-1)
