import pytest
import timm
import torch
from timm.models.mlp_mixer import Affine as TimmAffine
from timm.models.mlp_mixer import MlpMixer, ResBlock, checkpoint_filter_fn

import vitedu.models.resmlp as resmlp
from vitedu.models._registry import create_model
from vitedu.models.convert import from_timm, load_checked, to_timm


def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter away from its initial value (LayerScale 1e-6..0.1, Affine 1/0, zero biases), so a wrong
    computation cannot still match. Matrices keep O(1) activations; vectors are standard normal."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            scale = p[0].numel() ** -0.5 if p.ndim >= 2 and p.shape[0] > 1 else 1.0
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * scale)
    assert not list(model.buffers()), "randomise the buffers too"


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, millions", [("resmlp_12_224", 15.35), ("resmlp_24_224", 30.02),
                                            ("resmlp_36_224", 44.69), ("resmlp_big_24_224", 129.14)])
def test_parameter_counts_and_keys_match_timm(name, millions):
    with torch.device("meta"):  # shapes only: no memory, no init time
        ours, reference = create_model(name), timm.create_model(name, pretrained=False)
    assert num_params(ours) == num_params(reference)
    assert round(num_params(ours) / 1e6, 2) == millions
    converted = resmlp.to_timm_keys(ours.state_dict())
    assert {k: tuple(v.shape) for k, v in converted.items()} == \
           {k: tuple(v.shape) for k, v in reference.state_dict().items()}


def test_layerscale_init_is_the_official_one():
    # Official resmlp_models.py: init_scale 0.1 / 1e-5 / 1e-6 / 1e-6 (timm's resmlp_12_224 uses 1e-4).
    for name, value in [("resmlp_12_224", 0.1), ("resmlp_24_224", 1e-5), ("resmlp_36_224", 1e-6),
                        ("resmlp_big_24_224", 1e-6)]:
        block = create_model(name, depth=1).blocks[0]
        assert torch.all(block.ls1.gamma == value) and torch.all(block.ls2.gamma == value), name


def test_resmlp_12_matches_timm_both_ways():
    reference = timm.create_model("resmlp_12_224", pretrained=False).eval()
    randomise(reference)  # in fp32, since from_timm builds an fp32 model; then both in fp64
    ours = from_timm(reference, "resmlp_12_224").double().eval()
    reference.double()
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(ours(x), expected, atol=1e-10, rtol=1e-10)
        back = to_timm(ours).double()
        torch.testing.assert_close(back(x), expected, atol=1e-10, rtol=1e-10)


def test_pico_matches_timm_both_ways():
    ours = create_model("resmlp_pico_32").eval()
    randomise(ours, 1)
    reference = to_timm(ours).double()
    ours.double()
    assert isinstance(reference, MlpMixer)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(reference(x), ours(x), atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(reference.forward_features(x), ours.forward_features(x), atol=1e-10, rtol=1e-10)
        # timm -> vitedu from a MlpMixer built directly (timm registers no 32-px ResMLP)
        c = ours.config
        other = MlpMixer(num_classes=10, img_size=32, patch_size=4, num_blocks=c["depth"], embed_dim=c["embed_dim"],
                         mlp_ratio=4, block_layer=ResBlock, norm_layer=TimmAffine).eval()
        randomise(other, 2)
        again = from_timm(other, "resmlp_pico_32").double().eval()
        other.double()
        torch.testing.assert_close(again(x), other(x), atol=1e-10, rtol=1e-10)


def test_official_keys_agree_with_timms_filter():
    ours = create_model("resmlp_pico_32")
    randomise(ours, 3)
    official = resmlp.to_official_keys(ours.state_dict())
    assert "blocks.0.attn.weight" in official and "blocks.0.gamma_1" in official and official["norm.alpha"].ndim == 1
    via_timm = checkpoint_filter_fn(official, None)  # timm's own official -> timm renaming
    ours_to_timm = resmlp.to_timm_keys(resmlp.from_official_keys(official))
    assert via_timm.keys() == ours_to_timm.keys()
    assert all(torch.equal(via_timm[k], ours_to_timm[k]) for k in via_timm)
    again = load_checked(create_model("resmlp_pico_32"), resmlp.from_official_keys(official))
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ours.state_dict().values()))


def test_fold_affine_is_exact():
    model = create_model("resmlp_pico_distilled_32").double().eval()
    randomise(model, 4)
    folded = resmlp.fold_affine(model)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(folded.head_dist(folded.forward_head(folded.forward_features(x), pre_logits=True)),
                                   model.head_dist(model.forward_head(model.forward_features(x), pre_logits=True)))
    for affine in [folded.affine] + [b.affine2 for b in folded.blocks]:
        assert torch.all(affine.alpha == 1) and torch.all(affine.beta == 0)
    assert not torch.equal(folded.blocks[0].affine1.alpha, torch.ones_like(folded.blocks[0].affine1.alpha))
    assert not torch.equal(model.affine.alpha, folded.affine.alpha)  # the original is untouched


def test_cross_patch_weights():
    model = create_model("resmlp_pico_32")
    w = model.cross_patch_weights()
    assert w.shape == (6, 64, 64) and not w.requires_grad
    torch.testing.assert_close(w[2], model.blocks[2].cross_patch.weight)
    w.zero_()
    assert model.blocks[2].cross_patch.weight.abs().sum() > 0  # a copy


def test_distilled_heads():
    model = create_model("resmlp_pico_distilled_32")
    randomise(model, 5)
    x = torch.randn(2, 3, 32, 32)
    pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    assert pooled.shape == (2, 128)
    model.eval()
    torch.testing.assert_close(model(x), (model.head(pooled) + model.head_dist(pooled)) / 2)
    model.train()
    assert isinstance(model(x), torch.Tensor)  # without distilled_training: averaged
    model.distilled_training = True
    logits, logits_dist = model(x)
    assert logits.shape == logits_dist.shape == (2, 10)
    with pytest.raises(ValueError, match="one head"):
        to_timm(model)


def test_features_backward_and_reset_classifier():
    model = create_model("resmlp_pico_32", num_classes=42)
    assert num_params(model) < 1_000_000
    x = torch.randn(2, 3, 32, 32)
    assert model.forward_features(x).shape == (2, 64, 128)
    model(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.num_features)


def test_bad_inputs_raise_clear_errors():
    model = create_model("resmlp_pico_32")
    with pytest.raises(ValueError, match="3-channel"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.randn(1, 3, 30, 30))
    with pytest.raises(ValueError, match="mix exactly 64 patches"):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="batch of images"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="one head"):
        to_timm(create_model("resmlp_pico_distilled_32"))
    with torch.device("meta"):
        deeper = timm.create_model("resmlp_24_224", pretrained=False)
        ten_classes = timm.create_model("resmlp_12_224", pretrained=False, num_classes=10)
    with pytest.raises(ValueError, match="unexpected 144"):  # 12 blocks too many, 12 tensors each
        from_timm(deeper.state_dict(), "resmlp_12_224")
    with pytest.raises(ValueError, match=r"wrong shape 2: head.weight: \(10, 384\) vs model \(1000, 384\)"):
        from_timm(ten_classes.state_dict(), "resmlp_12_224")


def test_fashion_presets_take_28_px_gray_images():
    for name, distilled in (("resmlp_pico_28", False), ("resmlp_pico_distilled_28", True)):
        model = create_model(name).eval()
        assert model.num_patches == 49 and model.in_chans == 1 and (model.head_dist is not None) == distilled
        assert model.cross_patch_weights().shape == (6, 49, 49)
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
        with pytest.raises(ValueError, match="28 x 28"):
            model(torch.randn(2, 1, 32, 32))
