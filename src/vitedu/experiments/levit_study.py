"""Chapter 04 (LeViT): is a hybrid of convolutions and attention the faster model at equal accuracy on a CPU?

Two measurements, as in the paper's Table 3 and Figure 1:

- **accuracy against throughput at the cpu budget**: ``levit_pico_32``, ``resnet_pico_32`` and ``vit_pico_patch4_32``
  trained the same way (``recipe_study.plain_config``: AdamW, cross-entropy, no augmentation) on the same Scenes
  images over several seeds, then timed for inference in one interleaved run (LeViT with its BatchNorms fused, as
  the paper times it);
- **inference throughput at 224 px** of the paper's variants (``levit_128s`` ... ``levit_256``, fused) next to
  ResNet-50, DeiT-Tiny and timm's EfficientNet-B0..B3, random weights, one interleaved run with the paper's CPU
  setting (one thread, batch 16), and ``levit_128s`` unfused in the same run, for what BN fusing buys.

The seed-0 LeViT also gives the learned attention biases (stored in the ledger, for the chapter's figure) and the
fused-vs-unfused logit difference on the test images.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..bench import compare_throughput, paired_ratio
from ..budget import Budget
from ..models import create_model
from ..models.levit import Attention, ConvBN, LeViT, ShrinkAttention, fuse_bn
from .recipe_study import StudyData, ledger_rows, prepare, summarize, train_models

SMALL_MODELS = ("levit_pico_32", "resnet_pico_32", "vit_pico_patch4_32")
PAPER_LEVITS = ("levit_128s", "levit_128", "levit_192", "levit_256")
EFFICIENTNETS = ("efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3")  # from timm
OTHER_REFERENCES = ("resnet50", "deit_tiny_patch16_224")
UNFUSED = "levit_128s (unfused)"
# The paper's CPU column (Table 3 and the official repository's timings: one Xeon Gold 6138 thread, batch 16, BN
# fused, torch.jit.trace), as (ImageNet top-1 %, img/s). ResNet-50 has no entry there.
PAPER_CPU = {
    "levit_128s": (76.6, 131.1), "levit_128": (78.6, 94.0), "levit_192": (80.0, 65.0), "levit_256": (81.6, 42.5),
    "deit_tiny_patch16_224": (74.5, 39.1),
    "efficientnet_b0": (77.1, 30.1), "efficientnet_b1": (79.1, 20.0), "efficientnet_b2": (80.1, 13.2),
    "efficientnet_b3": (81.6, 5.9),
}
# Each LeViT beside the EfficientNet of about its accuracy (the pairs of the paper's comparison).
PAIRS = dict(zip(PAPER_LEVITS, EFFICIENTNETS))


@dataclass(frozen=True)
class Config:
    data: StudyData
    epochs: int
    seeds: tuple[int, ...]  # of the reference run (``vitedu reproduce``)
    live_seeds: tuple[int, ...] = (0,)  # of the chapter's own run, so that it fits the budget's time
    models: tuple[str, ...] = SMALL_MODELS
    batch_size: int = 64
    eval_every: int = 2
    speed_batch: int = 64  # inference batch of the small models' timing
    speed_repeats: int = 10
    paper_batch: int = 16  # the paper's CPU setting: batch 16, one thread
    paper_threads: int = 1
    paper_img_size: int = 224
    paper_warmup: int = 1
    paper_repeats: int = 15  # a LeViT-128S step lasts ~0.13 s: with 5, fused / unfused was 0.94 [0.93, 1.14]


CONFIGS = {
    "smoke": Config(StudyData("scenes", 256, 256, 32), epochs=1, seeds=(0,), eval_every=1, speed_batch=8,
                    speed_repeats=1, paper_batch=2, paper_warmup=0, paper_repeats=1),
    "cpu": Config(StudyData("scenes", 2000, 1000, 32), epochs=5, seeds=(0, 1, 2), eval_every=5),
    "gpu": Config(StudyData("scenes", 10000, 2000, 32), epochs=15, seeds=(0, 1, 2), eval_every=5),
}


def config(budget: Budget) -> Config:
    return budget.select(CONFIGS)


def small_model_throughput(models: dict[str, nn.Module], cfg: Config, image_size: int, in_chans: int = 3) -> dict:
    """Inference img/s of trained small models (copies on the CPU, LeViT fused), interleaved in one run."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(cfg.speed_batch, in_chans, image_size, image_size, generator=generator)
    timed = {}
    for name, model in models.items():
        model = fuse_bn(model.cpu()) if isinstance(model, LeViT) else model.cpu()
        timed[name] = (model, x)
    return compare_throughput(timed, warmup=1, repeats=cfg.speed_repeats)


def paper_models(img_size: int = 224, include_unfused: bool = True) -> dict[str, nn.Module]:
    """The models of the 224-px timing, random weights: the LeViTs fused (as the paper times them), ResNet-50 and
    DeiT-Tiny from vitedu, EfficientNet-B0..B3 from timm (``pretrained=False``: nothing is downloaded).

    The EfficientNets get NHWC (channels_last) weights like vitedu's convolutional models, so that no side of the
    comparison has the faster convolution layout to itself."""
    import timm

    torch.manual_seed(0)
    models = {name: fuse_bn(create_model(name, img_size=img_size)) for name in PAPER_LEVITS}
    if include_unfused:
        models[UNFUSED] = create_model("levit_128s", img_size=img_size).eval()
    for name in OTHER_REFERENCES:
        models[name] = create_model(name)
    for name in EFFICIENTNETS:
        models[name] = timm.create_model(name, pretrained=False).to(memory_format=torch.channels_last)
    return models


def paper_throughput(cfg: Config) -> dict:
    """Inference img/s at ``cfg.paper_img_size`` of ``paper_models``, in one interleaved run with
    ``cfg.paper_threads`` threads (torch's own count is restored after)."""
    models = paper_models(cfg.paper_img_size)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(cfg.paper_batch, 3, cfg.paper_img_size, cfg.paper_img_size, generator=generator)
    previous = torch.get_num_threads()
    torch.set_num_threads(cfg.paper_threads)
    try:
        timings = compare_throughput({name: (model, x) for name, model in models.items()}, warmup=cfg.paper_warmup,
                                     repeats=cfg.paper_repeats)
    finally:
        torch.set_num_threads(previous)
    params = {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()}
    return {name: {**timing, "params": params[name]} for name, timing in timings.items()}


def speed_table(timings: dict) -> list[dict]:
    """Rows of the 224-px comparison: measured img/s, the paper's, and each LeViT's speed-up over its EfficientNet
    of about equal accuracy and over ResNet-50 (medians of paired repetitions, ``bench.paired_ratio``)."""
    rows = []
    for name, timing in timings.items():
        paper_top1, paper_ips = PAPER_CPU.get(name, (None, None))
        row = {"model": name, "params_m": timing["params"] / 1e6, "images_per_s": timing["images_per_s"],
               "images_per_s_median": timing["images_per_s_median"], "paper_top1": paper_top1,
               "paper_images_per_s": paper_ips}
        if name in PAIRS:
            partner = PAIRS[name]
            row["vs"] = partner
            row["speedup"] = paired_ratio(timing["seconds"], timings[partner]["seconds"])[0]
            row["paper_speedup"] = paper_ips / PAPER_CPU[partner][1]
            row["speedup_vs_resnet50"] = paired_ratio(timing["seconds"], timings["resnet50"]["seconds"])[0]
        rows.append(row)
    return rows


def fusing_check(model: LeViT, images: torch.Tensor) -> dict:
    """BN fusing on ``model`` (eval): the largest logit difference fused vs unfused on ``images``, the logits' scale
    and the BatchNorms left, before and after."""
    model = model.eval()
    fused = fuse_bn(model)
    with torch.no_grad():
        logits, fused_logits = model(images), fused(images)
    count = lambda m: sum(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.modules())  # noqa: E731
    return {"max_abs_diff": (logits - fused_logits).abs().max().item(), "max_abs_logit": logits.abs().max().item(),
            "batchnorms_before": count(model), "batchnorms_after": count(fused),
            "same_predictions": bool((logits.argmax(-1) == fused_logits.argmax(-1)).all())}


def attention_biases(model: LeViT) -> list[dict]:
    """Every attention layer's learned bias as a (heads, res, res) grid over the offsets (|dy|, |dx|): entry
    [h, dy, dx] is what head h adds to the score of a key dy rows and dx columns away (section 4.2). Layers on a
    1 x 1 grid (one offset) are left out."""
    layers = []
    for name, module in model.named_modules():
        if isinstance(module, (Attention, ShrinkAttention)) and module.resolution > 1:
            res = module.resolution
            grid = module.attention_biases.detach().cpu().reshape(-1, res, res)
            layers.append({"layer": name, "shrinking": isinstance(module, ShrinkAttention), "resolution": res,
                           "bias": grid.tolist()})
    return layers


def plot_attention_biases(layers: list[dict], title: str = ""):
    """One image per head and layer: the learned bias over (|dy|, |dx|), one colour scale per layer."""
    import matplotlib.pyplot as plt

    heads = max(len(layer["bias"]) for layer in layers)
    fig, axes = plt.subplots(len(layers), heads, figsize=(1.6 * heads + 1, 1.7 * len(layers)), squeeze=False)
    for row, layer in zip(axes, layers):
        bias = torch.tensor(layer["bias"])
        limit = bias.abs().max().item() or 1.0
        for h, ax in enumerate(row):
            ax.set_xticks([]), ax.set_yticks([])
            if h >= len(bias):
                ax.axis("off")
                continue
            image = ax.imshow(bias[h].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(f"head {h}", fontsize=8)
        kind = "shrinking" if layer["shrinking"] else "attention"
        row[0].set_ylabel(f"{layer['layer']}\n({kind})\n|dy|", fontsize=7)
        row[0].set_xlabel("|dx|", fontsize=7)
        fig.colorbar(image, ax=list(row), shrink=0.8)
    fig.suptitle(title, fontsize=10)
    return fig


def architecture_rows(model: LeViT) -> list[dict]:
    """The model as a list of steps: name, token grid side, channels, blocks and heads (the chapter's figure)."""
    c = model.config
    res = model.img_size
    rows = [{"step": "image", "resolution": res, "channels": c["in_chans"], "blocks": 0, "heads": 0}]
    for conv in model.stem:
        if isinstance(conv, ConvBN):
            res = (res + 1) // 2
            rows.append({"step": "stem conv 3x3/2", "resolution": res, "channels": conv.conv.out_channels,
                         "blocks": 0, "heads": 0})
    for i, stage in enumerate(model.stages):
        if stage.shrink is not None:
            attn = stage.shrink.attn
            rows.append({"step": "shrinking attention", "resolution": attn.out_resolution,
                         "channels": attn.proj.linear.out_features, "blocks": 1, "heads": attn.num_heads})
        block = stage.blocks[0].attn
        rows.append({"step": f"stage {i + 1}", "resolution": stage.resolution, "channels": c["embed_dim"][i],
                     "blocks": len(stage.blocks), "heads": block.num_heads})
    return rows


def plot_architecture(model: LeViT, title: str = "", ax=None):
    """Each step as a square whose side is its grid side (log scale) and whose label gives channels, blocks and
    heads: the pyramid of resolutions the stem and the shrinking attentions build."""
    import math

    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows = architecture_rows(model)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.25 * len(rows) + 0.5, 3.2))
    largest = math.log2(rows[0]["resolution"]) + 1
    x = 0.0
    colours = {"image": "0.8", "stem conv 3x3/2": "C1", "shrinking attention": "C3"}
    for row in rows:
        side = 0.35 + 0.65 * (math.log2(row["resolution"]) + 1) / largest
        colour = colours.get(row["step"], "C0")
        ax.add_patch(Rectangle((x, -side / 2), side, side, color=colour, alpha=0.6))
        detail = f"{row['resolution']}x{row['resolution']}\n{row['channels']} ch"
        if row["heads"]:
            detail += f"\n{row['blocks']} block{'s' * (row['blocks'] > 1)}, {row['heads']} heads"
        ax.text(x + side / 2, -0.62, detail, ha="center", va="top", fontsize=7)
        ax.text(x + side / 2, 0.56, row["step"].replace(" attention", "\nattention"), ha="center", va="bottom",
                fontsize=7)
        x += side + 0.25
    ax.set_xlim(-0.1, x)
    ax.set_ylim(-1.3, 1.0)
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    return ax


def plot_accuracy_vs_speed(summary: list[dict], speed: dict, title: str = "", ax=None):
    """Mean test accuracy (± std over seeds, every seed a dot) against measured inference img/s, one point per
    model."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, row in enumerate(summary):
        ips = speed[row["variant"]]["images_per_s"]
        ax.errorbar([ips], [100 * row["mean"]], yerr=[100 * row["std"]], fmt="o", color=f"C{i}", capsize=3,
                    label=row["variant"])
        ax.plot([ips] * len(row["values"]), [100 * v for v in row["values"]], ".", color="k", ms=3)
    ax.set_xscale("log")
    ax.set_xlabel("inference images / s (CPU, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    return ax


def run(budget: Budget, device="cpu") -> dict:
    """The chapter's study, as stored in the ledger: accuracy per small model and seed, their inference speed, the
    seed-0 LeViT's attention biases and fusing check, and the 224-px timing of the paper's models."""
    cfg = config(budget)
    start = time.perf_counter()
    prepared = prepare(cfg.data)
    runs = train_models(cfg, cfg.seeds, device, prepared)
    first = {run["variant"]: run["model"] for run in runs if run["seed"] == cfg.seeds[0]}
    levit = first["levit_pico_32"].cpu().eval()
    speed = small_model_throughput(first, cfg, cfg.data.image_size, prepared.in_chans)
    timings = paper_throughput(cfg)
    return {"config": asdict(cfg), "summary": summarize(runs), "runs": ledger_rows(runs),
            "small_speed": speed, "attention_biases": attention_biases(levit),
            "fusing": fusing_check(levit, prepared.test_images[:500]),
            "paper_speed": timings, "paper_speed_table": speed_table(timings),
            "seconds": time.perf_counter() - start}
