"""Chapter 03 (ResMLP): can a network of linear layers only, with no attention and no normalisation, compete with a
ViT and a convnet of similar size, and what do its cross-patch layers learn?

Three measurements, as in the paper's Tables 1-4 and Figure 2 at small scale:

- **accuracy, size and speed**: ``resmlp_pico_28``, ``vit_nano_patch4_28`` and ``resnet_pico_28`` trained the same
  way (``recipe_study.plain_config``: AdamW, cross-entropy, no augmentation) on the same Fashion-MNIST images over
  several seeds, then timed for inference in one interleaved run (``bench.compare_throughput``);
- **distillation** (DeiT's hard distillation, as the paper distils ResMLP from a convnet):
  ``resmlp_pico_distilled_28`` trained the same way with each seed's trained ``resnet_pico_28`` as its teacher;
- **locality of the cross-patch layers** (Figure 2): each row of a layer's N x N matrix is an image over the patch
  grid; ``locality`` measures the share of each row's absolute weight within one patch of its own position, trained
  against the same model at initialisation and against a uniform row. The seed-0 ResMLP's matrices are stored in the
  ledger, for the chapter's figure.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..bench import compare_throughput
from ..budget import Budget
from ..models import create_model
from ..models.resmlp import ResMLP, ResMLPBlock
from .recipe_study import StudyData, ledger_rows, plain_config, prepare, summarize, train_variant

# Fashion-MNIST at 28 px rather than Scenes at 32 px: in a measured trial (1 000 images x 3 epochs, seed 0, plain
# training) ResMLP / ViT / ResNet reached 27.8 / 37.4 / 59.3% test accuracy on Fashion-MNIST but 12.6 / 10.9 / 22.1%
# on Scenes (chance: 10%), at 382 / 487 / 521 against 312 / 404 / 453 training img/s: on Scenes, at this budget, the
# ResMLP and the ViT hardly leave chance, so there would be nothing to compare.
RESMLP = "resmlp_pico_28"
VIT = "vit_nano_patch4_28"
CONVNET = "resnet_pico_28"
DISTILLED = "resmlp_pico_distilled_28"
SMALL_MODELS = (RESMLP, VIT, CONVNET)
# ImageNet top-1 (%) at 224 px: the paper's (S12, S24; ../shared/papers.md) and timm's re-evaluation of the released
# weights without / with hard distillation from a RegNetY-16GF (notes §5.1 [csv]); parameters in millions.
PAPER = {
    "resmlp_12_224": {"name": "ResMLP-S12", "params_m": 15.35, "top1": 76.6, "timm": 76.66, "timm_distilled": 77.95},
    "resmlp_24_224": {"name": "ResMLP-S24", "params_m": 30.02, "top1": 79.4, "timm": 79.38, "timm_distilled": 80.77},
    "resmlp_36_224": {"name": "ResMLP-S36", "params_m": 44.69, "top1": None, "timm": 79.77, "timm_distilled": 81.15},
}


@dataclass(frozen=True)
class Config:
    data: StudyData
    epochs: int
    seeds: tuple[int, ...]  # of the reference run (``vitedu reproduce``)
    live_seeds: tuple[int, ...] = (0,)  # of the chapter's own run, so that it fits the budget's time
    models: tuple[str, ...] = SMALL_MODELS
    distill: bool = True  # also train DISTILLED with each seed's CONVNET as the teacher
    batch_size: int = 64
    eval_every: int = 2
    speed_batch: int = 64  # inference batch of the timing
    speed_repeats: int = 10
    radius: int = 1  # of ``locality``: patches within this Chebyshev distance count as local


CONFIGS = {
    "smoke": Config(StudyData("fashion", 128, 128, 28), epochs=1, seeds=(0,), eval_every=1, speed_batch=8,
                    speed_repeats=1),
    # Sized by the trial above: 12 runs x 4 000 images x 4 epochs at about 340-520 img/s is about 8 minutes alone.
    "cpu": Config(StudyData("fashion", 4000, 2000, 28), epochs=4, seeds=(0, 1, 2), eval_every=2),
    "gpu": Config(StudyData("fashion", 20000, 5000, 28), epochs=15, seeds=(0, 1, 2), eval_every=5),
}


def config(budget: Budget) -> Config:
    return budget.select(CONFIGS)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_models(cfg: Config, seeds: tuple[int, ...] | list[int], device="cpu", prepared=None) -> list[dict]:
    """Every model of ``cfg.models`` with every seed (seed-major), the same plain training, then (``cfg.distill``)
    the distilled ResMLP with that seed's trained convnet as its hard-distillation teacher. One dict per run
    (``"model"``: the trained model)."""
    if cfg.distill and CONVNET not in cfg.models:
        raise ValueError(f"the distilled ResMLP learns from the trained {CONVNET}: keep it in cfg.models, or set "
                         "distill=False.")
    prepared = prepared or prepare(cfg.data)
    train_config = plain_config(cfg.epochs, cfg.batch_size)
    runs = []
    for seed in seeds:
        for name in cfg.models:
            runs.append(train_variant(name, train_config, prepared, seed=seed, name=name, device=device,
                                      eval_every=cfg.eval_every))
        if cfg.distill:
            teacher = runs[-len(cfg.models) + cfg.models.index(CONVNET)]["model"]
            runs.append(train_variant(DISTILLED, train_config.replace(distillation="hard"), prepared, seed=seed,
                                      name=DISTILLED, device=device, eval_every=cfg.eval_every, teacher=teacher))
    return runs


def initial_model(name: str, seed: int, prepared=None) -> nn.Module:
    """The model exactly as ``train_variant`` creates it before training with ``seed`` (same initial weights)."""
    torch.manual_seed(seed)
    kwargs = {} if prepared is None else {"num_classes": prepared.num_classes, "in_chans": prepared.in_chans}
    return create_model(name, **kwargs)


def cross_patch_layers(model: nn.Module) -> list[nn.Linear]:
    """The cross-patch ``Linear(N, N)`` of every ResMLP block of ``model``, in order."""
    layers = [m.cross_patch for m in model.modules() if isinstance(m, ResMLPBlock)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no ResMLP blocks: pass a ResMLP (e.g. "
                         "create_model('resmlp_pico_32')).")
    return layers


def local_mask(grid: int, radius: int = 1) -> torch.Tensor:
    """(N, N) boolean, N = grid^2, patches numbered row by row: entry [n, m] is True when patch m lies within
    Chebyshev distance ``radius`` of patch n (itself included: a 3 x 3 window for radius 1)."""
    if grid < 1 or radius < 0:
        raise ValueError(f"grid must be >= 1 and radius >= 0, got grid={grid}, radius={radius}.")
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    distance = torch.maximum((rows[:, None] - rows[None]).abs(), (cols[:, None] - cols[None]).abs())
    return distance <= radius


def locality(weights: torch.Tensor, radius: int = 1) -> dict:
    """How local cross-patch matrices are. ``weights``: (N, N) or (layers, N, N), row n the weights with which
    patch n gathers the patches (row-major grid). Per layer: the share of each row's absolute weight that lies
    within ``radius`` of patch n, averaged over the rows (``local_fraction``); what a row of equal weights gives
    (``uniform``, the share of the grid in the window, averaged likewise); and their ratio (1: no locality)."""
    weights = torch.as_tensor(weights, dtype=torch.float64)
    if weights.ndim == 2:
        weights = weights[None]
    if weights.ndim != 3 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"expected (N, N) or (layers, N, N) cross-patch weights, got shape {tuple(weights.shape)}.")
    n = weights.shape[-1]
    grid = round(n ** 0.5)
    if grid * grid != n:
        raise ValueError(f"N = {n} patches is not a square grid: pass the weights of a square patch grid.")
    mask = local_mask(grid, radius)
    absolute = weights.abs()
    fraction = (absolute * mask).sum(-1) / absolute.sum(-1).clamp_min(1e-30)  # (layers, N)
    uniform = mask.double().mean(-1).mean().item()
    per_layer = fraction.mean(-1).tolist()
    return {"local_fraction": per_layer, "uniform": uniform, "ratio": [f / uniform for f in per_layer],
            "radius": radius, "grid": grid}


def shared_row(weights: torch.Tensor) -> list[float]:
    """Per layer of (N, N) or (layers, N, N) cross-patch weights: the share of the matrix's squared norm that its mean
    row explains, ``1 - ||W - mean row||^2 / ||W||^2``. 1: every patch gathers the grid with the same weights (a
    learned pooling over absolute positions, the same for every output patch); 1 / N for the identity; about 0 for
    random rows. Local filters that follow their patch, like a convolution's, give a low share."""
    weights = torch.as_tensor(weights, dtype=torch.float64)
    if weights.ndim == 2:
        weights = weights[None]
    if weights.ndim != 3 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"expected (N, N) or (layers, N, N) cross-patch weights, got shape {tuple(weights.shape)}.")
    centred = weights - weights.mean(-2, keepdim=True)
    return (1 - centred.square().sum((-1, -2)) / weights.square().sum((-1, -2)).clamp_min(1e-30)).tolist()


def mosaic(weights: torch.Tensor) -> torch.Tensor:
    """One layer's (N, N) matrix as a (N, N) image of G x G tiles (G = sqrt N): tile (i, j) is row i * G + j, the
    weights with which the patch at (i, j) gathers the grid, reshaped to the grid (the paper's Figure 2)."""
    weights = torch.as_tensor(weights)
    n = weights.shape[-1]
    grid = round(n ** 0.5)
    if weights.shape != (n, n) or grid * grid != n:
        raise ValueError(f"expected one layer's (N, N) weights with N a square, got shape {tuple(weights.shape)}.")
    return weights.reshape(grid, grid, grid, grid).permute(0, 2, 1, 3).reshape(n, n)


def _rounded(weights: torch.Tensor, digits: int = 3) -> list:
    return [[[float(f"{v:.{digits}g}") for v in row] for row in layer] for layer in weights.tolist()]


def run_localities(runs: list[dict], radius: int = 1) -> list[dict]:
    """``locality`` of every ResMLP run's trained cross-patch layers (distilled ones too)."""
    return [{"variant": run["variant"], "seed": run["seed"], **locality(run["model"].cross_patch_weights(), radius)}
            for run in runs if isinstance(run["model"], ResMLP)]


def summarize_locality(rows: list[dict]) -> list[dict]:
    """Per variant: mean and spread over seeds of each layer's local-fraction ratio."""
    groups: dict[str, list[list[float]]] = {}
    for row in rows:
        groups.setdefault(row["variant"], []).append(row["ratio"])
    out = []
    for name, ratios in groups.items():
        values = torch.tensor(ratios, dtype=torch.float64)
        std = values.std(0, unbiased=True) if len(ratios) > 1 else torch.zeros(values.shape[1], dtype=torch.float64)
        out.append({"variant": name, "mean": values.mean(0).tolist(), "std": std.tolist(), "n": len(ratios)})
    return out


def macs(model: nn.Module, image_size: int, in_chans: int = 3) -> int:
    """Multiply-accumulates of one image's inference (``torch.utils.flop_counter``, FLOPs / 2; the papers' "FLOPs"
    count these: 3.0 G for resmlp_12_224)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, in_chans, image_size, image_size, device=next(model.parameters()).device))
    model.train(was_training)
    return counter.get_total_flops() // 2


def throughput(models: dict[str, nn.Module], cfg: Config, image_size: int, in_chans: int = 3) -> dict:
    """Inference img/s of trained models (copies on the CPU, eval mode), interleaved in one run, with their
    parameters and multiply-accumulates per image."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(cfg.speed_batch, in_chans, image_size, image_size, generator=generator)
    models = {name: model.cpu() for name, model in models.items()}
    timings = compare_throughput({name: (model, x) for name, model in models.items()}, warmup=1,
                                 repeats=cfg.speed_repeats)
    return {name: {**timing, "params": num_params(models[name]), "macs": macs(models[name], image_size, in_chans)}
            for name, timing in timings.items()}


def block_parts(model: ResMLP) -> list[dict]:
    """One ResMLP block as its pieces in order: name, what it mixes, the shape it maps, its parameters (for the
    chapter's architecture figure)."""
    if not isinstance(model, ResMLP):
        raise ValueError(f"block_parts takes a ResMLP, got {type(model).__name__}.")
    block = model.blocks[0]
    n, d = model.num_patches, model.embed_dim
    hidden = block.mlp.fc1.out_features
    count = num_params
    same = f"{n}x{d} -> {n}x{d}"
    return [
        {"part": "Affine", "mixes": "nothing (per channel)", "shape": same, "params": count(block.affine1)},
        {"part": "cross-patch Linear(N, N)", "mixes": "patches", "shape": f"transpose, {n} -> {n} per channel",
         "params": count(block.cross_patch)},
        {"part": "LayerScale + residual", "mixes": "nothing", "shape": f"{n}x{d}", "params": count(block.ls1)},
        {"part": "Affine", "mixes": "nothing (per channel)", "shape": same, "params": count(block.affine2)},
        {"part": "channel MLP", "mixes": "channels", "shape": f"{d} -> {hidden} -> {d} per patch, GELU",
         "params": count(block.mlp)},
        {"part": "LayerScale + residual", "mixes": "nothing", "shape": f"{n}x{d}", "params": count(block.ls2)},
    ]


def plot_block(model: ResMLP, title: str = "", ax=None):
    """The ResMLP block as a column of boxes read from ``model`` (``block_parts``): blue mixes patches, orange mixes
    channels, grey mixes neither; the two residual branches are drawn as arcs."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    parts = block_parts(model)
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 6.2))
    colours = {"patches": "C0", "channels": "C1"}
    ys = [len(parts) - i for i in range(len(parts))]
    for y, part in zip(ys, parts):
        colour = colours.get(part["mixes"], "0.75")
        ax.add_patch(FancyBboxPatch((0.0, y - 0.32), 3.2, 0.64, boxstyle="round,pad=0.02", color=colour, alpha=0.55))
        ax.text(1.6, y + 0.08, part["part"], ha="center", va="center", fontsize=9, weight="bold")
        ax.text(1.6, y - 0.17, part["shape"], ha="center", va="center", fontsize=7)
        ax.text(3.35, y, f"{part['params']:,} params\nmixes {part['mixes']}", ha="left", va="center", fontsize=7)
    for y in ys[:-1]:
        ax.annotate("", (1.6, y - 0.68), (1.6, y - 0.32), arrowprops=dict(arrowstyle="->", color="k"))
    for top, bottom in ((ys[0], ys[2]), (ys[3], ys[5])):  # each residual: from above the Affine to the LayerScale
        ax.add_patch(FancyArrowPatch((-0.05, top + 0.45), (-0.05, bottom), connectionstyle="arc3,rad=0.5",
                                     arrowstyle="->", color="C2", lw=1.5))
    ax.text(-1.1, (ys[0] + ys[2]) / 2, "residual", color="C2", fontsize=8, rotation=90, va="center")
    ax.text(-1.1, (ys[3] + ys[5]) / 2, "residual", color="C2", fontsize=8, rotation=90, va="center")
    ax.set_xlim(-1.4, 5.6)
    ax.set_ylim(0.3, len(parts) + 0.9)
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    return ax


def plot_cross_patch(weights: torch.Tensor, title: str = "", layers: list[int] | None = None, axes=None):
    """Each layer's cross-patch matrix as the paper's Figure 2 draws it: a mosaic of G x G tiles, tile (i, j) the
    row of the patch at (i, j) reshaped to the grid; one symmetric colour scale per layer (red positive)."""
    import matplotlib.pyplot as plt

    weights = torch.as_tensor(weights)
    layers = list(range(len(weights))) if layers is None else layers
    if axes is None:
        _, axes = plt.subplots(1, len(layers), figsize=(2.3 * len(layers), 2.6), squeeze=False)
        axes = axes[0]
    grid = round(weights.shape[-1] ** 0.5)
    for ax, layer in zip(axes, layers):
        image = mosaic(weights[layer])
        limit = image.abs().max().item() or 1.0
        ax.imshow(image.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
        for k in range(1, grid):  # tile borders
            ax.axhline(k * grid - 0.5, color="0.6", lw=0.3)
            ax.axvline(k * grid - 0.5, color="0.6", lw=0.3)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"layer {layer}", fontsize=8)
    if title:
        axes[0].figure.suptitle(title, fontsize=10)
    return axes


def plot_rows(weights: torch.Tensor, patches: list[tuple[int, int]], title: str = ""):
    """Chosen rows of every layer, one image each (layers down, patches across), the patch itself marked."""
    import matplotlib.pyplot as plt

    weights = torch.as_tensor(weights)
    grid = round(weights.shape[-1] ** 0.5)
    fig, axes = plt.subplots(len(weights), len(patches), figsize=(1.3 * len(patches) + 0.6, 1.3 * len(weights)),
                             squeeze=False)
    for layer, row in enumerate(axes):
        for ax, (i, j) in zip(row, patches):
            tile = weights[layer, i * grid + j].reshape(grid, grid)
            limit = tile.abs().max().item() or 1.0
            ax.imshow(tile.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.plot(j, i, "k+", ms=5)
            ax.set_xticks([]), ax.set_yticks([])
            if layer == 0:
                ax.set_title(f"patch ({i}, {j})", fontsize=7)
        row[0].set_ylabel(f"layer {layer}", fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_locality(summary: list[dict], initial: dict | None = None, title: str = "", ax=None):
    """Each layer's local-fraction ratio (1 = a uniform row), mean ± std over seeds per variant, and the model at
    initialisation (``initial``: a ``locality`` result)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.4))
    for i, row in enumerate(summary):
        layers = list(range(len(row["mean"])))
        ax.errorbar(layers, row["mean"], yerr=row["std"], fmt="o-", color=f"C{i}", capsize=3,
                    label=f"{row['variant']} trained")
    if initial is not None:
        ax.plot(range(len(initial["ratio"])), initial["ratio"], "s--", color="0.5", label="at initialisation")
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set_xlabel("layer")
    ax.set_ylabel("local share / uniform share")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_accuracy_vs_speed(summary: list[dict], speed: dict, title: str = "", ax=None):
    """Mean test accuracy (± std over seeds, every seed a dot) against measured inference img/s, one point per
    model, labelled with its parameters."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, row in enumerate(summary):
        timing = speed[row["variant"]]
        ips = timing["images_per_s"]
        ax.errorbar([ips], [100 * row["mean"]], yerr=[100 * row["std"]], fmt="o", color=f"C{i}", capsize=3,
                    label=f"{row['variant']} ({timing['params'] / 1e6:.2f}M)")
        ax.plot([ips] * len(row["values"]), [100 * v for v in row["values"]], ".", color="k", ms=3)
    speeds = [speed[row["variant"]]["images_per_s"] for row in summary]
    if max(speeds) > 10 * min(speeds):  # a log axis only where the speeds span more than a decade
        ax.set_xscale("log")
    ax.set_xlabel("inference images / s (CPU)" + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    return ax


def run(budget: Budget, device="cpu") -> dict:
    """The chapter's study, as stored in the ledger: accuracy per model and seed (the distilled ResMLP included),
    the seed-0 models' inference speed and parameters, the locality of every ResMLP's cross-patch layers (trained)
    and of the seed-0 ResMLP at initialisation, and the seed-0 ResMLP's cross-patch matrices."""
    cfg = config(budget)
    start = time.perf_counter()
    prepared = prepare(cfg.data)
    runs = train_models(cfg, cfg.seeds, device, prepared)
    first = {run["variant"]: run["model"].cpu().eval() for run in runs if run["seed"] == cfg.seeds[0]}
    speed = throughput(first, cfg, cfg.data.image_size, prepared.in_chans)
    localities = run_localities(runs, cfg.radius)
    initial = initial_model(RESMLP, cfg.seeds[0], prepared)
    return {"config": asdict(cfg), "summary": summarize(runs), "runs": ledger_rows(runs), "speed": speed,
            "locality": localities, "locality_summary": summarize_locality(localities),
            "initial_locality": locality(initial.cross_patch_weights(), cfg.radius),
            "cross_patch_weights": _rounded(first[RESMLP].cross_patch_weights()),
            "seconds": time.perf_counter() - start}
