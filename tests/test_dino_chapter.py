"""Chapter 07's experiment: the DINO study at the smoke budget, end to end, and its pieces."""

import math
from dataclasses import replace

import pytest
import torch

from vitedu.budget import budget as get_budget
from vitedu.experiments import dino
from vitedu.viz.segmentation import masks_at


def test_the_centre_prior_scores_one_on_its_own_mask_and_zero_on_the_complement():
    own = masks_at(dino.centre_prior(8), 32, 0.6)
    masks = torch.stack([own, ~own])
    assert dino.centre_prior_jaccard(masks[:1], 8) == 1.0
    assert dino.centre_prior_jaccard(masks[1:], 8) == 0.0
    assert 0.3 < own.float().mean() < 0.7  # a blob in the middle, neither a dot nor the whole image


def test_dino_settings_allow_a_fixed_centre_for_the_collapse_study():
    loss = dino.build_dino(torch.nn.Identity(), 4, replace(dino.SMALL_DINO, center_momentum=1.0, out_dim=4,
                                                                hidden_dim=4, bottleneck_dim=4), epochs=1)[1].loss
    loss(torch.randn(12, 4), torch.randn(4, 4), epoch=0)
    assert torch.equal(loss.center, torch.zeros(1, 4))


def test_the_smoke_study_runs_end_to_end(tmp_path):
    record = dino.run(get_budget("smoke"), checkpoint_folder=tmp_path)
    names = [row["extractor"] for row in record["summary"]]
    assert names == ["DINO", "supervised", "random weights", "raw pixels", "DINO student"]
    for row in record["summary"]:
        assert 0 <= row["k-NN"] <= 100 and 0 <= row["linear"] <= 100
        assert ("Jaccard, best head" in row) == (row["extractor"] != "raw pixels")
        if "Jaccard, best head" in row:  # the best head per image is at least the one fixed head
            assert row["Jaccard, best head"] >= row["Jaccard, fixed head"] - 1e-9
    assert 0 < record["centre_prior_jaccard"] < 100
    cfg = dino.config(get_budget("smoke"))
    assert list(record["collapse"]) == list(dino.COLLAPSE_VARIANTS)
    for curve in record["collapse"].values():
        assert len(curve) == cfg.collapse_epochs
        assert all(0 <= r["teacher_entropy"] <= math.log(cfg.dino.out_dim) + 1e-6 and r["kl"] >= -1e-6 for r in curve)
    assert "models" not in record["runs"][0] and record["runs"][0]["dino_history"][0]["teacher_entropy"] > 0
    assert record["checkpoints"] == ["07_dino_dino_smoke.safetensors", "07_dino_supervised_smoke.safetensors"]
    teacher = dino.load_model(cfg, "DINO", dino.checkpoint_path("DINO", "smoke", tmp_path))
    assert teacher(torch.zeros(1, 3, 32, 32)).shape == (1, teacher.num_features)
    supervised = dino.load_model(cfg, "supervised", dino.checkpoint_path("supervised", "smoke", tmp_path))
    assert supervised(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_a_missing_checkpoint_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="vitedu reproduce 07"):
        dino.load_model(dino.config(get_budget("smoke")), "DINO", tmp_path / "none.safetensors")
    with pytest.raises(ValueError, match="kind"):
        dino.checkpoint_path("dino")
