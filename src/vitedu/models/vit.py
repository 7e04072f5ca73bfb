"""Vision Transformer and its Meta AI descendants, readable top to bottom.

- ViT (Dosovitskiy et al., 2021): patches, class token, position embedding, pre-norm blocks.
- DeiT (Touvron et al., 2021): the same network, plus an optional distillation token and head.
- DeiT III (Touvron et al., 2022): LayerScale, no position embedding on the class token.
- Three things (Touvron et al., 2022): parallel blocks (two attentions, then two MLPs, side by side) and the hMLP stem.

Parameter names follow timm, so timm checkpoints load with the identity key map.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import register_model
from .convert import Family, register_family
from .layers import Attention, DropPath, LayerScale, Mlp, PatchEmbed, classify, hmlp_stem, init_transformer_weights


class Block(nn.Module):
    """Pre-norm block: z = z + DP(ls1 * MSA(LN(z))); z = z + DP(ls2 * MLP(LN(z)))  (ViT eqs. 2-3, DeiT III LayerScale)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 init_values: float | None = None, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        y, attn = self.attn(self.norm1(x), return_attention=True) if return_attention else (self.attn(self.norm1(x)), None)
        x = x + self.drop_path(self.ls1(y))
        x = x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
        return (x, attn) if return_attention else x


class ParallelBlock(nn.Module):
    """Three things, section 2: x = x + sum_i MSA_i(LN_i(x)); x = x + sum_i MLP_i(LN_i(x)), each branch with its own
    norm and LayerScale. Wider and shallower at the same parameter count as a sequential stack of 2x the depth."""

    def __init__(self, dim: int, num_heads: int, num_parallel: int = 2, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 init_values: float | None = None, drop_path: float = 0.0):
        super().__init__()

        def scale():
            return LayerScale(dim, init_values) if init_values else nn.Identity()

        self.attns = nn.ModuleList(nn.ModuleDict({"norm": nn.LayerNorm(dim, eps=1e-6),
                                                  "attn": Attention(dim, num_heads, qkv_bias), "ls": scale()})
                                   for _ in range(num_parallel))
        self.ffns = nn.ModuleList(nn.ModuleDict({"norm": nn.LayerNorm(dim, eps=1e-6),
                                                 "mlp": Mlp(dim, int(dim * mlp_ratio)), "ls": scale()})
                                  for _ in range(num_parallel))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        maps = []
        update = 0
        for branch in self.attns:
            if return_attention:
                y, attn = branch["attn"](branch["norm"](x), return_attention=True)
                maps.append(attn)
            else:
                y = branch["attn"](branch["norm"](x))
            update = update + self.drop_path(branch["ls"](y))
        x = x + update
        x = x + sum(self.drop_path(branch["ls"](branch["mlp"](branch["norm"](x)))) for branch in self.ffns)
        return (x, torch.cat(maps, dim=1)) if return_attention else x


class VisionTransformer(nn.Module):
    """ViT / DeiT / DeiT III / parallel ViT, chosen by the arguments (see the registered names below)."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, init_values: float | None = None, num_parallel: int = 1,
                 distilled: bool = False, no_embed_class: bool = False, embed_layer: str = "linear",
                 drop_path_rate: float = 0.0, drop_path_schedule: str = "linear", global_pool: str = "token"):
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' (class token) or 'avg' (mean of patches), got {global_pool!r}.")
        if embed_layer not in ("linear", "hmlp"):
            raise ValueError(f"embed_layer must be 'linear' (one strided convolution) or 'hmlp', got {embed_layer!r}.")
        if drop_path_schedule not in ("linear", "uniform"):
            raise ValueError(f"drop_path_schedule must be 'linear' (timm) or 'uniform' (official DeiT III), "
                             f"got {drop_path_schedule!r}.")
        if distilled and global_pool != "token":
            raise ValueError("a distilled model reads its class and distillation tokens: use global_pool='token'.")
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.num_classes, self.global_pool, self.no_embed_class = num_classes, global_pool, no_embed_class
        self.num_features = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1 + int(distilled)
        self.distilled_training = False  # DeiT: return (class, distillation) logits separately while training
        stem = PatchEmbed if embed_layer == "linear" else hmlp_stem
        self.patch_embed = stem(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if distilled else None
        num_pos = self.patch_embed.num_patches + (0 if no_embed_class else self.num_prefix_tokens)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_pos, embed_dim))
        if drop_path_schedule == "linear":
            rates = [drop_path_rate * i / max(1, depth - 1) for i in range(depth)]  # deeper blocks dropped more often
        else:
            rates = [drop_path_rate] * depth
        if num_parallel == 1:
            blocks = [Block(embed_dim, num_heads, mlp_ratio, qkv_bias, init_values, r) for r in rates]
        else:
            blocks = [ParallelBlock(embed_dim, num_heads, num_parallel, mlp_ratio, qkv_bias, init_values, r)
                      for r in rates]
        self.blocks = nn.Sequential(*blocks)
        # With average pooling the norm moves after the pooling (MAE, timm's fc_norm); tokens leave the blocks unnormed.
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6) if global_pool == "token" else nn.Identity()
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6) if global_pool == "avg" else nn.Identity()
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.head_dist = (nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()) if distilled else None
        init_transformer_weights(self, self.pos_embed, self.cls_token, self.dist_token)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token", "dist_token"}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """z_0 = [x_class; (x_dist;) x_p E] + E_pos  (ViT eq. 1); E_pos is resized when the image size differs.

        DeiT III (``no_embed_class``) adds E_pos to the patches only, before the class token joins.
        """
        x = self.patch_embed(x)
        pos = self._pos_embed_for(x.shape[1])
        prefix = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(x.shape[0], -1, -1))
        if self.no_embed_class:
            return torch.cat(prefix + [x + pos], dim=1)
        return torch.cat(prefix + [x], dim=1) + pos

    def _pos_embed_for(self, num_patches: int) -> torch.Tensor:
        if num_patches == self.patch_embed.num_patches:
            return self.pos_embed
        prefix = 0 if self.no_embed_class else self.num_prefix_tokens
        return resize_pos_embed(self.pos_embed, int(round(num_patches ** 0.5)), prefix)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens after the last block (and the final norm with a class token): (B, prefix + N, D)."""
        return self.norm(self.blocks(self.embed(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        if self.global_pool == "avg":
            x = self.fc_norm(x[:, self.num_prefix_tokens:].mean(dim=1))
            return x if pre_logits else self.head(x)
        if pre_logits:
            return x[:, 0] if self.head_dist is None else (x[:, 0] + x[:, 1]) / 2
        return classify(self.head, self.head_dist, x[:, 0], x[:, self.num_prefix_tokens - 1],
                        self.distilled_training and self.training)

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Self-attention of every block, each (B, heads, T, T) with T = prefix tokens + patches; row 0 is what the
        class token looks at. Parallel blocks stack their branches' heads."""
        maps = []
        x = self.embed(x)
        for block in self.blocks:
            x, attn = block(x, return_attention=True)
            maps.append(attn)
        return maps

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if self.head_dist is not None:
            self.head_dist = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()


def resize_pos_embed(pos_embed: torch.Tensor, new_grid: int, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Bicubic interpolation of the patch position embeddings to a new grid; prefix tokens' entries are kept.

    Antialiased, as timm does, so embeddings resized here and there agree.
    """
    prefix, patch_pos = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old_grid = int(round(patch_pos.shape[1] ** 0.5))
    grid = patch_pos.reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False, antialias=True)
    return torch.cat([prefix, grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, -1)], dim=1)


def _build_timm(model: VisionTransformer) -> nn.Module:
    import timm

    c = model.config
    if c["embed_layer"] != "linear":
        raise ValueError("timm has no hMLP stem: a ViT with embed_layer='hmlp' has no timm counterpart.")
    name = ("deit_tiny_distilled_patch16_224" if c["distilled"]
            else "vit_small_patch16_18x2_224" if c["num_parallel"] > 1 else "vit_base_patch16_224")
    kwargs = dict(img_size=c["img_size"], patch_size=c["patch_size"], in_chans=c["in_chans"],
                  num_classes=c["num_classes"], embed_dim=c["embed_dim"], depth=c["depth"], num_heads=c["num_heads"],
                  mlp_ratio=c["mlp_ratio"], qkv_bias=c["qkv_bias"], init_values=c["init_values"],
                  no_embed_class=c["no_embed_class"], global_pool=c["global_pool"])
    if c["num_parallel"] > 2:
        raise ValueError(f"timm's parallel ViT has two branches per block; this model has {c['num_parallel']}.")
    return timm.create_model(name, pretrained=False, **kwargs)


register_family(Family(VisionTransformer, _build_timm))


def _vit(defaults: dict, overrides: dict) -> VisionTransformer:
    return VisionTransformer(**{**defaults, **overrides})


# Tiny presets for the book's CPU budgets (Fashion-MNIST at 28 px, Scenes at 32 px), all under 1M parameters.
_PICO_28 = dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0)
_NANO_28 = dict(_PICO_28, embed_dim=96, depth=6)
_PICO_32 = dict(_PICO_28, img_size=32, in_chans=3)
_NANO_32 = dict(_PICO_32, embed_dim=96, depth=6)


@register_model
def vit_pico_patch4_28(**kw) -> VisionTransformer:
    return _vit(_PICO_28, kw)


@register_model
def vit_nano_patch4_28(**kw) -> VisionTransformer:
    return _vit(_NANO_28, kw)


@register_model
def vit_pico_patch4_32(**kw) -> VisionTransformer:
    return _vit(_PICO_32, kw)


@register_model
def vit_nano_patch4_32(**kw) -> VisionTransformer:
    return _vit(_NANO_32, kw)


@register_model
def deit_pico_distilled_patch4_32(**kw) -> VisionTransformer:
    return _vit(dict(_PICO_32, distilled=True), kw)


@register_model
def deit3_pico_patch4_32(**kw) -> VisionTransformer:
    return _vit(dict(_PICO_32, init_values=1e-4, no_embed_class=True, drop_path_schedule="uniform"), kw)


@register_model
def vit_pico_patch4_32_2x2(**kw) -> VisionTransformer:
    """Two parallel blocks of two branches: the parameters of vit_pico_patch4_32 at half its depth."""
    return _vit(dict(_PICO_32, depth=2, num_parallel=2, init_values=1e-4, no_embed_class=True), kw)


@register_model
def vit_pico_hmlp_patch4_32(**kw) -> VisionTransformer:
    return _vit(dict(_PICO_32, embed_layer="hmlp"), kw)


# The papers' sizes, with timm's names (timm's LayerScale init: 1e-6 for DeiT III, 1e-5 for the parallel ViTs).
_VIT = {"tiny": dict(embed_dim=192, depth=12, num_heads=3), "small": dict(embed_dim=384, depth=12, num_heads=6),
        "medium": dict(embed_dim=512, depth=12, num_heads=8), "base": dict(embed_dim=768, depth=12, num_heads=12),
        "large": dict(embed_dim=1024, depth=24, num_heads=16)}


@register_model
def vit_tiny_patch16_224(**kw) -> VisionTransformer:
    return _vit(_VIT["tiny"], kw)


@register_model
def vit_small_patch16_224(**kw) -> VisionTransformer:
    return _vit(_VIT["small"], kw)


@register_model
def vit_base_patch16_224(**kw) -> VisionTransformer:
    return _vit(_VIT["base"], kw)


@register_model
def vit_large_patch16_224(**kw) -> VisionTransformer:
    return _vit(_VIT["large"], kw)


@register_model
def deit_tiny_patch16_224(**kw) -> VisionTransformer:
    return _vit(_VIT["tiny"], kw)


@register_model
def deit_small_patch16_224(**kw) -> VisionTransformer:
    return _vit(_VIT["small"], kw)


@register_model
def deit_base_patch16_224(**kw) -> VisionTransformer:
    return _vit(_VIT["base"], kw)


@register_model
def deit_tiny_distilled_patch16_224(**kw) -> VisionTransformer:
    return _vit(dict(_VIT["tiny"], distilled=True), kw)


@register_model
def deit_small_distilled_patch16_224(**kw) -> VisionTransformer:
    return _vit(dict(_VIT["small"], distilled=True), kw)


@register_model
def deit_base_distilled_patch16_224(**kw) -> VisionTransformer:
    return _vit(dict(_VIT["base"], distilled=True), kw)


_DEIT3 = dict(init_values=1e-6, no_embed_class=True, drop_path_schedule="uniform")


@register_model
def deit3_small_patch16_224(**kw) -> VisionTransformer:
    return _vit(dict(_VIT["small"], **_DEIT3), kw)


@register_model
def deit3_medium_patch16_224(**kw) -> VisionTransformer:
    return _vit(dict(_VIT["medium"], **_DEIT3), kw)


@register_model
def deit3_base_patch16_224(**kw) -> VisionTransformer:
    return _vit(dict(_VIT["base"], **_DEIT3), kw)


@register_model
def deit3_large_patch16_224(**kw) -> VisionTransformer:
    return _vit(dict(_VIT["large"], **_DEIT3), kw)


@register_model
def deit3_huge_patch14_224(**kw) -> VisionTransformer:
    return _vit(dict(patch_size=14, embed_dim=1280, depth=32, num_heads=16, **_DEIT3), kw)


@register_model
def vit_small_patch16_18x2_224(**kw) -> VisionTransformer:
    return _vit(dict(_VIT["small"], depth=18, num_parallel=2, init_values=1e-5), kw)


@register_model
def vit_base_patch16_18x2_224(**kw) -> VisionTransformer:
    return _vit(dict(_VIT["base"], depth=18, num_parallel=2, init_values=1e-5), kw)


@register_model
def vit_small_patch16_36x1_224(**kw) -> VisionTransformer:
    return _vit(dict(_VIT["small"], depth=36, init_values=1e-5), kw)
