"""Vision Transformer (Dosovitskiy et al., 2021) and DeiT (Touvron et al., 2021), readable top to bottom.

Parameter names follow timm, so timm checkpoints load without a key map.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import register_model
from .layers import Attention, DropPath, Mlp, PatchEmbed


class Block(nn.Module):
    """Pre-norm transformer block: z = z + MSA(LN(z)); z = z + MLP(LN(z))  (ViT eqs. 2-3)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if return_attention:
            y, attn = self.attn(self.norm1(x), return_attention=True)
        else:
            y, attn = self.attn(self.norm1(x)), None
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return (x, attn) if return_attention else x


class VisionTransformer(nn.Module):
    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_path_rate: float = 0.0, global_pool: str = "token"):
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' (class token) or 'avg' (mean of patches), got {global_pool!r}.")
        self.num_classes, self.global_pool = num_classes, global_pool
        self.num_features = self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        rates = torch.linspace(0, drop_path_rate, depth).tolist()  # deeper blocks dropped more often
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio, qkv_bias, r) for r in rates])
        # With average pooling the norm moves after the pooling (MAE, timm's fc_norm); tokens leave the blocks unnormed.
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6) if global_pool == "token" else nn.Identity()
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6) if global_pool == "avg" else nn.Identity()
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self):
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """z_0 = [x_class; x_p E] + E_pos  (ViT eq. 1), with E_pos resized if the image size differs."""
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1) + self._pos_embed_for(x.shape[1])

    def _pos_embed_for(self, num_patches: int) -> torch.Tensor:
        if num_patches == self.pos_embed.shape[1] - 1:
            return self.pos_embed
        return resize_pos_embed(self.pos_embed, int(num_patches ** 0.5))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens after the last block (and the final norm with a class token): (B, 1 + N, D)."""
        return self.norm(self.blocks(self.embed(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0] if self.global_pool == "token" else self.fc_norm(x[:, 1:].mean(dim=1))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Self-attention of every block, each (B, heads, 1 + N, 1 + N); row 0 is what the class token looks at."""
        maps = []
        x = self.embed(x)
        for block in self.blocks:
            x, attn = block(x, return_attention=True)
            maps.append(attn)
        return maps

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()


def resize_pos_embed(pos_embed: torch.Tensor, new_grid: int) -> torch.Tensor:
    """Bicubic interpolation of the patch position embeddings to a new grid; the class token's entry is kept.

    Antialiased, as timm does, so embeddings resized here and there agree.
    """
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    old_grid = int(patch_pos.shape[1] ** 0.5)
    grid = patch_pos.reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False, antialias=True)
    return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, -1)], dim=1)


def _vit(defaults: dict, overrides: dict) -> VisionTransformer:
    return VisionTransformer(**{**defaults, **overrides})


# Tiny presets for the book's CPU budgets (Fashion-MNIST at 28 px, Scenes at 32 px).
@register_model
def vit_pico_patch4_28(**kw) -> VisionTransformer:
    return _vit(dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=4, num_heads=4,
                     mlp_ratio=2.0), kw)


@register_model
def vit_nano_patch4_28(**kw) -> VisionTransformer:
    return _vit(dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=96, depth=6, num_heads=4,
                     mlp_ratio=2.0), kw)


@register_model
def vit_pico_patch4_32(**kw) -> VisionTransformer:
    return _vit(dict(img_size=32, patch_size=4, in_chans=3, num_classes=10, embed_dim=64, depth=4, num_heads=4,
                     mlp_ratio=2.0), kw)


@register_model
def vit_nano_patch4_32(**kw) -> VisionTransformer:
    return _vit(dict(img_size=32, patch_size=4, in_chans=3, num_classes=10, embed_dim=96, depth=6, num_heads=4,
                     mlp_ratio=2.0), kw)


# The paper's sizes, with timm's names.
@register_model
def deit_tiny_patch16_224(**kw) -> VisionTransformer:
    return _vit(dict(embed_dim=192, depth=12, num_heads=3), kw)


@register_model
def deit_small_patch16_224(**kw) -> VisionTransformer:
    return _vit(dict(embed_dim=384, depth=12, num_heads=6), kw)


@register_model
def vit_base_patch16_224(**kw) -> VisionTransformer:
    return _vit(dict(embed_dim=768, depth=12, num_heads=12), kw)
