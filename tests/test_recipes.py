import json
import math
from dataclasses import fields

import pytest

import vitedu
from vitedu.budget import Budget
from vitedu.train import recipes
from vitedu.train.config import TrainConfig
from vitedu.train.recipes import at_strength, get_recipe, list_recipes, load_run_config

FIELDS = {f.name for f in fields(TrainConfig)}
SCALED = {"batch_size", "epochs", "lr", "min_lr", "warmup_lr", "warmup_epochs", "ema_decay", "extra"}


@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_states_its_settings_with_sources(name):
    recipe = get_recipe(name)
    assert recipe.name == name and isinstance(recipe.imagenet, TrainConfig)
    assert recipe.paper.split()[0].replace(".", "").isdigit(), "paper must start with its arXiv id"
    assert set(recipe.sources) <= FIELDS
    missing = set(recipes.STATED) - set(recipe.sources)
    assert not missing, f"{name} lacks sources for {missing}"
    for key, source in recipe.sources.items():
        assert any(tag in source for tag in recipes.SOURCE_TAGS), f"{name}.{key}: source {source!r} has no tag"
    # every setting that differs from TrainConfig's default says where it comes from
    default = TrainConfig()
    differs = {f for f in FIELDS - {"extra"} if getattr(recipe.imagenet, f) != getattr(default, f)}
    assert differs <= set(recipe.sources), f"{name}: no source for {differs - set(recipe.sources)}"
    assert recipe.imagenet.extra["recipe"] == name
    assert recipe.description and "\n" not in recipe.description


def test_table_values_match_the_notes():
    deit = get_recipe("deit").imagenet
    assert (deit.optimizer, deit.lr, deit.batch_size, deit.weight_decay) == ("adamw", 1e-3, 1024, 0.05)
    assert (deit.random_erasing, deit.repeated_aug, deit.ema_decay, deit.eval_crop_ratio) == (0.25, 3, 0.99996, 0.875)
    deit3 = get_recipe("deit3").imagenet
    assert (deit3.optimizer, deit3.lr, deit3.batch_size, deit3.loss) == ("lamb", 4e-3, 2048, "bce")
    assert (deit3.augment, deit3.color_jitter, deit3.label_smoothing, deit3.eval_crop_ratio) == ("3augment", 0.3, 0, 1)
    assert (deit3.drop_path, deit3.layer_scale, deit3.epochs, deit3.bce_target_threshold) == (0.05, 1e-4, 800, 0.0)
    assert deit3.drop_path_schedule == "uniform" and deit.drop_path_schedule == "linear"
    assert get_recipe("deit3_in21k").imagenet.crop == "src"
    # timm drops colour jitter under RandAugment, vitedu's transform would not: the recipes say 0
    assert all(get_recipe(n).imagenet.color_jitter == 0 for n in ("deit", "finetune", "levit", "rsb_a1"))
    a1, a2, a3 = (get_recipe(f"rsb_a{i}").imagenet for i in (1, 2, 3))
    assert (a1.epochs, a2.epochs, a3.epochs) == (600, 300, 100)
    assert (a1.lr, a2.lr, a3.lr) == (5e-3, 5e-3, 8e-3)
    assert (a1.weight_decay, a2.weight_decay, a3.weight_decay) == (0.01, 0.02, 0.02)
    assert (a1.mixup_alpha, a2.mixup_alpha, a3.mixup_alpha) == (0.2, 0.1, 0.1)
    assert (a1.repeated_aug, a2.repeated_aug, a3.repeated_aug) == (3, 3, 1)
    assert (a1.drop_path, a3.drop_path, a1.label_smoothing, a2.label_smoothing) == (0.05, 0.0, 0.1, 0.0)
    assert a1.rand_augment == "rand-m7-mstd0.5-inc1" and a3.rand_augment == "rand-m6-mstd0.5-inc1"
    assert all(c.optimizer == "lamb" and c.loss == "bce" and c.eval_crop_ratio == 0.95 for c in (a1, a2, a3))
    legacy = get_recipe("torchvision_legacy").imagenet
    assert (legacy.optimizer, legacy.lr, legacy.batch_size, legacy.weight_decay, legacy.epochs) == ("sgd", 0.1, 256,
                                                                                                     1e-4, 90)
    assert not legacy.uses_mixup and legacy.augment == "flip"
    levit = get_recipe("levit").imagenet
    assert (levit.grad_clip, levit.clip_mode, levit.amp, levit.distillation) == (0.01, "agc", "off", "hard")
    assert levit.lr == pytest.approx(5e-4 * levit.batch_size / 512)


def test_derived_recipes_change_only_their_own_settings():
    finetune, attention = get_recipe("finetune").imagenet, get_recipe("finetune_attention").imagenet
    assert (finetune.lr, finetune.batch_size, finetune.epochs, finetune.weight_decay) == (1e-5, 512, 20, 0.1)
    assert attention.trainable == "attention" and finetune.trainable == "all"
    assert attention.replace(trainable="all", extra=finetune.extra) == finetune
    deit, distill = get_recipe("deit").imagenet, get_recipe("distill").imagenet
    assert (distill.distillation, distill.distillation_alpha, distill.extra["teacher"]) == ("hard", 0.5, "regnety_160")
    assert distill.replace(distillation="none", extra=deit.extra) == deit


@pytest.mark.parametrize("name", list_recipes())
def test_full_budget_is_the_paper(name):
    recipe = get_recipe(name)
    assert recipe.scaled("full", train_images=recipe.train_images) is recipe.imagenet
    assert recipe.scaled(Budget("full"), train_images=10) is recipe.imagenet


def test_cpu_scaling_rule():
    deit, deit3, legacy = get_recipe("deit"), get_recipe("deit3"), get_recipe("torchvision_legacy")
    small = deit.scaled("cpu", train_images=12_800)
    assert small.batch_size == recipes.BUDGET_BATCH_SIZE["cpu"] == 128 and small.epochs == recipes.BUDGET_EPOCHS["cpu"]
    assert small.lr == pytest.approx(1e-3 * 128 / 1024)  # AdamW: linear
    assert small.min_lr / small.lr == pytest.approx(1e-5 / 1e-3)  # the schedule keeps its shape
    assert small.warmup_lr / small.lr == pytest.approx(1e-6 / 1e-3)
    assert small.warmup_epochs / small.epochs == pytest.approx(5 / 300)
    assert deit3.scaled("cpu", train_images=12_800).lr == pytest.approx(4e-3 * math.sqrt(128 / 2048))  # LAMB: sqrt
    assert legacy.scaled("cpu", train_images=12_800).lr == pytest.approx(0.1 * 128 / 256)  # SGD: linear
    assert recipes.lr_scale("lamb", 512, 2048) == 0.5 and recipes.lr_scale("adamw", 512, 2048) == 0.25
    # every ingredient is kept
    for name in list_recipes():
        recipe = get_recipe(name)
        scaled = recipe.scaled("cpu", train_images=5000, batch_size=64, epochs=7)
        assert (scaled.batch_size, scaled.epochs, scaled.extra["budget"]) == (64, 7, "cpu")
        for key in FIELDS - SCALED:
            assert getattr(scaled, key) == getattr(recipe.imagenet, key), (name, key)


def test_ema_horizon_keeps_its_share_of_training():
    recipe = get_recipe("deit")
    paper = recipe.imagenet
    small = recipe.scaled("gpu", train_images=50_000)
    paper_steps = paper.epochs * math.ceil(recipe.train_images / paper.batch_size)
    steps = small.epochs * math.ceil(50_000 / small.batch_size)
    for share in (0.01, 0.1, 0.5):  # the weight the EMA gives to the last `share` of training is unchanged
        assert 1 - small.ema_decay ** (share * steps) == pytest.approx(1 - paper.ema_decay ** (share * paper_steps))
    assert small.ema_decay < paper.ema_decay


@pytest.mark.parametrize("budget_name", ["smoke", "cpu", "gpu"])
@pytest.mark.parametrize("name", list_recipes())
def test_scaled_configs_are_valid_even_on_tiny_data(name, budget_name):
    config = get_recipe(name).scaled(budget_name, train_images=16)  # TrainConfig validates on construction
    assert config.ema_decay is None or 0 < config.ema_decay < 1
    assert config.batch_size == recipes.BUDGET_BATCH_SIZE[budget_name]


def test_full_budget_with_another_batch_follows_the_harness_rule():
    deit = get_recipe("deit")
    half = deit.scaled("full", train_images=deit.train_images, batch_size=512)
    assert half.lr == pytest.approx(5e-4) and half.epochs == 300  # DeiT's 5e-4 x batch / 512
    assert half.ema_decay == pytest.approx(0.99996 ** 0.5, rel=1e-6)  # twice the steps: sqrt of the decay


def test_scaled_rejects_bad_input():
    deit = get_recipe("deit")
    with pytest.raises(ValueError, match="train_images"):
        deit.scaled("cpu", train_images=0)
    with pytest.raises(ValueError, match="batch_size"):
        deit.scaled("cpu", train_images=100, batch_size=2.5)
    with pytest.raises(ValueError, match="valid budgets"):
        deit.scaled("huge", train_images=100)


def test_unknown_recipe_suggests_the_close_match():
    with pytest.raises(KeyError) as error:
        get_recipe("deit_3")
    message = str(error.value)
    assert "Did you mean 'deit3'" in message
    assert all(name in message for name in list_recipes())
    with pytest.raises(KeyError, match="rsb_a1"):
        get_recipe("rsb-a1")


@pytest.mark.parametrize("name", list_recipes())
def test_configs_round_trip_through_dict_and_json(name):
    recipe = get_recipe(name)
    for config in (recipe.imagenet, recipe.scaled("cpu", train_images=1000)):
        assert TrainConfig.from_dict(config.to_dict()) == config
        assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# ---------------------------------------------------------------------------------------------------------------
# configs/*.toml

EXPECTED_CONFIGS = {"deit3_small_in1k", "deit3_base_in1k", "deit_small", "rsb_a1_resnet50", "rsb_a2_resnet50",
                    "rsb_a3_resnet50", "finetune_attention_vit_small_384", "levit_128s"}


def test_every_run_config_loads_and_names_a_real_model():
    paths = recipes.list_run_configs()
    assert EXPECTED_CONFIGS <= {p.stem for p in paths}
    models = set(vitedu.list_models())
    for path in paths:
        run = load_run_config(path)
        assert run.model in models, f"{path.name}: model {run.model!r} is not in vitedu.list_models()"
        assert run.recipe in list_recipes()
        assert isinstance(run.config, TrainConfig) and isinstance(run.extra, dict)
        overrides = run.config.model_overrides(run.model)  # the recipe's model settings fit the model
        assert overrides.get("drop_path_rate", 0.0) == run.config.drop_path
        text = path.read_text()
        assert text.startswith("#") and "arXiv" in text.splitlines()[0], f"{path.name}: header names the paper"
        assert "top-1" in text and "Hardware" in text, f"{path.name}: header gives the result and the hardware"


def test_run_config_overrides_and_extra():
    base = load_run_config("deit3_base_in1k")  # by name, from configs/
    assert (base.recipe, base.model) == ("deit3", "deit3_base_patch16_224")
    assert (base.config.lr, base.config.drop_path, base.extra["img_size"]) == (3e-3, 0.2, 192)
    assert base.config.replace(lr=4e-3, drop_path=0.05) == get_recipe("deit3").imagenet
    a3 = load_run_config("rsb_a3_resnet50")
    assert (a3.extra["img_size"], a3.extra["eval_img_size"]) == (160, 224)
    recipe, model, config, extra = load_run_config("levit_128s")  # unpacks as a tuple
    assert config == get_recipe(recipe).imagenet and model == "levit_128s" and extra == {"img_size": 224}


def write(tmp_path, text):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_run_config_value_conversion(tmp_path):
    path = write(tmp_path, 'recipe = "deit"\nmodel = "deit_small_patch16_224"\n[overrides]\nema_decay = "none"\n'
                           "crop_scale = [0.35, 1]\nepochs = 30\nlr = 1\n")
    config = load_run_config(path).config
    assert config.ema_decay is None and config.crop_scale == (0.35, 1.0) and config.epochs == 30
    assert config.lr == 1.0 and isinstance(config.lr, float)


def test_run_config_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="deit3_small_in1k"):  # lists the configs there are
        load_run_config("no_such_config")
    with pytest.raises(ValueError, match="unknown key.*oops.*valid: recipe, model, overrides, extra"):
        load_run_config(write(tmp_path, 'recipe = "deit"\nmodel = "resnet50"\noops = 1\n'))
    with pytest.raises(ValueError, match="lrr.*valid: .*warmup_lr"):
        load_run_config(write(tmp_path, 'recipe = "deit"\nmodel = "resnet50"\n[overrides]\nlrr = 1e-3\n'))
    with pytest.raises(ValueError, match="img_sise.*valid: img_size"):
        load_run_config(write(tmp_path, 'recipe = "deit"\nmodel = "resnet50"\n[extra]\nimg_sise = 224\n'))
    with pytest.raises(ValueError, match="Did you mean 'deit3'"):
        load_run_config(write(tmp_path, 'recipe = "deit_3"\nmodel = "resnet50"\n'))
    with pytest.raises(TypeError, match="'model' must be given"):
        load_run_config(write(tmp_path, 'recipe = "deit"\n'))
    with pytest.raises(TypeError, match="epochs = '300'"):
        load_run_config(write(tmp_path, 'recipe = "deit"\nmodel = "resnet50"\n[overrides]\nepochs = "300"\n'))
    with pytest.raises(TypeError, match="epochs = 1.5"):
        load_run_config(write(tmp_path, 'recipe = "deit"\nmodel = "resnet50"\n[overrides]\nepochs = 1.5\n'))
    with pytest.raises(ValueError, match="not valid TOML"):
        load_run_config(write(tmp_path, 'recipe = "deit\n'))
    with pytest.raises(ValueError, match="optimizer='adam'"):  # TrainConfig's own check still runs
        load_run_config(write(tmp_path, 'recipe = "deit"\nmodel = "resnet50"\n[overrides]\noptimizer = "adam"\n'))


def test_differences_lists_only_disagreeing_settings():
    from vitedu.train.recipes import differences

    deit, deit3 = get_recipe("deit").imagenet, get_recipe("deit3").imagenet
    rows = {row["setting"]: row for row in differences({"deit": deit, "deit3": deit3})}
    assert rows["optimizer"] == {"setting": "optimizer", "deit": "adamw", "deit3": "lamb"}
    assert rows["loss"]["deit3"] == "bce" and "weight_decay" not in rows  # both 0.05
    assert differences({"a": deit, "b": deit}) == []


def test_strength_scales_every_regularisation_amount_and_keeps_the_kinds():
    deit, deit3 = get_recipe("deit"), get_recipe("deit3")
    light = deit3.scaled("cpu", train_images=1000, batch_size=64, epochs=20, strength=0.25)
    paper = deit3.scaled("cpu", train_images=1000, batch_size=64, epochs=20)
    assert (light.mixup_alpha, light.cutmix_alpha) == pytest.approx((0.2, 0.25))
    assert light.crop_scale == pytest.approx((0.77, 1.0))
    assert light.blur_radius == pytest.approx((0.025, 0.5))
    assert (light.repeated_aug, light.drop_path, light.color_jitter) == (2, pytest.approx(0.0125), pytest.approx(0.075))
    for kept in ("optimizer", "loss", "label_smoothing", "weight_decay", "layer_scale", "augment", "crop", "lr",
                 "ema_decay", "grad_clip", "epochs"):
        assert getattr(light, kept) == getattr(paper, kept), kept
    assert light.extra["strength"] == 0.25 and paper.extra["strength"] == 1.0
    deit_light = at_strength(deit.imagenet, 0.25)
    assert deit_light.rand_augment == "rand-m2-mstd0.5-inc1" and deit_light.random_erasing == pytest.approx(0.0625)
    none = at_strength(deit.imagenet, 0.0)
    assert not none.uses_mixup and none.repeated_aug == 1 and none.crop_scale == (1.0, 1.0)
    assert none.rand_augment == "rand-m0-mstd0.5-inc1" and none.drop_path == 0 and none.random_erasing == 0
    assert at_strength(deit.imagenet, 1.0) is deit.imagenet
    with pytest.raises(ValueError, match=r"strength must lie in \[0, 1\]"):
        at_strength(deit.imagenet, 1.5)


def test_a_given_lr_replaces_the_batch_rule_and_keeps_the_schedule_shape():
    deit3 = get_recipe("deit3")
    config = deit3.scaled("cpu", train_images=1000, batch_size=64, lr=4e-3)
    assert config.lr == pytest.approx(4e-3) and config.extra["lr_rule"] == "given"
    assert config.min_lr / config.lr == pytest.approx(deit3.imagenet.min_lr / deit3.imagenet.lr)
    assert config.warmup_lr / config.lr == pytest.approx(deit3.imagenet.warmup_lr / deit3.imagenet.lr)
    assert deit3.scaled("full", train_images=deit3.train_images, lr=1e-3).lr == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="lr must be positive"):
        deit3.scaled("cpu", train_images=1000, lr=0.0)


def test_blur_radius_reaches_three_augment_and_survives_a_round_trip():
    from vitedu.data.transforms import ThreeAugment, train_transform

    config = get_recipe("deit3").imagenet.replace(blur_radius=(0.05, 0.5))
    three = [step for step in train_transform(config, 28, (0.5,), (0.5,)).transforms if isinstance(step, ThreeAugment)]
    assert len(three) == 1 and three[0].blur_radius == (0.05, 0.5)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="blur_radius must be"):
        config.replace(blur_radius=(1.0, 0.5))
