"""``vitedu train``: a paper's recipe on an ImageFolder tree (ImageNet, Imagenette, your own), on one device or many.

    vitedu train --recipe deit3 --model deit3_small_patch16_224 --data /path/to/imagenet --output runs/deit3_s
    torchrun --nproc_per_node=8 -m vitedu.cli train --config configs/deit3_small_in1k.toml --data ... --output ...
    torchrun --nproc_per_node=8 -m vitedu.cli train --recipe dino --model vit_small_patch16_224 --data ... --output D
    vitedu knn --weights D --data /path/to/imagenet  # DINO's teacher, D/ema.safetensors: also vitedu linear

``--budget full`` (the default) runs the paper's settings unchanged; ``smoke``/``cpu``/``gpu`` shrink them with
``Recipe.scaled`` for the size of the training set; ``--batch-size`` (the global batch, all processes together)
rescales the learning rate with the recipe's rule; ``--set key=value`` then changes any TrainConfig field as given.

Under torchrun each process trains on its own share of every epoch (``vitedu.data.Loader`` splits the epoch and does
DeiT's repeated augmentation itself) and ``fit`` keeps the replicas in step with DistributedDataParallel (NCCL on GPUs,
gloo on CPUs). The output folder gets ``config.json`` (the resolved TrainConfig), ``run.json`` (recipe, model, data,
command), ``log.jsonl``, ``checkpoints/`` and the final ``model.safetensors`` / ``ema.safetensors``; ``--resume``
continues the run in it.

``--recipe dino`` trains DINO (self-supervised: the labels of ``DATA/train`` are not used, and ``DATA/val`` is
optional) through :func:`vitedu.ssl.run.train_dino`: the model is the backbone (no classifier) under DINO's projection
head, ``--set`` also takes DINO's own settings (``vitedu.ssl.settings.DINOSettings``: ``--set out_dim=4096 --set
local_crops=6``), and the network to evaluate is the teacher, ``ema.safetensors`` (``vitedu knn`` / ``vitedu linear
--weights OUTPUT``); with a val split the run ends with the teacher's k-NN accuracy, also in ``run.json``.

Unreadable images (a truncated download, a file that is not an image) are skipped, not fatal: the next image of the
data set takes their place, a warning names each one the first time, and their paths are listed in
``skipped_images.txt`` in the output folder; the run ends by saying how many there were. Every other bad input (an
unknown recipe or model, a data folder that is missing or has no images, an output folder that holds another run)
stops the command before it writes anything, with a message that says what to change.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import json
import math
import os
import shlex
import sys
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..budget import BUDGETS
from .config import TrainConfig

SKIPPED_FILE = "skipped_images.txt"
DESCRIPTION = ("Train a model with a paper's recipe on an ImageFolder tree, on one device or under torchrun "
               "(torchrun --nproc_per_node=N -m vitedu.cli train ...). --recipe dino trains DINO without labels "
               "(DATA/val optional; --set also takes DINO's settings, e.g. out_dim=4096); evaluate its teacher, "
               "OUTPUT/ema.safetensors, with `vitedu knn` / `vitedu linear --weights OUTPUT`.")


class SetupError(Exception):
    """A bad argument or input found before training starts: printed as one line, exit status 2, nothing written."""


# --------------------------------------------------------------------------------------------------------------------
# Arguments

def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``vitedu train`` (shared by ``vitedu.cli`` and :func:`main`)."""
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--recipe", help="a recipe name: deit, deit3, rsb_a1, finetune, distill, levit, dino, ... "
                                       "(vitedu.train.recipes.list_recipes())")
    what.add_argument("--config", help="a run config, configs/NAME.toml or its NAME: names the recipe and model")
    parser.add_argument("--model", help="model name (`vitedu list`); with --config, replaces the config's")
    parser.add_argument("--data", required=True, type=Path, help="ImageFolder root: DATA/train/<class>/<image>, "
                                                                 "DATA/val/<class>/<image>")
    parser.add_argument("--output", required=True, type=Path, help="run folder: checkpoints, log, final weights")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    parser.add_argument("--budget", choices=BUDGETS, default="full",
                        help="full: the paper's settings (default); smoke/cpu/gpu: Recipe.scaled to the data set")
    parser.add_argument("--batch-size", type=int, help="global batch (all processes); the lr follows the recipe's "
                                                       "rule. Default: the recipe's (full) or the budget's")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="change a TrainConfig field after scaling, e.g. --set epochs=2 --set grad_clip=none "
                             "--set crop_scale=0.08,1 (repeatable)")
    parser.add_argument("--img-size", type=int, help="training resolution (default: the config's, else the model's)")
    parser.add_argument("--eval-img-size", type=int, help="evaluation resolution (default: the training one)")
    parser.add_argument("--workers", type=int, help="data-loading processes per training process "
                                                    "(default: CPU cores per process, at most 8)")
    parser.add_argument("--checkpoint-every", type=int, help="also checkpoint every this many steps (default: "
                                                             "at the end of each epoch only)")
    parser.add_argument("--device", help="cuda, cpu, mps (default: cuda:LOCAL_RANK when there is a GPU)")
    parser.add_argument("--teacher", help="teacher model for the distillation recipes: a vitedu or a timm name")
    parser.add_argument("--teacher-weights", type=Path, help="the teacher's trained weights (.safetensors or .pth)")
    parser.add_argument("--finetune", type=Path, help="initial weights (a .safetensors/.pth file, or a run folder: "
                                                      "its model.safetensors), for the finetune recipes")
    return parser


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``["epochs=2", "grad_clip=none", "crop_scale=0.08,1"]`` -> TrainConfig changes, each value converted to its
    field's type. Raises SetupError naming the valid keys for an unknown one."""
    hints = typing.get_type_hints(TrainConfig)
    valid = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "extra"]
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key, text = key.strip().replace("-", "_"), text.strip()
        if not sep:
            raise SetupError(f"--set expects KEY=VALUE, got {item!r} (e.g. --set epochs=2).")
        if key not in valid:
            from ..ssl.settings import names as dino_names

            close = difflib.get_close_matches(key, valid, n=3)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            if key in dino_names():
                hint = " It is a DINO setting: only with --recipe dino."
            raise SetupError(f"--set {item}: {key!r} is not a training setting.{hint} Valid: {', '.join(valid)}.")
        changes[key] = _convert(key, text, hints[key])
    return changes


def _convert(key: str, text: str, hint: Any) -> Any:
    args = typing.get_args(hint)
    optional = type(None) in args
    kinds = [a for a in args if a is not type(None)] if optional else [hint]
    if optional and text.lower() in ("none", "null", ""):
        return None
    kind = kinds[0]
    try:
        if typing.get_origin(kind) is tuple:
            parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
            if len(parts) != len(typing.get_args(kind)):
                raise ValueError
            return tuple(float(p) for p in parts)
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if kind not in (int, float, str):
            raise SetupError(f"--set cannot change {key} (type {kind}).")
        return kind(text)
    except ValueError:
        example = {int: "an integer", float: "a number", str: "a word"}.get(kind, "comma-separated numbers")
        name = getattr(hint, "__name__", str(hint)).replace("typing.", "")
        raise SetupError(f"--set {key}={text}: expected {example}" + (" or none" if optional else "")
                         + f" (the field's type is {name}).") from None


# --------------------------------------------------------------------------------------------------------------------
# Data

class SkipUnreadable(Dataset):
    """An ImageFolder whose unreadable images (not an image, truncated) are replaced by the next readable one.

    The replacement is deterministic (index + 1, + 2, ...), so a run stays reproducible and resumable; each bad file
    is warned about once per process and appended to ``log_path``; ``skipped()`` reads the distinct paths back (it
    sees every data-loading process, since they all append to the same file).
    """

    def __init__(self, dataset, log_path: str | Path | None = None):
        self.dataset, self.log_path = dataset, Path(log_path) if log_path is not None else None
        self.seen: dict[str, str] = {}  # this process's bad files

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):  # classes, samples, transform, ... of the ImageFolder
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int):
        from PIL import UnidentifiedImageError

        for offset in range(len(self.dataset)):
            i = (index + offset) % len(self.dataset)
            try:
                return self.dataset[i]
            except (UnidentifiedImageError, OSError) as error:  # OSError: "image file is truncated", unreadable file
                self._skip(self.dataset.samples[i][0], error)
        raise RuntimeError(f"none of the {len(self.dataset)} images of {self.dataset.root} can be read.")

    def _skip(self, path: str, error: Exception) -> None:
        if path in self.seen:
            return
        self.seen[path] = f"{type(error).__name__}: {error}"
        warnings.warn(f"skipping unreadable image {path} ({self.seen[path]}); the next image takes its place.",
                      stacklevel=2)
        if self.log_path is not None:
            with open(self.log_path, "a") as f:  # one short line, appended: safe from several processes
                f.write(f"{path}\t{self.seen[path]}\n".replace("\n", " ").rstrip() + "\n")

    def skipped(self) -> list[str]:
        """The distinct paths skipped so far, by any process writing to ``log_path`` (else by this one)."""
        if self.log_path is None or not self.log_path.is_file():
            return sorted(self.seen)
        return sorted({line.split("\t")[0] for line in self.log_path.read_text().splitlines() if line.strip()})


def image_folders(root: Path, image_size: int = 224, require_val: bool = True) -> tuple[Any, Any]:
    """The ``train`` and ``val`` ImageFolders of ``root`` (default transforms); SetupError when a folder is missing,
    has no images, or the two splits have different classes. Without ``require_val`` a missing ``val`` folder gives
    None (a self-supervised run needs none)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from ..data.imagenet import image_folder

    root = Path(root).expanduser()
    if not root.is_dir():
        raise SetupError(f"the data folder {root} does not exist. --data wants an ImageFolder tree: "
                         f"{root}/train/<class name>/<image>.jpg and {root}/val/<class name>/<image>.jpg.")
    splits = []
    for split in ("train", "val"):
        if split == "val" and not require_val and not (root / split).exists():
            splits.append(None)
            continue
        try:
            splits.append(image_folder(root, split, image_size))
        except FileNotFoundError as error:  # no folder; torchvision: no class folder, or no image in any of them
            folder = root / split
            if not folder.is_dir():
                raise SetupError(str(error)) from None
            raise SetupError(f"no images in {folder}: expected {folder}/<class name>/<image> with one of the "
                             f"extensions {', '.join(IMG_EXTENSIONS)} (torchvision: {error})") from None
    train, val = splits
    if val is not None and train.classes != val.classes:
        only = sorted(set(train.classes) ^ set(val.classes))
        raise SetupError(f"{root}/train and {root}/val have different class folders ({len(train.classes)} vs "
                         f"{len(val.classes)}; in one only: {', '.join(only[:5])}{' ...' if len(only) > 5 else ''}). "
                         "Both splits need the same class names, or the labels would not match.")
    return train, val


# --------------------------------------------------------------------------------------------------------------------
# Model, teacher, initial weights

def model_image_size(name: str) -> int:
    """The resolution a model preset is built for: its ``img_size``, else the number its name ends with, else 224."""
    from ..models import create_model

    with torch.device("meta"):  # only the configuration is wanted
        model = create_model(name)
    size = (getattr(model, "config", None) or {}).get("img_size") if isinstance(getattr(model, "config", None),
                                                                                  dict) else None
    if size is None:
        tail = name.rsplit("_", 1)[-1]
        size = int(tail) if tail.isdigit() else 224
    return int(size)


def build_model(name: str, config: TrainConfig, num_classes: int, image_size: int) -> tuple[nn.Module, dict]:
    """``create_model(name)`` with the recipe's stochastic depth / LayerScale / drop-path schedule (where the family has
    them), ``num_classes`` and ``img_size`` (where it has one); returns the model and the overrides used."""
    import inspect

    from ..models import create_model

    try:
        with torch.device("meta"):
            accepted = inspect.signature(type(create_model(name)).__init__).parameters
    except KeyError as error:
        raise SetupError(error.args[0]) from None
    overrides = {**config.model_overrides(name), "num_classes": num_classes}
    if "img_size" in accepted:
        overrides["img_size"] = image_size
    torch.manual_seed(config.seed)  # every process builds the same initial weights (DDP also broadcasts rank 0's)
    return create_model(name, **overrides), overrides


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            return state[key]
    return state


def load_finetune_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load pretrained weights to fine-tune from: a weights file, or a ``vitedu train`` output folder (its
    ``model.safetensors``). As DeiT's fine-tuning does, position embeddings are interpolated to the model's grid
    (a new resolution) and a classifier head of another shape (other classes) starts fresh; everything else must
    fit exactly (``vitedu.models.convert.load_checked``). Returns notes on what was adapted."""
    from ..models.convert import load_checked
    from ..models.vit import resize_pos_embed

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise SetupError(f"--finetune {path}: no such file. Give a .safetensors/.pth file or the output folder of a "
                         "vitedu train run (it holds model.safetensors).")
    state = dict(_read_state_dict(path))
    own = model.state_dict()
    notes = []
    pos = state.get("pos_embed")
    if pos is not None and "pos_embed" in own and pos.shape != own["pos_embed"].shape and hasattr(model, "patch_embed"):
        patches = model.patch_embed.num_patches
        prefix = own["pos_embed"].shape[1] - patches
        old_patches = pos.shape[1] - prefix  # a square grid with the same prefix tokens, else load_checked explains
        square = old_patches > 0 and math.isqrt(old_patches) ** 2 == old_patches
        if square and pos.shape[-1] == own["pos_embed"].shape[-1]:
            state["pos_embed"] = resize_pos_embed(pos, round(math.sqrt(patches)), prefix)
            notes.append(f"position embeddings interpolated from {old_patches} to {patches} patches")
    fresh = [k for k, v in state.items() if k.split(".")[0].startswith("head") and k in own
             and v.shape != own[k].shape]
    for key in fresh:
        state[key] = own[key]
    if fresh:
        notes.append(f"new classifier ({', '.join(fresh)}): the checkpoint's has another number of classes")
    try:
        load_checked(model, state, str(path))
    except ValueError as error:
        raise SetupError(f"--finetune: {error}") from None
    return notes


def build_teacher(name: str, weights: Path | None, num_classes: int) -> nn.Module:
    """The distillation teacher: a vitedu model, else a timm model of that name, with its trained ``weights``."""
    from ..models import create_model, list_models
    from ..models.convert import load_weights

    if weights is None:
        raise SetupError(f"--teacher {name} needs --teacher-weights PATH: an untrained teacher teaches nothing.")
    if not Path(weights).is_file():
        raise SetupError(f"--teacher-weights {weights}: no such file.")
    if name in list_models():
        teacher = create_model(name, num_classes=num_classes)
        try:
            return load_weights(teacher, str(weights))
        except ValueError as error:
            raise SetupError(f"--teacher-weights: {error}") from None
    import timm

    if not timm.is_model(name):
        try:
            create_model(name)
        except KeyError as error:
            raise SetupError(f"unknown teacher: {error.args[0]} Nor is it a timm model name.") from None
    teacher = timm.create_model(name, pretrained=False, num_classes=num_classes)
    try:
        timm.models.load_checkpoint(teacher, str(weights), strict=True)
    except RuntimeError as error:
        raise SetupError(f"--teacher-weights {weights} do not fit timm's {name} with {num_classes} classes: "
                         f"{str(error).splitlines()[0]}") from None
    return teacher


def check_replicas_agree(model: nn.Module, rank: int, world: int) -> None:
    """Print this process's final weights checksum and, under torchrun, raise RuntimeError unless every process ends
    with the same weights (the gather also waits for rank 0's files)."""
    checksum = weights_checksum(model)
    print(f"rank {rank}/{world}: final weights sha256 {checksum}", flush=True)
    if world > 1:
        import torch.distributed as dist

        everyone: list[str | None] = [None] * world
        dist.all_gather_object(everyone, checksum)
        if len(set(everyone)) != 1:
            raise RuntimeError(f"the replicas disagree after training: {everyone}.")


def weights_checksum(weights: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """A short sha256 of a model's (or state dict's) tensors, names and dtypes: equal iff the weights are equal bit
    for bit. Each process prints it at the end of a distributed run, which shows that the replicas agree."""
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}:{tensor.dtype}:{tuple(state[key].shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------------------------
# The output folder

def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def check_output(output: Path, resume: bool, model_name: str | None = None, model: nn.Module | None = None
                 ) -> Path | None:
    """The checkpoint to resume from (None: a fresh run). SetupError when the folder holds a run and ``resume`` is
    off, or (given ``model_name`` and ``model``) holds a run of another model: another name or architecture."""
    from . import checkpoint

    if output.exists() and not output.is_dir():
        raise SetupError(f"--output {output} is a file, not a folder.")
    try:
        found = checkpoint.latest(output)
    except FileNotFoundError as error:
        raise SetupError(str(error)) from None
    if found is None:
        return None
    if not resume:
        raise SetupError(f"{output} already holds a run ({found.name}). Pass --resume to continue it, or choose "
                         "another --output: nothing was overwritten.")
    if model is None:
        return found
    run_file = output / "run.json"
    old_name = json.loads(run_file.read_text()).get("model") if run_file.is_file() else None
    meta = checkpoint.read_meta(found)
    if old_name not in (None, model_name) or meta.get("model") != type(model).__name__:
        raise SetupError(f"{output} holds a run of {old_name or meta.get('model')}, not {model_name}: resume with "
                         "the same --model, or choose another --output. Nothing was changed.")
    old_config, new_config = meta.get("model_config") or {}, _plain(getattr(model, "config", None) or {})
    differs = sorted(k for k in set(old_config) | set(new_config)
                     if "drop_path" not in k and old_config.get(k) != new_config.get(k))
    if differs:
        details = ", ".join(f"{k} {old_config.get(k)!r} -> {new_config.get(k)!r}" for k in differs[:6])
        raise SetupError(f"{output} holds a run of a {meta.get('model')} built differently ({details}): resume with "
                         "the same model, image size and data, or choose another --output. Nothing was changed.")
    return found


# --------------------------------------------------------------------------------------------------------------------
# The command

def _default_workers() -> int:
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(8, (os.cpu_count() or 1) // per_node))


def resolve(args: argparse.Namespace, train_images: int) -> tuple[str, str, TrainConfig, dict]:
    """(recipe name, model name, the TrainConfig to run, the run config's extra settings) from the arguments."""
    from .recipes import get_recipe, load_run_config

    if args.config is not None:
        try:
            run_config = load_run_config(args.config)
        except (FileNotFoundError, ValueError, TypeError) as error:
            raise SetupError(str(error)) from None
        recipe = dataclasses.replace(get_recipe(run_config.recipe), imagenet=run_config.config)
        model_name, extra = args.model or run_config.model, dict(run_config.extra)
    else:
        try:
            recipe = get_recipe(args.recipe)
        except KeyError as error:
            raise SetupError(error.args[0]) from None
        if args.model is None:
            raise SetupError(f"--recipe {args.recipe} needs --model NAME (`vitedu list` shows them), or use --config.")
        model_name, extra = args.model, {}
    if args.batch_size is not None and args.batch_size < 1:
        raise SetupError(f"--batch-size must be positive, got {args.batch_size}.")
    config = recipe.scaled(args.budget, train_images=train_images, batch_size=args.batch_size)
    settings, dino_settings = _split_dino_settings(args.settings, "dino" in config.extra)
    try:
        config = config.replace(**parse_settings(settings))
        if dino_settings:
            from ..ssl.settings import DINOSettings

            dino = DINOSettings.from_dict(config.extra["dino"]).replace(**dino_settings)
            config = config.replace(extra={**config.extra, "dino": dino.to_dict()})
    except (ValueError, TypeError) as error:
        raise SetupError(f"--set: {error}") from None
    return recipe.name, model_name, config, extra


def _split_dino_settings(items: list[str], dino: bool) -> tuple[list[str], dict[str, Any]]:
    """``--set`` items -> (the TrainConfig ones, DINO's own converted to their types); for a recipe without DINO
    settings, all items are TrainConfig ones."""
    if not dino:
        return items, {}
    from ..ssl.settings import DINOSettings, names

    hints = typing.get_type_hints(DINOSettings)
    train_items, changes = [], {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if sep and key in names():
            changes[key] = _convert(key, text.strip(), hints[key])
        else:
            train_items.append(item)
    return train_items, changes


def run(args: argparse.Namespace) -> int:
    """``vitedu train`` with parsed arguments; returns the exit status (2: bad input, reported on stderr)."""
    from .distributed import cleanup, init_distributed

    rank, world, _, device = init_distributed(args.device)
    try:
        return _run(args, rank, world, device)
    except SetupError as error:
        prefix = f"[rank {rank}] " if world > 1 else ""
        if rank == 0 or world > 1:
            print(f"{prefix}vitedu train: error: {error}", file=sys.stderr, flush=True)
        return 2
    finally:
        cleanup()


def _run(args: argparse.Namespace, rank: int, world: int, device: torch.device) -> int:
    from ..data.imagenet import IMAGENET_MEAN, IMAGENET_STD
    from ..data.loader import Loader
    from ..data.transforms import eval_transform, train_transform
    from .engine import fit

    main = rank == 0
    say = print if main else (lambda *a, **k: None)
    if args.config is None and args.recipe is not None:  # an unknown recipe or model fails before the data is scanned
        from .recipes import get_recipe

        try:
            get_recipe(args.recipe)
        except KeyError as error:
            raise SetupError(error.args[0]) from None
    if args.model is not None:
        try:
            _check_model_name(args.model)
        except KeyError as error:
            raise SetupError(error.args[0]) from None

    check_output(args.output, args.resume)  # an existing run stops us before the (long) scan of the data
    train_set, val_set = image_folders(args.data, require_val=not _is_dino(args))
    recipe_name, model_name, config, extra = resolve(args, len(train_set))
    try:
        _check_model_name(model_name)
    except KeyError as error:
        raise SetupError(error.args[0]) from None
    image_size = args.img_size or extra.get("img_size") or model_image_size(model_name)
    eval_size = args.eval_img_size or extra.get("eval_img_size") or image_size
    num_classes = len(train_set.classes)
    if extra.get("num_classes") not in (None, num_classes):
        warnings.warn(f"the run config trains {extra['num_classes']} classes but {args.data} has {num_classes}: the "
                      "model gets the data's.")

    if config.batch_size % world:
        raise SetupError(f"the batch of {config.batch_size} images does not split evenly over {world} processes: pass "
                         f"--batch-size with a multiple of {world}.")
    per_process = config.batch_size // world
    per_process_images = math.ceil(len(train_set) / world)
    if per_process > per_process_images:
        raise SetupError(f"each process gets {per_process_images} training images per epoch, fewer than its batch of "
                         f"{per_process} ({config.batch_size} / {world} processes): pass a smaller --batch-size.")
    if "dino" in config.extra:
        from ..ssl.run import train_dino
        from .recipes import get_recipe

        return train_dino(args, rank=rank, world=world, device=device, train_set=train_set, val_set=val_set,
                          recipe_config=get_recipe(recipe_name).imagenet, model_name=model_name, config=config,
                          image_size=image_size, eval_size=eval_size, say=say)
    if config.distillation != "none" and args.teacher is None:
        raise SetupError(f"recipe {recipe_name!r} distils from a teacher (the paper's: "
                         f"{config.extra.get('teacher', 'a trained convnet')}): pass --teacher NAME "
                         "--teacher-weights PATH.")
    if recipe_name.startswith("finetune") and args.finetune is None:
        if args.budget == "full":
            example = f", e.g. of configs/{extra['finetune_from']}.toml" if "finetune_from" in extra else ""
            raise SetupError(f"recipe {recipe_name!r} fine-tunes a pretrained model: pass --finetune PATH (weights, or "
                             f"the output folder of a pretraining run{example}).")
        warnings.warn(f"recipe {recipe_name!r} without --finetune: fine-tuning from random weights.")

    model, overrides = build_model(model_name, config, num_classes, image_size)
    if config.distillation != "none" and not hasattr(model, "distilled_training"):
        raise SetupError(f"recipe {recipe_name!r} distils, but {model_name} has no distillation head: use a distilled "
                         "model, e.g. deit_small_distilled_patch16_224.")
    notes = load_finetune_weights(model, args.finetune) if args.finetune is not None else []
    teacher = build_teacher(args.teacher, args.teacher_weights, num_classes) if args.teacher else None
    found = check_output(args.output, args.resume, model_name, model)

    mean, std = IMAGENET_MEAN, IMAGENET_STD
    train_set.transform = train_transform(config, image_size, mean, std)
    val_set.transform = eval_transform(eval_size, mean, std, config.eval_crop_ratio)
    log = args.output / SKIPPED_FILE
    train_data, val_data = SkipUnreadable(train_set, log), SkipUnreadable(val_set, log)
    workers = _default_workers() if args.workers is None else args.workers
    common = {"num_workers": workers, "num_replicas": world, "rank": rank, "pin_memory": device.type == "cuda"}
    train_loader = Loader(train_data, per_process, shuffle=True, seed=config.seed, drop_last=True,
                          repeats=config.repeated_aug, **common)
    val_loader = Loader(val_data, per_process, **common)

    steps = len(train_loader)
    params = sum(p.numel() for p in model.parameters())
    say(f"vitedu train: recipe {recipe_name} (budget {args.budget}), model {model_name} ({params / 1e6:.2f} M "
        f"parameters, {image_size} px, eval {eval_size} px; {', '.join(f'{k}={v}' for k, v in overrides.items())})")
    say(f"  data {args.data}: {len(train_set)} train / {len(val_set)} val images, {num_classes} classes")
    say(f"  {config.epochs} epochs x {steps} steps = {config.epochs * steps} steps of {config.batch_size} images "
        f"({per_process} per process x {world} process{'es' if world > 1 else ''}, {device}); {config.optimizer} lr "
        f"{config.lr:.3g}, {config.loss}, {config.augment}, repeated aug {config.repeated_aug}")
    for note in notes:
        say(f"  fine-tuning from {args.finetune}: {note}")
    say(f"  output {args.output}" + (f" (resuming {found.name})" if found is not None else ""), flush=True)

    if main:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "config.json").write_text(json.dumps(config.to_dict(), indent=1) + "\n")
        run_info = {"recipe": recipe_name, "model": model_name, "model_overrides": overrides,
                    "image_size": image_size, "eval_image_size": eval_size,
                    "data": str(args.data.expanduser().resolve()),
                    "train_images": len(train_set), "val_images": len(val_set), "classes": num_classes,
                    "budget": args.budget, "world_size": world, "finetune": str(args.finetune or ""),
                    "teacher": args.teacher, "command": shlex.join(["vitedu", *_argv(args)])}
        (args.output / "run.json").write_text(json.dumps(_plain(run_info), indent=1) + "\n")

    history = fit(model, train_loader, val_loader, config, teacher=teacher, device=device, output_dir=args.output,
                  resume=args.resume, checkpoint_every=args.checkpoint_every, desc=model_name)

    check_replicas_agree(model, rank, world)
    skipped = train_data.skipped()
    if skipped and main:
        say(f"skipped {len(skipped)} unreadable image(s), listed in {log}")
    last = history.last if history.epochs else {}
    summary = ", ".join(f"{k} {last[k]:.4f}" for k in ("train_loss", "val_loss", "val_acc", "ema_val_acc") if k in last)
    say(f"done: {summary}; weights in {args.output / 'model.safetensors'}", flush=True)
    return 0


def _is_dino(args: argparse.Namespace) -> bool:
    """Whether the recipe asked for is a DINO one (no val split needed); False when it cannot be read (resolve then
    says why)."""
    from .recipes import get_recipe, load_run_config

    try:
        name = args.recipe if args.config is None else load_run_config(args.config).recipe
        return "dino" in get_recipe(name).imagenet.extra
    except (KeyError, FileNotFoundError, ValueError, TypeError):
        return False


def _check_model_name(name: str) -> None:
    from ..models import list_models
    from ..models._registry import create_model

    if name not in list_models():
        create_model(name)  # raises the registry's KeyError, with close matches


def _argv(args: argparse.Namespace) -> list[str]:
    """The command line from ``train`` on (``vitedu.cli`` leaves it in sys.argv, :func:`main` in ``args.argv``)."""
    return getattr(args, "argv", None) or sys.argv[1:]


def main(argv: list[str] | None = None) -> int:
    """``vitedu train ARGS``; returns the exit status."""
    parser = add_arguments(argparse.ArgumentParser(prog="vitedu train", description=DESCRIPTION))
    args = parser.parse_args(argv)
    args.argv = ["train", *(argv if argv is not None else sys.argv[1:])]
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
