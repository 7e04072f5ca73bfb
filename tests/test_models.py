import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed

import vitedu
from vitedu.models import resize_pos_embed


def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter away from its near-degenerate initial value, so a wrong computation cannot still match."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.3)


@pytest.mark.parametrize("global_pool", ["token", "avg"])
def test_vit_matches_timm(global_pool):
    config = dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=3, num_heads=4,
                  mlp_ratio=2.0, global_pool=global_pool)
    ours = vitedu.create_model("vit_pico_patch4_28", depth=3, global_pool=global_pool).double().eval()
    reference = timm.models.VisionTransformer(**config).double().eval()
    randomise(ours)
    missing, unexpected = reference.load_state_dict(ours.state_dict(), strict=False)
    assert not missing and not unexpected
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(ours(x), reference(x), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ours.forward_features(x), reference.forward_features(x), atol=1e-10, rtol=1e-10)


def test_attention_maps_path_gives_the_same_tokens():
    model = vitedu.create_model("vit_pico_patch4_28").double().eval()
    randomise(model, 1)
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    tokens = model.embed(x)
    maps = []
    for block in model.blocks:
        explicit, attn = block(tokens, return_attention=True)
        torch.testing.assert_close(explicit, block(tokens))
        maps.append(attn)
        tokens = explicit
    assert all(torch.allclose(a, b) for a, b in zip(maps, model.attention_maps(x)))
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 4, 50, dtype=torch.float64))


def test_position_embedding_resize_matches_timm():
    pos = torch.randn(1, 1 + 49, 16)
    ours = resize_pos_embed(pos, 10)
    reference = resample_abs_pos_embed(pos, new_size=(10, 10), old_size=(7, 7), num_prefix_tokens=1)
    torch.testing.assert_close(ours, reference)
    model = vitedu.create_model("vit_pico_patch4_28")
    assert model(torch.randn(2, 1, 40, 40)).shape == (2, 10)  # a larger image: 100 patches


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


def test_paper_sized_presets_match_timm_parameter_counts():
    for name in ["deit_tiny_patch16_224", "deit_small_patch16_224"]:
        ours = sum(p.numel() for p in vitedu.create_model(name).parameters())
        reference = sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())
        assert ours == reference


def test_registry_lists_and_rejects():
    assert "vit_pico_patch4_28" in vitedu.list_models("vit_*")
    assert vitedu.list_models("deit_*") == ["deit_small_patch16_224", "deit_tiny_patch16_224"]
    with pytest.raises(KeyError, match="list_models"):
        vitedu.create_model("vit_gigantic")
    with pytest.raises(ValueError, match="not a multiple"):
        vitedu.create_model("vit_pico_patch4_28", patch_size=5)
    with pytest.raises(ValueError, match="divisible by 3 heads"):
        vitedu.create_model("vit_pico_patch4_28", num_heads=3)
