"""Chapter 05 (PatchConvNet): the study, its helpers and the exercises' checks."""

import pytest
import torch

import vitedu
from vitedu import check
from vitedu.budget import Budget
from vitedu.experiments import get
from vitedu.experiments import patchconvnet_study as study
from vitedu.experiments.recipe_study import StudyData, prepare
from vitedu.models.patchconvnet import ClassAttention


def test_registered_and_every_budget_is_valid():
    assert get("05") == ("05_patchconvnet", study)
    for name in ("smoke", "cpu", "gpu"):
        cfg = study.config(Budget(name))
        assert (len(cfg.seeds) >= 3) == (name != "smoke")
        assert set(cfg.live_seeds) <= set(cfg.seeds)
        assert cfg.models == study.MODELS
        assert cfg.data.image_size == 32 and cfg.data.dataset == "scenes"
    assert study.config(Budget("cpu")).memory_models == ("patchconvnet_s60", "deit_small_patch16_224")


def test_smoke_study_end_to_end():
    record = study.run(Budget("smoke"))
    assert [row["variant"] for row in record["summary"]] == list(study.MODELS)
    assert all(0.0 <= row["mean"] <= 1.0 and row["n"] == 1 for row in record["summary"])
    maps = [row["map"] for row in record["mask_summary"]]
    assert maps == ["trained", "untrained", *study.BASELINES]
    rows = {row["map"]: row for row in record["mask_summary"]}
    assert all(0.0 <= row["jaccard"] <= 1.0 and 0.0 <= row["mass_on_object"] <= 1.0 for row in rows.values())
    # the whole image: Jaccard = mass on the object = the object's share of the image
    assert rows["whole image"]["jaccard"] == pytest.approx(record["object_share"], rel=1e-5)
    assert rows["whole image"]["mass_on_object"] == pytest.approx(record["object_share"], rel=1e-5)
    labels = {study.curve_label(row) for row in record["memory"]}
    assert labels == {"patchconvnet_pico_32", "vit_pico_patch4_32 (fused)", "vit_pico_patch4_32 (materialised)"}
    assert set(record["memory_fit"]) == labels and set(record["crossing"]) == labels - {"patchconvnet_pico_32"}
    assert set(record["seconds_parts"]) == {"training", "masks", "memory"}
    examples = torch.tensor(record["example_maps"]["trained"])
    assert examples.shape == (6, 8, 8) and torch.tensor(record["example_maps"]["untrained"]).shape == (6, 8, 8)
    assert (examples.sum((1, 2)) <= 1 + 1e-5).all()


def test_untrained_model_is_the_one_training_starts_from():
    cfg = study.config(Budget("smoke"))
    prepared = prepare(StudyData("scenes", 64, 64, 32))
    a, b = study.initial_model(cfg, prepared, seed=1), study.initial_model(cfg, prepared, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    c = study.initial_model(cfg, prepared, seed=2)
    assert not torch.equal(a.cls_token, c.cls_token)
    # train_variant seeds torch and builds the model the same way: a vanishing learning rate keeps the initial weights
    from vitedu.experiments.recipe_study import plain_config, train_variant
    frozen = plain_config(1, 32).replace(lr=1e-12, min_lr=1e-12, weight_decay=0.0)
    trained = train_variant(study.ATTENTION, frozen, prepared, seed=1)["model"].cpu()
    assert all(torch.allclose(p, q, atol=1e-9) for p, q in zip(a.state_dict().values(), trained.state_dict().values()))
    other_seed = train_variant(study.ATTENTION, frozen, prepared, seed=2)["model"].cpu()
    assert not torch.allclose(a.cls_token, other_seed.cls_token)


def test_pooling_maps_are_the_attention_grid_in_batches(randomise):
    model = randomise(vitedu.create_model("patchconvnet_pico_32")).eval()
    images = torch.randn(7, 3, 32, 32)
    maps = study.pooling_maps(model, images, batch_size=3)
    assert maps.shape == (7, 8, 8)
    assert torch.allclose(maps, model.attention_grid(images), atol=1e-6)
    attn = model.attention_maps(images)[0]
    assert torch.allclose(maps.sum((1, 2)) + attn[:, 0, 0, 0], torch.ones(7), atol=1e-5)
    model.train()
    study.pooling_maps(model, images)
    assert model.training  # its mode is given back
    with pytest.raises(ValueError, match="average"):
        study.pooling_maps(vitedu.create_model("patchconvnet_pico_avg_32"), images)
    with pytest.raises(ValueError, match="float"):
        study.pooling_maps(model, images.to(torch.uint8))


def test_map_scores_on_hand_made_masks():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True  # top-left quarter
    masks[1, 4:, 4:] = True  # bottom-right quarter
    maps = torch.zeros(2, 2, 2)
    maps[0, 0, 0] = 1.0  # all attention on the object
    maps[1] = torch.tensor([[0.5, 0.0], [0.0, 0.5]])  # half on the object
    assert study.map_jaccard(maps, masks, 0.6).tolist() == pytest.approx([1.0, 0.5])
    assert study.mass_on_object(maps, masks).tolist() == pytest.approx([1.0, 0.5])
    uniform = torch.ones(2, 2)
    assert study.mass_on_object(uniform, masks).tolist() == pytest.approx([0.25, 0.25])
    assert study.map_jaccard(uniform, masks, 1.0).tolist() == pytest.approx([0.25, 0.25])
    with pytest.raises(ValueError, match="bool"):
        study.map_jaccard(maps, masks.float())
    with pytest.raises(ValueError, match="one per mask"):
        study.mass_on_object(torch.ones(3, 2, 2), masks)


def test_baselines_and_mask_scores():
    priors = study.baseline_maps(8)
    assert set(priors) == set(study.BASELINES)
    centre = priors["centre prior"]
    assert centre.shape == (8, 8) and centre[3:5, 3:5].min() == centre.max()
    model = vitedu.create_model("patchconvnet_pico_32").eval()
    images = torch.randn(4, 3, 32, 32)
    masks = torch.zeros(4, 32, 32, dtype=torch.bool)
    masks[:, 8:24, 8:24] = True
    scores = study.mask_scores({"m": model}, images, masks)
    assert list(scores) == ["m", *study.BASELINES]
    assert scores["whole image"]["jaccard"] == pytest.approx(0.25)
    assert scores["centre prior"]["jaccard"] > scores["whole image"]["jaccard"]  # the object is centred here
    rows = study.summarize_scores([scores, scores])
    assert [r["map"] for r in rows] == list(scores) and rows[0]["jaccard_std"] == 0.0 and rows[0]["n"] == 2


def test_memory_rows_fit_and_crossing():
    rows = study.memory_vs_resolution(["patchconvnet_pico_32", "vit_pico_patch4_32"], [32, 48, 64, 80],
                                      progress=False)
    assert len(rows) == 4 * 3  # the ViT twice: fused and materialised attention
    by = {(study.curve_label(r), r["img_size"]): r["activations"] for r in rows}
    assert [r["tokens"] for r in rows[:4]] == [64, 144, 256, 400]
    # materialising the attention matrix costs memory, the more the more tokens
    extra = [by[("vit_pico_patch4_32 (materialised)", s)] - by[("vit_pico_patch4_32 (fused)", s)]
             for s in (32, 48, 64, 80)]
    assert all(e > 0 for e in extra) and extra == sorted(extra)
    fits = study.memory_fit(rows, extrapolate=[96])
    # at batch 1 the byte counts are exact polynomials in the tokens: the fit through 4 points is exact
    assert all(f["max_relative_error"] < 1e-6 for f in fits.values())
    assert fits["patchconvnet_pico_32"]["coefficients"][2] == 0.0
    # ... and so extrapolates exactly
    measured = study.memory_vs_resolution(["patchconvnet_pico_32", "vit_pico_patch4_32"], [96], progress=False)
    for row in measured:
        assert fits[study.curve_label(row)]["predicted"][96] == pytest.approx(row["activations"], rel=1e-6)
    crossing = study.crossing_size(fits, "patchconvnet_pico_32", "vit_pico_patch4_32 (materialised)")
    assert crossing is None or crossing % 4 == 0
    with pytest.raises(ValueError, match="kernel"):
        study.attention_kernel("flash")
    with pytest.raises(ValueError, match="batch"):
        study.memory_vs_resolution(["vit_pico_patch4_32"], [32], batch=0)


def test_crossing_size_on_made_up_fits():
    fits = {"conv": {"coefficients": [0.0, 10.0, 0.0], "stride": 16},
            "vit": {"coefficients": [0.0, 1.0, 0.01], "stride": 16}}
    # 10 N < N + 0.01 N^2  <=>  N > 900  <=>  side / 16 > 30
    assert study.crossing_size(fits, "conv", "vit") == 16 * 31
    assert study.crossing_size(fits, "conv", "vit", limit=400) is None


def test_architecture_rows():
    rows = study.architecture_rows(vitedu.create_model("patchconvnet_s60"))
    assert [r["resolution"] for r in rows] == [224, 112, 56, 28, 14, 14, 1, 1]
    assert [r["channels"] for r in rows[:6]] == [3, 48, 96, 192, 384, 384]
    assert rows[5]["blocks"] == 60 and rows[6]["step"] == "attention pooling"
    pico = study.architecture_rows(vitedu.create_model("patchconvnet_pico_avg_32"))
    assert [r["resolution"] for r in pico] == [32, 16, 8, 8, 1, 1] and pico[4]["step"] == "average pooling"


def test_plots_draw():
    import matplotlib
    matplotlib.use("Agg")
    study.plot_architecture(vitedu.create_model("patchconvnet_s60"))
    rows = [{"model": "patchconvnet_pico_32", "attention": "fused", "img_size": s, "tokens": (s // 4) ** 2,
             "activations": 1000 * s, "parameters": 1} for s in (32, 64)]
    study.plot_memory(rows, study.memory_fit(rows, [128]))
    score_rows = study.summarize_scores([{"trained": {"jaccard": 0.3, "mass_on_object": 0.4},
                                          "centre prior": {"jaccard": 0.2, "mass_on_object": 0.3}}])
    study.plot_scores(score_rows)
    study.plot_scores(score_rows, "mass_on_object")


# ---- the exercises' checks ---------------------------------------------------------------------------------------

def _pool(x, cls, w_q, w_k, w_v, scale=True, with_cls=True, transpose=False):
    if transpose:
        w_q, w_k, w_v = w_q.T, w_k.T, w_v.T
    u = torch.cat([cls, x], 1) if with_cls else x
    q, k, v = cls @ w_q.T, u @ w_k.T, u @ w_v.T
    attn = (q @ k.transpose(1, 2) * (q.shape[-1] ** -0.5 if scale else 1)).softmax(-1)
    return attn @ v, attn


def test_class_attention_pooling_check():
    assert check.class_attention_pooling(_pool)
    assert "itself" in check.class_attention_pooling(lambda *a: _pool(*a, with_cls=False)).message
    assert "sqrt" in check.class_attention_pooling(lambda *a: _pool(*a, scale=False)).message
    assert "layout" in check.class_attention_pooling(lambda *a: _pool(*a, transpose=True)).message
    wrong_out = check.class_attention_pooling(lambda *a: (_pool(*a)[0] * 2, _pool(*a)[1]))
    assert not wrong_out and "out" in wrong_out.message
    assert "raised" in check.class_attention_pooling(lambda *a: 1 / 0).message

    def all_queries(x, cls, w_q, w_k, w_v):
        u = torch.cat([cls, x], 1)
        attn = (u @ w_q.T @ (u @ w_k.T).transpose(1, 2) * x.shape[-1] ** -0.5).softmax(-1)
        return attn @ (u @ w_v.T), attn
    assert "only the class token" in check.class_attention_pooling(all_queries).message


def test_class_attention_check_agrees_with_the_models_class_attention():
    def via_vitedu(x, cls, w_q, w_k, w_v):
        attn_module = ClassAttention(x.shape[-1], num_heads=1, qkv_bias=False).double()
        with torch.no_grad():
            attn_module.q.weight.copy_(w_q), attn_module.k.weight.copy_(w_k), attn_module.v.weight.copy_(w_v)
            attn_module.proj.weight.copy_(torch.eye(x.shape[-1])), attn_module.proj.bias.zero_()
            out, attn = attn_module(torch.cat([cls, x], 1), return_attention=True)
        return out, attn[:, 0]
    assert check.class_attention_pooling(via_vitedu)


def _sizes(img, patch, depth, heads, cls=True, use_depth=True, use_heads=True, pool_square=False):
    n = (img // patch) ** 2
    t = n + 1 if cls else n
    return n, (depth if use_depth else 1) * (heads if use_heads else 1) * t * t, (n + 1) ** 2 if pool_square else n + 1


def test_attention_sizes_check():
    assert check.attention_sizes(_sizes)
    assert "class token" in check.attention_sizes(lambda *a: _sizes(*a, cls=False)).message
    assert "depth" in check.attention_sizes(lambda *a: _sizes(*a, use_depth=False)).message
    assert "heads" in check.attention_sizes(lambda *a: _sizes(*a, use_heads=False)).message
    assert "single query" in check.attention_sizes(lambda *a: _sizes(*a, pool_square=True)).message
    tokens = check.attention_sizes(lambda i, p, d, h: (i // p, *_sizes(i, p, d, h)[1:]))
    assert not tokens and "squared" in tokens.message
    assert not check.attention_sizes(lambda *a: 3)


def _weighted(features, scores):
    return torch.einsum("bdn,bn->bd", features.flatten(2), scores.flatten(1).softmax(-1))


def test_attention_weighted_pooling_check():
    assert check.attention_weighted_pooling(_weighted)
    assert "average pooling" in check.attention_weighted_pooling(lambda f, s: f.mean((2, 3))).message
    one_axis = check.attention_weighted_pooling(lambda f, s: torch.einsum("bdhw,bhw->bd", f, s.softmax(-1)))
    assert not one_axis and "one spatial axis" in one_axis.message
    assert "raw scores" in check.attention_weighted_pooling(
        lambda f, s: torch.einsum("bdhw,bhw->bd", f, s)).message
    assert "normalised" in check.attention_weighted_pooling(
        lambda f, s: torch.einsum("bdhw,bhw->bd", f, s.exp())).message
    assert "shape" in check.attention_weighted_pooling(lambda f, s: _weighted(f, s)[0]).message


def test_scaling_up_config_loads():
    from vitedu.train.recipes import load_run_config

    run = load_run_config("patchconvnet_s60")
    assert run.model == "patchconvnet_s60" and run.recipe == "deit"
    assert (run.config.optimizer, run.config.lr, run.config.batch_size) == ("lamb", 3e-3, 2048)  # issue #185
    assert run.extra["img_size"] == 224


def test_receptive_field_grows_one_token_per_block():
    model = vitedu.create_model("patchconvnet_pico_32")
    fields = study.receptive_field(model, torch.randn(3, 32, 32), [0, 1, 2])
    assert fields.shape == (3, 8, 8) and torch.allclose(fields.amax((1, 2)), torch.ones(3))
    # strong (not the SE's faint global floor) within k tokens of the centre (4, 4), nowhere else
    for k, field in enumerate(fields):
        strong = (field > 5e-4).nonzero()
        assert (strong - 4).abs().max() == k
    assert model.blocks[0].ls.gamma.max() < 1e-3  # the model itself is left as it was
    with pytest.raises(ValueError, match="depth"):
        study.receptive_field(model, torch.randn(3, 32, 32), [13])
