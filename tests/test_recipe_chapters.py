"""The recipe chapters' studies (01 ResNet strikes back, 02 DeiT III): what each variant changes."""

import pytest

from vitedu.budget import Budget
from vitedu.experiments import deit3_revenge, get, resnet_strikes_back
from vitedu.experiments.recipe_study import SMALL_SCALE_LR, recipe_at
from vitedu.train.recipes import differences, get_recipe

CPU = Budget("cpu")


def changed(a, b) -> set[str]:
    return {row["setting"] for row in differences({"a": a, "b": b}, skip=("extra", "seed"))}


def test_recipe_at_uses_the_small_scale_lr_of_the_optimizer_it_ends_with():
    deit3 = recipe_at("deit3", CPU, 1000, 64, 10)
    assert deit3.lr == pytest.approx(SMALL_SCALE_LR["lamb"])
    assert deit3.min_lr / deit3.lr == pytest.approx(1e-5 / 4e-3)  # the recipe's schedule shape
    adamw = recipe_at("deit3", CPU, 1000, 64, 10, optimizer="adamw")
    assert adamw.optimizer == "adamw" and adamw.lr == pytest.approx(SMALL_SCALE_LR["adamw"])
    assert adamw.min_lr / adamw.lr == pytest.approx(deit3.min_lr / deit3.lr)
    assert recipe_at("torchvision_legacy", CPU, 1000, 64, 10).lr == pytest.approx(SMALL_SCALE_LR["sgd"])


def test_deit3_ablations_change_one_ingredient_of_deit3_at_the_scaled_strength():
    cfg = deit3_revenge.config(CPU)
    chosen = deit3_revenge.variants(cfg, CPU)
    base = chosen["DeiT III"]
    assert base.extra["strength"] == cfg.strength and chosen["DeiT III, paper strength"].extra["strength"] == 1.0
    assert chosen["DeiT"].optimizer == "adamw" and chosen["DeiT"].extra["recipe"] == "deit"
    assert changed(base, chosen["DeiT III, CE"]) == {"loss"}
    assert changed(base, chosen["DeiT III, no LayerScale"]) == {"layer_scale"}
    assert changed(base, chosen["DeiT III, simple crop"]) == {"crop"}
    assert changed(base, chosen["DeiT III, RandAugment"]) == {"augment"}
    assert chosen["DeiT III, RandAugment"].rand_augment == chosen["DeiT"].rand_augment
    assert changed(base, chosen["DeiT III, no Mixup/CutMix"]) == {"mixup_alpha", "cutmix_alpha"}
    plain = chosen["plain"]
    assert (plain.augment, plain.crop, plain.loss, plain.uses_mixup, plain.optimizer) == ("none", "none", "ce", False,
                                                                                       "adamw")
    assert {c.epochs for c in chosen.values()} == {cfg.epochs}
    assert get("02") == ("02_deit3", deit3_revenge)


def test_rsb_keeps_the_papers_schedule_proportions():
    cfg = resnet_strikes_back.config(CPU)
    chosen = resnet_strikes_back.variants(cfg, CPU)
    assert [chosen[k].epochs for k in ("torchvision", "A3", "A2", "A1")] == [4, 5, 15, 30]  # 90, 100, 300, 600 ImageNet epochs
    assert chosen["A1"].optimizer == "lamb" and chosen["torchvision"].optimizer == "sgd"
    assert changed(chosen["A2"], chosen["A2, CE"]) <= {"loss", "bce_target_threshold"}
    assert chosen["A2, CE"].loss == "ce"
    light = chosen["A1, scaled strength"]
    assert light.mixup_alpha == pytest.approx(get_recipe("rsb_a1").imagenet.mixup_alpha * cfg.strength)
    assert changed(chosen["A1"], light) >= {"mixup_alpha", "cutmix_alpha", "rand_augment", "crop_scale"}
    assert get("01") == ("01_resnet_strikes_back", resnet_strikes_back)


@pytest.mark.parametrize("module", [deit3_revenge, resnet_strikes_back])
def test_every_budget_has_a_valid_study(module):
    for name in ("smoke", "cpu", "gpu"):
        cfg = module.config(Budget(name))
        assert len(module.variants(cfg, Budget(name))) >= 6
        assert (len(cfg.seeds) >= 3) == (name != "smoke")
        assert set(cfg.live_seeds) <= set(cfg.seeds)


def test_train_low_test_high_trains_at_the_low_size_and_tests_at_each_size():
    smoke = Budget("smoke")
    result = resnet_strikes_back.train_low_test_high(resnet_strikes_back.config(smoke), smoke, train_size=20,
                                                     test_sizes=(16, 28))
    assert set(result["accuracy"]) == {16, 28} and all(0 <= acc <= 1 for acc in result["accuracy"].values())
    # the run's own evaluation is on the images' native size (28 px): the same number as the resized-to-28 one
    assert result["run"]["val_acc"] == pytest.approx(result["accuracy"][28])
    assert result["run"]["variant"] == "A3 at 20 px"
