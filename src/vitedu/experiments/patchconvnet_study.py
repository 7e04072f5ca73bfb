"""Chapter 05 (PatchConvNet): does attention-based pooling beat average pooling, where does it look, and what does a
convolutional column cost in memory as the resolution grows?

Three measurements, after the paper's (Touvron et al., 2021, arXiv 2112.13692) claims:

- **attention pooling against global average pooling at equal trunk**: ``patchconvnet_pico_32`` and
  ``patchconvnet_pico_avg_32`` (the same stem and column of ConvBlocks; one pools with a class token attending to the
  patches, the other averages them) trained the same way (``recipe_study.plain_config``: AdamW, cross-entropy, no
  augmentation) on the same Scenes images over several seeds;
- **the pooling map scored against the objects' masks**: the class token's attention over the patches
  (``PatchConvNet.attention_grid``), thresholded as DINO does (the patches holding ``mass`` of it,
  ``viz.segmentation.mass_mask``), and its Jaccard index with Scenes' ground-truth masks, for the trained and the
  untrained model (the same initial weights), beside two maps that know nothing of the image: a centred Gaussian blob
  (``dino.centre_prior``) and the whole image. The share of the attention that falls on object pixels is given
  beside the object's share of the image (what a uniform map, i.e. average pooling, puts there);
- **peak training memory against resolution**: the bytes autograd keeps for the backward pass
  (``bench.training_memory``, exact on the CPU) of one image through ``patchconvnet_s60`` and
  ``deit_small_patch16_224`` at several resolutions. The ViT is measured twice: with PyTorch's fused attention (the
  default today: the N x N attention matrix is never stored) and with the attention matrix materialised (the
  ``math`` kernel, as the 2021 implementations the paper measured). At batch 1 these byte counts are exact
  polynomials in the number of tokens N (linear for the convolutional column, quadratic for materialised attention),
  so a fit through the measured points extrapolates exactly; ``memory_fit`` gives it and the crossing resolution.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..bench import training_memory
from ..budget import Budget
from ..data.scenes import make_scenes
from ..models import create_model
from ..models.patchconvnet import PatchConvNet
from ..viz.segmentation import jaccard, masks_at
from .dino import centre_prior
from .recipe_study import Prepared, StudyData, ledger_rows, plain_config, prepare, summarize, train_models

ATTENTION, AVERAGE = "patchconvnet_pico_32", "patchconvnet_pico_avg_32"
MODELS = (ATTENTION, AVERAGE)
MEMORY_MODELS = ("patchconvnet_s60", "deit_small_patch16_224")
BASELINES = ("centre prior", "whole image")
FUSED, MATERIALISED = "fused", "materialised"
# The paper's ImageNet-1k numbers at 224 px (papers.md; official README): parameters (M) and top-1 (%).
PAPER_TOP1 = {"patchconvnet_s60": (25.2, 82.1), "patchconvnet_s120": (47.7, 83.2), "patchconvnet_b60": (99.4, 83.5),
              "patchconvnet_b120": (188.6, 84.1)}


@dataclass(frozen=True)
class Config:
    data: StudyData
    epochs: int
    seeds: tuple[int, ...]  # of the reference run (``vitedu reproduce``)
    live_seeds: tuple[int, ...] = (0,)  # of the chapter's own run, so that it fits the budget's time
    models: tuple[str, ...] = MODELS
    batch_size: int = 64
    eval_every: int = 5
    mass: float = 0.6  # of the pooling attention kept in a mask (DINO's value)
    example_images: int = 6  # test images whose maps (seed 0, trained and untrained) the ledger keeps
    memory_models: tuple[str, ...] = MEMORY_MODELS
    memory_sizes: tuple[int, ...] = (128, 224, 320, 448)
    memory_batch: int = 1
    memory_extrapolate: tuple[int, ...] = (640, 896, 1024)  # resolutions the fit predicts (not measured)


CONFIGS = {
    "smoke": Config(StudyData("scenes", 256, 256, 32), epochs=1, seeds=(0,), eval_every=1,
                    memory_models=("patchconvnet_pico_32", "vit_pico_patch4_32"), memory_sizes=(32, 48, 64, 80),
                    memory_extrapolate=(128,)),
    "cpu": Config(StudyData("scenes", 4000, 1000, 32), epochs=5, seeds=(0, 1, 2), eval_every=5),
    "gpu": Config(StudyData("scenes", 10000, 2000, 32), epochs=20, seeds=(0, 1, 2), eval_every=5,
                  memory_sizes=(128, 224, 320, 448, 640)),
}


def config(budget: Budget) -> Config:
    return budget.select(CONFIGS)


# ----------------------------------------------------------------------------------------------------------------------
# Attention pooling against average pooling
# ----------------------------------------------------------------------------------------------------------------------

def initial_model(cfg: Config, prepared: Prepared, seed: int = 0, name: str = ATTENTION) -> PatchConvNet:
    """The untrained model whose weights the run of ``name`` with ``seed`` starts from (``train_variant`` seeds torch
    and builds the model the same way)."""
    train_config = plain_config(cfg.epochs, cfg.batch_size).replace(seed=seed)
    torch.manual_seed(seed)
    model = create_model(name, num_classes=prepared.num_classes, in_chans=prepared.in_chans,
                         **train_config.model_overrides(name))
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------------
# The pooling map against the objects' masks
# ----------------------------------------------------------------------------------------------------------------------

def pooling_maps(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The class token's attention over the patches, (B, g, g), for normalised float ``images`` (computed on the CPU
    in eval mode, ``batch_size`` images at a time; the model is put back in its mode)."""
    if not isinstance(model, PatchConvNet) or model.pool is None:
        raise ValueError("pooling_maps needs a PatchConvNet that pools by attention (global_pool='token'), e.g. "
                         f"patchconvnet_pico_32; got {type(model).__name__}"
                         + (" with average pooling" if isinstance(model, PatchConvNet) else "") + ".")
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be normalised float (B, C, H, W), got {images.dtype} {tuple(images.shape)}.")
    was_training = model.training
    model = model.cpu().eval()
    try:
        maps = [model.attention_grid(chunk) for chunk in images.split(batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(maps)


def _check_masks(maps: torch.Tensor, masks: torch.Tensor) -> None:
    if not isinstance(masks, torch.Tensor) or masks.dtype != torch.bool or masks.ndim != 3:
        raise ValueError("masks must be the bool (N, S, S) ground truth of the images (Scenes.masks).")
    if maps.ndim != 3 or len(maps) != len(masks) or masks.shape[-1] % maps.shape[-1]:
        raise ValueError(f"maps {tuple(maps.shape)} must be (N, g, g), one per mask {tuple(masks.shape)}, with g "
                         "dividing the image side.")


def map_jaccard(maps: torch.Tensor, masks: torch.Tensor, mass: float = 0.6) -> torch.Tensor:
    """Per image, the Jaccard index of the patches holding ``mass`` of the map (``mass_mask``, upsampled to pixels)
    with the object's mask: (N,). One (g, g) map is scored against every mask."""
    if maps.ndim == 2:
        maps = maps.expand(len(masks), *maps.shape)
    _check_masks(maps, masks)
    return jaccard(masks_at(maps, masks.shape[-1], mass), masks)


def mass_on_object(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per image, the share of the map's total that falls on object pixels (each patch's weight spread evenly over
    its pixels): (N,). A uniform map scores the object's share of the image."""
    if maps.ndim == 2:
        maps = maps.expand(len(masks), *maps.shape)
    _check_masks(maps, masks)
    factor = masks.shape[-1] // maps.shape[-1]
    per_patch = nn.functional.avg_pool2d(masks[:, None].float(), factor)[:, 0]  # object share of each patch
    return (maps * per_patch).sum((-2, -1)) / maps.sum((-2, -1))


def baseline_maps(grid: int) -> dict[str, torch.Tensor]:
    """Maps that ignore the image: the centred Gaussian blob of chapter 07 (``dino.centre_prior``) and the whole
    image (every patch kept, i.e. mass 1 of a uniform map)."""
    return {"centre prior": centre_prior(grid), "whole image": torch.ones(grid, grid)}


def mask_scores(models: dict[str, nn.Module], images: torch.Tensor, masks: torch.Tensor, mass: float = 0.6) -> dict:
    """Mean Jaccard (and mass on the object) of each model's pooling map and of the baselines, over ``images``.

    Returns name -> {"jaccard", "mass_on_object"}; the whole image's Jaccard is the object's share of the image, and so
    is its (uniform) mass on the object."""
    scores = {}
    grid = None
    for name, model in models.items():
        maps = pooling_maps(model, images)
        grid = maps.shape[-1]
        scores[name] = {"jaccard": map_jaccard(maps, masks, mass).mean().item(),
                        "mass_on_object": mass_on_object(maps, masks).mean().item()}
    grid = grid or images.shape[-1] // 4
    for name, prior in baseline_maps(grid).items():
        whole = name == "whole image"
        scores[name] = {"jaccard": map_jaccard(prior, masks, 1.0 if whole else mass).mean().item(),
                        "mass_on_object": mass_on_object(prior, masks).mean().item()}
    return scores


def scene_masks(cfg: Config) -> torch.Tensor:
    """The objects' ground-truth masks of the study's test scenes, bool (N, S, S)."""
    data = cfg.data
    return make_scenes(data.test_images, "test", data.image_size, data.level, seed=data.seed).masks


def summarize_scores(per_seed: list[dict]) -> list[dict]:
    """Per map (trained, untrained, baselines): mean and sample standard deviation over seeds of the Jaccard and the
    mass on the object."""
    rows = []
    for name in per_seed[0]:
        row = {"map": name, "n": len(per_seed)}
        for key in ("jaccard", "mass_on_object"):
            values = [scores[name][key] for scores in per_seed]
            row[key] = float(np.mean(values))
            row[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            row[f"{key}_values"] = values
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------------------------
# Memory against resolution
# ----------------------------------------------------------------------------------------------------------------------

def attention_kernel(kind: str):
    """A context in which ``F.scaled_dot_product_attention`` is ``kind``: "fused" (PyTorch's choice: on the CPU a
    flash kernel that never stores the attention matrix) or "materialised" (the math kernel: softmax(QK^T) is
    computed and kept for the backward pass, as a 2021 ViT did)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if kind == FUSED:
        return contextlib.nullcontext()
    if kind == MATERIALISED:
        return sdpa_kernel(SDPBackend.MATH)
    raise ValueError(f"attention kernel must be {FUSED!r} or {MATERIALISED!r}, got {kind!r}.")


def tokens_at(model: nn.Module, img_size: int) -> int:
    """The number of patch tokens at ``img_size`` (class token not counted)."""
    stride = model.stride if isinstance(model, PatchConvNet) else model.patch_embed.patch_size
    if isinstance(stride, tuple):
        stride = stride[0]
    return (img_size // stride) ** 2


def memory_vs_resolution(names: tuple[str, ...] | list[str], sizes: tuple[int, ...] | list[int], batch: int = 1,
                         progress: bool = True) -> list[dict]:
    """``bench.training_memory`` of every model at every size (random weights, seed 0, train mode), one row each:
    model, attention kernel (a ViT twice: fused and materialised; a PatchConvNet once, its pooling has one query),
    img_size, tokens, activations and parameters in bytes."""
    from tqdm.auto import tqdm

    if not names or not sizes:
        raise ValueError("give at least one model name and one image size.")
    if batch < 1:
        raise ValueError(f"batch must be a positive number of images, got {batch}.")
    rows = []
    bar = tqdm(total=len(names) * len(sizes), desc="memory", disable=not progress)
    for name in names:
        for size in sizes:
            torch.manual_seed(0)
            model = create_model(name, img_size=size)
            x = torch.randn(batch, model.in_chans if hasattr(model, "in_chans") else 3, size, size)
            kinds = (FUSED,) if isinstance(model, PatchConvNet) else (FUSED, MATERIALISED)
            for kind in kinds:
                with attention_kernel(kind):
                    measured = training_memory(model, x)
                rows.append({"model": name, "attention": kind, "img_size": size, "tokens": tokens_at(model, size),
                             "batch": batch, "activations": measured["activations"],
                             "parameters": measured["parameters"]})
            bar.update()
    bar.close()
    return rows


def curve_label(row: dict) -> str:
    """A row's curve: the model, and for a ViT its attention kernel."""
    return row["model"] if row["model"].startswith("patchconvnet") else f"{row['model']} ({row['attention']})"


def memory_fit(rows: list[dict], extrapolate: tuple[int, ...] | list[int] = ()) -> dict:
    """Per curve, the least-squares fit bytes = c0 + c1 N + c2 N^2 in the number of tokens N (for a PatchConvNet
    c2 = 0: nothing in it is quadratic in N), its largest relative error on the measured points, and its predictions
    at ``extrapolate`` (image sides). With 3 points or fewer the fit is exact and the error says nothing."""
    curves: dict[str, list[dict]] = {}
    for row in rows:
        curves.setdefault(curve_label(row), []).append(row)
    fits = {}
    for label, points in curves.items():
        points = sorted(points, key=lambda r: r["tokens"])
        n = np.array([p["tokens"] for p in points], dtype=np.float64)
        y = np.array([p["activations"] for p in points], dtype=np.float64)
        quadratic = not label.startswith("patchconvnet")
        degree = min(2 if quadratic else 1, len(n) - 1)
        design = np.vander(n, degree + 1, increasing=True)
        coefs = np.linalg.lstsq(design, y, rcond=None)[0]
        coefs = np.concatenate([coefs, np.zeros(3 - len(coefs))])
        predict = lambda t: float(coefs[0] + coefs[1] * t + coefs[2] * t * t)  # noqa: E731
        error = max(abs(predict(t) - v) / v for t, v in zip(n, y))
        stride = round((points[0]["img_size"] ** 2 / points[0]["tokens"]) ** 0.5)
        fits[label] = {"coefficients": coefs.tolist(), "max_relative_error": error, "stride": stride,
                       "predicted": {int(s): predict((s // stride) ** 2) for s in extrapolate}}
    return fits


def crossing_size(fits: dict, convnet: str, vit: str, limit: int = 4096) -> int | None:
    """The smallest image side (a multiple of both strides, up to ``limit``) at which the fitted memory of ``vit``
    exceeds that of ``convnet``; None if it never does."""
    a, b = fits[convnet], fits[vit]
    step = int(np.lcm(a["stride"], b["stride"]))
    for size in range(step, limit + 1, step):
        ta, tb = (size // a["stride"]) ** 2, (size // b["stride"]) ** 2
        ca, cb = a["coefficients"], b["coefficients"]
        if cb[0] + cb[1] * tb + cb[2] * tb * tb > ca[0] + ca[1] * ta + ca[2] * ta * ta:
            return size
    return None


def plot_memory(rows: list[dict], fits: dict | None = None, title: str = "", ax=None):
    """Activation memory (MiB) against the image side, one line per curve; the fits' extrapolations dashed."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.2, 3.8))
    curves: dict[str, list[dict]] = {}
    for row in rows:
        curves.setdefault(curve_label(row), []).append(row)
    for i, (label, points) in enumerate(curves.items()):
        points = sorted(points, key=lambda r: r["img_size"])
        sizes = [p["img_size"] for p in points]
        ax.plot(sizes, [p["activations"] / 2 ** 20 for p in points], "o-", color=f"C{i}", label=label)
        if fits and fits.get(label, {}).get("predicted"):
            extra = sorted(fits[label]["predicted"].items())
            ax.plot([sizes[-1]] + [s for s, _ in extra],
                    [points[-1]["activations"] / 2 ** 20] + [v / 2 ** 20 for _, v in extra], "--", color=f"C{i}",
                    alpha=0.7)
    ax.set_xlabel("image side (px)")
    ax.set_ylabel("saved activations, MiB (batch 1)")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    return ax


# ----------------------------------------------------------------------------------------------------------------------
# Figures of the architecture and of the maps
# ----------------------------------------------------------------------------------------------------------------------

def architecture_rows(model: PatchConvNet) -> list[dict]:
    """The model as a list of steps at its ``img_size``: name, grid side, channels and how many blocks."""
    res = model.config["img_size"]
    rows = [{"step": "image", "resolution": res, "channels": model.in_chans, "blocks": 0}]
    for layer in model.stem:
        if isinstance(layer, nn.Conv2d):
            res //= 2
            rows.append({"step": "stem conv 3x3/2", "resolution": res, "channels": layer.out_channels, "blocks": 0})
    rows.append({"step": "ConvBlocks", "resolution": res, "channels": model.embed_dim, "blocks": len(model.blocks)})
    if model.pool is not None:
        rows.append({"step": "attention pooling", "resolution": 1, "channels": model.embed_dim, "blocks": 1})
    else:
        rows.append({"step": "average pooling", "resolution": 1, "channels": model.embed_dim, "blocks": 0})
    rows.append({"step": "head", "resolution": 1, "channels": model.num_classes, "blocks": 0})
    return rows


def plot_architecture(model: PatchConvNet, title: str = "", ax=None):
    """Each step as a square whose side grows with its grid side (log scale), labelled with grid and channels: the
    stem shrinks the image, the column keeps one resolution, the pooling reads it into one vector."""
    import math

    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows = architecture_rows(model)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.4 * len(rows) + 0.5, 3.0))
    largest = math.log2(rows[0]["resolution"]) + 1
    colours = {"image": "0.8", "stem conv 3x3/2": "C1", "ConvBlocks": "C0", "attention pooling": "C3",
               "average pooling": "C7", "head": "C2"}
    x = 0.0
    for row in rows:
        side = 0.3 + 0.7 * (math.log2(row["resolution"]) + 1) / largest
        colour = colours[row["step"]]
        if row["step"] == "ConvBlocks":  # a stack: the column of blocks at constant resolution
            for k in range(3):
                ax.add_patch(Rectangle((x + 0.06 * k, -side / 2 + 0.06 * k), side, side, color=colour,
                                       alpha=0.35 + 0.15 * k))
            width = side + 0.12
        else:
            ax.add_patch(Rectangle((x, -side / 2), side, side, color=colour, alpha=0.6))
            width = side
        detail = f"{row['resolution']}x{row['resolution']}\n{row['channels']} ch"
        if row["step"] == "ConvBlocks":
            tokens = row["resolution"] ** 2
            detail += f"\n{row['blocks']} blocks"
        elif row["step"] == "attention pooling":
            detail = f"1 query,\n1 + {tokens} keys\n{row['channels']} ch"
        elif row["step"] == "head":
            detail = f"{row['channels']}\nclasses"
        ax.text(x + width / 2, -0.62, detail, ha="center", va="top", fontsize=7)
        ax.text(x + width / 2, 0.6, row["step"].replace(" pooling", "\npooling"), ha="center", va="bottom",
                fontsize=7)
        x += width + 0.25
    ax.set_xlim(-0.1, x)
    ax.set_ylim(-1.3, 1.05)
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    return ax


def receptive_field(model: PatchConvNet, image: torch.Tensor, blocks: tuple[int, ...] | list[int],
                    layer_scale: float | None = 1.0) -> torch.Tensor:
    """How far the column mixes: for each k in ``blocks``, |d (centre token after k ConvBlocks) / d (stem tokens)|,
    summed over channels, as a (len(blocks), g, g) stack, each map divided by its maximum. The depthwise 3x3
    convolution is the only spatial mixing, so the map grows by one token in every direction per block; the
    Squeeze-and-Excitation gate (a mean over all tokens) adds a faint floor everywhere.

    ``layer_scale``: every block's LayerScale set to this value (on a copy), as after training; at its initial 1e-4
    a block's branch is almost silent and the map barely leaves the centre. None keeps the model's own."""
    if image.ndim != 3:
        raise ValueError(f"image must be one (C, H, W) image, got shape {tuple(image.shape)}.")
    if any(not 0 <= k <= len(model.blocks) for k in blocks):
        raise ValueError(f"blocks must lie between 0 and the model's depth {len(model.blocks)}, got {list(blocks)}.")
    if layer_scale is not None:
        model = copy.deepcopy(model)
        with torch.no_grad():
            for block in model.blocks:
                block.ls.gamma.fill_(layer_scale)
    was_training = model.training
    model.eval()
    maps = []
    try:
        with torch.no_grad():
            stem = model.stem(image[None])
        grid = (stem.shape[-2], stem.shape[-1])
        centre = (grid[0] // 2) * grid[1] + grid[1] // 2
        for k in blocks:
            tokens = stem.flatten(2).transpose(1, 2).clone().requires_grad_(True)
            x = tokens
            for block in model.blocks[:k]:
                x = block(x, grid)
            (grad,) = torch.autograd.grad(x[0, centre].sum(), tokens)
            field = grad[0].abs().sum(-1).reshape(grid)
            maps.append(field / field.max())
    finally:
        model.train(was_training)
    return torch.stack(maps)


def plot_scores(rows: list[dict], key: str = "jaccard", title: str = "", ax=None):
    """Mean (± std over seeds, every seed a dot) of ``key`` ("jaccard" or "mass_on_object"), one bar per map."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.2))
    xs = np.arange(len(rows))
    colours = ["C3" if r["map"].startswith("trained") else "C0" if r["map"].startswith("untrained") else "0.6"
               for r in rows]
    ax.bar(xs, [100 * r[key] for r in rows], 0.6, yerr=[100 * r[f"{key}_std"] for r in rows], color=colours,
           capsize=3, alpha=0.85)
    for x, r in zip(xs, rows):
        ax.plot([x] * len(r[f"{key}_values"]), [100 * v for v in r[f"{key}_values"]], "k.", ms=3)
    ax.set_xticks(xs, [r["map"] for r in rows], rotation=15, ha="right")
    ax.set_ylabel({"jaccard": "Jaccard with the mask (%)", "mass_on_object": "attention on the object (%)"}[key])
    ax.set_title(title, fontsize=10)
    return ax


# ----------------------------------------------------------------------------------------------------------------------
# The study
# ----------------------------------------------------------------------------------------------------------------------

def score_seed(cfg: Config, prepared: Prepared, masks: torch.Tensor, trained: nn.Module, seed: int) -> dict:
    """The pooling maps of the trained attention model of ``seed`` and of its initial weights, and the baselines,
    against the test masks."""
    models = {"trained": trained.cpu().eval(), "untrained": initial_model(cfg, prepared, seed)}
    return mask_scores(models, prepared.test_images, masks, cfg.mass)


def run(budget: Budget, device="cpu") -> dict:
    """The chapter's study, as stored in the ledger: accuracy per pooling and seed, the pooling maps' Jaccard (and
    mass on the object) per seed against the masks, the maps of the first test images (seed 0), the memory
    measurements with their fits, and the wall time of each part."""
    cfg = config(budget)
    start = time.perf_counter()
    prepared = prepare(cfg.data)
    runs = train_models(cfg, cfg.seeds, device, prepared)
    trained_at = time.perf_counter()
    masks = scene_masks(cfg)
    per_seed = [score_seed(cfg, prepared, masks, r["model"], r["seed"]) for r in runs if r["variant"] == ATTENTION]
    scored_at = time.perf_counter()
    first = next(r for r in runs if r["variant"] == ATTENTION and r["seed"] == cfg.seeds[0])
    shown = prepared.test_images[:cfg.example_images]
    examples = {"trained": pooling_maps(first["model"], shown).tolist(),
                "untrained": pooling_maps(initial_model(cfg, prepared, cfg.seeds[0]), shown).tolist()}
    memory = memory_vs_resolution(cfg.memory_models, cfg.memory_sizes, cfg.memory_batch, progress=False)
    fits = memory_fit(memory, cfg.memory_extrapolate)
    convnet = cfg.memory_models[0]
    vit = [label for label in fits if label != convnet]
    end = time.perf_counter()
    return {"config": asdict(cfg), "summary": summarize(runs), "runs": ledger_rows(runs),
            "mask_scores": per_seed, "mask_summary": summarize_scores(per_seed),
            "object_share": masks.float().mean().item(), "example_maps": examples,
            "memory": memory, "memory_fit": fits,
            "crossing": {label: crossing_size(fits, convnet, label) for label in vit},
            "seconds": end - start,
            "seconds_parts": {"training": trained_at - start, "masks": scored_at - trained_at,
                              "memory": end - scored_at}}
