import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed

import vitedu
from vitedu.models import from_timm, resize_pos_embed, to_timm

# (vitedu name, overrides shared with timm, timm name or None for the timm twin from to_timm)
PARITY = [
    ("vit_pico_patch4_28", {}),
    ("vit_pico_patch4_28", {"global_pool": "avg"}),
    ("deit_pico_distilled_patch4_32", {}),
    ("deit3_pico_patch4_32", {}),
    ("vit_pico_patch4_32_2x2", {}),
]


@pytest.mark.parametrize("name,overrides", PARITY)
def test_tiny_presets_match_timm_both_ways(name, overrides, randomise):
    ours = randomise(vitedu.create_model(name, **overrides)).eval()
    reference = to_timm(ours)  # vitedu -> timm
    x = torch.randn(3, ours.config["in_chans"], ours.config["img_size"], ours.config["img_size"])
    torch.testing.assert_close(ours(x), reference(x), atol=1e-4, rtol=0)
    back = from_timm(randomise(reference, seed=1), name, **overrides).eval()  # timm -> vitedu
    torch.testing.assert_close(back(x), reference(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["deit_small_patch16_224", "deit3_small_patch16_224",
                                  "deit_tiny_distilled_patch16_224", "vit_small_patch16_18x2_224"])
def test_real_size_models_match_timm(name, randomise):
    reference = randomise(timm.create_model(name, pretrained=False)).eval()
    ours = from_timm(reference, name).eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(ours(x), reference(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name,millions", [("deit_tiny_patch16_224", 5.72), ("deit_small_patch16_224", 22.05),
                                           ("deit_base_patch16_224", 86.57), ("deit3_small_patch16_224", 22.06),
                                           ("deit3_base_patch16_224", 86.59), ("deit3_large_patch16_224", 304.37),
                                           ("vit_small_patch16_18x2_224", 64.67)])
def test_parameter_counts_match_timm_and_the_papers(name, millions):
    with torch.device("meta"):  # shapes only: no memory, no time
        ours = sum(p.numel() for p in vitedu.create_model(name).parameters())
        reference = sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())
    assert ours == reference
    assert round(ours / 1e6, 2) == millions


def test_distilled_model_returns_both_heads_while_training(randomise):
    model = randomise(vitedu.create_model("deit_pico_distilled_patch4_32"))
    x = torch.randn(2, 3, 32, 32)
    model.distilled_training = True
    cls_logits, dist_logits = model.train()(x)
    assert cls_logits.shape == dist_logits.shape == (2, 10) and not torch.allclose(cls_logits, dist_logits)
    model.eval()
    features = model.forward_features(x)
    torch.testing.assert_close(model(x), (model.head(features[:, 0]) + model.head_dist(features[:, 1])) / 2)


def test_parallel_block_has_the_parameters_of_twice_the_depth():
    with torch.device("meta"):
        wide = vitedu.create_model("vit_small_patch16_18x2_224")
        deep = vitedu.create_model("vit_small_patch16_36x1_224")
    assert sum(p.numel() for p in wide.parameters()) == sum(p.numel() for p in deep.parameters())
    assert len(wide.blocks) == 18 and len(deep.blocks) == 36


def test_hmlp_stem_keeps_patches_independent():
    model = vitedu.create_model("vit_pico_hmlp_patch4_32").eval()
    x = torch.randn(1, 3, 32, 32)
    y = x.clone()
    y[:, :, 8:12, 4:8] += 1.0  # patch at grid row 2, column 1
    changed = (model.patch_embed(x) - model.patch_embed(y)).abs().amax(-1)[0].reshape(8, 8) > 1e-6
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2, 1] = True
    assert torch.equal(changed, expected)
    with pytest.raises(ValueError, match="timm has no hMLP"):
        to_timm(model)
    with pytest.raises(ValueError, match="multiple of 4"):
        vitedu.create_model("vit_pico_hmlp_patch4_32", patch_size=2, img_size=32)


def test_attention_maps_agree_with_the_fused_forward(randomise):
    for name in ["vit_pico_patch4_28", "vit_pico_patch4_32_2x2", "deit_pico_distilled_patch4_32"]:
        model = randomise(vitedu.create_model(name)).double().eval()
        x = torch.randn(2, model.config["in_chans"], model.config["img_size"], model.config["img_size"], dtype=torch.float64)
        tokens = model.embed(x)
        for block, attn in zip(model.blocks, model.attention_maps(x)):
            explicit, maps = block(tokens, return_attention=True)
            torch.testing.assert_close(explicit, block(tokens))
            torch.testing.assert_close(attn, maps)
            tokens = explicit
        heads = model.config["num_heads"] * model.config["num_parallel"]
        assert attn.shape == (2, heads, tokens.shape[1], tokens.shape[1])
        torch.testing.assert_close(attn.sum(-1), torch.ones_like(attn.sum(-1)))


def test_position_embedding_resize_matches_timm():
    pos = torch.randn(1, 1 + 49, 16)
    reference = resample_abs_pos_embed(pos, new_size=(10, 10), old_size=(7, 7), num_prefix_tokens=1)
    torch.testing.assert_close(resize_pos_embed(pos, 10), reference)
    model = vitedu.create_model("vit_pico_patch4_28")
    assert model(torch.randn(2, 1, 40, 40)).shape == (2, 10)  # a larger image: 100 patches
    deit3 = vitedu.create_model("deit3_pico_patch4_32")
    assert deit3(torch.randn(1, 3, 48, 48)).shape == (1, 10)  # DeiT III: no class-token entry to keep


def test_features_head_and_classifier_reset():
    model = vitedu.create_model("vit_pico_patch4_28", num_classes=42)
    x = torch.randn(2, 1, 28, 28)
    features = model.forward_features(x)
    assert features.shape == (2, 50, 64)
    assert model.forward_head(features, pre_logits=True).shape == (2, 64)
    logits = model(x)
    assert logits.shape == (2, 42) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)


def test_bad_input_is_explained():
    model = vitedu.create_model("vit_pico_patch4_28")
    with pytest.raises(ValueError, match="expects 1-channel images, got 3"):
        model(torch.randn(1, 3, 28, 28))
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.randn(1, 1, 30, 30))
    with pytest.raises(ValueError, match="unsqueeze"):
        model(torch.randn(1, 28, 28))
    with pytest.raises(ValueError, match="square"):
        model(torch.randn(1, 1, 28, 32))
    with pytest.raises(ValueError, match="not a multiple"):
        vitedu.create_model("vit_pico_patch4_28", patch_size=5)
    with pytest.raises(ValueError, match="divisible by 3 heads"):
        vitedu.create_model("vit_pico_patch4_28", num_heads=3)
