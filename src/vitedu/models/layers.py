"""Layers shared by the model families: patch embeddings, attention, MLP, LayerScale, stochastic depth."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def check_images(x: torch.Tensor, in_chans: int, multiple: int, model: str = "this model") -> None:
    """Clear errors for the usual input mistakes: not a batch, wrong channel count, a size the model cannot cut."""
    if x.ndim != 4:
        raise ValueError(f"{model} takes a batch of images (B, C, H, W); got a tensor of shape {tuple(x.shape)}. "
                         "For one image use x.unsqueeze(0).")
    if x.shape[1] != in_chans:
        raise ValueError(f"{model} expects {in_chans}-channel images, got {x.shape[1]} channels. Create the model "
                         f"with in_chans={x.shape[1]}, or convert the images (grayscale to RGB: x.expand(-1, 3, -1, -1)).")
    if x.shape[-2] % multiple or x.shape[-1] % multiple:
        raise ValueError(f"{model} needs image sides divisible by {multiple}; got {x.shape[-2]} x {x.shape[-1]} px. "
                         f"Resize or crop to a multiple of {multiple}.")


class PatchEmbed(nn.Module):
    """Cut the image into P x P patches and project each to D dimensions (ViT eq. 1): one strided convolution,
    or another per-patch projection ``proj`` (the hMLP stem) that maps (B, C, H, W) to (B, D, H/P, W/P)."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 proj: nn.Module | None = None):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}.")
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size ** 2
        self.proj = proj if proj is not None else nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.in_chans, self.patch_size, f"a ViT with {self.patch_size}-px patches")
        if x.shape[-2] != x.shape[-1]:
            raise ValueError(f"the position embedding is a square grid: use square images, got "
                             f"{x.shape[-2]} x {x.shape[-1]} px.")
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D), patches in row-major order


def hmlp_stem(img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> PatchEmbed:
    """Three things, section 4: the hierarchical MLP stem. Convolutions with kernel = stride (P/4, then 2, then 2)
    and norms and GELUs between them: a small MLP per patch that never mixes two patches, so masking stays exact."""
    if patch_size % 4:
        raise ValueError(f"the hMLP stem splits a patch as P/4 x 2 x 2: patch_size must be a multiple of 4, "
                         f"got {patch_size}.")
    hidden, first = embed_dim // 4, patch_size // 4
    proj = nn.Sequential(  # the key layout of the official hMLP_stem (deit/models_v2.py)
        nn.Conv2d(in_chans, hidden, kernel_size=first, stride=first), nn.BatchNorm2d(hidden), nn.GELU(),
        nn.Conv2d(hidden, hidden, kernel_size=2, stride=2), nn.BatchNorm2d(hidden), nn.GELU(),
        nn.Conv2d(hidden, embed_dim, kernel_size=2, stride=2), nn.BatchNorm2d(embed_dim),
    )
    return PatchEmbed(img_size, patch_size, in_chans, embed_dim, proj)


class Attention(nn.Module):
    """Multi-head self-attention: softmax(Q K^T / sqrt(d)) V over h heads of d = D / h dimensions."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads.")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, return_attention: bool = False, mask: torch.Tensor | None = None):
        """``mask`` (optional, boolean, broadcastable to (B, h, T, T), True = may attend) hides keys from queries:
        padding in a batch of texts, or the future in a causal language model. Every query must see one key."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).reshape(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if mask is not None and mask.dtype != torch.bool:
            raise ValueError(f"the attention mask must be boolean (True = attend), got {mask.dtype}; "
                             "convert a 0/1 padding mask with mask.bool()")
        if return_attention:
            logits = q * self.scale @ k.transpose(-2, -1)  # (B, h, T, T)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            attn = logits.softmax(dim=-1)
            out = attn @ v
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # fused kernel, same maths
        out = self.proj(out.transpose(1, 2).reshape(B, T, D))
        return (out, attn) if return_attention else out


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """DeiT III / CaiT: multiply a residual branch per channel by a learned diag(gamma), initialised small."""

    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample with probability ``p`` during training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


def init_transformer_weights(model: nn.Module, *tokens: torch.Tensor | None) -> None:
    """The DeiT / timm initialisation: truncated normal (std 0.02) for the given tokens and every Linear weight,
    zero biases, LayerNorms at (1, 0). Convolutions keep PyTorch's default."""
    for token in tokens:
        if token is not None:
            nn.init.trunc_normal_(token, std=0.02)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def classify(head: nn.Module, head_dist: nn.Module | None, x: torch.Tensor, x_dist: torch.Tensor, separate: bool):
    """One head, or DeiT's two: while training with distillation (``separate``) each feeds its own loss (class head:
    the label; distillation head: the teacher); otherwise, as at test time, their logits are averaged."""
    if head_dist is None:
        return head(x)
    logits, logits_dist = head(x), head_dist(x_dist)
    return (logits, logits_dist) if separate else (logits + logits_dist) / 2
