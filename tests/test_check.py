
import vitedu
from vitedu import check


def reference_patchify(images, P):
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, -1, C * P * P)


def test_patchify_passes_and_hints():
    passed = check.patchify(reference_patchify)
    assert passed and repr(passed).startswith("[PASS] patchify")
    channel_last = lambda im, P: im.reshape(im.shape[0], im.shape[1], im.shape[2] // P, P, im.shape[3] // P, P) \
        .permute(0, 2, 4, 3, 5, 1).reshape(im.shape[0], -1, im.shape[1] * P * P)  # noqa: E731
    result = check.patchify(channel_last)
    assert not result and "channel first" in result.message
    columns_first = lambda im, P: reference_patchify(im.transpose(2, 3), P)  # noqa: E731
    assert not check.patchify(columns_first)
    assert "shape" in check.patchify(lambda im, P: im.flatten(2)).message
    assert "raised" in check.patchify(lambda im, P: 1 / 0).message
    assert repr(check.patchify(columns_first)).startswith("[NOT YET] patchify")


def test_attention_passes_and_hints():
    def correct(q, k, v):
        w = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1)
        return w @ v, w

    assert check.attention(correct)
    unscaled = check.attention(lambda q, k, v: ((q @ k.transpose(-2, -1)).softmax(-1) @ v,
                                                (q @ k.transpose(-2, -1)).softmax(-1)))
    assert not unscaled and "sqrt(d)" in unscaled.message
    wrong_axis = check.attention(lambda q, k, v: ((q @ k.transpose(-2, -1) / 8 ** 0.5).softmax(-2) @ v,
                                                  (q @ k.transpose(-2, -1) / 8 ** 0.5).softmax(-2)))
    assert not wrong_axis and "last dimension" in wrong_axis.message
    assert "pair" in check.attention(lambda q, k, v: v).message


def test_parameter_count_passes_and_hints():
    model = vitedu.create_model("vit_pico_patch4_28")
    total = sum(p.numel() for p in model.parameters())
    assert check.vit_parameter_count(total)
    assert "class token" in check.vit_parameter_count(total - 64).message
    assert "position embedding" in check.vit_parameter_count(total - 50 * 64).message
    block = sum(p.numel() for p in model.blocks[0].parameters())
    assert "block" in check.vit_parameter_count(total - block).message
    assert "off by" in check.vit_parameter_count(total + 7).message


def test_bce_loss_check():
    import torch.nn.functional as F

    assert check.bce_loss(lambda logits, t: F.binary_cross_entropy_with_logits(logits, (t > 0).float()))
    soft = check.bce_loss(lambda logits, t: F.binary_cross_entropy_with_logits(logits, t))
    assert not soft and "binarise" in soft.message
    summed = check.bce_loss(lambda logits, t: F.binary_cross_entropy_with_logits(
        logits, (t > 0).float(), reduction="none").sum(1).mean())
    assert not summed and "average" in summed.message


def test_solarize_check():
    import torch

    assert check.solarize(lambda im, th: torch.where(im >= th, 255 - im, im))
    assert not check.solarize(lambda im, th: torch.where(im > th + 10, 255 - im, im))
    assert not check.solarize(lambda im, th: 255 - im)


def test_layer_scale_parameters_check():
    assert check.layer_scale_parameters(2 * 4 * 64)
    half = check.layer_scale_parameters(4 * 64)
    assert not half and "two residual branches" in half.message


def test_mixup_and_lr_scaling_checks():
    import math

    assert check.mixup(lambda x, y, lam: (lam * x + (1 - lam) * x.flip(0), lam * y + (1 - lam) * y.flip(0)))
    wrong_partner = check.mixup(lambda x, y, lam: (lam * x + (1 - lam) * x.roll(1, 0), lam * y + (1 - lam) * y.roll(1, 0)))
    assert not wrong_partner
    labels_only = check.mixup(lambda x, y, lam: (lam * x + (1 - lam) * x.flip(0), y))
    assert not labels_only and "targets" in labels_only.message

    def rule(opt, lr, b, ref):
        return lr * (math.sqrt(b / ref) if opt == "lamb" else b / ref)

    assert check.lr_scaling(rule)
    assert not check.lr_scaling(lambda opt, lr, b, ref: lr * b / ref)
