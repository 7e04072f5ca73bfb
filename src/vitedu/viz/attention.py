"""What a ViT looks at: the class token's attention over the patches, per head."""

from __future__ import annotations

from contextlib import contextmanager

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F


@contextmanager
def eval_mode(model: nn.Module):
    """Run the block with ``model`` in eval mode (no dropout or drop path), then put its training flag back."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor (B, C, H, W), got {shape}: add a batch dimension with "
                         f"images[None] for a single image.")


def attention_stack(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Every block's self-attention, in eval mode: a list over blocks of (B, heads, T, T), T = prefix + patches."""
    _check_images(images)
    if not hasattr(model, "attention_maps"):
        raise ValueError(f"{type(model).__name__} has no attention_maps(x): pass the ViT backbone itself (for a DINO "
                         f"run, the teacher's or student's backbone), not a wrapper around it.")
    with eval_mode(model):
        maps = model.attention_maps(images)
    if any(m.shape[-1] != m.shape[-2] or m.shape[-1] != maps[0].shape[-1] for m in maps):
        raise ValueError("attention rollout and class-token maps need square attention over the same tokens in every "
                         "block (a ViT); this model's blocks attend between different token sets.")
    return maps


def _patch_grid(row: torch.Tensor) -> torch.Tensor:
    """(..., N) attention over patches -> (..., g, g), patches in row-major order."""
    grid = int(round(row.shape[-1] ** 0.5))
    if grid * grid != row.shape[-1]:
        raise ValueError(f"{row.shape[-1]} patch tokens do not form a square grid: check num_prefix_tokens.")
    return row.reshape(*row.shape[:-1], grid, grid)


def class_token_grid(attn: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Row 0 of one block's attention (B, heads, T, T) over the patches only: (B, heads, g, g).

    Same as ``cls_attention`` for a plain ViT; the prefix columns (class and, for DeiT, distillation token) are dropped.
    """
    return _patch_grid(attn[:, :, 0, num_prefix_tokens:])


def cls_attention(model, images: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """Attention of the class token to every patch in ``layer``: (B, heads, grid, grid), each map summing to <= 1."""
    return class_token_grid(attention_stack(model, images)[layer], getattr(model, "num_prefix_tokens", 1))


def upsample(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-neighbour upsampling of (..., g, g) maps to (..., size, size), so each patch stays a visible square."""
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    return F.interpolate(flat, size=(size, size), mode="nearest").reshape(*lead, size, size)


def show_cls_attention(images: torch.Tensor, maps: torch.Tensor, titles: list[str] | None = None, max_heads: int = 4):
    """One row per image: the image, then the class token's attention of each head laid over it."""
    n, heads = maps.shape[0], min(maps.shape[1], max_heads)
    fig, axes = plt.subplots(n, heads + 2, figsize=(1.6 * (heads + 2), 1.6 * n), squeeze=False)
    size = images.shape[-1]
    overlay = upsample(maps, size)
    for i in range(n):
        image = images[i].permute(1, 2, 0).squeeze(-1).cpu()
        cmap = "gray" if image.ndim == 2 else None
        axes[i, 0].imshow(image, cmap=cmap)
        axes[i, 0].set_title(titles[i] if titles else "image", fontsize=8)
        for h in range(heads):
            axes[i, h + 1].imshow(image, cmap=cmap)
            axes[i, h + 1].imshow(overlay[i, h].cpu(), cmap="inferno", alpha=0.6)
            axes[i, h + 1].set_title(f"head {h}", fontsize=8)
        axes[i, -1].imshow(image, cmap=cmap)
        axes[i, -1].imshow(overlay[i].mean(0).cpu(), cmap="inferno", alpha=0.6)
        axes[i, -1].set_title("mean of heads", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig
