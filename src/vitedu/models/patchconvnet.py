"""PatchConvNet (Touvron et al., 2021, arXiv 2112.13692): a column of convolutional blocks, pooled by attention.

- A convolutional stem cuts the image into 16 x 16 "patches" (four 3x3 convolutions of stride 2, no norm).
- A column of residual blocks keeps that resolution: per token LayerNorm, 1x1 conv, depthwise 3x3 conv,
  Squeeze-and-Excitation, 1x1 conv, LayerScale. No attention, no position embedding.
- The attention-based pooling replaces global average pooling: one class token attends to [class token; patches]
  (one head), as in CaiT's class-attention block. Its attention row is a map of where the network looks.

Not in timm. ``from_official_keys`` / ``to_official_keys`` convert from and to the official checkpoints
(facebookresearch/deit, patchconvnet_models.py); the pooling block holds the keys of timm's
``cait.LayerScaleBlockClassAttn`` up to its LayerScale names.
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import register_model
from .convert import StateDict
from .layers import DropPath, LayerScale, Mlp, check_images, init_transformer_weights


class SqueezeExcite(nn.Module):
    """Hu et al. (2018), as timm's SqueezeExcite (which the official code imports): gate each channel by a small
    MLP of the channel means, s = sigmoid(W2 ReLU(W1 mean_hw(x)))."""

    def __init__(self, dim: int, rd_ratio: float = 0.25):
        super().__init__()
        reduced = round(dim * rd_ratio)
        self.conv_reduce = nn.Conv2d(dim, reduced, kernel_size=1)
        self.act = nn.ReLU()
        self.conv_expand = nn.Conv2d(reduced, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.conv_expand(self.act(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * s.sigmoid()


class ConvBlock(nn.Module):
    """Section 3, Figure 2: x = x + gamma * Conv1x1(SE(GELU(DWConv3x3(GELU(Conv1x1(LN(x))))))).

    The tokens stay a sequence (B, N, D) between blocks, as in a ViT, so LayerNorm normalises each token over its
    channels; the convolutions see them as an image (B, D, H, W).
    """

    def __init__(self, dim: int, init_values: float = 1e-4, drop_path: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=1)
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)  # the only spatial mixing
        self.se = SqueezeExcite(dim)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=1)
        self.act = nn.GELU()
        self.ls = LayerScale(dim, init_values)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        B, N, D = x.shape
        y = self.norm(x).transpose(1, 2).reshape(B, D, *grid)  # tokens are the grid in row-major order
        y = self.conv2(self.se(self.act(self.dwconv(self.act(self.conv1(y))))))
        return x + self.drop_path(self.ls(y.flatten(2).transpose(1, 2)))


class ClassAttention(nn.Module):
    """Section 3 (attention-based pooling), CaiT's class attention: only the class token asks a query,
    q = W_q u_0, and it attends over all tokens u = [class; patches], itself included."""

    def __init__(self, dim: int, num_heads: int = 1, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads.")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, u: torch.Tensor, return_attention: bool = False):
        B, T, D = u.shape
        q = self.q(u[:, :1]).reshape(B, 1, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, 1, d)
        k = self.k(u).reshape(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, T, d)
        v = self.v(u).reshape(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        if return_attention:
            attn = (q * self.scale @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, h, 1, T)
            out = attn @ v
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(B, 1, D))
        return (out, attn) if return_attention else out


class AttentionPooling(nn.Module):
    """The official ``Layer_scale_init_Block_only_token``, the same computation as timm's
    ``cait.LayerScaleBlockClassAttn``: only the class token is updated, the patches are read, never changed.

        cls = cls + ls1 * ClassAttn(LN1([cls; x]));   cls = cls + ls2 * MLP(LN2(cls))
    """

    def __init__(self, dim: int, num_heads: int = 1, mlp_ratio: float = 3.0, qkv_bias: bool = True,
                 init_values: float = 1e-4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ClassAttention(dim, num_heads, qkv_bias)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: torch.Tensor, cls: torch.Tensor, return_attention: bool = False):
        u = torch.cat([cls, x], dim=1)
        if return_attention:
            y, attn = self.attn(self.norm1(u), return_attention=True)
        else:
            y, attn = self.attn(self.norm1(u)), None
        cls = cls + self.ls1(y)
        cls = cls + self.ls2(self.mlp(self.norm2(cls)))
        return (cls, attn) if return_attention else cls


class PatchConvNet(nn.Module):
    """Convolutional stem, ``depth`` ConvBlocks at constant resolution, then a pooling and a linear head.

    ``global_pool="token"`` (the paper): attention-based pooling with a class token, then LayerNorm, head on the
    class token. ``global_pool="avg"``: the same stem and trunk, mean over the patches, LayerNorm, head (the
    baseline the paper compares against; no class token and no pooling block).

    Any image whose sides are multiples of 2**stem_convs works (the trunk is convolutional, there is no position
    embedding); ``img_size`` is the size the presets are meant for.
    """

    def __init__(self, img_size: int = 224, in_chans: int = 3, num_classes: int = 1000, embed_dim: int = 384,
                 depth: int = 60, stem_convs: int = 4, num_heads: int = 1, mlp_ratio: float = 3.0,
                 qkv_bias: bool = True, init_values: float = 1e-4, drop_path_rate: float = 0.0,
                 global_pool: str = "token"):
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' (attention-based pooling) or 'avg' (mean of the patches), "
                             f"got {global_pool!r}.")
        if stem_convs < 1 or embed_dim % 2 ** (stem_convs - 1):
            raise ValueError(f"the stem doubles the width at each of its {stem_convs} convolutions up to embed_dim: "
                             f"embed_dim must be a multiple of 2**(stem_convs - 1) = {2 ** (stem_convs - 1)}, "
                             f"got {embed_dim}.")
        if img_size % 2 ** stem_convs:
            raise ValueError(f"img_size {img_size} is not a multiple of the stem's stride {2 ** stem_convs}.")
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.in_chans, self.num_classes, self.global_pool = in_chans, num_classes, global_pool
        self.num_features = self.embed_dim = embed_dim
        self.stride = 2 ** stem_convs  # one token per stride x stride pixels
        # Stem: 3x3 convolutions of stride 2, widths 3 -> d/8 -> d/4 -> d/2 -> d for four of them; no norm, no bias.
        widths = [in_chans] + [embed_dim // 2 ** (stem_convs - 1 - i) for i in range(stem_convs)]
        stem = []
        for i in range(stem_convs):
            if i:
                stem.append(nn.GELU())
            stem.append(nn.Conv2d(widths[i], widths[i + 1], kernel_size=3, stride=2, padding=1, bias=False))
        self.stem = nn.Sequential(*stem)
        # Stochastic depth: the same rate in every block (official dpr_constant=True), not timm's linear ramp.
        self.blocks = nn.ModuleList(ConvBlock(embed_dim, init_values, drop_path_rate) for _ in range(depth))
        if global_pool == "token":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pool = AttentionPooling(embed_dim, num_heads, mlp_ratio, qkv_bias, init_values)
        else:
            self.cls_token, self.pool = None, None
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        # As the official code: class token and Linear layers truncated normal 0.02; convolutions keep PyTorch's init.
        init_transformer_weights(self, self.cls_token)
        # NHWC convolution weights: the blocks' (B, N, D) tokens already are an NHWC image once transposed, so the
        # convolutions read them in place, and oneDNN runs 1.05-1.45x faster than with NCHW weights.
        self.to(memory_format=torch.channels_last)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token"} if self.cls_token is not None else set()

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Stem and ConvBlocks: the patch tokens (B, N, D) and their grid (H', W'), N = H' W'."""
        check_images(x, self.in_chans, self.stride, f"PatchConvNet (stride {self.stride})")
        x = self.stem(x.to(memory_format=torch.channels_last))
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = block(x, grid)
        return x, grid

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """With attention pooling, [class; patches] after the final norm: (B, 1 + N, D), as the official code
        (which then keeps the class token only). With ``global_pool="avg"``, the trunk's patches: (B, N, D)."""
        x, _ = self.trunk(x)
        if self.pool is None:
            return x
        cls = self.pool(x, self.cls_token.expand(x.shape[0], -1, -1))
        return self.norm(torch.cat([cls, x], dim=1))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0] if self.pool is not None else self.norm(x.mean(dim=1))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The pooling attention: a list with one tensor (B, heads, 1, 1 + N), the class token's softmax row over
        [class; patches] (each row sums to 1, the class token's share included).

        The map over the image, (B, H', W') with H' = H / stride, W' = W / stride (14 x 14 at 224 px):
        ``a = model.attention_maps(x)[0]; a[:, :, 0, 1:].mean(1).reshape(B, H', W')``, as ``attention_grid`` does.
        """
        if self.pool is None:
            raise ValueError("this PatchConvNet pools by averaging (global_pool='avg'): it has no attention map. "
                             "Build it with global_pool='token'.")
        x, _ = self.trunk(x)
        _, attn = self.pool(x, self.cls_token.expand(x.shape[0], -1, -1), return_attention=True)
        return [attn]

    @torch.no_grad()
    def attention_grid(self, x: torch.Tensor) -> torch.Tensor:
        """Where the class token looks, as an image: (B, H', W'), averaged over heads (PatchConvNet has one). The
        entries sum to 1 minus the class token's attention to itself."""
        attn = self.attention_maps(x)[0]
        grid = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        return attn[:, :, 0, 1:].mean(dim=1).reshape(x.shape[0], *grid)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()


# The official checkpoint layout (deit/patchconvnet_models.py): the stem convolutions are wrapped in Sequentials,
# a ConvBlock's layers are one Sequential ``attn.qkv_pos`` (0 conv1x1, 1 GELU, 2 dwconv, 3 GELU, 4 SE, 5 conv1x1),
# LayerScales are plain parameters gamma_1 / gamma_2, the pooling block is ``blocks_token_only.0``.
_FROM_OFFICIAL = [(r"^patch_embed\.proj\.(\d+)\.0\.", r"stem.\1."), (r"^(blocks\.\d+)\.norm1\.", r"\1.norm."),
                  (r"^(blocks\.\d+)\.attn\.qkv_pos\.0\.", r"\1.conv1."),
                  (r"^(blocks\.\d+)\.attn\.qkv_pos\.2\.", r"\1.dwconv."),
                  (r"^(blocks\.\d+)\.attn\.qkv_pos\.4\.", r"\1.se."),
                  (r"^(blocks\.\d+)\.attn\.qkv_pos\.5\.", r"\1.conv2."),
                  (r"^(blocks\.\d+)\.gamma_1$", r"\1.ls.gamma"),
                  (r"^blocks_token_only\.0\.gamma_(\d)$", r"pool.ls\1.gamma"), (r"^blocks_token_only\.0\.", "pool.")]
_TO_OFFICIAL = [(r"^stem\.(\d+)\.", r"patch_embed.proj.\1.0."), (r"^(blocks\.\d+)\.norm\.", r"\1.norm1."),
                (r"^(blocks\.\d+)\.conv1\.", r"\1.attn.qkv_pos.0."), (r"^(blocks\.\d+)\.dwconv\.", r"\1.attn.qkv_pos.2."),
                (r"^(blocks\.\d+)\.se\.", r"\1.attn.qkv_pos.4."), (r"^(blocks\.\d+)\.conv2\.", r"\1.attn.qkv_pos.5."),
                (r"^(blocks\.\d+)\.ls\.gamma$", r"\1.gamma_1"),
                (r"^pool\.ls(\d)\.gamma$", r"blocks_token_only.0.gamma_\1"), (r"^pool\.", "blocks_token_only.0.")]


def _rename(state_dict: StateDict, rules: list[tuple[str, str]]) -> dict:
    out = {}
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            key, hits = re.subn(pattern, replacement, key)
            if hits:
                break  # one rule per key: the rules' outputs could match later patterns
        out[key] = value
    return out


def from_official_keys(state_dict: StateDict) -> dict:
    """An official PatchConvNet state dict (S60.pth, ...) in this module's layout. Keys that have no counterpart
    here (a second token-only block, the multi-class-token heads of S60_multi) pass through unchanged, so
    ``vitedu.models.convert.load_checked`` names them."""
    return _rename(state_dict, _FROM_OFFICIAL)


def to_official_keys(state_dict: StateDict) -> dict:
    if not any(k.startswith("pool.") for k in state_dict):
        raise ValueError("the official PatchConvNet always pools by attention: a global_pool='avg' model has no "
                         "official layout.")
    return _rename(state_dict, _TO_OFFICIAL)


def _patchconvnet(defaults: dict, overrides: dict) -> PatchConvNet:
    return PatchConvNet(**{**defaults, **overrides})


# The paper's models (official names S60, S120, ...; width d, depth = number of ConvBlocks). LayerScale init as in
# the official code: 1e-4 for S60, 1e-6 for the others.
@register_model
def patchconvnet_s60(**kw) -> PatchConvNet:
    return _patchconvnet(dict(embed_dim=384, depth=60, init_values=1e-4), kw)


@register_model
def patchconvnet_s120(**kw) -> PatchConvNet:
    return _patchconvnet(dict(embed_dim=384, depth=120, init_values=1e-6), kw)


@register_model
def patchconvnet_b60(**kw) -> PatchConvNet:
    return _patchconvnet(dict(embed_dim=768, depth=60, init_values=1e-6), kw)


@register_model
def patchconvnet_b120(**kw) -> PatchConvNet:
    return _patchconvnet(dict(embed_dim=768, depth=120, init_values=1e-6), kw)


@register_model
def patchconvnet_l60(**kw) -> PatchConvNet:
    return _patchconvnet(dict(embed_dim=1024, depth=60, init_values=1e-6), kw)


@register_model
def patchconvnet_l120(**kw) -> PatchConvNet:
    return _patchconvnet(dict(embed_dim=1024, depth=120, init_values=1e-6), kw)


# Tiny preset for 32-px images: two stem convolutions (4x downsampling, an 8 x 8 grid), as the paper's 16x stem
# would leave 2 x 2 tokens.
_PICO_32 = dict(img_size=32, in_chans=3, num_classes=10, embed_dim=96, depth=12, stem_convs=2, init_values=1e-4)


@register_model
def patchconvnet_pico_32(**kw) -> PatchConvNet:
    return _patchconvnet(_PICO_32, kw)


@register_model
def patchconvnet_pico_avg_32(**kw) -> PatchConvNet:
    """The same stem and trunk as patchconvnet_pico_32, pooled by averaging: the paper's comparison."""
    return _patchconvnet(dict(_PICO_32, global_pool="avg"), kw)
