"""Chapter 06 (Three things): the study, its helpers, attention-only and head-only training, the exercises' checks."""

import pytest
import torch

import vitedu
from vitedu import check
from vitedu.budget import Budget
from vitedu.experiments import get, three_things as tt
from vitedu.train import TrainConfig, set_trainable


def test_registered_and_every_budget_is_valid():
    assert get("06") == ("06_three_things", tt)
    for name in ("smoke", "cpu", "gpu"):
        cfg = tt.config(Budget(name))
        assert (len(cfg.seeds) >= 3) == (name != "smoke")
        assert set(cfg.live_seeds) <= set(cfg.seeds) and set(cfg.mim_seeds) <= set(cfg.seeds)
        assert cfg.data.dataset == "fashion" and cfg.finetune_size > cfg.data.image_size
        assert cfg.finetune_size % 4 == 0  # the pico models' patch size


def test_arrangements_have_equal_parameters_and_half_the_depth():
    models = tt.arrangement_models()
    sequential, parallel = models["sequential 4x1"], models["parallel 2x2"]
    assert tt.parameter_count(sequential) == tt.parameter_count(parallel)
    assert len(sequential.blocks) == 2 * len(parallel.blocks)
    assert [len(step) for step in tt.block_layout(parallel)] == [2, 2, 2, 2]
    assert tt.block_layout(sequential) == [["attn"], ["mlp"]] * 4
    # the paper's pair too: ViT-S 18x2 and 36x1, 64.67M parameters each
    with torch.device("meta"):
        big = [vitedu.create_model(n) for n in ("vit_small_patch16_18x2_224", "vit_small_patch16_36x1_224")]
    counts = [tt.parameter_count(m) for m in big]
    assert counts[0] == counts[1] and round(counts[0] / 1e6, 2) == 64.67


def test_head_and_attention_modes_of_set_trainable():
    model = vitedu.create_model("vit_pico_patch4_32_2x2")
    n = set_trainable(model, "head")
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}
    assert n == 64 * 10 + 10
    set_trainable(model, "attention")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any(".attns.1.attn." in name for name in trainable)  # the second branch is not silently frozen
    assert not any("mlp" in name or "norm" in name for name in trainable)
    assert set_trainable(model, "all") == tt.parameter_count(model)
    assert TrainConfig(trainable="head").trainable == "head"
    with pytest.raises(ValueError, match="head"):
        set_trainable(torch.nn.Linear(2, 2), "head")
    with pytest.raises(ValueError, match="'all', 'attention' or 'head'"):
        set_trainable(model, "mlp")


def test_resized_model_keeps_the_function_at_the_new_size(randomise):
    model = randomise(vitedu.create_model("vit_pico_patch4_32", img_size=28, in_chans=1, **tt.MATCHED)).eval()
    bigger = tt.resized(model, 32).eval()
    assert bigger.pos_embed.shape == (1, 64, 64) and bigger.patch_embed.num_patches == 64
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():  # the small model resizes its embedding on the fly with the same interpolation
        assert torch.allclose(bigger(x), model(x), atol=1e-5)
    with pytest.raises(ValueError, match="multiple"):
        tt.resized(model, 30)
    with pytest.raises(TypeError, match="VisionTransformer"):
        tt.resized(vitedu.create_model("levit_pico_32"), 32)


def test_mask_patches_and_random_mask():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4) + 1
    mask = torch.tensor([[True, False, False, False], [False, False, False, True]])
    out = tt.mask_patches(images, mask, 2)
    assert (out[0, 0, :2, :2] == 0).all() and (out[0, 0, 2:] != 0).all() and (out[0, 0, :2, 2:] != 0).all()
    assert (out[1, 0, 2:, 2:] == 0).all() and (out[1, 0, :2] != 0).all()
    with pytest.raises(ValueError, match="shape"):
        tt.mask_patches(images, mask[:, :3], 2)
    with pytest.raises(ValueError, match="multiples"):
        tt.mask_patches(images, mask, 3)
    m = tt.random_mask(5, 64, 0.4, torch.Generator().manual_seed(0))
    assert m.shape == (5, 64) and (m.sum(1) == 26).all()
    with pytest.raises(ValueError, match="between 0 and 1"):
        tt.random_mask(1, 4, 1.0)


def test_patch_stems_do_not_leak_and_a_conv_stem_does(randomise):
    images = torch.randn(3, 3, 32, 32)
    for name in (tt.LINEAR_STEM, tt.HMLP_STEM):
        model = randomise(vitedu.create_model(name))
        leak = tt.masking_leak(model, images, tt.random_mask(3, 64, 0.5))
        assert leak["max_abs_diff"] == 0.0 and leak["tokens_changed"] == 0
        change = tt.perturbation_map(model, images, patch=9)
        assert (change[:, 1, 1] > 0).all() and (change.flatten(1).gt(0).sum(1) == 1).all()
    levit = randomise(vitedu.create_model("levit_pico_32"))
    leak = tt.masking_leak(levit, images, tt.random_mask(3, 16, 0.5))
    assert leak["relative"] > 1e-3 and leak["tokens_changed"] > 0
    assert (tt.perturbation_map(levit, images, patch=5).flatten(1).gt(1e-6).sum(1) > 1).all()
    table = tt.leak_table(32)
    assert table["linear"]["max_abs_diff"] == table["hMLP"]["max_abs_diff"] == 0.0
    assert table["LeViT conv"]["max_abs_diff"] > 0


def test_masked_image_model_without_mask_is_the_vit(randomise):
    vit = randomise(vitedu.create_model(tt.HMLP_STEM, img_size=28, in_chans=1)).eval()
    mim = tt.MaskedImageModel(vit).eval()
    x = torch.randn(2, 1, 28, 28)
    none = torch.zeros(2, 49, dtype=torch.bool)
    with torch.no_grad():
        assert torch.allclose(mim(x, none), mim.decoder(vit.forward_features(x)[:, 1:]), atol=1e-5)
        assert tt.patchify(x, 4).shape == (2, 49, 16)
        assert torch.equal(tt.patchify(x, 4)[0, 8], x[0, 0, 4:8, 4:8].flatten())  # patch 8: row 1, column 1
        assert tt.masked_loss(mim, x, none) == 0  # nothing masked, nothing to predict
        assert tt.masked_loss(mim, x, tt.random_mask(2, 49, 0.5)) > 0
    with pytest.raises(ValueError, match="mask"):
        mim(x, none[:, :10])
    with pytest.raises(ValueError, match="between 0 and 1"):
        tt.MaskedPatchObjective(0.0)


def test_upsampled_keeps_labels_and_normalisation():
    small = tt.prepare(tt.StudyData("fashion", 20, 10, 28))
    big = tt.upsampled(small, 40)
    assert big.train_images.shape == (20, 1, 40, 40) and big.train_images.dtype == torch.uint8
    assert big.test_images.shape == (10, 1, 40, 40) and torch.equal(big.test_labels, small.test_labels)
    assert abs(big.train_images.float().mean() - small.train_images.float().mean()) < 2.0
    assert big.mean == small.mean and big.std == small.std
    with pytest.raises(ValueError, match="larger"):
        tt.upsampled(small, 28)


def test_smoke_study_end_to_end():
    record = tt.run(Budget("smoke"))
    part1 = record["parallel"]
    assert [row["variant"] for row in part1["summary"]] == list(tt.ARRANGEMENTS)
    assert len(set(part1["parameters"].values())) == 1
    assert set(part1["speed"]) == {"inference", "training"} and all(v["ratio"] > 0 for v in part1["speed"].values())
    part2 = record["attention_only"]
    assert [row["variant"] for row in part2["summary"]] == ["none", *tt.MODES]
    costs = part2["costs"]
    assert costs["head"]["trainable"] < costs["attention"]["trainable"] < costs["full"]["trainable"]
    assert costs["head"]["total_bytes"] < costs["attention"]["total_bytes"] < costs["full"]["total_bytes"]
    tuned = [row for row in part2["runs"] if row["variant"] != "none"]
    assert all(row["trainable"] == costs[row["variant"]]["trainable"] for row in tuned)
    part3 = record["hmlp"]
    assert [row["variant"] for row in part3["summary"]] == ["linear, masked pre-training", "linear, random init",
                                                           "hMLP, masked pre-training", "hMLP, random init"]
    assert all(len(p["loss"]) == 1 for p in part3["pretraining"])
    assert part3["leak"]["hMLP"]["max_abs_diff"] == 0.0


def test_plots_draw():
    import matplotlib
    matplotlib.use("Agg")
    tt.plot_blocks(tt.arrangement_models())
    images = torch.randn(1, 3, 32, 32)
    tt.plot_perturbation_maps({"linear": vitedu.create_model(tt.LINEAR_STEM),
                               "LeViT": vitedu.create_model("levit_pico_32")}, images, pixel=(12, 12))
    tt.plot_trainable(vitedu.create_model(tt.SEQUENTIAL))
    vit = vitedu.create_model(tt.HMLP_STEM, img_size=28, in_chans=1)
    tt.plot_reconstructions({"hMLP": tt.MaskedImageModel(vit)}, torch.randn(2, 1, 28, 28), tt.random_mask(2, 49, 0.5))
    tt.plot_summary([{"variant": "a", "mean": 0.5, "std": 0.1, "values": [0.4, 0.6]}])


def _block_params(dim, ratio, parallel, scale, norms=True, biases=True, per_branch=True):
    h = int(dim * ratio)
    attn = 4 * dim * dim + (4 * dim if biases else 0)
    mlp = 2 * dim * h + ((h + dim) if biases else 0)
    return (parallel if per_branch else 1) * (attn + mlp + (4 * dim if norms else 0) + (2 * dim if scale else 0))


def test_block_parameters_check():
    assert check.block_parameters(_block_params)
    assert "LayerNorm" in check.block_parameters(lambda *a: _block_params(*a, norms=False)).message
    assert "biases" in check.block_parameters(lambda *a: _block_params(*a, biases=False)).message
    assert "num_parallel" in check.block_parameters(lambda *a: _block_params(*a, per_branch=False)).message
    assert "LayerScale" in check.block_parameters(lambda d, r, p, s: _block_params(d, r, p, False)).message
    assert "raised" in check.block_parameters(lambda *a: 1 / 0).message


def _attention_names(model, head=True, pos=True, second_branch=True, norms=False):
    names = []
    for n, _ in model.named_parameters():
        keep = ".attn." in n and (second_branch or ".attns.1." not in n)
        keep |= head and n.startswith("head")
        keep |= pos and n == "pos_embed"
        keep |= norms and "norm" in n
        if keep:
            names.append(n)
    return names


def test_attention_only_trainable_check():
    assert check.attention_only_trainable(_attention_names)
    assert "head" in check.attention_only_trainable(lambda m: _attention_names(m, head=False)).message
    assert "position" in check.attention_only_trainable(lambda m: _attention_names(m, pos=False)).message
    assert "attn1" in check.attention_only_trainable(lambda m: _attention_names(m, second_branch=False)).message
    assert "LayerNorm" in check.attention_only_trainable(lambda m: _attention_names(m, norms=True)).message
    assert not check.attention_only_trainable(lambda m: 3)


def test_patch_mask_check():
    assert check.patch_mask(tt.mask_patches)

    def transposed(images, mask, p):
        g = images.shape[-1] // p
        return tt.mask_patches(images, mask.reshape(-1, g, g).transpose(1, 2).reshape(len(mask), -1), p)
    assert "swapped" in check.patch_mask(transposed).message
    assert "visible" in check.patch_mask(lambda x, m, p: tt.mask_patches(x, ~m, p)).message
    assert not check.patch_mask(lambda x, m, p: x)
    assert "shape" in check.patch_mask(lambda x, m, p: x[:, :1]).message


def test_trainable_table_counts_every_parameter_once():
    model = vitedu.create_model(tt.SEQUENTIAL)
    table = tt.trainable_table(model)
    total = tt.parameter_count(model)
    for mode, groups in table.items():
        assert sum(t for _, t in groups.values()) == total
    assert sum(t for t, _ in table["full"].values()) == total
    assert {g for g, (t, _) in table["attention"].items() if t} == {"attention", "position embedding", "head"}
    assert {g for g, (t, _) in table["head"].items() if t} == {"head"}
    assert sum(t for t, _ in table["attention"].values()) == set_trainable(model, "attention")


def test_unpatchify_inverts_patchify_and_reconstruct_keeps_the_visible_pixels(randomise):
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(tt.unpatchify(tt.patchify(x, 4), 4, 3), x)
    mim = tt.MaskedImageModel(randomise(vitedu.create_model(tt.LINEAR_STEM, img_size=16)))
    mask = tt.random_mask(2, 16, 0.5)
    out = tt.reconstruct(mim, x, mask)
    visible = ~tt.mask_patches(torch.zeros_like(x), mask, 4, 1.0).bool()
    assert torch.equal(out[visible], x[visible]) and not torch.equal(out, x)
