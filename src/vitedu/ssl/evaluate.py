"""``vitedu knn`` and ``vitedu linear``: the two evaluations of frozen features (DINO section 4.1) on an ImageFolder.

    vitedu knn --model vit_small_patch16_224 --weights runs/dino_s/ema.safetensors --data /path/to/imagenet
    vitedu linear --weights runs/dino_s --data /path/to/imagenet --epochs 100 --output runs/dino_s/linear.json

Both build the backbone (``--model``, no classifier), load ``--weights``, compute the pooled feature (the class token
after the final norm for a ViT) of every image of ``DATA/train`` and ``DATA/val`` with the evaluation transform
(resize to ``image_size / crop_ratio``, centre crop; eval_knn.py's Resize(256) + CenterCrop(224) at 224 px), then
print the top-1 accuracy on ``val``: ``knn`` with the weighted k-NN vote of :func:`vitedu.ssl.knn.knn_accuracy` on
L2-normalised features, ``linear`` with :func:`vitedu.ssl.linear.linear_probe` trained on the raw training features.
``--output FILE`` also writes the result as JSON.

``--weights``: a ``.safetensors`` (or ``.pth``, read with ``weights_only=True``) file holding either a backbone's state
dict or a DINO run's wrapper (``backbone.*`` and ``head.*`` keys: the backbone is kept, the projection head dropped),
or a supervised model's (its classifier is dropped); or the output folder of ``vitedu train --recipe dino``, whose
``ema.safetensors`` is the teacher, the network DINO evaluates, and whose ``run.json`` gives the model and image size.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .knn import extract_features, knn_accuracy
from .linear import linear_probe

TEACHER_FILE = "ema.safetensors"  # fit's EMA of the student: DINO's teacher
CLASSIFIER_PREFIXES = ("head.", "head_dist.", "fc.")  # the classifier of a supervised vitedu model
COMMANDS = {
    "knn": "weighted k-NN accuracy of frozen features (DINO's k-NN evaluation) on DATA/train -> DATA/val",
    "linear": "linear-probe accuracy of frozen features (DINO's linear evaluation) on DATA/train -> DATA/val",
}


def _default(function, name: str) -> Any:
    """The default of ``function``'s argument ``name``: the k-NN and probe defaults live in one place, their code."""
    return inspect.signature(function).parameters[name].default


# --------------------------------------------------------------------------------------------------------------------
# Weights

def read_backbone_state(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The backbone weights in ``path`` and notes on what was dropped: the ``backbone.*`` entries without their prefix
    for a DINO wrapper (its ``head.*``, the projection head, dropped), else the state dict as it is. Returns
    ``(state_dict, notes)``."""
    from ..train.run import SetupError, _read_state_dict

    path = Path(path)
    if not path.is_file():
        raise SetupError(f"--weights {path}: no such file. Give a .safetensors file, or the output folder of a DINO "
                         f"run (it holds {TEACHER_FILE}, the teacher).")
    try:
        state = dict(_read_state_dict(path))
    except Exception as error:  # a file that is not a weights file: say which, not a traceback
        raise SetupError(f"--weights {path} cannot be read as weights ({type(error).__name__}: {error}).") from None
    if not any(key.startswith("backbone.") for key in state):
        return state, []
    dropped = sorted({key.split(".")[0] for key in state if not key.startswith("backbone.")})
    state = {key[len("backbone."):]: value for key, value in state.items() if key.startswith("backbone.")}
    return state, [f"the backbone of a DINO wrapper (dropped: {', '.join(dropped)})"] if dropped else []


def load_backbone(model_name: str, weights: str | Path, image_size: int | None = None) -> tuple[nn.Module, list[str]]:
    """``create_model(model_name, num_classes=0)`` (at ``image_size`` where the model takes one) holding the backbone
    weights of ``weights`` (see :func:`read_backbone_state`; a supervised model's classifier is dropped). Raises
    SetupError naming the keys that do not fit. Returns ``(backbone in eval mode, notes)``."""
    from ..models import create_model
    from ..models.convert import load_checked
    from ..train.run import SetupError, _check_model_name

    try:
        _check_model_name(model_name)
        with torch.device("meta"):
            accepted = inspect.signature(type(create_model(model_name)).__init__).parameters
    except KeyError as error:
        raise SetupError(error.args[0]) from None
    overrides = {"num_classes": 0, **({"img_size": image_size} if image_size and "img_size" in accepted else {})}
    backbone = create_model(model_name, **overrides)
    state, notes = read_backbone_state(weights)
    own = backbone.state_dict()
    classifier = [k for k in state if k not in own and k.startswith(CLASSIFIER_PREFIXES)]
    if classifier:
        state = {k: v for k, v in state.items() if k not in classifier}
        notes.append(f"a supervised model's classifier dropped ({', '.join(classifier)})")
    try:
        load_checked(backbone, state, str(weights))
    except ValueError as error:
        raise SetupError(f"--weights {weights} are not weights of {model_name}"
                         f"{f' at {image_size} px' if 'img_size' in overrides else ''}: {error} Pass the --model (and "
                         "--image-size) the weights were trained with.") from None
    return backbone.eval(), notes


# --------------------------------------------------------------------------------------------------------------------
# Features

@torch.no_grad()
def dataset_features(backbone: nn.Module, dataset, batch_size: int, device: torch.device | str = "cpu",
                     workers: int = 0, normalize: bool = True, rank: int = 0, world: int = 1
                     ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The features of every image of ``dataset``, in its order (:func:`vitedu.ssl.knn.extract_features`). Under
    torch.distributed (``world`` > 1) each process computes every ``world``-th image and rank 0 gathers them; the
    other processes get None. Returns ``(features (N, D), labels (N,))`` on the CPU."""
    from torch.utils.data import DataLoader, Subset

    part = Subset(dataset, range(rank, len(dataset), world)) if world > 1 else dataset
    loader = DataLoader(part, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=torch.device(device).type == "cuda")
    if len(part):
        features, labels = extract_features(backbone, loader, device, normalize=normalize)
    else:  # more processes than images
        dim = backbone_dim(backbone, dataset[0][0].to(device))
        features, labels = torch.zeros(0, dim), torch.zeros(0, dtype=torch.long)
    if world == 1:
        return features, labels
    parts: list | None = [None] * world if rank == 0 else None
    dist.gather_object((features, labels), parts, dst=0)
    if rank != 0:
        return None
    everything = torch.empty(len(dataset), features.shape[1]), torch.empty(len(dataset), dtype=torch.long)
    for r, (f, y) in enumerate(parts):  # process r holds images r, r + world, ...: put them back in order
        everything[0][r::world], everything[1][r::world] = f, y
    return everything


def backbone_dim(backbone: nn.Module, image: torch.Tensor) -> int:
    """The width of ``backbone``'s pooled feature: ``num_features``, else measured on ``image`` (C, H, W)."""
    from .dino import backbone_features

    if getattr(backbone, "num_features", None):
        return int(backbone.num_features)
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        dim = backbone_features(backbone, image.unsqueeze(0)).shape[-1]
    backbone.train(was_training)
    return int(dim)


def split_features(backbone: nn.Module, data: str | Path, image_size: int, crop_ratio: float, batch_size: int,
                   device: torch.device | str = "cpu", workers: int = 0, normalize: bool = True, rank: int = 0,
                   world: int = 1) -> dict | None:
    """The features of ``data/train`` and ``data/val`` through the evaluation transform (ImageNet statistics), as
    ``{"train": (features, labels), "val": (features, labels), "classes": [...]}`` (on rank 0; None elsewhere).
    Unreadable images are replaced as in ``vitedu train`` (SkipUnreadable)."""
    from ..data.imagenet import IMAGENET_MEAN, IMAGENET_STD
    from ..data.transforms import eval_transform
    from ..train.run import SkipUnreadable, image_folders

    train_set, val_set = image_folders(Path(data))
    transform = eval_transform(image_size, IMAGENET_MEAN, IMAGENET_STD, crop_ratio)
    out: dict[str, Any] = {"classes": train_set.classes}
    for name, split in (("train", train_set), ("val", val_set)):
        split.transform = transform
        out[name] = dataset_features(backbone, SkipUnreadable(split), batch_size, device, workers, normalize, rank,
                                     world)
    return out if rank == 0 else None


def knn_evaluation(features: dict, k: int, temperature: float, device: torch.device | str = "cpu") -> dict:
    """Weighted k-NN top-1 on ``split_features``'s output (``k`` capped at the number of training images), the
    memory bank on ``device``. Returns a dict: accuracy, k, temperature, train_images, val_images."""
    (train_f, train_y), (val_f, val_y) = features["train"], features["val"]
    k = min(k, len(train_f))
    accuracy = knn_accuracy(train_f.to(device), train_y, val_f, val_y, k=k, temperature=temperature,
                            num_classes=len(features["classes"]))
    return {"accuracy": accuracy, "k": k, "temperature": temperature, "train_images": len(train_f),
            "val_images": len(val_f)}


# --------------------------------------------------------------------------------------------------------------------
# The commands

def add_arguments(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The options of ``vitedu knn`` or ``vitedu linear`` (``command``)."""
    parser.add_argument("--model", help="the backbone's model name (`vitedu list`); default: the run's, when "
                                        "--weights is a DINO run folder")
    parser.add_argument("--weights", required=True, type=Path,
                        help=f"a .safetensors file (a backbone, a DINO wrapper: backbone.* + head.*, or a supervised "
                             f"model), or a DINO run folder: its {TEACHER_FILE}, the teacher")
    parser.add_argument("--data", required=True, type=Path, help="ImageFolder root: DATA/train/<class>/<image>, "
                                                                 "DATA/val/<class>/<image>")
    parser.add_argument("--image-size", "--img-size", dest="image_size", type=int,
                        help="evaluation resolution (default: the run's, else the model's)")
    parser.add_argument("--crop-ratio", type=float, default=0.875,
                        help="resize to image_size / ratio, then centre crop (default 0.875: eval_knn.py's 256 -> 224)")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="images per forward pass for the features (default 128, eval_knn.py's)")
    parser.add_argument("--workers", type=int, default=0, help="data-loading processes (default 0)")
    parser.add_argument("--device", help="cuda, cpu, mps (default: a GPU if there is one)")
    parser.add_argument("--output", type=Path, help="also write the result to this JSON file")
    if command == "knn":
        parser.add_argument("--k", type=int, default=_default(knn_accuracy, "k"),
                            help="neighbours that vote (default %(default)s, the paper's)")
        parser.add_argument("--temperature", type=float, default=_default(knn_accuracy, "temperature"),
                            help="vote weight exp(similarity / T) (default %(default)s, the paper's)")
    elif command == "linear":
        parser.add_argument("--epochs", type=int, default=_default(linear_probe, "epochs"),
                            help="epochs of the probe (default %(default)s, eval_linear.py's)")
        parser.add_argument("--lr", type=float, default=_default(linear_probe, "lr"),
                            help="SGD lr for a batch of 256, scaled to --probe-batch-size (default %(default)s, "
                                 "eval_linear.py's, meant for ImageNet: sweep it on small data)")
        parser.add_argument("--weight-decay", type=float, default=_default(linear_probe, "weight_decay"),
                            help="default %(default)s")
        parser.add_argument("--probe-batch-size", type=int, default=_default(linear_probe, "batch_size"),
                            help="features per SGD step (default %(default)s)")
        parser.add_argument("--seed", type=int, default=_default(linear_probe, "seed"),
                            help="initialisation and shuffling of the probe (default %(default)s)")
    else:
        raise ValueError(f"unknown command {command!r}: {', '.join(COMMANDS)}.")
    parser.set_defaults(func=run, command=command)
    return parser


def add_parser(subparsers, command: str) -> argparse.ArgumentParser:
    """Register ``vitedu COMMAND`` (knn or linear) on ``vitedu.cli``'s subparsers; returns its parser."""
    description = (f"{COMMANDS[command][0].upper()}{COMMANDS[command][1:]}. For a DINO run, evaluate the teacher: "
                   f"--weights OUTPUT/{TEACHER_FILE}, or --weights OUTPUT (the run folder; its run.json gives "
                   "--model and --image-size).")
    return add_arguments(subparsers.add_parser(command, help=COMMANDS[command], description=description), command)


def _resolve_weights(args: argparse.Namespace) -> tuple[Path, str, int]:
    """(weights file, model name, image size the backbone is built at) from --weights, --model and --image-size."""
    from ..train.run import SetupError, model_image_size

    weights, run = Path(args.weights), {}
    if weights.is_dir():
        run_file = weights / "run.json"
        run = json.loads(run_file.read_text()) if run_file.is_file() else {}
        weights = weights / TEACHER_FILE
        if not weights.is_file():
            raise SetupError(f"--weights {args.weights} is a folder without {TEACHER_FILE}: give the output folder of "
                             "a finished DINO run, or a weights file.")
    model_name = args.model or run.get("model")
    if model_name is None:
        raise SetupError("--model NAME is needed (the backbone the weights belong to; `vitedu list` shows them).")
    if args.model and run.get("model") not in (None, args.model):
        raise SetupError(f"--weights {args.weights} is a run of {run['model']}, not {args.model}: drop --model or "
                         "pass the run's.")
    try:
        size = args.image_size or run.get("image_size") or model_image_size(model_name)
    except KeyError as error:
        raise SetupError(error.args[0]) from None
    return weights, model_name, int(run.get("image_size") or size)


def _check_numbers(args: argparse.Namespace) -> None:
    from ..train.run import SetupError

    checks = [("--batch-size", args.batch_size, args.batch_size >= 1), ("--workers", args.workers, args.workers >= 0),
              ("--crop-ratio", args.crop_ratio, 0 < args.crop_ratio <= 1)]
    if args.image_size is not None:
        checks.append(("--image-size", args.image_size, args.image_size >= 1))
    if args.command == "knn":
        checks += [("--k", args.k, args.k >= 1), ("--temperature", args.temperature, args.temperature > 0)]
    else:
        checks += [("--epochs", args.epochs, args.epochs >= 1), ("--lr", args.lr, args.lr > 0),
                   ("--probe-batch-size", args.probe_batch_size, args.probe_batch_size >= 1),
                   ("--weight-decay", args.weight_decay, args.weight_decay >= 0)]
    for name, value, ok in checks:
        if not ok or (isinstance(value, float) and not math.isfinite(value)):
            raise SetupError(f"{name} {value} is out of range (sizes and counts >= 1, --k >= 1, --temperature and "
                             "--lr > 0, --crop-ratio in (0, 1]).")


def run(args: argparse.Namespace) -> int:
    """``vitedu knn`` / ``vitedu linear`` with parsed arguments; prints the accuracy and returns the exit status (2:
    bad input, reported on stderr)."""
    from ..train.run import SetupError

    try:
        return _run(args)
    except SetupError as error:
        print(f"vitedu {args.command}: error: {error}", file=sys.stderr, flush=True)
        return 2


def _run(args: argparse.Namespace) -> int:
    from ..env import pick_device

    _check_numbers(args)
    weights, model_name, build_size = _resolve_weights(args)
    image_size = args.image_size or build_size
    device = torch.device(args.device) if args.device else pick_device()
    backbone, notes = load_backbone(model_name, weights, build_size)
    backbone.to(device)
    for note in notes:
        print(f"  weights {weights}: {note}")
    features = split_features(backbone, args.data, image_size, args.crop_ratio, args.batch_size, device, args.workers,
                              normalize=args.command == "knn")
    result: dict[str, Any] = {"command": args.command, "model": model_name, "weights": str(weights),
                              "data": str(Path(args.data).expanduser().resolve()), "image_size": image_size,
                              "crop_ratio": args.crop_ratio, "classes": len(features["classes"])}
    if args.command == "knn":
        result.update(knn_evaluation(features, args.k, args.temperature, device))
        what = f"weighted {result['k']}-NN (T={args.temperature:g})"
    else:
        (train_f, train_y), (val_f, val_y) = features["train"], features["val"]
        accuracy, _ = linear_probe(train_f.to(device), train_y, val_f, val_y, epochs=args.epochs, lr=args.lr,
                                   weight_decay=args.weight_decay, batch_size=args.probe_batch_size,
                                   num_classes=len(features["classes"]), seed=args.seed)
        result.update(accuracy=accuracy, epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                      probe_batch_size=args.probe_batch_size, seed=args.seed, train_images=len(train_f),
                      val_images=len(val_f))
        what = f"linear probe ({args.epochs} epochs, lr {args.lr:g})"
    print(f"{what} top-1 on {result['val_images']} val images ({result['train_images']} train, "
          f"{result['classes']} classes), {model_name} at {image_size} px: {result['accuracy']:.4f}", flush=True)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m vitedu.ssl.evaluate {knn,linear} ARGS``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="vitedu", description="Evaluate frozen features: k-NN or linear probe.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        add_parser(sub, command)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
