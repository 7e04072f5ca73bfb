"""Chapter 03 (ResMLP): the study, its helpers and the exercises' checks."""

import dataclasses

import pytest
import torch

import vitedu
from vitedu import check
from vitedu.budget import Budget
from vitedu.experiments import get, resmlp_study
from vitedu.experiments.recipe_study import StudyData, plain_config, prepare, train_variant
from vitedu.models.resmlp import Affine

TINY = resmlp_study.Config(StudyData("fashion", 64, 64, 28), epochs=1, seeds=(0,), eval_every=1, batch_size=32,
                           speed_batch=4, speed_repeats=1)


def test_registered_and_every_budget_is_valid():
    assert get("03") == ("03_resmlp", resmlp_study)
    for name in ("smoke", "cpu", "gpu"):
        cfg = resmlp_study.config(Budget(name))
        assert (len(cfg.seeds) >= 3) == (name != "smoke")
        assert set(cfg.live_seeds) <= set(cfg.seeds)
        assert cfg.models == resmlp_study.SMALL_MODELS and cfg.distill


def test_study_end_to_end_on_tiny_data(monkeypatch):
    monkeypatch.setitem(resmlp_study.CONFIGS, "smoke", TINY)
    record = resmlp_study.run(Budget("smoke"))
    names = [*resmlp_study.SMALL_MODELS, resmlp_study.DISTILLED]
    assert [row["variant"] for row in record["summary"]] == names
    assert all(0.0 <= row["mean"] <= 1.0 and row["n"] == 1 for row in record["summary"])
    assert set(record["speed"]) == set(names) and all(t["images_per_s"] > 0 for t in record["speed"].values())
    assert record["speed"][resmlp_study.RESMLP]["params"] == 827_658 - 6 * (64 * 64 + 64 - 49 * 49 - 49) - 2 * 16 * 128
    pico = vitedu.create_model("resmlp_pico_28")
    assert record["speed"][resmlp_study.RESMLP]["macs"] == resmlp_study.macs(pico, 28, 1)
    assert [row["variant"] for row in record["locality"]] == [resmlp_study.RESMLP, resmlp_study.DISTILLED]
    weights = torch.tensor(record["cross_patch_weights"])
    assert weights.shape == (6, 49, 49)
    assert record["initial_locality"]["grid"] == 7 and len(record["initial_locality"]["ratio"]) == 6
    # the stored matrices are the trained ones, not those at initialisation
    initial = resmlp_study.initial_model(resmlp_study.RESMLP, 0, prepare(TINY.data)).cross_patch_weights()
    assert not torch.allclose(weights, initial, atol=1e-4)


def test_initial_model_is_the_one_training_starts_from():
    prepared = prepare(TINY.data)
    config = plain_config(1, 32).replace(lr=1e-12, min_lr=1e-12)  # the steps hardly move the weights
    run = train_variant(resmlp_study.RESMLP, config, prepared, seed=3)
    initial = resmlp_study.initial_model(resmlp_study.RESMLP, 3, prepared)
    torch.testing.assert_close(run["model"].cross_patch_weights(), initial.cross_patch_weights())


def test_distillation_uses_the_seeds_convnet_as_teacher(monkeypatch):
    teachers = []
    real = resmlp_study.train_variant

    def spy(model_name, config, prepared, **kw):
        if model_name == resmlp_study.DISTILLED:
            teachers.append((config.distillation, kw.get("teacher")))
        return real(model_name, config, prepared, **kw)

    monkeypatch.setattr(resmlp_study, "train_variant", spy)
    cfg = dataclasses.replace(TINY, models=(resmlp_study.CONVNET,))
    runs = resmlp_study.train_models(cfg, (0, 1))
    convnets = [run["model"] for run in runs if run["variant"] == resmlp_study.CONVNET]
    assert [kind for kind, _ in teachers] == ["hard", "hard"]
    assert [teacher for _, teacher in teachers] == convnets  # each seed's own teacher, not another seed's
    with pytest.raises(ValueError, match="keep it in cfg.models"):
        resmlp_study.train_models(dataclasses.replace(TINY, models=(resmlp_study.RESMLP,)), (0,))


def test_train_variant_passes_the_teacher_on():
    prepared = prepare(TINY.data)
    config = plain_config(1, 32).replace(distillation="hard")
    with pytest.raises(ValueError, match="no teacher"):
        train_variant(resmlp_study.DISTILLED, config, prepared)
    teacher = vitedu.create_model(resmlp_study.CONVNET)
    run = train_variant(resmlp_study.DISTILLED, config, prepared, teacher=teacher)
    assert 0.0 <= run["val_acc"] <= 1.0 and not run["model"].distilled_training


def test_local_mask_and_locality_by_hand():
    mask = resmlp_study.local_mask(3)
    assert mask.sum().item() == 9 + 4 * 6 + 4 * 4  # centre, edges, corners of a 3 x 3 grid
    assert mask[0].tolist() == [True, True, False, True, True, False, False, False, False]
    uniform = resmlp_study.locality(torch.ones(9, 9))
    assert uniform["uniform"] == pytest.approx(49 / 81) and uniform["ratio"] == [pytest.approx(1.0)]
    local = resmlp_study.locality(torch.stack([torch.eye(16), -torch.eye(16)]))  # signs do not matter
    assert local["local_fraction"] == [pytest.approx(1.0)] * 2 and local["grid"] == 4
    far = torch.zeros(16, 16)
    far[:, 15] = 1.0  # every patch reads the corner patch 15 only
    assert resmlp_study.locality(far)["local_fraction"][0] == pytest.approx(4 / 16)  # patches 10, 11, 14 and 15
    assert resmlp_study.locality(torch.ones(64, 64))["uniform"] == pytest.approx(484 / 4096)
    with pytest.raises(ValueError, match="square"):
        resmlp_study.locality(torch.ones(10, 10))
    with pytest.raises(ValueError, match="N, N"):
        resmlp_study.locality(torch.ones(4, 5))


def test_shared_row_by_hand():
    assert resmlp_study.shared_row(torch.eye(16)) == [pytest.approx(1 / 16)]
    same = torch.randn(16).expand(16, 16)
    assert resmlp_study.shared_row(torch.stack([same, torch.eye(16)])) == [pytest.approx(1.0), pytest.approx(1 / 16)]
    rows = torch.randn(1, 16).repeat(16, 1)
    rows[:8] *= -1  # half the rows flipped: the mean row is zero
    assert resmlp_study.shared_row(rows)[0] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="N, N"):
        resmlp_study.shared_row(torch.ones(3, 4))


def test_mosaic_tiles_are_the_rows():
    weights = torch.randn(16, 16)
    image = resmlp_study.mosaic(weights)
    for i in range(4):
        for j in range(4):
            assert torch.equal(image[4 * i:4 * i + 4, 4 * j:4 * j + 4], weights[4 * i + j].reshape(4, 4))
    with pytest.raises(ValueError, match="square"):
        resmlp_study.mosaic(torch.randn(8, 8))


def test_summaries_of_locality_over_seeds():
    rows = [{"variant": "a", "ratio": [1.0, 2.0]}, {"variant": "a", "ratio": [3.0, 2.0]},
            {"variant": "b", "ratio": [5.0]}]
    summary = {row["variant"]: row for row in resmlp_study.summarize_locality(rows)}
    assert summary["a"]["mean"] == [2.0, 2.0] and summary["a"]["std"] == [pytest.approx(2 ** 0.5), 0.0]
    assert summary["b"]["std"] == [0.0] and summary["b"]["n"] == 1


def test_macs_by_hand_and_the_papers_count():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    assert resmlp_study.macs(model, 4) == 48 * 5
    stem, cross_patch, mlp, head = 196 * 384 * 768, 384 * 196 * 196, 2 * 196 * 384 * 1536, 384 * 1000
    assert resmlp_study.macs(vitedu.create_model("resmlp_12_224", depth=1), 224) == stem + cross_patch + mlp + head


def test_block_parts_count_every_parameter_of_a_block():
    model = vitedu.create_model("resmlp_12_224")
    parts = resmlp_study.block_parts(model)
    assert sum(p["params"] for p in parts) == resmlp_study.num_params(model.blocks[0])
    assert parts[1]["params"] == 196 * 196 + 196 and parts[4]["params"] == 2 * 384 * 1536 + 1536 + 384
    with pytest.raises(ValueError, match="ResMLP"):
        resmlp_study.block_parts(vitedu.create_model("vit_pico_patch4_32"))
    with pytest.raises(ValueError, match="no ResMLP blocks"):
        resmlp_study.cross_patch_layers(vitedu.create_model("vit_pico_patch4_32"))


def test_plots_draw():
    import matplotlib
    matplotlib.use("Agg")
    model = vitedu.create_model(resmlp_study.RESMLP)
    assert model.num_patches == 49 and model.in_chans == 1
    resmlp_study.plot_block(model)
    weights = model.cross_patch_weights()
    resmlp_study.plot_cross_patch(weights, "init")
    resmlp_study.plot_rows(weights, [(0, 0), (3, 3)])
    summary = resmlp_study.summarize_locality([{"variant": "a", "ratio": [1.0] * 6}])
    resmlp_study.plot_locality(summary, resmlp_study.locality(weights))
    acc = [{"variant": "a", "mean": 0.5, "std": 0.1, "values": [0.4, 0.6]}]
    resmlp_study.plot_accuracy_vs_speed(acc, {"a": {"images_per_s": 100.0, "params": 10 ** 6}})


class _Normalising(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.alpha, self.beta = torch.nn.Parameter(torch.ones(dim)), torch.nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return self.alpha * torch.nn.functional.layer_norm(x, x.shape[-1:], eps=0.0) + self.beta


class _NoBeta(_Normalising):
    def forward(self, x):
        return self.alpha * x


class _Plain(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.alpha, self.beta = torch.ones(dim), torch.zeros(dim)

    def forward(self, x):
        return self.alpha * x + self.beta


def test_affine_check():
    assert check.affine(Affine)
    assert "LayerNorm" in check.affine(_Normalising).message
    assert "beta is missing" in check.affine(_NoBeta).message
    assert "nn.Parameter" in check.affine(_Plain).message
    assert "raised" in check.affine(lambda dim: 1 / 0).message
    assert not check.affine(lambda dim: torch.nn.LayerNorm(dim))


def test_cross_patch_parameters_check():
    assert check.cross_patch_parameters(12 * (196 * 196 + 196))
    assert check.cross_patch_parameters(6 * (64 * 64 + 64), "resmlp_pico_32")
    assert "bias" in check.cross_patch_parameters(12 * 196 * 196).message
    assert "one layer" in check.cross_patch_parameters(196 * 196 + 196).message
    assert "grid's side" in check.cross_patch_parameters(12 * (14 * 14 + 14)).message
    assert "shared" in check.cross_patch_parameters(12 * (196 * 196 + 196) * 384).message
    assert not check.cross_patch_parameters(0)


def test_cross_patch_matmul_check():
    assert check.cross_patch_matmul(lambda x, w, b: w @ x + b[:, None])
    block = vitedu.create_model("resmlp_pico_32").blocks[0]  # the model's own layer agrees with the check
    assert check.cross_patch_matmul(
        lambda x, w, b: torch.nn.functional.linear(x.transpose(1, 2), w, b).transpose(1, 2))
    assert block.cross_patch.weight.shape == (64, 64)
    assert "transposed" in check.cross_patch_matmul(lambda x, w, b: w.T @ x + b[:, None]).message
    assert "bias is missing" in check.cross_patch_matmul(lambda x, w, b: w @ x).message
    assert "shape" in check.cross_patch_matmul(lambda x, w, b: (w @ x).transpose(1, 2)).message
    assert "raised" in check.cross_patch_matmul(lambda x, w, b: x @ w).message
