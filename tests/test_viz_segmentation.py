import itertools
import sys

import matplotlib
import pytest
import torch
import torch.nn as nn

import vitedu
from vitedu.models.vit import VisionTransformer
from vitedu.viz import (
    attention_explorer,
    attention_rollout,
    best_head_jaccard,
    cls_attention,
    explorer_figure,
    integrated_gradients,
    jaccard,
    mask_jaccard_scores,
    masks_at,
    mass_mask,
    occlusion,
    rollout_from_attentions,
    segment,
    show_attributions,
    show_segmentation,
    upsample,
)

matplotlib.use("Agg")


def tiny_vit(**kw) -> VisionTransformer:
    """16 px, 4x4 patches, two blocks of two heads: fast enough to run many times on a CPU."""
    return VisionTransformer(**dict(dict(img_size=16, patch_size=4, in_chans=3, num_classes=3, embed_dim=16, depth=2,
                                         num_heads=2, mlp_ratio=2.0), **kw))


def random_attention(generator, batch: int, heads: int, tokens: int) -> torch.Tensor:
    return torch.rand(batch, heads, tokens, tokens, generator=generator, dtype=torch.float64).mul(4).softmax(-1)


# ----------------------------------------------------------------------------------------------------------------------
# mass_mask
# ----------------------------------------------------------------------------------------------------------------------

def brute_force_mask(values: torch.Tensor, mass: float) -> torch.Tensor:
    """The smallest subset holding ``mass`` of the total, by trying every subset (the largest sum among the smallest)."""
    flat = values.flatten().tolist()
    total = sum(flat)
    for size in range(len(flat) + 1):
        best = max(itertools.combinations(range(len(flat)), size), key=lambda s: sum(flat[i] for i in s))
        if sum(flat[i] for i in best) >= mass * total:
            mask = torch.zeros(len(flat), dtype=torch.bool)
            mask[list(best)] = True
            return mask.reshape(values.shape)
    raise AssertionError("unreachable")


def official_dino_mask(maps: torch.Tensor, threshold: float) -> torch.Tensor:
    """facebookresearch/dino visualize_attention.py: ascending sort, keep where the cumulative mass > 1 - threshold."""
    flat = maps.flatten(-2)
    val, idx = torch.sort(flat)
    val = val / val.sum(-1, keepdim=True)
    th_attn = torch.cumsum(val, -1) > (1 - threshold)
    return th_attn.gather(-1, torch.argsort(idx)).reshape(maps.shape)


@pytest.mark.parametrize("mass", [0.3, 0.6, 0.9])
def test_mass_mask_is_the_smallest_set_reaching_the_mass(mass):
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(60, 3, 3, generator=generator, dtype=torch.float64) ** 3  # skewed, as attention is
    masks = mass_mask(maps, mass)
    assert masks.dtype == torch.bool and masks.shape == maps.shape
    for values, mask in zip(maps, masks):
        assert torch.equal(mask, brute_force_mask(values, mass))
    assert torch.equal(masks, official_dino_mask(maps, mass))
    assert torch.equal(mass_mask(0.37 * maps, mass), masks)  # measured against each map's own total


def test_mass_mask_hand_example_ties_and_full_mass():
    values = torch.tensor([[0.0625, 0.5, 0.0], [0.25, 0.0, 0.125], [0.0, 0.0625, 0.0]])  # sums to 1 exactly
    assert mass_mask(values, 0.5).nonzero().tolist() == [[0, 1]]  # reaching the threshold exactly is enough
    assert mass_mask(values, 0.6).nonzero().tolist() == [[0, 1], [1, 0]]
    assert mass_mask(values, 0.8).nonzero().tolist() == [[0, 1], [1, 0], [1, 2]]
    assert torch.equal(mass_mask(0.25 * values, 0.6), mass_mask(values, 0.6))
    ties = torch.ones(2, 3, 3)
    assert torch.equal(mass_mask(ties, 0.5).flatten(-2), torch.tensor([[True] * 5 + [False] * 4] * 2))  # 5/9 >= 0.5
    assert not mass_mask(torch.zeros(3, 3), 0.6).any()  # no mass: nothing to keep


def test_mass_one_keeps_exactly_the_non_zero_patches():
    generator = torch.Generator().manual_seed(1)
    maps = torch.rand(20, 4, 4, generator=generator)
    maps[torch.rand(20, 4, 4, generator=generator) < 0.4] = 0
    assert torch.equal(mass_mask(maps, 1.0), maps > 0)


def test_mass_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="0 < mass <= 1"):
        mass_mask(torch.rand(3, 3), 0.0)
    with pytest.raises(ValueError, match="0 < mass <= 1"):
        mass_mask(torch.rand(3, 3), 1.5)
    with pytest.raises(ValueError, match="non-negative"):
        mass_mask(torch.randn(3, 3).clamp(max=-0.1), 0.6)
    with pytest.raises(ValueError, match=r"\(\.\.\., g, g\)"):
        mass_mask(torch.rand(9), 0.6)


# ----------------------------------------------------------------------------------------------------------------------
# jaccard
# ----------------------------------------------------------------------------------------------------------------------

def test_jaccard_identity_complement_and_hand_example():
    generator = torch.Generator().manual_seed(2)
    masks = torch.rand(5, 8, 8, generator=generator) > 0.5
    assert masks.any((-2, -1)).all() and (~masks).any((-2, -1)).all()
    assert torch.equal(jaccard(masks, masks), torch.ones(5))
    assert torch.equal(jaccard(masks, ~masks), torch.zeros(5))
    pred, target = torch.zeros(2, 4, 4, dtype=torch.bool), torch.zeros(2, 4, 4, dtype=torch.bool)
    pred[0, :2, :2] = True  # 4 pixels
    target[0, :2, 1:3] = True  # 4 pixels, 2 shared: 2 / 6
    target[1, 0, 0] = True  # empty prediction of a non-empty object: 0
    assert torch.allclose(jaccard(pred, target), torch.tensor([1 / 3, 0.0]))
    empty = torch.zeros(1, 4, 4, dtype=torch.bool)
    assert jaccard(empty, empty).item() == 1.0


def test_jaccard_rejects_bad_input():
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="bool mask"):
        jaccard(mask.float(), mask)
    with pytest.raises(ValueError, match="same shape"):
        jaccard(mask, mask[:, :2])


# ----------------------------------------------------------------------------------------------------------------------
# attention rollout
# ----------------------------------------------------------------------------------------------------------------------

def reference_rollout(attentions, prefix, discard_ratio, fusion):
    """Rollout written out per image and per row, as in the paper: A~ = rownorm(fuse(A) + I), R = A~_L ... A~_1."""
    batch, _, tokens, _ = attentions[0].shape
    out = []
    for b in range(batch):
        rollout = torch.eye(tokens, dtype=torch.float64)
        for attn in attentions:
            fused = {"mean": attn[b].mean(0), "max": attn[b].max(0).values, "min": attn[b].min(0).values}[fusion]
            fused = fused.clone()
            for row in range(tokens):
                patches = fused[row, prefix:]
                k = int(discard_ratio * len(patches))
                for j in sorted(range(len(patches)), key=lambda j: patches[j].item())[:k]:
                    fused[row, prefix + j] = 0.0
            fused = fused + torch.eye(tokens, dtype=torch.float64)
            fused = fused / fused.sum(1, keepdim=True)
            rollout = fused @ rollout
        out.append(rollout[0, prefix:])
    grid = int((tokens - prefix) ** 0.5)
    return torch.stack(out).reshape(batch, grid, grid)


@pytest.mark.parametrize("prefix,discard_ratio,fusion", [(1, 0.0, "mean"), (1, 0.5, "max"), (2, 0.25, "min")])
def test_rollout_matches_a_loop_implementation(prefix, discard_ratio, fusion):
    generator = torch.Generator().manual_seed(3)
    attentions = [random_attention(generator, 2, 3, prefix + 9) for _ in range(3)]
    got = rollout_from_attentions(attentions, prefix, discard_ratio, fusion)
    assert got.shape == (2, 3, 3)
    assert torch.allclose(got, reference_rollout(attentions, prefix, discard_ratio, fusion))


def test_rollout_rows_stay_distributions():
    generator = torch.Generator().manual_seed(4)
    attentions = [random_attention(generator, 2, 2, 16) for _ in range(4)]
    # With no prefix tokens the class row is the whole row of a product of row-stochastic matrices: it sums to 1.
    assert torch.allclose(rollout_from_attentions(attentions, 0).sum((-2, -1)), torch.ones(2, dtype=torch.float64))
    with_prefix = rollout_from_attentions([random_attention(generator, 2, 2, 17) for _ in range(4)], 1)
    assert torch.all(with_prefix > 0) and torch.all(with_prefix.sum((-2, -1)) < 1)


def test_rollout_of_one_block_is_half_attention_half_identity():
    model = tiny_vit(depth=1).train()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    attn = model.eval().attention_maps(images)[0].mean(1)  # (B, T, T), rows sum to 1
    model.train()
    expected = 0.5 * attn + 0.5 * torch.eye(attn.shape[-1])
    expected = (expected / expected.sum(-1, keepdim=True))[:, 0, 1:].reshape(2, 4, 4)
    assert torch.allclose(attention_rollout(model, images), expected, atol=1e-6)
    assert model.training  # the mode is restored


def test_rollout_and_segment_drop_every_prefix_token():
    model = vitedu.create_model("deit_pico_distilled_patch4_32")  # class + distillation token
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    assert attention_rollout(model, images).shape == (1, 8, 8)
    assert segment(model, images).shape == (1, 4, 32, 32)


def test_rollout_rejects_bad_arguments():
    attentions = [torch.full((1, 1, 10, 10), 0.1)]
    with pytest.raises(ValueError, match="head_fusion"):
        rollout_from_attentions(attentions, 1, head_fusion="median")
    with pytest.raises(ValueError, match="discard_ratio"):
        rollout_from_attentions(attentions, 1, discard_ratio=1.0)
    with pytest.raises(ValueError, match="square grid"):
        rollout_from_attentions(attentions, 2)
    with pytest.raises(ValueError, match="attention_maps"):
        attention_rollout(nn.Linear(3, 3), torch.rand(1, 3, 16, 16))


# ----------------------------------------------------------------------------------------------------------------------
# segment and the Jaccard scores
# ----------------------------------------------------------------------------------------------------------------------

def test_segment_shapes_and_agreement_with_cls_attention():
    model = vitedu.create_model("vit_pico_patch4_32")
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    per_head = segment(model, images, mass=0.6)
    mean = segment(model, images, mass=0.6, heads="mean")
    assert per_head.shape == (2, 4, 32, 32) and per_head.dtype == torch.bool and mean.shape == (2, 32, 32)
    maps = cls_attention(model, images)
    assert torch.equal(per_head, upsample(mass_mask(maps, 0.6).float(), 32).bool())
    assert torch.equal(mean, masks_at(maps.mean(1), 32, 0.6))
    assert torch.equal(segment(model, images, mass=1.0), torch.ones_like(per_head))  # softmax: no patch gets 0
    with pytest.raises(ValueError, match="'each'"):
        segment(model, images, heads="all")
    with pytest.raises(ValueError, match="batch dimension"):
        segment(model, images[0])


def test_mask_jaccard_scores():
    model = tiny_vit()
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    truth = segment(model, images, mass=0.6)[:, 1]  # head 1's own masks as the ground truth
    scores = mask_jaccard_scores(model, images, truth, mass=0.6)
    assert set(scores) == {"per_head", "mean_heads", "best_head", "fixed_head", "rollout"}
    assert scores["per_head"].shape == (3, 2) and torch.equal(scores["per_head"][:, 1], torch.ones(3))
    assert torch.equal(scores["best_head"], torch.ones(3)) and torch.equal(scores["fixed_head"], torch.ones(3))
    assert torch.equal(scores["best_head"], best_head_jaccard(segment(model, images), truth))
    assert torch.equal(scores["mean_heads"], jaccard(segment(model, images, heads="mean"), truth))
    assert torch.equal(scores["rollout"], jaccard(masks_at(attention_rollout(model, images), 16), truth))
    with pytest.raises(ValueError, match="bool"):
        mask_jaccard_scores(model, images, truth.float())
    with pytest.raises(ValueError, match=r"\(3, 16, 16\)"):
        mask_jaccard_scores(model, images, truth[:, :8])


def test_show_segmentation():
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    maps = torch.rand(2, 4, 4)
    truth = torch.zeros(2, 16, 16, dtype=torch.bool)
    truth[:, 4:12, 4:12] = True
    figure = show_segmentation(images, maps, masks_at(maps, 16), truth)
    assert len(figure.axes) == 2 * 4
    assert figure.axes[2].get_title().startswith("mask, J = ")
    with pytest.raises(ValueError, match="one entry per image"):
        show_segmentation(images, maps[:1], masks_at(maps, 16), truth)


# ----------------------------------------------------------------------------------------------------------------------
# attributions
# ----------------------------------------------------------------------------------------------------------------------

class RegionSum(nn.Module):
    """Logit 0 = sum of the pixels in rows and columns 4..7; logit 1 = 0. Only that region matters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        region = x[:, :, 4:8, 4:8].sum((1, 2, 3))
        return torch.stack([region, torch.zeros_like(region)], dim=1)


def region_mask(size: int = 16) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[4:8, 4:8] = True
    return mask


def test_integrated_gradients_completeness(randomise):
    model = randomise(tiny_vit()).double().train()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    target = torch.tensor([0, 2])
    signed = integrated_gradients(model, images, target=target, steps=32, signed=True)
    assert signed.shape == (2, 16, 16) and model.training
    with torch.no_grad():
        model.eval()
        expected = model(images)[[0, 1], target] - model(torch.zeros_like(images))[[0, 1], target]
    assert expected.abs().min() > 1e-3  # a non-trivial difference to account for
    assert torch.allclose(signed.sum((-2, -1)), expected, atol=1e-6, rtol=1e-4)
    assert torch.equal(integrated_gradients(model, images, target=target, steps=32), signed.abs())


def test_integrated_gradients_of_a_linear_model_is_input_times_weight():
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(11))
    attributions = integrated_gradients(RegionSum(), images, signed=True)  # predicted class: 0 (positive logit)
    assert torch.allclose(attributions, images.sum(1) * region_mask(), atol=1e-5)
    baseline = torch.full((3, 1, 1), 0.5)
    shifted = integrated_gradients(RegionSum(), images, target=0, baseline=baseline, signed=True)
    assert torch.allclose(shifted, (images - 0.5).sum(1) * region_mask(), atol=1e-5)


def test_occlusion_finds_the_region_the_logit_reads():
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(12))
    attributions = occlusion(RegionSum(), images, target=0, window=4, signed=True)
    assert attributions.shape == (2, 16, 16)
    assert torch.all(attributions[:, ~region_mask()] == 0)
    # Hiding the region's one 4x4 window removes its whole sum from the logit; every pixel in it gets that drop.
    region_sums = images[:, :, 4:8, 4:8].sum((1, 2, 3))
    assert torch.allclose(attributions[:, region_mask()], region_sums[:, None].expand(2, 16), atol=1e-5)


def test_occlusion_window_defaults_to_the_patch_size():
    model = tiny_vit().train()
    images = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(13))
    attributions = occlusion(model, images)
    assert attributions.shape == (1, 16, 16) and model.training and torch.all(attributions >= 0)
    # One value per 4x4 patch: the window is a patch and the stride is the window.
    assert torch.equal(attributions, upsample(attributions[:, ::4, ::4], 16))
    with pytest.raises(ValueError, match="window="):
        occlusion(RegionSum(), images)
    with pytest.raises(ValueError, match="float tensor"):
        occlusion(model, (images * 255).to(torch.uint8))


def test_show_attributions():
    images = torch.rand(2, 3, 16, 16)
    figure = show_attributions(images, {"IG": torch.rand(2, 16, 16), "attention": torch.rand(2, 4, 4)})
    assert len(figure.axes) == 2 * 3 and figure.axes[1].get_title() == "IG"


@pytest.mark.parametrize("module,call", [
    ("captum", lambda: integrated_gradients(RegionSum(), torch.rand(1, 3, 16, 16))),
    ("ipywidgets", lambda: attention_explorer(tiny_vit(), torch.rand(1, 3, 16, 16))),
])
def test_missing_optional_packages_say_what_to_install(monkeypatch, module, call):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ImportError, match=f"pip install {module}"):
        call()


# ----------------------------------------------------------------------------------------------------------------------
# explorer
# ----------------------------------------------------------------------------------------------------------------------

def test_attention_explorer_follows_its_controls():
    model = tiny_vit()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(14))
    truth = segment(model, images, mass=0.6, heads="mean")  # what the explorer shows first
    app = attention_explorer(model, images, masks=truth, titles=["shirt", "bag"])
    picture = bytes(app.children[-1].value)
    assert picture.startswith(b"\x89PNG")
    assert app.state["jaccard"] == 1.0 and app.state["caption"].startswith("shirt: block 1, mean of heads, 60%")
    controls = app.controls
    controls["mass"].value = 0.9
    assert "90% of the mass" in app.state["caption"] and app.state["mask"].sum() > truth[0].sum()
    assert bytes(app.children[-1].value) != picture
    controls["head"].value = 1
    assert torch.equal(app.state["map"], cls_attention(model, images[:1])[0, 1])
    controls["source"].value = "rollout"
    assert controls["head"].disabled and "rollout of blocks 0-1" in app.state["caption"]
    assert torch.allclose(app.state["map"], attention_rollout(model, images[:1])[0])
    controls["image"].value = 1
    assert app.state["caption"].startswith("bag") and app.state["jaccard"] < 1.0


def test_explorer_figure():
    model = tiny_vit()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(15))
    truth = torch.zeros(2, 16, 16, dtype=torch.bool)
    truth[:, 4:12, 4:12] = True
    assert len(explorer_figure(model, images).axes) == 2 * 3  # every block x (every head + mean)
    figure = explorer_figure(model, images, truth, index=1, layers=[-1], heads=[1, "mean"], mass=0.5)
    assert len(figure.axes) == 2 and figure.axes[0].get_title().startswith("block 1, head 1\nJ = ")
    with pytest.raises(ValueError, match="heads must be"):
        explorer_figure(model, images, heads=[2])
