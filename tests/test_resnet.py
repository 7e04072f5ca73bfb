import pytest
import timm
import torch
import torchvision

import vitedu.models.resnet  # noqa: F401  (registers the ResNet family)
from vitedu.models import create_model
from vitedu.models.convert import family_of, from_timm, load_checked, to_timm


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter and buffer away from its initial value: zero-initialised last BNs (timm), BN running
    statistics (0 and 1), BN biases (0); a wrong model could still match with those. Scales stay He-like, so a
    50-layer network neither explodes nor dies."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point():  # num_batches_tracked
                t.fill_(int(torch.randint(1, 1000, (1,), generator=generator)))
            elif name.endswith("running_var") or (t.ndim == 1 and name.endswith("weight")):
                t.copy_(torch.rand(t.shape, generator=generator, dtype=t.dtype) + 0.5)
            elif t.ndim == 1:  # BN bias, running mean, classifier bias
                t.copy_(torch.randn(t.shape, generator=generator, dtype=t.dtype) * 0.2)
            else:
                t.copy_(torch.randn(t.shape, generator=generator, dtype=t.dtype) * (2 / t[0].numel()) ** 0.5)
    return model


def assert_same_logits(ours, reference, x, atol=1e-9):
    ours.eval(), reference.eval()
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(ours(x), expected, atol=atol, rtol=atol)
    assert expected.std() > 1e-2  # the comparison is not between two near-constant outputs
    return expected


def test_resnet50_matches_timm_both_ways():
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64)
    reference = randomise(timm.create_model("resnet50", pretrained=False)).double()
    ours = from_timm(reference, "resnet50").double()
    assert_same_logits(ours, reference, x)
    with torch.no_grad():
        features = ours.forward_features(x)
        assert features.shape == (1, 2048, 7, 7)
        torch.testing.assert_close(features, reference.forward_features(x), atol=1e-9, rtol=1e-9)

    ours = randomise(create_model("resnet50"), seed=1).double()
    assert_same_logits(ours, to_timm(ours).double(), x)


def test_resnet50_matches_torchvision_both_ways():
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64)
    reference = randomise(torchvision.models.resnet50(), seed=2).double()
    ours = load_checked(create_model("resnet50").double(), reference.state_dict(), "torchvision's resnet50")
    assert_same_logits(ours, reference, x)

    ours = randomise(create_model("resnet50"), seed=3).double()
    reference = torchvision.models.resnet50().double()
    reference.load_state_dict(ours.state_dict())  # strict: the same keys and shapes
    assert_same_logits(ours, reference, x)


def test_resnet18_matches_timm_at_64px():
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    reference = randomise(timm.create_model("resnet18", pretrained=False, num_classes=7), seed=4).double()
    assert_same_logits(from_timm(reference, "resnet18", num_classes=7).double(), reference, x)


def test_pico_matches_its_timm_twin_both_ways():
    """timm's ResNet class cannot build a 3x3 stride-1 stem without a pool: the twin is timm's ResNet (blocks,
    stages and head are timm's code) with the stem swapped."""
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    model = create_model("resnet_pico_32")
    reference = family_of(model).build_timm(model)
    assert type(reference.layer1[0]) is timm.models.resnet.BasicBlock
    assert reference.conv1.kernel_size == (3, 3) and reference.conv1.stride == (1, 1)
    randomise(reference, seed=5).double()
    ours = from_timm(reference, "resnet_pico_32").double()
    assert_same_logits(ours, reference, x)
    with torch.no_grad():
        assert ours.forward_features(x).shape == (3, 128, 4, 4)  # 32 px -> 32, 16, 8, 4

    ours = randomise(create_model("resnet_pico_32"), seed=6).double()
    assert_same_logits(ours, to_timm(ours).double(), x)


def test_parameter_counts():
    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert count(create_model("resnet50")) == 25_557_032 == count(torchvision.models.resnet50())
    for name in ["resnet18", "resnet34", "resnet50", "resnet101"]:
        assert count(create_model(name)) == count(timm.create_model(name, pretrained=False)), name
    assert count(create_model("resnet_pico_32")) == 701_466 < 1_000_000
    assert count(create_model("resnet_pico_28")) == 701_466 - 2 * 16 * 9  # one input channel instead of three


def test_v1_5_puts_the_stride_on_the_3x3_conv():
    block = create_model("resnet50").layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
    assert block.downsample[0].stride == (2, 2)


def test_zero_init_last_option():
    model = create_model("resnet50")  # timm's default
    assert all(b.bn3.weight.abs().sum() == 0 for stage in model.stages() for b in stage)
    model = create_model("resnet18", zero_init_last=False)  # torchvision's default
    assert all(torch.equal(b.bn2.weight, torch.ones_like(b.bn2.weight)) for stage in model.stages() for b in stage)
    with torch.no_grad():  # with zero-init every block starts as ReLU(shortcut)
        block = create_model("resnet_pico_32").layer1[0].eval()
        x = torch.randn(2, 16, 8, 8)
        torch.testing.assert_close(block(x), x.relu())


def test_drop_path_rates_follow_timm():
    ours = create_model("resnet50", drop_path_rate=0.05)
    reference = timm.create_model("resnet50", pretrained=False, drop_path_rate=0.05)
    ours_rates = [b.drop_path.p for stage in ours.stages() for b in stage]
    timm_rates = [b.drop_path.drop_prob if b.drop_path is not None else 0.0
                  for stage in (reference.layer1, reference.layer2, reference.layer3, reference.layer4) for b in stage]
    assert ours_rates == pytest.approx(timm_rates)
    assert ours_rates[0] == 0 and ours_rates[-1] == pytest.approx(0.05)


@pytest.mark.parametrize("name,size", [("resnet_pico_32", 32), ("resnet18", 64)])
def test_channels_last_gives_the_same_output(name, size):
    model = randomise(create_model(name), seed=7).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        features = model.forward_features(x_cl)
        assert features.is_contiguous(memory_format=torch.channels_last)  # it really ran in NHWC
        torch.testing.assert_close(model.forward_head(features), expected, atol=1e-4, rtol=1e-4)


def test_features_head_backward_and_classifier_reset():
    model = create_model("resnet_pico_32", num_classes=42)
    x = torch.randn(2, 3, 32, 32)
    features = model.forward_features(x)
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features) == (2, 128)
    logits = model(x)
    assert logits.shape == (2, 42) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.reset_classifier(0)
    assert model(x).shape == (2, 128)
    model = create_model("resnet_pico_32", drop_path_rate=0.5).train()  # dropped branches, in-place residual adds
    model(x).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert create_model("resnet_pico_32")(torch.randn(2, 3, 40, 24)).shape == (2, 10)  # any size >= 8 px


def test_bad_inputs_raise_clear_errors():
    model = create_model("resnet_pico_32")
    with pytest.raises(ValueError, match="3-channel"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="batch of images"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="downsamples by 32"):
        create_model("resnet18")(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="fc.weight"):  # a 100-class checkpoint into a 10-class model
        load_checked(model, create_model("resnet_pico_32", num_classes=100).state_dict())
    with pytest.raises(ValueError, match="does not fit"):
        from_timm(timm.create_model("resnet18", pretrained=False), "resnet50")
    with pytest.raises(ValueError, match="block must be"):
        create_model("resnet50", block="bottle")
    with pytest.raises(ValueError, match="one width per stage"):
        create_model("resnet50", channels=(64, 128))
    with pytest.raises(ValueError, match="even first width"):
        to_timm(create_model("resnet_pico_32", channels=(15, 32, 64, 128)))
