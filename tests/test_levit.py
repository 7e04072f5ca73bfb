import pytest
import timm
import torch
import torch.nn as nn
from timm.models.levit import Levit, LevitDistilled

import vitedu.models.levit as levit_module
from vitedu.models import create_model
from vitedu.models.convert import from_timm, to_timm
from vitedu.models.levit import LeViT, attention_bias_index, fuse_bn

PICO = dict(img_size=32, num_classes=10, embed_dim=(64, 128, 192), key_dim=16, num_heads=(2, 4, 6), depth=(1, 1, 1),
            stem_type="s8")


@torch.no_grad()
def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and BN statistic away from its initial value (zero-initialised BN weights and attention biases,
    unit running variances), at scales that keep activations of order one through the whole network."""
    g = torch.Generator().manual_seed(seed)

    def uniform(t, lo, hi):
        return (torch.rand(t.shape, generator=g, dtype=torch.float64) * (hi - lo) + lo).to(t.dtype)

    def normal(t, std):
        return (torch.randn(t.shape, generator=g, dtype=torch.float64) * std).to(t.dtype)

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.weight.copy_(uniform(m.weight, 0.5, 1.5))
            m.bias.copy_(normal(m.bias, 0.2))
            m.running_mean.copy_(normal(m.running_mean, 0.2))
            m.running_var.copy_(uniform(m.running_var, 0.5, 2.0))
        elif isinstance(m, (nn.Linear, nn.Conv2d)):
            m.weight.copy_(normal(m.weight, m.weight[0].numel() ** -0.5))
            if m.bias is not None:
                m.bias.copy_(normal(m.bias, 0.2))
    for name, p in model.named_parameters():
        if "attention_biases" in name:
            p.copy_(normal(p, 1.0))
    return model


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- parity with timm, both directions ------------------------------------------------------------------------------

def test_levit_128s_matches_timm_at_224_both_ways():
    reference = randomise(timm.create_model("levit_128s", pretrained=False), seed=1).double().eval()
    assert isinstance(reference, LevitDistilled)
    ours = from_timm(reference, "levit_128s").double().eval()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(ours(x), expected, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(ours.forward_features(x), reference.forward_features(x), atol=1e-9, rtol=1e-9)
        back = to_timm(ours).double()
        torch.testing.assert_close(back(x), expected, atol=1e-9, rtol=1e-9)
        # every attention layer, the two shrinking ones included: resolutions 14 -> 7 -> 4
        maps = ours.attention_maps(x[:1])
    shapes = [tuple(a.shape) for a in maps]
    assert shapes == [(1, 4, 196, 196)] * 2 + [(1, 8, 49, 196)] + [(1, 6, 49, 49)] * 3 + [(1, 16, 16, 49)] + \
        [(1, 8, 16, 16)] * 4
    assert expected.abs().max() > 0.1  # the randomised network does not collapse to zero


@pytest.mark.parametrize("distilled", [False, True])
def test_pico_matches_timm_both_ways(distilled):
    cls = LevitDistilled if distilled else Levit
    reference = randomise(cls(**PICO), seed=2).eval()
    ours = from_timm(reference, "levit_pico_32", distilled=distilled).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = reference(x)
        assert (ours(x) - expected).abs().max() <= 1e-4
        back = to_timm(ours)
        assert type(back) is cls
        assert (back(x) - expected).abs().max() <= 1e-4
    assert expected.abs().max() > 0.1


def test_pico_matches_timm_in_training_mode():
    """BatchNorm over batch *and* tokens, and the (class, distillation) tuple of distilled training."""
    reference = randomise(LevitDistilled(**PICO), seed=3).train()
    reference.set_distilled_training(True)
    ours = from_timm(reference, "levit_pico_32", distilled=True).train()
    ours.distilled_training = True
    x = torch.randn(4, 3, 32, 32)
    out, expected = ours(x), reference(x)
    assert isinstance(out, tuple) and len(out) == 2
    for a, b in zip(out, expected):
        assert (a - b).abs().max() <= 1e-4
    # both sides updated their running statistics alike (up to rounding: our stem convolves NHWC tensors)
    ours_stats = ours.state_dict()
    for key, value in levit_module.from_timm_keys(reference.state_dict()).items():
        if "running" in key:
            torch.testing.assert_close(ours_stats[key], value, rtol=1e-4, atol=1e-5)


def test_key_maps_are_inverse_and_drop_the_index_buffer():
    ours = create_model("levit_128s")
    timm_keys = set(timm.create_model("levit_128s", pretrained=False).state_dict())
    assert set(levit_module.to_timm_keys(ours.state_dict())) == timm_keys
    assert set(levit_module.from_timm_keys(levit_module.to_timm_keys(ours.state_dict()))) == set(ours.state_dict())
    # official checkpoints store the (recomputable) index tables: they are dropped, not reported as unexpected
    official_like = dict(levit_module.to_timm_keys(ours.state_dict()))
    official_like["stages.0.blocks.0.attn.attention_bias_idxs"] = torch.zeros(196, 196, dtype=torch.long)
    assert set(levit_module.from_timm_keys(official_like)) == set(ours.state_dict())


# --- sizes -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,millions", [("levit_128s", 7.78), ("levit_128", 9.21), ("levit_192", 10.95),
                                           ("levit_256", 18.89), ("levit_384", 39.13)])
def test_parameter_counts_equal_timm_and_the_paper(name, millions):
    ours = create_model(name)
    assert ours.head_dist is not None  # timm's LeViT names are all LevitDistilled
    n = count(ours)
    assert n == count(timm.create_model(name, pretrained=False))
    assert round(n / 1e6, 2) == millions


def test_pico_preset_is_small_and_runs_at_32px():
    model = create_model("levit_pico_32")
    assert count(model) < 1_000_000
    assert model.head_dist is None
    assert [stage.resolution for stage in model.stages] == [4, 2, 1]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# --- attention bias ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("resolution,stride", [(4, 1), (7, 1), (7, 2), (14, 2), (4, 2)])
def test_attention_bias_index_is_abs_dy_times_res_plus_abs_dx(resolution, stride):
    idx = attention_bias_index(resolution, stride)
    out = (resolution - 1) // stride + 1
    assert idx.shape == (out * out, resolution * resolution)
    for qi in range(out):
        for qj in range(out):
            for ki in range(resolution):
                for kj in range(resolution):
                    expected = abs(stride * qi - ki) * resolution + abs(stride * qj - kj)
                    assert idx[qi * out + qj, ki * resolution + kj] == expected
    if stride == 1:
        assert torch.equal(idx, idx.T)
        assert idx.unique().numel() == resolution * resolution  # one learned bias per offset (|dy|, |dx|) and head


def test_attention_bias_tables_equal_timms_in_every_layer():
    ours = create_model("levit_128s")
    reference = timm.create_model("levit_128s", pretrained=False)
    ours_tables = [b for k, b in ours.named_buffers() if k.endswith("attention_bias_idxs")]
    timm_tables = [b for k, b in reference.named_buffers() if k.endswith("attention_bias_idxs")]
    assert len(ours_tables) == len(timm_tables) == 2 + 1 + 3 + 1 + 4
    for a, b in zip(ours_tables, timm_tables):
        assert torch.equal(a, b)


def test_attention_bias_changes_the_output_and_is_excluded_from_weight_decay():
    model = randomise(create_model("levit_pico_32"), seed=4).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        model.stages[0].blocks[0].attn.attention_biases.add_(1.0 * torch.arange(16.0))
        assert not torch.allclose(model(x), before)
    names = model.no_weight_decay()
    assert len(names) == 5 and all(n.endswith("attention_biases") for n in names)


# --- attention maps, heads, classifier ---------------------------------------------------------------------------

def test_attention_maps_cover_every_layer_and_match_the_forward():
    model = randomise(create_model("levit_pico_32"), seed=5).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    maps = model.attention_maps(x)
    assert [tuple(a.shape) for a in maps] == [(2, 2, 16, 16), (2, 4, 4, 16), (2, 4, 4, 4), (2, 8, 1, 4), (2, 6, 1, 1)]
    for a in maps:
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1], dtype=torch.float64))
    # the explicit path (used for the maps) and the fused-kernel path give the same tokens
    tokens = model.embed(x)
    for stage in model.stages:
        explicit, _ = stage(tokens, return_attention=True)
        torch.testing.assert_close(explicit, stage(tokens))
        tokens = explicit


def test_distillation_head_average_at_eval_tuple_in_distilled_training():
    model = randomise(create_model("levit_pico_32", distilled=True), seed=6)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(model(x), (model.head(pooled) + model.head_dist(pooled)) / 2)
    model.train()
    assert isinstance(model(x), torch.Tensor)  # distilled_training off: the average, as timm
    model.distilled_training = True
    logits, logits_dist = model(x)
    assert logits.shape == logits_dist.shape == (4, 10)
    assert not torch.allclose(logits, logits_dist)
    model.eval()
    assert isinstance(model(x), torch.Tensor)


def test_features_backward_and_classifier_reset():
    model = create_model("levit_pico_32", num_classes=42, distilled=True)
    x = torch.randn(3, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (3, 1, 192)
    assert model.forward_head(features, pre_logits=True).shape == (3, model.num_features)
    logits = model(x)
    assert logits.shape == (3, 42) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.reset_classifier(7)
    assert model(x).shape == (3, 7)
    model.reset_classifier(0)
    assert model(x).shape == (3, model.num_features)
    assert LeViT(**model.config).config == model.config


# --- BN fusing ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,size", [("levit_pico_32", 32), ("levit_128s", 224)])
def test_bn_fusing_is_exact(name, size):  # its speed is timed by levit_study, fused and unfused interleaved
    model = randomise(create_model(name), seed=7).eval()
    fused = model.fuse()
    assert fused is not model and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())  # original untouched
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out, out_fused = model(x), fused(x)
    assert out.abs().max() > 0.1
    assert (out - out_fused).abs().max() <= 1e-4
    for a, b in zip(model.attention_maps(x), fused.attention_maps(x)):
        assert (a - b).abs().max() <= 1e-4
    assert fuse_bn(model).state_dict().keys() == fused.state_dict().keys()


def test_bn_fusing_of_each_unit_in_double_precision():
    torch.manual_seed(8)
    for unit, x in [(levit_module.ConvBN(3, 8), torch.randn(2, 3, 9, 9)),
                    (levit_module.LinearBN(6, 5), torch.randn(2, 7, 6)),
                    (levit_module.BNLinear(6, 5), torch.randn(4, 6))]:
        unit = randomise(unit).double().eval()
        x = x.double()
        torch.testing.assert_close(unit.fuse()(x), unit(x), atol=1e-12, rtol=1e-12)


# --- bad input ---------------------------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    model = create_model("levit_pico_32")
    with pytest.raises(ValueError, match="3-channel"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.randn(1, 3, 36, 36))
    with pytest.raises(ValueError, match="img_size=64"):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="multiple of the stem"):
        create_model("levit_pico_32", img_size=36)
    with pytest.raises(ValueError, match="key_dim"):
        create_model("levit_pico_32", embed_dim=(72, 128, 192))
    with pytest.raises(ValueError, match="one entry per stage"):
        create_model("levit_pico_32", depth=(1, 1))
    with pytest.raises(ValueError, match="stem_type"):
        create_model("levit_pico_32", stem_type="s4")


def test_mismatched_checkpoints_raise_clear_errors():
    with pytest.raises(ValueError, match="missing"):  # 128 has more blocks than 128s
        from_timm(timm.create_model("levit_128s", pretrained=False), "levit_128")
    with pytest.raises(ValueError, match="wrong shape"):
        from_timm(Levit(**dict(PICO, num_classes=100)), "levit_pico_32")
    with pytest.raises(ValueError, match="fused"):
        to_timm(create_model("levit_pico_32").fuse())


def test_inference_bias_cache_never_goes_stale():
    import copy

    torch.manual_seed(0)
    model = create_model("levit_pico_32").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for p in model.parameters():  # the projections' BN starts at 0, which would hide the attention entirely
            p.normal_(0, 0.2)
        before = model(x)
        for name, p in model.named_parameters():
            if "attention_biases" in name:
                p.add_(torch.randn_like(p))  # an in-place change, as an optimizer step or an EMA update makes
        after = model(x)
        twin = copy.deepcopy(model)
        twin(x)  # fills the copy's cache
        twin.load_state_dict({k: v + torch.randn_like(v) if "attention_biases" in k else v
                              for k, v in model.state_dict().items()})
        moved = twin(x)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, model(x), atol=1e-6)  # with autograd on, the bias is gathered afresh
    assert not torch.allclose(moved, after) and torch.allclose(moved, twin(x), atol=1e-6)
