
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
