"""Chapter 06 (Three things everyone should know about ViTs, 2203.09795): each of the paper's three claims as a small
experiment on the same tiny ViT.

1. **Parallel blocks.** ``vit_pico_patch4_32_2x2`` (2 parallel blocks of 2 attention + 2 MLP branches) against the
   sequential ViT of the same parameters at twice the depth (``vit_pico_patch4_32`` with the same LayerScale and
   position embedding, so that the two differ only in how the blocks are arranged): accuracy over seeds on
   Fashion-MNIST, then inference and training throughput of the trained models, each in one interleaved
   ``bench.compare_throughput`` run.
2. **Attention-only fine-tuning.** Each seed's sequential model of part 1 (trained on Fashion-MNIST at 28 px)
   fine-tuned at a higher resolution, on the same images upsampled to ``finetune_size`` px (the position embedding
   interpolated from 7 x 7 to 10 x 10 patches at 40 px), training all weights, only the attention weights (plus
   head and position embedding, the official ``--attn-only`` rule), or only the head (a linear probe, the floor);
   with the trainable parameters, the memory of a training step (``bench.training_memory`` plus gradients and
   AdamW state) and its interleaved speed.
3. **The hMLP stem and masking.** The hMLP stem (``vit_pico_hmlp_patch4_32``) and the linear patch stem
   (``vit_pico_patch4_32``) both see every patch on its own: masking pixels before the stem or tokens after it gives
   the same visible tokens, unlike LeViT's convolutional stem (``masking_leak``). Then a SimMIM-style masked-patch
   pre-training (a mask token replaces ``mask_ratio`` of the patch tokens, a linear decoder predicts their pixels,
   L1 loss on the masked patches) followed by supervised fine-tuning, against the same fine-tuning from random
   weights, for each stem.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..bench import compare_throughput, paired_ratio, training_memory
from ..data.loader import Loader, TensorLoader
from ..data.transforms import TensorImages, train_transform
from ..models import create_model
from ..models.levit import LeViT
from ..models.vit import VisionTransformer, resize_pos_embed
from ..train import TrainConfig, fit
from ..train.engine import Objective, evaluate, set_trainable
from .recipe_study import Prepared, StudyData, ledger_rows, plain_config, prepare, summarize, train_variant

SEQUENTIAL, PARALLEL = "vit_pico_patch4_32", "vit_pico_patch4_32_2x2"
LINEAR_STEM, HMLP_STEM = "vit_pico_patch4_32", "vit_pico_hmlp_patch4_32"
# The parallel preset has LayerScale (1e-4) and no position embedding on the class token (as the official models);
# the sequential one gets the same, so that the two have exactly the same parameters (as ViT-S 36x1 and 18x2).
MATCHED = {"init_values": 1e-4, "no_embed_class": True}
ARRANGEMENTS = {"sequential 4x1": (SEQUENTIAL, MATCHED), "parallel 2x2": (PARALLEL, {})}
MODES = ("full", "attention", "head")  # part 2: what trains (TrainConfig.trainable "all" / "attention" / "head")
TRAINABLE = {"full": "all", "attention": "attention", "head": "head"}
STEMS = {"linear": LINEAR_STEM, "hMLP": HMLP_STEM}
# The paper's numbers (ImageNet-1k top-1 %, from its Tables 1, 4 and 6 as the notes read them; see the chapter).
PAPER = {
    "parallel": "ViT-S 36x1 and 18x2 (64.67M parameters each) within about 0.2 points; ViT-B 24x1 vs 12x2 likewise",
    "attention_only": "224 -> 384 px: attention-only within 0.1-0.3 points of full fine-tuning for ViT-B and -L, "
                      "a larger gap for ViT-S; ViT-B about 28M of 86M parameters trained, peak memory about 17.8 "
                      "vs 20.8 GB",
    "hmlp": "with BeiT pre-training, hMLP above the linear stem; in supervised training it matches or slightly beats it",
}


@dataclass(frozen=True)
class Config:
    data: StudyData  # Fashion-MNIST: parts 1 and 3
    epochs: int  # part 1
    seeds: tuple[int, ...]  # of the reference run (``vitedu reproduce``), parts 1 and 2
    finetune_size: int  # part 2: the higher resolution the part-1 models are fine-tuned to (``data`` upsampled)
    transfer_epochs: int
    mim_images: int  # part 3: unlabelled Fashion-MNIST training images for the masked pre-training
    mim_epochs: int
    finetune_epochs: int  # part 3: supervised fine-tuning (and the from-scratch baseline) on ``data``
    live_seeds: tuple[int, ...] = (0,)  # of the chapter's own run, so that it fits the budget's time
    mim_seeds: tuple[int, ...] = (0,)
    batch_size: int = 64
    eval_every: int = 2
    finetune_lr: float = 1e-3  # part 2, every mode: half the from-scratch rate, fixed before any run
    mask_ratio: float = 0.5
    speed_batch: int = 256  # part 1 inference timing (the paper's claim is about large batches)
    train_speed_batch: int = 64
    speed_repeats: int = 10
    memory_batch: int = 64


CONFIGS = {
    "smoke": Config(StudyData("fashion", 256, 256, 28), epochs=1, seeds=(0,), finetune_size=40, transfer_epochs=1,
                    mim_images=256, mim_epochs=1, finetune_epochs=1, eval_every=1, speed_batch=16,
                    train_speed_batch=16, speed_repeats=1, memory_batch=8),
    # Sized by a measured run of this study at 4 epochs (115k training images: 2.4 min alone on the two cores,
    # about 850 img/s at 28 px): claim 1 about 120k images, claim 2 36k at 40 px, claim 3 2 x 64k.
    "cpu": Config(StudyData("fashion", 2000, 1000, 28), epochs=10, seeds=(0, 1, 2), finetune_size=40,
                  transfer_epochs=2, mim_images=4000, mim_epochs=4, finetune_epochs=4, mim_seeds=(0, 1),
                  eval_every=2),
    "gpu": Config(StudyData("fashion", 10000, 2000, 28), epochs=15, seeds=(0, 1, 2), finetune_size=56,
                  transfer_epochs=5, mim_images=20000,
                  mim_epochs=20, finetune_epochs=10, eval_every=5),
}


def config(budget) -> Config:
    return budget.select(CONFIGS)


def parameter_count(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _check_vit(model, what: str) -> None:
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"{what} needs a vitedu VisionTransformer (e.g. create_model('vit_pico_patch4_32')), got "
                        f"{type(model).__name__}.")


# ---- a model trained from given weights (parts 2 and 3) -------------------------------------------------------------


def train_model(model: nn.Module, train_config: TrainConfig, prepared: Prepared, *, seed: int = 0, name: str = "",
                device="cpu", eval_every: int = 1) -> dict:
    """Train ``model`` as it is (its weights kept) with ``train_config`` on ``prepared``; the same run dict as
    ``recipe_study.train_variant`` (which builds a fresh model instead)."""
    train_config = train_config.replace(seed=seed)
    size = prepared.train_images.shape[-1]
    train_set = TensorImages(prepared.train_images, prepared.train_labels,
                             train_transform(train_config, size, prepared.mean, prepared.std))
    loader = Loader(train_set, train_config.batch_size, shuffle=True, seed=seed, drop_last=True)
    test_loader = TensorLoader(prepared.test_images, prepared.test_labels, 500)
    start = time.perf_counter()
    history = fit(model, loader, test_loader, train_config, device=device, desc=f"{name} seed {seed}".strip(),
                  eval_every=eval_every)
    return {"variant": name, "seed": seed, "val_acc": history.last["val_acc"], "ema_val_acc": None,
            "seconds": time.perf_counter() - start, "history": history.epochs, "model": model}


# ---- part 1: parallel blocks ----------------------------------------------------------------------------------------


def arrangement_models(in_chans: int = 1, img_size: int = 28) -> dict[str, nn.Module]:
    """The two arrangements of part 1, random weights: name -> model."""
    return {name: create_model(model_name, in_chans=in_chans, img_size=img_size, **overrides)
            for name, (model_name, overrides) in ARRANGEMENTS.items()}


def train_arrangements(cfg: Config, seeds, device="cpu", prepared: Prepared | None = None) -> list[dict]:
    """Both arrangements with every seed (seed-major), plain training (``recipe_study.plain_config``)."""
    prepared = prepared or prepare(cfg.data)
    train_config = plain_config(cfg.epochs, cfg.batch_size)
    size = prepared.train_images.shape[-1]
    return [train_variant(model_name, train_config, prepared, seed=seed, name=name, device=device,
                          eval_every=cfg.eval_every, model_overrides={"img_size": size, **overrides})
            for seed in seeds for name, (model_name, overrides) in ARRANGEMENTS.items()]


def arrangement_throughput(models: dict[str, nn.Module], cfg: Config, in_chans: int, image_size: int) -> dict:
    """Inference and training img/s of the models (copies on the CPU), each task in one interleaved run, with the
    paired ratio of the second model over the first (> 1: the second is faster)."""
    generator = torch.Generator().manual_seed(0)
    result = {}
    for task, batch in (("inference", cfg.speed_batch), ("training", cfg.train_speed_batch)):
        x = torch.randn(batch, in_chans, image_size, image_size, generator=generator)
        timed = {name: (copy.deepcopy(model).cpu().requires_grad_(True), x) for name, model in models.items()}
        timings = compare_throughput(timed, training=task == "training", warmup=1, repeats=cfg.speed_repeats)
        first, second = list(timings)[:2]
        ratio, quartiles = paired_ratio(timings[second]["seconds"], timings[first]["seconds"])
        result[task] = {"batch": batch, "timings": timings, "ratio": ratio, "ratio_quartiles": list(quartiles),
                        "ratio_of": f"{second} / {first}"}
    return result


# ---- part 2: attention-only fine-tuning -----------------------------------------------------------------------------


def upsampled(prepared: Prepared, image_size: int) -> Prepared:
    """The same images at ``image_size`` px (bicubic), training and test sets alike, with the same normalisation: the
    higher resolution of part 2 (as the paper fine-tunes ImageNet models from 224 to 384 px)."""
    if image_size <= prepared.train_images.shape[-1]:
        raise ValueError(f"upsampled makes larger images: image_size must exceed {prepared.train_images.shape[-1]}, "
                         f"got {image_size}.")
    size = (image_size, image_size)
    train = F.interpolate(prepared.train_images.float(), size=size, mode="bicubic", align_corners=False)
    train = train.round().clamp(0, 255).to(torch.uint8)
    test = F.interpolate(prepared.test_images, size=size, mode="bicubic", align_corners=False)
    return Prepared(train, prepared.train_labels, test, prepared.test_labels, prepared.mean, prepared.std,
                    prepared.num_classes)


def resized(model: VisionTransformer, img_size: int) -> VisionTransformer:
    """A copy of ``model`` for ``img_size``-px images: the same weights, the patch position embedding interpolated
    (bicubic) to the new grid and stored as the new model's parameter (the usual start of a fine-tuning at a new
    resolution)."""
    _check_vit(model, "resized")
    c = dict(model.config)
    if img_size % c["patch_size"]:
        raise ValueError(f"img_size {img_size} is not a multiple of the patch size {c['patch_size']}.")
    new = VisionTransformer(**{**c, "img_size": img_size})
    state = model.state_dict()
    prefix = 0 if c["no_embed_class"] else model.num_prefix_tokens
    state["pos_embed"] = resize_pos_embed(state["pos_embed"], img_size // c["patch_size"], prefix)
    new.load_state_dict(state)
    return new.to(next(model.parameters()).device)


def finetune_modes(pretrained: VisionTransformer, cfg: Config, target: Prepared, seed: int, device="cpu",
                   modes=MODES) -> list[dict]:
    """Each of ``modes`` fine-tunes its own copy of ``pretrained`` (resized to the target's images) on ``target``
    with the same settings (``plain_config`` at ``cfg.finetune_lr``); the pre-trained model's accuracy on the target
    before any fine-tuning comes first, as variant ``"none"``."""
    start = resized(pretrained, target.train_images.shape[-1])
    before = evaluate(start.to(device), TensorLoader(target.test_images, target.test_labels, 500), device)
    runs = [{"variant": "none", "seed": seed, "val_acc": before["acc"], "ema_val_acc": None, "seconds": 0.0,
             "history": [], "trainable": 0, "model": start}]
    lr = cfg.finetune_lr
    base = plain_config(cfg.transfer_epochs, cfg.batch_size).replace(lr=lr, min_lr=lr / 100)
    for mode in modes:
        model = copy.deepcopy(start)
        run = train_model(model, base.replace(trainable=TRAINABLE[mode]), target, seed=seed, name=mode, device=device,
                          eval_every=cfg.eval_every)
        run["trainable"] = parameter_count(model, trainable_only=True)
        runs.append(run)
    return runs


def mode_costs(model: VisionTransformer, cfg: Config, image_size: int, modes=MODES, repeats: int | None = None) -> dict:
    """Per mode: trainable parameters (and their names' count), the memory of one training step at
    ``cfg.memory_batch`` (``bench.training_memory``: saved activations and weights, plus a gradient and AdamW's two
    moments per trainable parameter) and the training img/s, the modes timed in one interleaved run."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(cfg.memory_batch, model.config["in_chans"], image_size, image_size, generator=generator)
    base = resized(model, image_size).cpu()
    copies, costs = {}, {}
    for mode in modes:
        m = copy.deepcopy(base)
        trainable = set_trainable(m, TRAINABLE[mode])
        memory = training_memory(m, x)
        bytes_per = next(m.parameters()).element_size()
        state = 3 * trainable * bytes_per  # gradient + AdamW exp_avg + exp_avg_sq
        costs[mode] = {"trainable": trainable, "parameters": parameter_count(m),
                       "trainable_tensors": sum(p.requires_grad for p in m.parameters()),
                       "activation_bytes": memory["activations"], "weight_bytes": memory["parameters"],
                       "grad_and_optimizer_bytes": state,
                       "total_bytes": memory["activations"] + memory["parameters"] + state}
        copies[mode] = (m, x)
    timings = compare_throughput(copies, training=True, warmup=1, repeats=repeats or cfg.speed_repeats)
    for mode in modes:
        costs[mode]["images_per_s"] = timings[mode]["images_per_s"]
        costs[mode]["speedup_vs_full"] = paired_ratio(timings[mode]["seconds"], timings[modes[0]]["seconds"])[0]
    return costs


# ---- part 3: the hMLP stem and masking ------------------------------------------------------------------------------


def stem_tokens(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The tokens a model's stem makes of ``images``, (B, N, D) in row-major patch order: a ViT's ``patch_embed``
    (linear or hMLP), LeViT's convolutional stem."""
    if isinstance(model, VisionTransformer):
        return model.patch_embed(images)
    if isinstance(model, LeViT):
        return model.embed(images)
    raise TypeError(f"stem_tokens takes a vitedu VisionTransformer or LeViT, got {type(model).__name__}.")


def token_patch_size(model: nn.Module) -> int:
    """The side in pixels of the image square each token stands for (its stride)."""
    if isinstance(model, VisionTransformer):
        return model.patch_embed.patch_size
    if isinstance(model, LeViT):
        return model.stem.stride
    raise TypeError(f"token_patch_size takes a vitedu VisionTransformer or LeViT, got {type(model).__name__}.")


def mask_patches(images: torch.Tensor, mask: torch.Tensor, patch_size: int, value: float = 0.0) -> torch.Tensor:
    """``images`` (B, C, H, W) with the pixels of the masked patches set to ``value``; ``mask`` (B, N) bool, True =
    masked, patches numbered row by row (N = (H / P) * (W / P))."""
    if images.ndim != 4:
        raise ValueError(f"images must be a batch (B, C, H, W), got shape {tuple(images.shape)}.")
    B, _, H, W = images.shape
    if H % patch_size or W % patch_size:
        raise ValueError(f"image sides {H} x {W} are not multiples of patch_size {patch_size}.")
    rows, cols = H // patch_size, W // patch_size
    if mask.shape != (B, rows * cols):
        raise ValueError(f"mask must have shape (B, N) = ({B}, {rows * cols}) for {patch_size}-px patches of "
                         f"{H} x {W} images, got {tuple(mask.shape)}.")
    pixels = mask.bool().reshape(B, 1, rows, cols).repeat_interleave(patch_size, 2).repeat_interleave(patch_size, 3)
    return images.masked_fill(pixels, value)


def random_mask(batch: int, num_patches: int, ratio: float, generator: torch.Generator | None = None,
                device=None) -> torch.Tensor:
    """(batch, num_patches) bool, exactly ``round(ratio * num_patches)`` True (masked) per row, chosen at random."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must lie strictly between 0 and 1, got {ratio}.")
    k = int(round(ratio * num_patches))
    order = torch.rand(batch, num_patches, generator=generator, device=device).argsort(1)
    return order < k if k else torch.zeros(batch, num_patches, dtype=torch.bool, device=device)


@torch.no_grad()
def masking_leak(model: nn.Module, images: torch.Tensor, mask: torch.Tensor) -> dict:
    """Mask before the stem (pixels of masked patches zeroed) against after it (the tokens of the whole image), in
    eval mode: the largest difference over the *visible* tokens, absolute and relative to their largest value. Zero
    for a stem that sees each patch on its own (linear, hMLP); not for overlapping convolutions (LeViT)."""
    model = model.eval()
    patch = token_patch_size(model)
    after = stem_tokens(model, images)
    before = stem_tokens(model, mask_patches(images, mask, patch))
    visible = ~mask.bool()
    diff = (before - after).abs()[visible]
    scale = after.abs()[visible].max().item() or 1.0
    return {"max_abs_diff": diff.max().item(), "relative": diff.max().item() / scale,
            "tokens_changed": int((diff.amax(-1) > 1e-6 * scale).sum()), "visible_tokens": int(visible.sum()),
            "patch_size": patch}


@torch.no_grad()
def perturbation_map(model: nn.Module, images: torch.Tensor, patch: int) -> torch.Tensor:
    """How much each token changes (L2 norm, eval mode) when the pixels of patch number ``patch`` (row-major) are
    replaced by noise: a (grid, grid) map per image, (B, grid, grid). One lit cell: the stem keeps patches apart."""
    model = model.eval()
    p = token_patch_size(model)
    grid = images.shape[-1] // p
    if not 0 <= patch < grid * grid:
        raise ValueError(f"patch must be in [0, {grid * grid}), got {patch}.")
    mask = torch.zeros(images.shape[0], grid * grid, dtype=torch.bool)
    mask[:, patch] = True
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(images.shape, generator=generator)
    pixels = mask_patches(torch.zeros_like(images), mask, p, 1.0).bool()
    changed = torch.where(pixels, noise, images)
    delta = (stem_tokens(model, changed) - stem_tokens(model, images)).norm(dim=-1)
    return delta.reshape(-1, grid, grid)


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, P * P * C): each patch's pixels, patches row by row, pixels (row, column, channel)."""
    B, C, H, W = images.shape
    p = patch_size
    x = images.reshape(B, C, H // p, p, W // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // p) * (W // p), p * p * C)


class MaskedImageModel(nn.Module):
    """SimMIM around a ViT: the stem's tokens of masked patches replaced by a learned mask token (masking after the
    stem, which a patch-independent stem makes the same as masking the pixels), position embedding and blocks as in
    the ViT, and a linear decoder from each patch token to its patch's pixels."""

    def __init__(self, vit: VisionTransformer):
        super().__init__()
        _check_vit(vit, "MaskedImageModel")
        self.vit = vit
        self.patch_size = vit.patch_embed.patch_size
        self.mask_token = nn.Parameter(torch.zeros(1, 1, vit.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.decoder = nn.Linear(vit.embed_dim, self.patch_size ** 2 * vit.patch_embed.in_chans)

    def no_weight_decay(self) -> set[str]:
        return {f"vit.{name}" for name in self.vit.no_weight_decay()} | {"mask_token"}

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predicted pixels of every patch, (B, N, P * P * C); ``mask`` (B, N) bool, True = masked."""
        vit = self.vit
        tokens = vit.patch_embed(images)
        if mask.shape != tokens.shape[:2]:
            raise ValueError(f"mask must have shape (B, N) = {tuple(tokens.shape[:2])}, got {tuple(mask.shape)}.")
        tokens = torch.where(mask[..., None], self.mask_token.to(tokens.dtype), tokens)
        pos = vit._pos_embed_for(tokens.shape[1])
        prefix = [vit.cls_token.expand(tokens.shape[0], -1, -1)]
        if vit.dist_token is not None:
            prefix.append(vit.dist_token.expand(tokens.shape[0], -1, -1))
        if vit.no_embed_class:
            z = torch.cat(prefix + [tokens + pos], dim=1)
        else:
            z = torch.cat(prefix + [tokens], dim=1) + pos
        z = vit.norm(vit.blocks(z))
        return self.decoder(z[:, vit.num_prefix_tokens:])


def masked_loss(model: MaskedImageModel, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SimMIM's loss: mean absolute error of the predicted pixels, over the masked patches only."""
    error = (model(images, mask) - patchify(images, model.patch_size)).abs().mean(-1)
    return (error * mask).sum() / mask.sum().clamp(min=1)


class MaskedPatchObjective(Objective):
    """The training step of the masked pre-training for ``fit``: a fresh random mask per batch (torch's generator,
    seeded by ``fit``), labels unused."""

    def __init__(self, mask_ratio: float):
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie strictly between 0 and 1, got {mask_ratio}.")
        self.mask_ratio = mask_ratio

    def __call__(self, model, batch, epoch, ema_model):
        images = batch[0].to(next(model.parameters()).device)
        grid = images.shape[-1] // model.patch_size
        mask = random_mask(len(images), grid * grid, self.mask_ratio, device=images.device)
        return masked_loss(model, images, mask), len(images)


def masked_pretraining(model_name: str, cfg: Config, images: Prepared, seed: int = 0, device="cpu") -> dict:
    """Pre-train ``model_name`` (at the images' size and channels) with masked-patch prediction on ``images``
    (labels ignored); returns the run with the ViT (``"model"``) and the loss per epoch."""
    torch.manual_seed(seed)
    size = images.train_images.shape[-1]
    vit = create_model(model_name, img_size=size, in_chans=images.in_chans, num_classes=images.num_classes)
    wrapper = MaskedImageModel(vit)
    train_config = plain_config(cfg.mim_epochs, cfg.batch_size).replace(seed=seed)
    train_set = TensorImages(images.train_images, images.train_labels,
                             train_transform(train_config, size, images.mean, images.std))
    loader = Loader(train_set, cfg.batch_size, shuffle=True, seed=seed, drop_last=True)
    start = time.perf_counter()
    history = fit(wrapper, loader, None, train_config, device=device, desc=f"masked {model_name} seed {seed}",
                  objective=MaskedPatchObjective(cfg.mask_ratio))
    return {"model": vit.cpu(), "wrapper": wrapper.cpu(), "seconds": time.perf_counter() - start,
            "loss": history["train_loss"]}


def stem_study(cfg: Config, seeds, device="cpu", prepared: Prepared | None = None) -> dict:
    """For each stem and seed: masked pre-training on ``cfg.mim_images`` unlabelled images, then supervised
    fine-tuning on ``cfg.data``; and the same fine-tuning from random weights. Runs are named
    ``"<stem>, <start>"`` with start "masked pre-training" or "random init"; ``masked_models``: the last seed's
    pre-trained ``MaskedImageModel`` per stem (copied before the fine-tuning)."""
    prepared = prepared or prepare(cfg.data)
    unlabelled = prepare(StudyData("fashion", cfg.mim_images, 16, cfg.data.image_size, seed=cfg.data.seed + 1))
    # the labelled set's statistics, so that pre-training and fine-tuning see identically normalised pixels
    unlabelled = Prepared(unlabelled.train_images, unlabelled.train_labels, unlabelled.test_images,
                          unlabelled.test_labels, prepared.mean, prepared.std)
    train_config = plain_config(cfg.finetune_epochs, cfg.batch_size)
    runs, pretraining, masked_models = [], [], {}
    size = prepared.train_images.shape[-1]
    for seed in seeds:
        for stem, model_name in STEMS.items():
            pre = masked_pretraining(model_name, cfg, unlabelled, seed, device)
            pretraining.append({"stem": stem, "seed": seed, "loss": pre["loss"], "seconds": pre["seconds"]})
            masked_models[stem] = copy.deepcopy(pre["wrapper"])  # before fine-tuning changes its ViT
            runs.append(train_model(pre["model"], train_config, prepared, seed=seed, name=f"{stem}, masked pre-training",
                                    device=device, eval_every=cfg.eval_every))
            runs.append(train_variant(model_name, train_config, prepared, seed=seed, name=f"{stem}, random init",
                                      device=device, eval_every=cfg.eval_every, model_overrides={"img_size": size}))
    return {"runs": runs, "pretraining": pretraining, "masked_models": masked_models}


def leak_table(image_size: int = 32, seed: int = 0, ratio: float = 0.5) -> dict:
    """``masking_leak`` for the linear stem, the hMLP stem and LeViT's convolutional stem, random weights (BatchNorm
    statistics randomised too, as after training), on random images."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(4, 3, image_size, image_size, generator=generator)
    models = {"linear": create_model(LINEAR_STEM, img_size=image_size), "hMLP": create_model(HMLP_STEM,
              img_size=image_size), "LeViT conv": create_model("levit_pico_32", img_size=image_size)}
    table = {}
    for name, model in models.items():
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.running_mean.normal_(0, 0.5, generator=generator)
                    module.running_var.uniform_(0.5, 1.5, generator=generator)
        grid = image_size // token_patch_size(model)
        mask = random_mask(len(images), grid * grid, ratio, generator)
        table[name] = masking_leak(model, images, mask)
    return table


# ---- figures --------------------------------------------------------------------------------------------------------


def block_layout(model: VisionTransformer) -> list[list[str]]:
    """The model's residual steps in order, each the list of branches computed side by side (read from its
    modules): [["attn"], ["mlp"], ...] for a sequential ViT, [["attn", "attn"], ["mlp", "mlp"], ...] for 2x2."""
    _check_vit(model, "block_layout")
    steps = []
    for block in model.blocks:
        if hasattr(block, "attns"):
            steps += [["attn"] * len(block.attns), ["mlp"] * len(block.ffns)]
        else:
            steps += [["attn"], ["mlp"]]
    return steps


def plot_blocks(models: dict[str, VisionTransformer], ax=None):
    """Each model as a column of residual steps (bottom to top), branches computed side by side drawn side by side;
    the title of each column gives its depth and parameters."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    if ax is None:
        _, ax = plt.subplots(figsize=(3.2 * len(models), 4.2))
    colours = {"attn": "C0", "mlp": "C1"}
    for col, (name, model) in enumerate(models.items()):
        steps = block_layout(model)
        x0 = col * 3.0
        for row, branches in enumerate(steps):
            width = 2.0 / len(branches)
            for b, kind in enumerate(branches):
                ax.add_patch(FancyBboxPatch((x0 + b * width + 0.05, row + 0.1), width - 0.1, 0.7,
                                            boxstyle="round,pad=0.02", color=colours[kind], alpha=0.7))
                ax.text(x0 + (b + 0.5) * width, row + 0.45, f"LN+{kind.upper()}", ha="center", va="center",
                        fontsize=7)
            ax.annotate("", (x0 + 2.25, row + 0.95), (x0 + 2.25, row + 0.05),
                        arrowprops={"arrowstyle": "->", "color": "0.4"})
            ax.text(x0 + 2.35, row + 0.45, "+", fontsize=9, va="center", color="0.3")
        ax.text(x0 + 1.0, len(steps) + 0.3, f"{name}\n{len(steps)} residual steps, "
                f"{parameter_count(model) / 1e3:.1f}k params", ha="center", fontsize=8)
    ax.set_xlim(-0.2, 3.0 * len(models))
    ax.set_ylim(-0.2, max(len(block_layout(m)) for m in models.values()) + 1.3)
    ax.axis("off")
    return ax


def plot_perturbation_maps(models: dict[str, nn.Module], images: torch.Tensor, pixel: tuple[int, int] = (12, 12),
                           axes=None):
    """One ``perturbation_map`` per model (first image): the patch holding ``pixel`` (row, column) is replaced by
    noise; the map shows how much each token changes, the perturbed patch outlined."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, len(models), figsize=(2.8 * len(models), 2.8))
    for ax, (name, model) in zip(axes, models.items()):
        p = token_patch_size(model)
        grid = images.shape[-1] // p
        patch = (pixel[0] // p) * grid + pixel[1] // p
        change = perturbation_map(model, images, patch)[0]
        ax.imshow(change.numpy(), cmap="magma")
        ax.add_patch(plt.Rectangle((patch % grid - 0.5, patch // grid - 0.5), 1, 1, fill=False, ec="c", lw=2))
        ax.set_title(f"{name} ({p}-px tokens):\n{int((change > 1e-6 * change.max()).sum())} of {grid * grid} tokens "
                     "change", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    return axes


PARAMETER_GROUPS = ("patch embedding", "class token", "position embedding", "attention", "MLP",
                    "norms and LayerScale", "head")


def parameter_group(name: str) -> str:
    """Which part of a ViT a parameter belongs to (one of ``PARAMETER_GROUPS``)."""
    if name.startswith("patch_embed"):
        return "patch embedding"
    if name in ("cls_token", "dist_token"):
        return "class token"
    if name == "pos_embed":
        return "position embedding"
    if ".attn." in name:
        return "attention"
    if ".mlp." in name:
        return "MLP"
    if name.startswith("head"):
        return "head"
    return "norms and LayerScale"


def trainable_table(model: VisionTransformer, modes=MODES) -> dict[str, dict[str, tuple[int, int]]]:
    """Per mode, per parameter group: (trainable, total) numbers of parameters of a copy of ``model``."""
    _check_vit(model, "trainable_table")
    table = {}
    for mode in modes:
        m = copy.deepcopy(model)
        set_trainable(m, TRAINABLE[mode])
        groups = {g: [0, 0] for g in PARAMETER_GROUPS}
        for name, p in m.named_parameters():
            g = groups[parameter_group(name)]
            g[0] += p.numel() * p.requires_grad
            g[1] += p.numel()
        table[mode] = {g: tuple(v) for g, v in groups.items() if v[1]}
    return table


def plot_trainable(model: VisionTransformer, ax=None):
    """One horizontal bar per fine-tuning mode, split into the model's parameter groups: trainable parts solid,
    frozen parts hatched."""
    import matplotlib.pyplot as plt

    table = trainable_table(model)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 2.4))
    for y, (mode, groups) in enumerate(table.items()):
        left = 0
        for i, (group, (trainable, total)) in enumerate(groups.items()):
            ax.barh(y, total, left=left, color=f"C{i}", alpha=0.85 if trainable else 0.2,
                    hatch=None if trainable else "//", edgecolor="0.3", label=group if y == 0 else None)
            left += total
        count = sum(t for t, _ in groups.values())
        ax.text(left * 1.01, y, f"{count:,} trainable ({100 * count / left:.0f}%)", va="center", fontsize=8)
    ax.set_yticks(range(len(table)), list(table))
    ax.invert_yaxis()
    ax.set_xlabel("parameters (solid: trained, hatched: frozen)")
    ax.set_xlim(0, ax.get_xlim()[1] * 1.3)
    ax.legend(frameon=False, fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    return ax


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int) -> torch.Tensor:
    """The inverse of ``patchify``: (B, N, P * P * C) -> (B, C, H, W), square images."""
    B, N, _ = patches.shape
    grid, p = int(round(N ** 0.5)), patch_size
    x = patches.reshape(B, grid, grid, p, p, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(B, channels, grid * p, grid * p)


@torch.no_grad()
def reconstruct(model: MaskedImageModel, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The image the masked model sees the visible patches of, with its predicted pixels in the masked patches."""
    model = model.eval()
    predicted = unpatchify(model(images, mask), model.patch_size, images.shape[1])
    pixels = mask_patches(torch.zeros_like(images), mask, model.patch_size, 1.0).bool()
    return torch.where(pixels, predicted, images)


def plot_reconstructions(models: dict[str, MaskedImageModel], images: torch.Tensor, mask: torch.Tensor, axes=None):
    """Rows: images; columns: the original, the masked input, then each model's reconstruction."""
    import matplotlib.pyplot as plt

    columns = 2 + len(models)
    if axes is None:
        _, axes = plt.subplots(len(images), columns, figsize=(1.6 * columns, 1.6 * len(images)), squeeze=False)
    patch = next(iter(models.values())).patch_size
    panels = [("image", images), ("masked input", mask_patches(images, mask, patch, float(images.min())))]
    panels += [(f"{name} reconstruction", reconstruct(m, images, mask)) for name, m in models.items()]
    for col, (title, batch) in enumerate(panels):
        for row in range(len(images)):
            ax = axes[row][col]
            ax.imshow(batch[row, 0].numpy(), cmap="gray", vmin=float(images.min()), vmax=float(images.max()))
            ax.set_xticks([]), ax.set_yticks([])
        axes[0][col].set_title(title, fontsize=8)
    return axes


def plot_summary(summary: list[dict], title: str = "", ax=None):
    """Mean test accuracy (± std, each seed a dot) per variant, horizontal bars."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 0.45 * len(summary) + 1))
    ys = range(len(summary))
    ax.barh(list(ys), [100 * r["mean"] for r in summary], xerr=[100 * r["std"] for r in summary], color="C0",
            alpha=0.75, capsize=3)
    for y, r in zip(ys, summary):
        ax.plot([100 * v for v in r["values"]], [y] * len(r["values"]), "k.", ms=3)
    ax.set_yticks(list(ys), [r["variant"] for r in summary])
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    return ax


# ---- the reference run ----------------------------------------------------------------------------------------------


def _rows(runs: list[dict]) -> list[dict]:
    return ledger_rows([{k: v for k, v in run.items() if k != "wrapper"} for run in runs])


def run(budget, device="cpu") -> dict:
    """The chapter's study, as stored in the ledger: part 1 (accuracy per arrangement and seed, throughput), part 2
    (accuracy per fine-tuning mode and seed, costs), part 3 (masking leak per stem; masked pre-training vs random
    init per stem)."""
    cfg = config(budget)
    start = time.perf_counter()
    fashion = prepare(cfg.data)
    size = fashion.train_images.shape[-1]
    # part 1
    arrangements = train_arrangements(cfg, cfg.seeds, device, fashion)
    first = {r["variant"]: r["model"] for r in arrangements if r["seed"] == cfg.seeds[0]}
    params = {name: parameter_count(model) for name, model in first.items()}
    speed = arrangement_throughput(first, cfg, fashion.in_chans, size)
    part1 = {"summary": summarize(arrangements), "runs": _rows(arrangements), "parameters": params, "speed": speed,
             "seconds": time.perf_counter() - start}
    # part 2: each seed's sequential model, fine-tuned at a higher resolution
    t2 = time.perf_counter()
    target = upsampled(fashion, cfg.finetune_size)
    finetunes = []
    for r in arrangements:
        if r["variant"] == "sequential 4x1":
            finetunes += finetune_modes(r["model"].cpu(), cfg, target, r["seed"], device)
    costs = mode_costs(first["sequential 4x1"].cpu(), cfg, target.train_images.shape[-1])
    part2 = {"summary": summarize(finetunes), "runs": _rows(finetunes), "costs": costs,
             "seconds": time.perf_counter() - t2}
    # part 3
    t3 = time.perf_counter()
    leaks = leak_table(32)
    stems = stem_study(cfg, cfg.mim_seeds, device, fashion)
    part3 = {"leak": leaks, "summary": summarize(stems["runs"]), "runs": _rows(stems["runs"]),
             "pretraining": stems["pretraining"], "seconds": time.perf_counter() - t3}
    return {"config": asdict(cfg), "parallel": part1, "attention_only": part2, "hmlp": part3, "paper": PAPER,
            "seconds": time.perf_counter() - start}
