"""``vitedu train`` end to end on a tiny generated ImageFolder: one process, two under torchrun (gloo, CPU) that must
agree on the weights and resume, and every bad input stopped with a clear error before anything is written."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import vitedu
from vitedu import cli
from vitedu.train.config import TrainConfig
from vitedu.train.recipes import get_recipe
from vitedu.train.run import load_finetune_weights, main, parse_settings, weights_checksum

MODEL = "deit3_pico_patch4_32"
TINY = ["--model", MODEL, "--budget", "smoke", "--batch-size", "8", "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """train/: 3 classes, 23 PNGs of 32 px and one file of random bytes named .png (24 files: 3 full batches of 8,
    so every file is read in an epoch); val/: 3 x 4 PNGs."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 8), ("val", 4)):
        for c in range(3):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class - (split == "train" and c == 2)):
                pixels = (rng.random((32, 32, 3)) * 100 + 50 * c).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    (root / "train" / "class2" / "corrupt.png").write_bytes(rng.bytes(300))
    return root


@pytest.fixture(scope="module")
def single_run(data, tmp_path_factory):
    """One process, DeiT III (LAMB, BCE, 3-Augment, Mixup/CutMix, EMA) at the smoke budget, 1 epoch; returns
    (output folder, stdout, warnings)."""
    output = tmp_path_factory.mktemp("single") / "run"
    with pytest.warns(UserWarning) as caught:
        status = main(["--recipe", "deit3", "--data", str(data), "--output", str(output), *TINY,
                       "--set", "repeated_aug=1"])
    assert status == 0
    return output, [str(w.message) for w in caught]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def test_single_process_run_skips_the_corrupt_image_and_writes_the_run(single_run, data):
    output, warned = single_run
    assert sum("skipping unreadable image" in w and "corrupt.png" in w for w in warned) == 1
    skipped = (output / "skipped_images.txt").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith(str(data / "train" / "class2" / "corrupt.png"))
    expected = get_recipe("deit3").scaled("smoke", train_images=24, batch_size=8).replace(repeated_aug=1)
    assert TrainConfig.from_dict(json.loads((output / "config.json").read_text())) == expected
    run = json.loads((output / "run.json").read_text())
    assert (run["model"], run["classes"], run["train_images"], run["world_size"]) == (MODEL, 3, 24, 1)
    assert run["model_overrides"] == {"drop_path_rate": 0.05, "init_values": 1e-4, "drop_path_schedule": "uniform",
                                      "num_classes": 3, "img_size": 32}
    assert len((output / "log.jsonl").read_text().splitlines()) == 1
    assert (output / "ema.safetensors").is_file()


def run_torchrun(data: Path, output: Path, *extra: str) -> tuple[str, list[str]]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vitedu.cli",
               "train", "--recipe", "deit3", "--data", str(data), "--output", str(output), *TINY, *extra]
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    checksums = re.findall(r"rank (\d)/2: final weights sha256 (\w+)", done.stdout)
    assert sorted(rank for rank, _ in checksums) == ["0", "1"], done.stdout
    return done.stdout, [checksum for _, checksum in checksums]


def test_torchrun_two_processes_agree_on_the_weights_and_resume(data, tmp_path):
    output = tmp_path / "ddp"
    stdout, checksums = run_torchrun(data, output)
    saved = weights_checksum(load_file(str(output / "model.safetensors")))
    assert checksums == [saved, saved], "the replicas (or the rank-0 checkpoint) differ"
    assert "(4 per process x 2 processes, cpu)" in stdout and "repeated aug 3" in stdout
    first_epoch = (output / "log.jsonl").read_text().splitlines()
    assert len(first_epoch) == 1 and json.loads((output / "run.json").read_text())["world_size"] == 2

    stdout, checksums = run_torchrun(data, output, "--resume", "--set", "epochs=2")
    assert "resumed from" in stdout and "(epoch 2, step 0 of 3)" in stdout
    log = (output / "log.jsonl").read_text().splitlines()
    assert log[:1] == first_epoch and json.loads(log[1])["epoch"] == 2
    assert (output / "checkpoints" / "latest").read_text().strip() == "step-000000006"  # 2 epochs x 3 steps
    saved = weights_checksum(load_file(str(output / "model.safetensors")))
    assert checksums == [saved, saved]


def _make_empty(root: Path, with_class_folder: bool) -> Path:
    for split in ("train", "val"):
        (root / split / "cls" if with_class_folder else root / split).mkdir(parents=True)
    return root


@pytest.mark.parametrize("case, message", [
    ("recipe", r"unknown recipe 'deit33'\. Did you mean 'deit3'"),
    ("model", r"unknown model 'deit3_pico_patch4_31'\. Did you mean deit3_pico_patch4_32"),
    ("missing", r"the data folder .*nowhere does not exist"),
    ("no_images", r"no images in .*train: expected .*<class name>/<image>"),
    ("no_classes", r"no images in .*train"),
    ("exists", r"already holds a run \(step-000000003\)\. Pass --resume"),
    ("other_model", r"holds a run of deit3_pico_patch4_32, not vit_pico_patch4_32"),
    ("other_size", r"built differently \(img_size 32 -> 16\)"),
    ("setting", r"'epoch' is not a training setting\. Did you mean epochs\?"),
    ("batch", r"fewer than its batch of 64"),
    ("teacher", r"recipe 'distill' distils from a teacher"),
])
def test_bad_input_is_a_clear_error_and_changes_nothing(case, message, data, single_run, tmp_path, capsys):
    run_folder, _ = single_run
    fresh = tmp_path / "new"
    args = {"recipe": ["--recipe", "deit33", "--data", str(data), "--output", str(fresh), *TINY],
            "model": ["--recipe", "deit3", "--data", str(data), "--output", str(fresh), *TINY, "--model",
                      "deit3_pico_patch4_31"],
            "missing": ["--recipe", "deit3", "--data", str(tmp_path / "nowhere"), "--output", str(fresh), *TINY],
            "no_images": ["--recipe", "deit3", "--data", str(_make_empty(tmp_path / "e1", True)), "--output",
                          str(fresh), *TINY],
            "no_classes": ["--recipe", "deit3", "--data", str(_make_empty(tmp_path / "e2", False)), "--output",
                           str(fresh), *TINY],
            "exists": ["--recipe", "deit3", "--data", str(data), "--output", str(run_folder), *TINY],
            "other_model": ["--recipe", "deit3", "--data", str(data), "--output", str(run_folder), *TINY, "--model",
                            "vit_pico_patch4_32", "--resume"],
            "other_size": ["--recipe", "deit3", "--data", str(data), "--output", str(run_folder), *TINY, "--resume",
                           "--img-size", "16"],
            "setting": ["--recipe", "deit3", "--data", str(data), "--output", str(fresh), *TINY, "--set", "epoch=2"],
            "batch": ["--recipe", "deit3", "--data", str(data), "--output", str(fresh), *TINY, "--batch-size", "64"],
            "teacher": ["--recipe", "distill", "--data", str(data), "--output", str(fresh), *TINY, "--model",
                        "deit_pico_distilled_patch4_32"],
            }[case]
    before = snapshot(run_folder)
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith("vitedu train: error: ") and re.search(message, error), error
    assert snapshot(run_folder) == before
    assert not fresh.exists()


def test_the_cli_has_the_train_command(data, tmp_path, capsys):
    assert cli.main(["train", "--recipe", "deit33", "--model", MODEL, "--data", str(data), "--output",
                     str(tmp_path / "x")]) == 2
    assert "Did you mean 'deit3'" in capsys.readouterr().err


def test_settings_take_their_field_types():
    assert parse_settings(["epochs=2", "lr=3e-4", "grad_clip=none", "crop_scale=0.25,1", "augment=3augment",
                           "layer_scale=1e-6"]) == {"epochs": 2, "lr": 3e-4, "grad_clip": None,
                                                    "crop_scale": (0.25, 1.0), "augment": "3augment",
                                                    "layer_scale": 1e-6}
    with pytest.raises(Exception, match="expected an integer"):
        parse_settings(["epochs=2.5"])


def test_finetune_weights_adapt_resolution_and_head(tmp_path):
    torch.manual_seed(0)
    source = vitedu.create_model(MODEL, num_classes=3)
    save_file(source.state_dict(), str(tmp_path / "model.safetensors"))
    target = vitedu.create_model(MODEL, num_classes=5, img_size=48)
    notes = load_finetune_weights(target, tmp_path)  # a run folder: its model.safetensors
    assert len(notes) == 2 and "from 64 to 144 patches" in notes[0] and "head.weight" in notes[1]
    own, old = target.state_dict(), source.state_dict()
    assert all(torch.equal(own[k], old[k]) for k in old if not k.startswith(("head", "pos_embed")))
    assert own["head.weight"].shape == (5, old["head.weight"].shape[1])
    with pytest.raises(Exception, match="does not fit"):
        load_finetune_weights(vitedu.create_model("vit_pico_patch4_32", num_classes=3), tmp_path)
