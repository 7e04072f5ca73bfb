"""What a ViT looks at: the class token's attention over the patches, per head."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F


def cls_attention(model, images: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """Attention of the class token to every patch in ``layer``: (B, heads, grid, grid), each map summing to <= 1."""
    was_training = model.training
    model.eval()
    attn = model.attention_maps(images)[layer]  # (B, h, 1 + N, 1 + N)
    model.train(was_training)
    cls_to_patches = attn[:, :, 0, 1:]
    grid = int(cls_to_patches.shape[-1] ** 0.5)
    return cls_to_patches.reshape(*cls_to_patches.shape[:2], grid, grid)


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
