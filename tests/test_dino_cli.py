"""``vitedu train --recipe dino``, ``vitedu knn`` and ``vitedu linear`` end to end on a tiny generated ImageFolder, the
``dino`` recipe against the paper's (official code's) values, and bad input stopped with a clear error.

The torchrun path of a DINO run (2 gloo processes) was checked by hand, not here: it costs about 20 s on 2 cores."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from vitedu import cli
from vitedu.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from vitedu.data.transforms import eval_transform
from vitedu.models import create_model
from vitedu.ssl.dino import DINOLoss
from vitedu.ssl.knn import extract_features, knn_accuracy
from vitedu.ssl.linear import linear_probe
from vitedu.ssl.settings import SOURCES, DINOSettings
from vitedu.train import engine
from vitedu.train.recipes import SOURCE_TAGS, get_recipe
from vitedu.train.run import main

MODEL = "vit_pico_patch4_32"
TINY = ["--recipe", "dino", "--model", MODEL, "--budget", "smoke", "--batch-size", "4", "--workers", "0", "--device",
        "cpu", "--set", "epochs=2", "--set", "out_dim=64", "--set", "hidden_dim=32", "--set", "bottleneck_dim=16",
        "--set", "local_crops=2"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: on a busy 2-core machine, several threads per tiny matmul make a 1-second run last 15."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """train/: 2 classes x 6 PNGs of 32 px, val/: 2 x 3; the classes differ only a little (noise + an offset of 1),
    so that the accuracies are not all 1."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 6), ("val", 3)):
        for c in range(2):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray((rng.random((32, 32, 3)) * 200 + c).astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def dino_run(data, tmp_path_factory) -> Path:
    """DINO at the smoke budget, 2 epochs of 3 steps, a tiny head; returns the output folder."""
    output = tmp_path_factory.mktemp("dino") / "run"
    assert main([*TINY, "--data", str(data), "--output", str(output)]) == 0
    return output


def teacher_backbone(output: Path) -> torch.nn.Module:
    """The teacher's backbone from ``ema.safetensors``, loaded by hand (not through vitedu.ssl.evaluate)."""
    state = load_file(str(output / "ema.safetensors"))
    backbone = create_model(MODEL, num_classes=0)
    backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")})
    return backbone.eval()


def features(output: Path, data: Path, normalize: bool):
    transform = eval_transform(32, IMAGENET_MEAN, IMAGENET_STD, 0.875)
    backbone = teacher_backbone(output)
    return [extract_features(backbone, DataLoader(ImageFolder(str(data / split), transform), batch_size=4),
                             normalize=normalize) for split in ("train", "val")]


# --------------------------------------------------------------------------------------------------------------------
# Training

def test_a_dino_run_writes_the_teacher_and_its_knn(dino_run, data):
    state = load_file(str(dino_run / "ema.safetensors"))
    assert any(k.startswith("backbone.") for k in state) and any(k.startswith("head.") for k in state)
    assert state["head.last_layer.parametrizations.weight.original1"].shape == (64, 16)  # K x bottleneck
    config = json.loads((dino_run / "config.json").read_text())
    dino = config["extra"]["dino"]
    assert (dino["out_dim"], dino["hidden_dim"], dino["local_crops"], dino["freeze_last_layer"]) == (64, 32, 2, 0)
    assert (config["epochs"], config["weight_decay_end"], config["clip_mode"]) == (2, 0.4, "param")
    run = json.loads((dino_run / "run.json").read_text())
    assert run["dino_views"]["local_size"] == 12  # 96/224 of 32 px, to a multiple of the 4-px patch
    assert run["evaluate"] == "ema.safetensors" and run["model_overrides"]["num_classes"] == 0
    assert len((dino_run / "log.jsonl").read_text().splitlines()) == 2
    # the final k-NN (k = 20, capped at the 12 training images) is the teacher's, on the val split
    (train_f, train_y), (val_f, val_y) = features(dino_run, data, normalize=True)
    assert run["knn"]["k"] == 12 and 0 <= run["knn"]["accuracy"] <= 1
    assert run["knn"]["accuracy"] == knn_accuracy(train_f, train_y, val_f, val_y, k=12, temperature=0.07)


def test_an_interrupted_dino_run_resumes_to_the_same_weights(dino_run, data, tmp_path, monkeypatch, capsys):
    output = tmp_path / "parts"
    real_fit = engine.fit

    def stop_after_one_epoch(*args, **kwargs):
        def crash(history):
            if len(history.epochs) == 1:
                raise KeyboardInterrupt

        return real_fit(*args, callbacks=[crash], **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(engine, "fit", stop_after_one_epoch)
        with pytest.raises(KeyboardInterrupt):
            main([*TINY, "--data", str(data), "--output", str(output)])
    assert not (output / "ema.safetensors").exists()
    assert main([*TINY, "--data", str(data), "--output", str(output), "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    for name in ("model.safetensors", "ema.safetensors"):
        whole, parts = load_file(str(dino_run / name)), load_file(str(output / name))
        assert whole.keys() == parts.keys() and all(torch.equal(whole[k], parts[k]) for k in whole), name


# --------------------------------------------------------------------------------------------------------------------
# Evaluation commands

def test_knn_command_matches_knn_accuracy_on_the_same_features(dino_run, data, tmp_path, capsys):
    result_file = tmp_path / "knn.json"
    assert cli.main(["knn", "--weights", str(dino_run / "ema.safetensors"), "--model", MODEL, "--data", str(data),
                     "--k", "5", "--batch-size", "4", "--device", "cpu", "--output", str(result_file)]) == 0
    result = json.loads(result_file.read_text())
    assert "dropped: head" in capsys.readouterr().out  # the DINO wrapper's projection head
    (train_f, train_y), (val_f, val_y) = features(dino_run, data, normalize=True)
    assert 0 <= result["accuracy"] <= 1 and (result["k"], result["val_images"]) == (5, 6)
    assert result["accuracy"] == knn_accuracy(train_f, train_y, val_f, val_y, k=5, temperature=0.07)


def test_linear_command_matches_linear_probe_on_the_same_features(dino_run, data, tmp_path):
    result_file = tmp_path / "linear.json"
    # the run folder: its ema.safetensors, and the model from its run.json
    assert cli.main(["linear", "--weights", str(dino_run), "--data", str(data), "--epochs", "20", "--lr", "5",
                     "--probe-batch-size", "4", "--device", "cpu", "--output", str(result_file)]) == 0
    result = json.loads(result_file.read_text())
    (train_f, train_y), (val_f, val_y) = features(dino_run, data, normalize=False)
    accuracy, _ = linear_probe(train_f, train_y, val_f, val_y, epochs=20, lr=5, batch_size=4, num_classes=2)
    assert 0 <= result["accuracy"] <= 1 and result["accuracy"] == accuracy and result["model"] == MODEL


def test_evaluation_takes_a_plain_backbone_and_a_supervised_model(dino_run, data, tmp_path, capsys):
    backbone = teacher_backbone(dino_run)
    save_file(backbone.state_dict(), str(tmp_path / "backbone.safetensors"))
    supervised = create_model(MODEL, num_classes=2)
    supervised.load_state_dict({**backbone.state_dict(), **{k: v for k, v in supervised.state_dict().items()
                                                            if k.startswith("head.")}})
    save_file(supervised.state_dict(), str(tmp_path / "supervised.safetensors"))
    accuracies = []
    for name in ("backbone", "supervised"):
        assert cli.main(["knn", "--weights", str(tmp_path / f"{name}.safetensors"), "--model", MODEL, "--data",
                         str(data), "--k", "5", "--device", "cpu", "--output", str(tmp_path / f"{name}.json")]) == 0
        accuracies.append(json.loads((tmp_path / f"{name}.json").read_text())["accuracy"])
    assert re.search(r"classifier dropped \(head\.(weight|bias), head\.(weight|bias)\)", capsys.readouterr().out)
    assert accuracies[0] == accuracies[1]  # the same backbone


# --------------------------------------------------------------------------------------------------------------------
# The recipe

PAPER = {  # main_dino.py defaults for ViT-S/16 and the README's 16-GPU command (batch 16 x 64)
    "epochs": 100, "batch_size": 1024, "lr": 5e-4 * 1024 / 256, "min_lr": 1e-6, "warmup_epochs": 10,
    "warmup_lr": 0.0, "optimizer": "adamw", "weight_decay": 0.04, "weight_decay_end": 0.4, "ema_decay": 0.996,
    "ema_decay_end": 1.0, "grad_clip": 3.0, "clip_mode": "param", "drop_path": 0.1, "drop_path_schedule": "linear",
    "crop_scale": (0.4, 1.0), "blur_radius": (0.1, 2.0), "mixup_alpha": 0.0, "cutmix_alpha": 0.0,
    "label_smoothing": 0.0, "repeated_aug": 1, "eval_crop_ratio": 0.875, "distillation": "none",
}
PAPER_DINO = {
    "out_dim": 65536, "hidden_dim": 2048, "bottleneck_dim": 256, "head_layers": 3, "norm_last_layer": True,
    "use_bn_in_head": False, "local_crops": 8, "local_scale": (0.05, 0.4), "warmup_teacher_temp": 0.04,
    "teacher_temp": 0.04, "warmup_teacher_temp_epochs": 0, "student_temp": 0.1, "center_momentum": 0.9,
    "freeze_last_layer": 1,
}


def test_the_dino_recipe_is_the_papers():
    recipe = get_recipe("dino")
    assert {key: getattr(recipe.imagenet, key) for key in PAPER} == PAPER
    settings = DINOSettings.from_dict(recipe.imagenet.extra["dino"])
    assert settings == DINOSettings() and {key: getattr(settings, key) for key in PAPER_DINO} == PAPER_DINO
    assert settings.local_size_for(224, patch_size=16) == 96 and settings.n_crops == 10
    assert set(SOURCES) == set(PAPER_DINO) | {"local_size"}
    assert all(any(tag in source for tag in SOURCE_TAGS) for source in SOURCES.values())


@pytest.mark.parametrize("budget", ["smoke", "cpu", "gpu", "full"])
def test_the_dino_recipe_scales_to_every_budget(budget):
    recipe = get_recipe("dino")
    config = recipe.scaled(budget, train_images=1000)
    settings = DINOSettings.from_dict(config.extra["dino"])
    settings.check(config.epochs)
    DINOLoss(settings.out_dim, settings.n_crops, epochs=config.epochs,
             warmup_teacher_temp_epochs=settings.warmup_teacher_temp_epochs)  # a valid schedule
    assert settings.freeze_last_layer == (1 if budget == "full" else 0 if config.epochs == 1 else 1)
    assert settings.replace(freeze_last_layer=1) == DINOSettings()  # nothing else changes
    # the paper's teacher-temperature warm-up (30 of 100 epochs) keeps its share of a 10-epoch run
    assert DINOSettings(teacher_temp=0.07, warmup_teacher_temp_epochs=30).scaled(10, 100).warmup_teacher_temp_epochs == 3


# --------------------------------------------------------------------------------------------------------------------
# Bad input

@pytest.fixture(scope="module")
def other_model_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("other") / "resmlp.safetensors"
    save_file(create_model("resmlp_pico_32", num_classes=0).state_dict(), str(path))
    return path


@pytest.mark.parametrize("case, message", [
    ("other_model", r"are not weights of vit_pico_patch4_32 at 32 px: .* does not fit VisionTransformer: missing"),
    ("no_teacher", r"is a folder without ema\.safetensors"),
    ("bad_k", r"--k 0 is out of range"),
])
def test_evaluation_refuses_bad_input(case, message, data, other_model_weights, tmp_path, capsys):
    args = {"other_model": ["--weights", str(other_model_weights), "--model", MODEL],
            "no_teacher": ["--weights", str(tmp_path), "--model", MODEL],
            "bad_k": ["--weights", str(other_model_weights), "--model", MODEL, "--k", "0"]}[case]
    assert cli.main(["knn", *args, "--data", str(data), "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("vitedu knn: error: ")
    assert re.search(message, error), error


@pytest.mark.parametrize("extra, message", [
    (["--set", "augment=3augment"], r"a DINO run does not read augment"),
    (["--set", "warmup_teacher_temp_epochs=5"], r"warmup_teacher_temp_epochs=5 is longer than the run \(2 epochs\)"),
    (["--set", "out_dim=0"], r"out_dim must be a positive integer"),
])
def test_a_dino_run_refuses_bad_settings_before_writing(extra, message, data, tmp_path, capsys):
    output = tmp_path / "run"
    assert main([*TINY, *extra, "--data", str(data), "--output", str(output)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not output.exists()


def test_dino_settings_belong_to_the_dino_recipe(data, tmp_path, capsys):
    assert main(["--recipe", "deit", "--model", MODEL, "--set", "out_dim=64", "--data", str(data), "--output",
                 str(tmp_path / "run")]) == 2
    assert "It is a DINO setting: only with --recipe dino." in capsys.readouterr().err


def test_resuming_with_another_head_or_views_is_refused(dino_run, data, capsys):
    before = {p: p.read_bytes() for p in dino_run.rglob("*") if p.is_file()}
    assert main([*TINY, "--set", "out_dim=32", "--set", "local_crops=3", "--data", str(data), "--output",
                 str(dino_run), "--resume"]) == 2
    assert "built differently (local_crops 2 -> 3, out_dim 64 -> 32)" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in dino_run.rglob("*") if p.is_file()} == before
