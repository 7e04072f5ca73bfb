"""Objects from attention: DINO's mass-threshold masks, attention rollout, and their Jaccard score against ground truth.

DINO (Caron et al., 2021, arXiv 2104.14294, fig. 4) segments an image by keeping, for each head of
the last block, the patches that hold 60% of the class token's attention mass, and scores the masks by their
Jaccard similarity (intersection over union) with the ground truth. Attention rollout (Abnar & Zuidema, 2020,
arXiv 2005.00928) follows the attention through all the blocks instead of reading one.
"""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn

from .attention import _patch_grid, attention_stack, class_token_grid, upsample

HEAD_FUSIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": lambda attn: attn.mean(1),
    "max": lambda attn: attn.amax(1),
    "min": lambda attn: attn.amin(1),
}


def _discard_lowest(attn: torch.Tensor, ratio: float, num_prefix_tokens: int) -> torch.Tensor:
    """Zero the lowest ``ratio`` of each row's attention to patches; the prefix tokens' entries are always kept."""
    patches = attn[..., num_prefix_tokens:]
    k = int(ratio * patches.shape[-1])
    if k == 0:
        return attn
    lowest = patches.topk(k, dim=-1, largest=False).indices
    return torch.cat([attn[..., :num_prefix_tokens], patches.scatter(-1, lowest, 0.0)], dim=-1)


def rollout_from_attentions(attentions: list[torch.Tensor], num_prefix_tokens: int = 1, discard_ratio: float = 0.0,
                            head_fusion: str = "mean") -> torch.Tensor:
    """Attention rollout of a list of (B, heads, T, T) maps, first block first: the class token's row over patches
    of A~_L ... A~_1 with A~ = rownorm(fuse_heads(A) + I), as (B, g, g).

    The identity stands for the residual connection (Abnar & Zuidema, 2020, sec. 3: A~ = 0.5 A + 0.5 I when the rows
    of A sum to 1; after head fusion by max/min or discarding they do not, hence the renormalisation).
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}, got {head_fusion!r}.")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio is the fraction of each row's patches to zero: use 0 <= ratio < 1, "
                         f"got {discard_ratio}.")
    if not attentions:
        raise ValueError("attentions is empty: pass the list that model.attention_maps(x) returns.")
    result = None
    for attn in attentions:
        fused = _discard_lowest(HEAD_FUSIONS[head_fusion](attn.double()), discard_ratio, num_prefix_tokens)
        fused = fused + torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        fused = fused / fused.sum(-1, keepdim=True)
        result = fused if result is None else fused @ result
    return _patch_grid(result[:, 0, num_prefix_tokens:]).to(attentions[0].dtype)


def attention_rollout(model: nn.Module, images: torch.Tensor, discard_ratio: float = 0.0,
                      head_fusion: str = "mean") -> torch.Tensor:
    """Attention rollout through all blocks of ``model`` (see ``rollout_from_attentions``): (B, g, g), each map
    summing to at most 1 (the rest stays on the prefix tokens)."""
    prefix = getattr(model, "num_prefix_tokens", 1)
    return rollout_from_attentions(attention_stack(model, images), prefix, discard_ratio, head_fusion)


def mass_mask(maps: torch.Tensor, mass: float = 0.6) -> torch.Tensor:
    """DINO's segmentation (fig. 4): for each (g, g) map, the smallest set of patches holding at least
    ``mass`` of the map's total. Returns a bool tensor shaped like ``maps``.

    Sorted by decreasing attention, a patch is kept while the mass of the patches ranked above it is still short of
    the threshold, so the first patch that reaches it is kept too (the official visualize_attention.py does the
    same with an ascending sort). The sort is stable: of equal values, the earlier patch in row-major order wins.
    Each map is measured against its own total, because the class token's row over the patches sums to < 1.
    """
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass is the fraction of each map's attention to keep: use 0 < mass <= 1 (DINO: 0.6), "
                         f"got {mass}.")
    if maps.ndim < 2:
        raise ValueError(f"maps must be (..., g, g), got shape {tuple(maps.shape)}.")
    if (maps < 0).any():
        raise ValueError("maps must be non-negative (attention weights); for signed attributions pass .abs().")
    flat = maps.detach().flatten(-2).double()
    values, order = flat.sort(dim=-1, descending=True, stable=True)
    cumulative = values.cumsum(-1)
    above = torch.cat([torch.zeros_like(cumulative[..., :1]), cumulative[..., :-1]], dim=-1)
    # The total is the cumulative sum's own last entry, so mass = 1 keeps exactly the non-zero patches.
    keep_sorted = above < mass * cumulative[..., -1:]
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted).reshape(maps.shape)


def masks_at(maps: torch.Tensor, size: int, mass: float = 0.6) -> torch.Tensor:
    """``mass_mask`` of (..., g, g) maps, upsampled (nearest) to (..., size, size) pixels: a bool tensor."""
    return upsample(mass_mask(maps, mass).float(), size).bool()


def segment(model: nn.Module, images: torch.Tensor, mass: float = 0.6, layer: int = -1,
            heads: str = "each") -> torch.Tensor:
    """DINO masks of ``images`` from the class token's attention in block ``layer``, at image resolution:
    bool (B, heads, H, W) for ``heads="each"`` (one mask per head, as in the paper), (B, H, W) for ``"mean"`` (the
    mean of the heads' maps, thresholded once)."""
    if heads not in ("each", "mean"):
        raise ValueError(f"heads must be 'each' (one mask per head) or 'mean' (one mask of the heads' mean map), "
                         f"got {heads!r}.")
    maps = class_token_grid(attention_stack(model, images)[layer], getattr(model, "num_prefix_tokens", 1))
    return masks_at(maps.mean(1) if heads == "mean" else maps, images.shape[-1], mass)


def jaccard(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Intersection over union of bool masks over the last two dimensions: shape ``pred.shape[:-2]``, e.g. (B,).

    Two empty masks agree perfectly: their Jaccard is defined as 1.
    """
    for name, mask in (("pred", pred), ("target", target)):
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            kind = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"{name} must be a bool mask, got {kind}: threshold it first (e.g. mass_mask, or "
                             f"mask > 0.5).")
    if pred.shape != target.shape or pred.ndim < 2:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape "
                         f"(..., H, W): upsample grid masks to the image size (masks_at), and compare per-head masks "
                         f"with target[:, None].expand_as(pred).")
    intersection = (pred & target).sum((-2, -1))
    union = (pred | target).sum((-2, -1))
    return torch.where(union == 0, 1.0, intersection / union.clamp(min=1))


def best_head_jaccard(head_masks: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Jaccard of the best head for each image: max over heads of ``jaccard``, for (B, heads, H, W) masks against
    (B, H, W) ground truth. Returns (B,)."""
    if head_masks.ndim != 4 or target.ndim != 3:
        raise ValueError(f"head_masks must be (B, heads, H, W) and target (B, H, W), got {tuple(head_masks.shape)} "
                         f"and {tuple(target.shape)}.")
    return jaccard(head_masks, target[:, None].expand_as(head_masks)).amax(1)


def mask_jaccard_scores(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, mass: float = 0.6,
                        layer: int = -1) -> dict[str, torch.Tensor]:
    """Jaccard of the ``mass`` masks of ``model`` against the ground-truth ``masks`` (bool (B, H, W)), per image.

    Returns ``per_head`` (B, heads); ``mean_heads`` (B,), the mask of the heads' mean map; ``best_head`` (B,), the
    best head of each image (an optimistic choice made with the labels, more so the more heads); ``fixed_head``
    (B,), the one head with the best mean Jaccard over these images; ``rollout`` (B,), the mask of the rollout map.
    """
    size = images.shape[-1]
    if not isinstance(masks, torch.Tensor) or masks.shape != (len(images), size, size) or masks.dtype != torch.bool:
        got = (tuple(masks.shape), masks.dtype) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise ValueError(f"masks must be bool (B, H, W) = ({len(images)}, {size}, {size}), one ground truth per "
                         f"image at image resolution (Scenes.masks), got {got}.")
    maps = attention_stack(model, images)
    prefix = getattr(model, "num_prefix_tokens", 1)
    heads = class_token_grid(maps[layer], prefix)
    head_masks = masks_at(heads, size, mass)
    per_head = jaccard(head_masks, masks[:, None].expand_as(head_masks))
    return {
        "per_head": per_head,
        "mean_heads": jaccard(masks_at(heads.mean(1), size, mass), masks),
        "best_head": per_head.amax(1),
        "fixed_head": per_head[:, per_head.mean(0).argmax()],
        "rollout": jaccard(masks_at(rollout_from_attentions(maps, prefix), size, mass), masks),
    }


# ----------------------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------------------

def to_display(image: torch.Tensor) -> np.ndarray:
    """A (C, H, W) image as an (H, W, 3) or (H, W) array in [0, 1] for imshow; uint8 is divided by 255, floats
    outside [0, 1] (normalised inputs) are min-max rescaled."""
    image = image.detach().cpu()
    image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    if image.min() < 0 or image.max() > 1:
        image = (image - image.min()) / (image.max() - image.min()).clamp(min=1e-12)
    return image.permute(1, 2, 0).squeeze(-1).numpy()


def draw_overlay(ax, image: torch.Tensor, heat: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                 outline: torch.Tensor | None = None, title: str | None = None):
    """Draw ``image`` on ``ax`` with, optionally, a heat map (any (g, g) grid, upsampled nearest), a filled ``mask``
    and the contour of an ``outline`` mask (e.g. the ground truth). Returns ``ax``."""
    shown = to_display(image)
    size = shown.shape[0]
    ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None)
    if heat is not None:
        heat = heat.detach().float().cpu()
        ax.imshow((upsample(heat, size) if heat.shape[-1] != size else heat).numpy(), cmap="inferno", alpha=0.6)
    if mask is not None:
        fill = np.zeros((size, size, 4))
        fill[mask.cpu().numpy()] = (0.0, 0.9, 1.0, 0.45)
        ax.imshow(fill)
    if outline is not None and outline.any() and not outline.all():
        ax.contour(outline.cpu().float().numpy(), levels=[0.5], colors="lime", linewidths=1.0)
    if title:
        ax.set_title(title, fontsize=8)
    ax.axis("off")
    return ax


def show_segmentation(images: torch.Tensor, maps: torch.Tensor, masks_pred: torch.Tensor, masks_true: torch.Tensor,
                      titles: list[str] | None = None):
    """One row per image: the image | its attention map (B, g, g) | the predicted mask, with the ground truth
    outlined and the Jaccard in the title | the ground truth. Returns the figure."""
    n = len(images)
    if not len(maps) == len(masks_pred) == len(masks_true) == n:
        raise ValueError(f"images, maps, masks_pred and masks_true need one entry per image, got {n}, {len(maps)}, "
                         f"{len(masks_pred)} and {len(masks_true)}.")
    scores = jaccard(masks_pred, masks_true)
    fig, axes = plt.subplots(n, 4, figsize=(6.4, 1.7 * n), squeeze=False)
    for i in range(n):
        draw_overlay(axes[i, 0], images[i], title=titles[i] if titles else "image")
        draw_overlay(axes[i, 1], images[i], heat=maps[i], title="attention")
        draw_overlay(axes[i, 2], images[i], mask=masks_pred[i], outline=masks_true[i],
                     title=f"mask, J = {scores[i]:.2f}")
        draw_overlay(axes[i, 3], images[i], mask=masks_true[i], title="ground truth")
    fig.tight_layout()
    return fig
