import math

import pytest
import torch

from vitedu.experiments import recipe_study
from vitedu.experiments.recipe_study import StudyData, plot_study, prepare, run_study, summarize
from vitedu.train import get_recipe


def test_prepare_normalises_with_training_statistics():
    prepared = prepare(StudyData("fashion", 200, 100, 28))
    assert prepared.train_images.dtype == torch.uint8 and prepared.in_chans == 1
    pixels = prepared.train_images.float() / 255
    assert math.isclose(prepared.mean[0], pixels.mean().item(), rel_tol=1e-4)
    assert prepared.test_images.shape == (100, 1, 28, 28) and prepared.test_images.dtype == torch.float32
    with pytest.raises(ValueError, match="28 px"):
        prepare(StudyData("fashion", 10, 10, 32))
    with pytest.raises(ValueError, match="unknown dataset"):
        prepare(StudyData("cifar", 10, 10, 32))


def test_a_study_trains_every_variant_with_every_seed():
    deit3 = get_recipe("deit3").scaled("smoke", 64, batch_size=16, epochs=1)
    variants = {"DeiT III": deit3, "DeiT III, CE": deit3.replace(loss="ce")}
    runs = run_study("vit_pico_patch4_28", variants, StudyData("fashion", 64, 50, 28), seeds=(0, 1))
    assert [(r["variant"], r["seed"]) for r in runs] == [("DeiT III", 0), ("DeiT III, CE", 0), ("DeiT III", 1),
                                                          ("DeiT III, CE", 1)]
    assert all(0 <= r["val_acc"] <= 1 and r["ema_val_acc"] is not None for r in runs)
    # the recipe reached the model: LayerScale and uniform stochastic depth of DeiT III
    assert runs[0]["model"].blocks[0].ls1.gamma.shape == (64,)
    summary = summarize(runs)
    assert [s["variant"] for s in summary] == ["DeiT III", "DeiT III, CE"] and all(s["n"] == 2 for s in summary)
    first = summary[0]
    assert math.isclose(first["mean"], sum(first["values"]) / 2) and first["std"] >= 0
    assert "model" not in recipe_study.ledger_rows(runs)[0]
    assert plot_study(summary, reference=summary) is not None
    ax = recipe_study.plot_curves(runs)
    assert len(ax.lines) == 4 and [t.get_text() for t in ax.get_legend().get_texts()] == ["DeiT III", "DeiT III, CE"]


def test_summaries_skip_missing_values():
    runs = [{"variant": "a", "x": 0.5}, {"variant": "a", "x": None}, {"variant": "b", "x": None}]
    assert summarize(runs, "x") == [{"variant": "a", "mean": 0.5, "std": 0.0, "min": 0.5, "max": 0.5, "n": 1,
                                     "values": [0.5]}]
