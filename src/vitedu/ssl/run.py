"""``vitedu train --recipe dino``: DINO on an ImageFolder tree, one process or many (torchrun); ``vitedu.train.run``
calls :func:`train_dino` once the recipe, model, data and image size are known.

The student is ``MultiCropWrapper(backbone, DINOHead)``, the backbone a registry model without classifier; the
teacher is ``fit``'s EMA of the student (``ema_decay`` -> ``ema_decay_end``), and ``DINOObjective`` makes ``fit``
train with DINO's loss. Every image of ``DATA/train`` (labels unused) gives 2 global crops at the run's image size and
``local_crops`` smaller ones (``MultiCropAugmentation``, seeded per sample by ``vitedu.data.Loader``, so a run resumes
to the same weights). Under torchrun ``fit`` wraps the student in DistributedDataParallel and ``DINOLoss`` averages its
centre over the processes. The output folder gets what a supervised run writes; ``ema.safetensors`` (the teacher:
``backbone.*`` + ``head.*``) is the network to evaluate (``vitedu knn`` / ``vitedu linear``). With a ``DATA/val``
split the run ends with the teacher's weighted k-NN accuracy (k = 20, T = 0.07), printed and written to ``run.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any, Callable

import torch

from ..train.config import TrainConfig
from .settings import DINOSettings

# TrainConfig settings a DINO run does not read (its views come from MultiCropAugmentation, its loss is DINOLoss):
# changing them would change nothing, so the run refuses it.
NOT_READ = ("augment", "rand_augment", "color_jitter", "random_erasing", "loss", "label_smoothing",
            "bce_target_threshold", "trainable")


def check_config(config: TrainConfig, recipe_config: TrainConfig) -> DINOSettings:
    """The DINO settings of ``config`` (``extra["dino"]``), after checking that the run reads every changed setting
    and that they fit its length. Raises ValueError saying what to change; returns DINOSettings."""
    changed = [name for name in NOT_READ if getattr(config, name) != getattr(recipe_config, name)]
    if changed:
        raise ValueError(f"a DINO run does not read {', '.join(changed)} (its views come from MultiCropAugmentation, "
                         "its loss is DINOLoss): drop the --set of " + ", ".join(changed) + ". DINO's own settings: "
                         + ", ".join(DINOSettings().to_dict()) + ".")
    if config.crop != "rrc":
        raise ValueError(f"DINO's crops are random resized crops (crop='rrc'), got crop={config.crop!r}: change "
                         "their scale with --set crop_scale=LOW,HIGH instead.")
    if config.ema_decay is None:
        raise ValueError("DINO's teacher is the EMA of the student: ema_decay cannot be none (the paper: 0.996).")
    settings = DINOSettings.from_dict(config.extra["dino"])
    settings.check(config.epochs)
    return settings


def patch_size(backbone: torch.nn.Module) -> int:
    """The backbone's patch size (its ``config['patch_size']``), 1 for a model without patches."""
    config = getattr(backbone, "config", None)
    return int(config.get("patch_size") or 1) if isinstance(config, dict) else 1


def train_dino(args: argparse.Namespace, *, rank: int, world: int, device: torch.device, train_set, val_set,
               recipe_config: TrainConfig, model_name: str, config: TrainConfig, image_size: int, eval_size: int,
               say: Callable[..., None]) -> int:
    """Train DINO as ``vitedu train`` does a supervised recipe (see the module docstring); returns the exit status.
    ``train_set`` / ``val_set`` (or None): the ImageFolders of ``args.data``; raises SetupError on bad input."""
    from ..data.imagenet import IMAGENET_MEAN, IMAGENET_STD
    from ..data.loader import Loader
    from ..train.engine import fit
    from ..train.run import (
        SKIPPED_FILE,
        SetupError,
        SkipUnreadable,
        _argv,
        _default_workers,
        _plain,
        build_model,
        check_output,
        check_replicas_agree,
    )
    from .dino import MultiCropAugmentation, build_dino
    from .evaluate import TEACHER_FILE, backbone_dim

    main = rank == 0
    for option in ("teacher", "finetune"):
        if getattr(args, option, None) is not None:
            raise SetupError(f"--{option} does not apply to a DINO run (its teacher is the EMA of the student).")
    try:
        settings = check_config(config, recipe_config)
    except ValueError as error:
        raise SetupError(str(error)) from None

    backbone, overrides = build_model(model_name, config, 0, image_size)  # seeds config.seed: the same on every rank
    local_size = settings.local_size_for(image_size, patch_size(backbone))
    model, objective = build_dino(backbone, backbone_dim(backbone, torch.zeros(3, image_size, image_size)), settings,
                                  config.epochs)
    head = model.head
    found = check_output(args.output, args.resume, model_name, model)
    views = {"global_size": image_size, "local_size": local_size, "local_crops": settings.local_crops,
             "global_scale": list(config.crop_scale), "local_scale": list(settings.local_scale),
             "blur_radius": list(config.blur_radius)}
    head_shape = {k: getattr(settings, k) for k in ("out_dim", "hidden_dim", "bottleneck_dim", "head_layers",
                                                    "norm_last_layer", "use_bn_in_head")}
    if found is not None:  # the head and the crops must be those of the run in the folder
        old = json.loads((args.output / "run.json").read_text()) if (args.output / "run.json").is_file() else {}
        new = {"image_size": image_size, **_plain(views), **head_shape}
        before = {"image_size": old.get("image_size"), **old.get("dino_views", {}), **old.get("dino_head", {})}
        differs = [f"{k} {before[k]!r} -> {v!r}" for k, v in new.items() if before.get(k) not in (None, v)]
        if differs:
            raise SetupError(f"{args.output} holds a DINO run built differently ({', '.join(differs)}): resume with "
                             "the same settings (--img-size, --set), or choose another --output. Nothing was changed.")

    mean, std = IMAGENET_MEAN, IMAGENET_STD
    train_set.transform = MultiCropAugmentation(image_size, local_size, settings.local_crops, config.crop_scale,
                                                settings.local_scale, mean, std, config.blur_radius)
    log = args.output / SKIPPED_FILE
    train_data = SkipUnreadable(train_set, log)
    workers = _default_workers() if args.workers is None else args.workers
    per_process = config.batch_size // world
    train_loader = Loader(train_data, per_process, shuffle=True, seed=config.seed, drop_last=True,
                          repeats=config.repeated_aug, num_workers=workers, num_replicas=world, rank=rank,
                          pin_memory=device.type == "cuda")
    objective.loss.to(device)

    steps = len(train_loader)
    params = sum(p.numel() for p in backbone.parameters())
    say(f"vitedu train: recipe dino (budget {args.budget}), model {model_name} ({params / 1e6:.2f} M backbone "
        f"parameters, {image_size} px; {', '.join(f'{k}={v}' for k, v in overrides.items())}) + DINO head "
        f"({sum(p.numel() for p in head.parameters()) / 1e6:.2f} M, K={settings.out_dim})")
    say(f"  data {args.data}: {len(train_set)} train images (labels unused)"
        + (f", {len(val_set)} val images for the final k-NN" if val_set is not None else ", no val split (no k-NN)"))
    say(f"  views: 2 x {image_size} px (scale {tuple(config.crop_scale)}) + {settings.local_crops} x {local_size} px "
        f"(scale {settings.local_scale}); teacher temp {settings.warmup_teacher_temp:g} -> {settings.teacher_temp:g} "
        f"over {settings.warmup_teacher_temp_epochs} epochs, student {settings.student_temp:g}; last layer frozen "
        f"{settings.freeze_last_layer} epoch(s)")
    say(f"  {config.epochs} epochs x {steps} steps = {config.epochs * steps} steps of {config.batch_size} images "
        f"({per_process} per process x {world} process{'es' if world > 1 else ''}, {device}); {config.optimizer} lr "
        f"{config.lr:.3g}, wd {config.weight_decay:g} -> {config.weight_decay_end}, teacher momentum "
        f"{config.ema_decay:.4g} -> {config.ema_decay_end}")
    say(f"  output {args.output}" + (f" (resuming {found.name})" if found is not None else ""), flush=True)

    run_info: dict[str, Any] = {
        "recipe": config.extra.get("recipe", "dino"), "model": model_name, "model_overrides": overrides,
        "image_size": image_size, "eval_image_size": eval_size, "dino_views": views, "dino_head": head_shape,
        "data": str(args.data.expanduser().resolve()), "train_images": len(train_set),
        "val_images": len(val_set) if val_set is not None else 0, "classes": len(train_set.classes),
        "budget": args.budget, "world_size": world, "evaluate": TEACHER_FILE,
        "command": shlex.join(["vitedu", *_argv(args)])}
    if main:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "config.json").write_text(json.dumps(config.to_dict(), indent=1) + "\n")
        _write_json(args.output / "run.json", _plain(run_info))

    history = fit(model, train_loader, None, config, device=device, output_dir=args.output, resume=args.resume,
                  checkpoint_every=args.checkpoint_every, desc=model_name, objective=objective)

    check_replicas_agree(model, rank, world)  # also waits for rank 0's ema.safetensors
    skipped = train_data.skipped()
    if skipped and main:
        say(f"skipped {len(skipped)} unreadable image(s), listed in {log}")
    last = history.last if history.epochs else {}
    say(f"done: train_loss {last.get('train_loss', float('nan')):.4f}; the teacher (evaluate it: vitedu knn / vitedu "
        f"linear --weights {args.output / TEACHER_FILE}), the student in {args.output / 'model.safetensors'}",
        flush=True)

    if val_set is not None:
        knn = final_knn(args, model, config, eval_size, device, workers, rank, world)
        if main:
            run_info["knn"] = knn
            _write_json(args.output / "run.json", _plain(run_info))
            say(f"teacher k-NN (k={knn['k']}, T={knn['temperature']:g}) top-1 on {knn['val_images']} val images: "
                f"{knn['accuracy']:.4f}", flush=True)
    return 0


def final_knn(args: argparse.Namespace, model: torch.nn.Module, config: TrainConfig, eval_size: int,
              device: torch.device, workers: int, rank: int, world: int) -> dict | None:
    """The teacher's (``ema.safetensors``) weighted k-NN accuracy on ``args.data``, its features computed by every
    process and gathered on rank 0 (the others get None). Returns :func:`vitedu.ssl.evaluate.knn_evaluation`'s dict."""
    import copy

    from safetensors.torch import load_file

    from ..models.convert import load_checked
    from .evaluate import TEACHER_FILE, _default, knn_evaluation, split_features
    from .knn import knn_accuracy

    teacher = copy.deepcopy(model)
    load_checked(teacher, load_file(str(args.output / TEACHER_FILE)), str(args.output / TEACHER_FILE))
    features = split_features(teacher.backbone.to(device), args.data, eval_size, config.eval_crop_ratio,
                              max(1, config.batch_size // world), device, workers, rank=rank, world=world)
    result = None
    if rank == 0:
        result = knn_evaluation(features, _default(knn_accuracy, "k"), _default(knn_accuracy, "temperature"), device)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # the processes leave together
    return result


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")
