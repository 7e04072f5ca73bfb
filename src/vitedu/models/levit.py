"""LeViT: a Vision Transformer in ConvNet's clothing for faster inference (Graham et al., 2021), top to bottom.

What changes from DeiT, and why (all to run fast at inference on CPUs and GPUs):
- a convolutional stem (four 3x3 stride-2 convolutions) instead of a patch projection: 224 px -> 14 x 14 tokens;
- BatchNorm after every linear layer instead of LayerNorm before it: at inference a BatchNorm is an affine map
  that folds into the preceding layer (``fuse_bn``), so normalisation costs nothing;
- no position embedding: a learned per-head attention bias indexed by the relative offset (|dy|, |dx|);
- a pyramid of three stages, joined by "shrinking" attention whose queries come from a 2x subsampled grid;
- Hardswish everywhere, also on the attention output before its projection;
- a distillation head (as in DeiT, but on the pooled tokens rather than a distillation token).

Parameter names are more explicit than timm's; ``from_timm_keys`` / ``to_timm_keys`` translate, so timm
checkpoints load exactly (see ``register_family`` at the end).
"""

from __future__ import annotations

import copy
import re
from collections import OrderedDict

import torch
import torch.nn as nn

from ._registry import register_model
from .convert import Family, register_family
from .layers import DropPath, check_images, classify


class ConvBN(nn.Module):
    """Conv2d without bias, then BatchNorm2d: the stem's unit."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 3, stride: int = 2, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        # BN(Wx) = gamma (Wx - mu) / sqrt(var + eps) + beta = (s W) x + (beta - s mu),  s = gamma / sqrt(var + eps)
        s = self.bn.weight / (self.bn.running_var + self.bn.eps).sqrt()
        c = self.conv
        fused = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation, c.groups,
                          bias=True, device=c.weight.device, dtype=c.weight.dtype)
        fused.weight.copy_(c.weight * s[:, None, None, None])
        fused.bias.copy_(self.bn.bias - s * self.bn.running_mean)
        return fused


class LinearBN(nn.Module):
    """Linear without bias, then BatchNorm1d over batch *and* tokens: LeViT's replacement for LayerNorm + Linear.

    ``bn_weight_init=0`` on the last layer of a residual branch makes every block start as the identity (without it,
    re-implementations diverge at LeViT's learning rate: lucidrains/vit-pytorch #94).
    """

    def __init__(self, in_features: int, out_features: int, bn_weight_init: float = 1.0):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bn = nn.BatchNorm1d(out_features)
        nn.init.constant_(self.bn.weight, bn_weight_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C_in) -> (B, N, C_out)
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)

    @torch.no_grad()
    def fuse(self) -> nn.Linear:
        s = self.bn.weight / (self.bn.running_var + self.bn.eps).sqrt()
        w = self.linear.weight
        fused = nn.Linear(w.shape[1], w.shape[0], bias=True, device=w.device, dtype=w.dtype)
        fused.weight.copy_(w * s[:, None])
        fused.bias.copy_(self.bn.bias - s * self.bn.running_mean)
        return fused


class BNLinear(nn.Module):
    """BatchNorm1d, then Linear: the classifier heads (the norm comes first here, as there is no block after it)."""

    def __init__(self, in_features: int, out_features: int, drop: float = 0.0):
        super().__init__()
        self.bn = nn.BatchNorm1d(in_features)
        self.drop = nn.Dropout(drop)
        self.linear = nn.Linear(in_features, out_features)
        nn.init.trunc_normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(self.bn(x)))

    @torch.no_grad()
    def fuse(self) -> nn.Linear:
        # W (s x + t) + b = (W diag(s)) x + (W t + b): the BN scales the *input* columns of W
        s = self.bn.weight / (self.bn.running_var + self.bn.eps).sqrt()
        t = self.bn.bias - s * self.bn.running_mean
        w = self.linear.weight
        fused = nn.Linear(w.shape[1], w.shape[0], bias=True, device=w.device, dtype=w.dtype)
        fused.weight.copy_(w * s[None, :])
        fused.bias.copy_(w @ t + self.linear.bias)
        return fused


class Stem(nn.Sequential):
    """Section 4.2: 3x3 stride-2 ConvBNs with Hardswish between; ``s16`` is the paper's four (3 -> C/8 -> C/4 -> C/2
    -> C), ``s8`` timm's three-layer variant (3 -> C/4 -> C/2 -> C) that keeps 4 x 4 tokens on 32-px images."""

    def __init__(self, in_chans: int, dim: int, stem_type: str = "s16"):
        widths = [dim // 8, dim // 4, dim // 2, dim] if stem_type == "s16" else [dim // 4, dim // 2, dim]
        layers = {}
        for i, (c_in, c_out) in enumerate(zip([in_chans] + widths[:-1], widths), start=1):
            if i > 1:
                layers[f"act{i - 1}"] = nn.Hardswish()
            layers[f"conv{i}"] = ConvBN(c_in, c_out)
        super().__init__(OrderedDict(layers))
        self.stride = 2 ** len(widths)


def attention_bias_index(resolution: int, stride: int = 1) -> torch.Tensor:
    """Section 4.2, attention bias: (N_q, N_k) table giving, for query q and key k, the index |dy| * res + |dx|
    of their offset, with query (i, j) sitting at pixel (stride * i, stride * j) of the key grid (stride 2 in the
    shrinking attention). Translation invariant and symmetric in the sign of the offset; res * res distinct entries."""
    keys = torch.stack(torch.meshgrid(torch.arange(resolution), torch.arange(resolution), indexing="ij")).flatten(1)
    sub = torch.arange(0, resolution, stride)
    queries = torch.stack(torch.meshgrid(sub, sub, indexing="ij")).flatten(1)
    offset = (queries[:, :, None] - keys[:, None, :]).abs()  # (2, N_q, N_k): |dy|, |dx|
    return offset[0] * resolution + offset[1]


class _BiasCache:
    """The gathered attention bias B[h, i, j] = attention_biases[h, idx(i, j)], kept between calls where that is safe:
    only without autograd (inference), and only while the parameter is the same tensor at the same in-place version
    (an optimizer step, an EMA update or load_state_dict bumps ``_version``, so the cache can never go stale; timm's
    eval-mode cache can, timm PR #2795)."""

    def __init__(self):
        self.key, self.value = None, None

    def __call__(self, biases: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return biases[:, index]
        key = (biases.data_ptr(), biases._version, biases.dtype, biases.device, index.data_ptr())
        if key != self.key:
            self.key, self.value = key, biases[:, index]
        return self.value


def _attend(q, k, v, bias, return_attention: bool):
    """softmax(Q K^T / sqrt(D) + B) V  (section 4.2), written out: the values are wider than the keys (attn_ratio),
    which rules out PyTorch's fused attention kernels, and its general fallback (``scaled_dot_product_attention``
    with a float mask) costs more than these lines. Scale and bias act in place on the fresh logits."""
    attn = (q @ k.transpose(-2, -1)).mul_(q.shape[-1] ** -0.5).add_(bias).softmax(dim=-1)
    return attn @ v, (attn if return_attention else None)


class Attention(nn.Module):
    """LeViT attention inside a stage: h heads, keys of D dims, values of attn_ratio * D dims (2D in the paper).

    qkv is laid out per head as [q | k | v] (timm and the official code), not as [all q | all k | all v] like ViT.
    Hardswish acts on the concatenated head outputs before the projection (section 4.2).
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, resolution: int):
        super().__init__()
        self.num_heads, self.key_dim, self.val_dim = num_heads, key_dim, int(attn_ratio * key_dim)
        self.resolution = resolution
        self.qkv = LinearBN(dim, num_heads * (2 * key_dim + self.val_dim))
        self.act = nn.Hardswish()
        self.proj = LinearBN(num_heads * self.val_dim, dim, bn_weight_init=0.0)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        # Recomputed from the resolution, so not part of checkpoints.
        self.register_buffer("attention_bias_idxs", attention_bias_index(resolution), persistent=False)
        self.bias = _BiasCache()

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        B, N, _ = x.shape
        q, k, v = self.qkv(x).view(B, N, self.num_heads, -1).transpose(1, 2).split(
            [self.key_dim, self.key_dim, self.val_dim], dim=-1)
        bias = self.bias(self.attention_biases, self.attention_bias_idxs)  # (h, N, N)
        x, attn = _attend(q, k, v, bias, return_attention)
        x = self.proj(self.act(x.transpose(1, 2).reshape(B, N, -1)))
        return (x, attn) if return_attention else x


class ShrinkAttention(nn.Module):
    """Section 4.2, "attention downsampling": queries from the grid subsampled by 2, keys and values from the full
    grid, so the output has a quarter of the tokens and can have more channels. No residual (shapes differ).

    In LeViT: h = C_in / D heads, values of 4D dims, and the projection BN starts at 1 (not 0) since there is no
    residual path to fall back on.
    """

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, num_heads: int, attn_ratio: float, resolution: int,
                 stride: int = 2):
        super().__init__()
        self.num_heads, self.key_dim, self.val_dim = num_heads, key_dim, int(attn_ratio * key_dim)
        self.resolution, self.stride = resolution, stride
        self.out_resolution = (resolution - 1) // stride + 1  # 14 -> 7 -> 4
        self.kv = LinearBN(in_dim, num_heads * (key_dim + self.val_dim))
        self.q = LinearBN(in_dim, num_heads * key_dim)
        self.act = nn.Hardswish()
        self.proj = LinearBN(num_heads * self.val_dim, out_dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        self.register_buffer("attention_bias_idxs", attention_bias_index(resolution, stride), persistent=False)
        self.bias = _BiasCache()

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        B, N, C = x.shape
        k, v = self.kv(x).view(B, N, self.num_heads, -1).transpose(1, 2).split([self.key_dim, self.val_dim], dim=-1)
        sub = x.view(B, self.resolution, self.resolution, C)[:, ::self.stride, ::self.stride].reshape(B, -1, C)
        q = self.q(sub).view(B, -1, self.num_heads, self.key_dim).transpose(1, 2)
        bias = self.bias(self.attention_biases, self.attention_bias_idxs)  # (h, N / 4, N)
        x, attn = _attend(q, k, v, bias, return_attention)
        x = self.proj(self.act(x.transpose(1, 2).reshape(B, sub.shape[1], -1)))
        return (x, attn) if return_attention else x


class Mlp(nn.Module):
    """LinearBN -> Hardswish -> LinearBN, expansion 2 (LeViT uses a small ratio: the MLPs dominate the cost)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = LinearBN(dim, hidden_dim)
        self.act = nn.Hardswish()
        self.fc2 = LinearBN(hidden_dim, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """x = x + DP(Attn(x)); x = x + DP(MLP(x)). No norm before the branches: the BNs sit inside them."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, mlp_ratio: float, resolution: int,
                 drop_path: float = 0.0):
        super().__init__()
        self.attn = Attention(dim, key_dim, num_heads, attn_ratio, resolution)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        y, attn = self.attn(x, return_attention=True) if return_attention else (self.attn(x), None)
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(x))
        return (x, attn) if return_attention else x


class Shrink(nn.Module):
    """Between two stages: shrinking attention, then a residual MLP at the new width."""

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, resolution: int, drop_path: float = 0.0):
        super().__init__()
        self.attn = ShrinkAttention(in_dim, out_dim, key_dim, in_dim // key_dim, attn_ratio=4.0, resolution=resolution)
        self.mlp = Mlp(out_dim, out_dim * 2)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        x, attn = self.attn(x, return_attention=True) if return_attention else (self.attn(x), None)
        x = x + self.drop_path(self.mlp(x))
        return (x, attn) if return_attention else x


class Stage(nn.Module):
    def __init__(self, in_dim: int, dim: int, key_dim: int, depth: int, num_heads: int, attn_ratio: float,
                 mlp_ratio: float, resolution: int, shrink: bool, drop_path: float = 0.0):
        super().__init__()
        self.shrink = Shrink(in_dim, dim, key_dim, resolution, drop_path) if shrink else None
        if shrink:
            resolution = self.shrink.attn.out_resolution
        self.resolution = resolution
        self.blocks = nn.Sequential(*[Block(dim, key_dim, num_heads, attn_ratio, mlp_ratio, resolution, drop_path)
                                      for _ in range(depth)])

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if not return_attention:
            return self.blocks(x if self.shrink is None else self.shrink(x))
        maps = []
        if self.shrink is not None:
            x, attn = self.shrink(x, return_attention=True)
            maps.append(attn)
        for block in self.blocks:
            x, attn = block(x, return_attention=True)
            maps.append(attn)
        return x, maps


class LeViT(nn.Module):
    """LeViT (and its distilled form, the default of every timm LeViT name used here)."""

    def __init__(self, img_size: int = 224, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: tuple[int, ...] = (128, 256, 384), key_dim: int = 16, depth: tuple[int, ...] = (2, 3, 4),
                 num_heads: tuple[int, ...] = (4, 6, 8), attn_ratio: float = 2.0, mlp_ratio: float = 2.0,
                 stem_type: str = "s16", distilled: bool = True, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0):
        super().__init__()
        embed_dim, depth, num_heads = tuple(embed_dim), tuple(depth), tuple(num_heads)
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if not len(embed_dim) == len(depth) == len(num_heads):
            raise ValueError(f"embed_dim {embed_dim}, depth {depth} and num_heads {num_heads} need one entry per "
                             "stage.")
        if stem_type not in ("s16", "s8"):
            raise ValueError(f"stem_type must be 's16' (the paper's four convolutions) or 's8', got {stem_type!r}.")
        stride = 16 if stem_type == "s16" else 8
        if img_size % stride:
            raise ValueError(f"img_size {img_size} is not a multiple of the stem's stride {stride}.")
        for i, dim in enumerate(embed_dim[:-1]):
            if dim % key_dim:
                raise ValueError(f"the shrinking attention after stage {i + 1} uses embed_dim / key_dim heads: "
                                 f"{dim} is not a multiple of key_dim {key_dim}.")
        self.img_size, self.in_chans, self.num_classes, self.drop_rate = img_size, in_chans, num_classes, drop_rate
        self.num_features = embed_dim[-1]
        self.distilled_training = False  # DeiT-style: return (class, distillation) logits separately while training
        self.stem = Stem(in_chans, embed_dim[0], stem_type)
        resolution = img_size // stride
        stages = []
        for i in range(len(embed_dim)):
            stages.append(Stage(embed_dim[max(i - 1, 0)], embed_dim[i], key_dim, depth[i], num_heads[i], attn_ratio,
                                mlp_ratio, resolution, shrink=i > 0, drop_path=drop_path_rate))
            resolution = stages[-1].resolution
        self.stages = nn.Sequential(*stages)
        self.head = BNLinear(self.num_features, num_classes, drop_rate) if num_classes > 0 else nn.Identity()
        self.head_dist = None
        if distilled:
            self.head_dist = BNLinear(self.num_features, num_classes, drop_rate) if num_classes > 0 else nn.Identity()
        # The stem's convolutions run 1.05-1.3x faster on NHWC weights and inputs (oneDNN); as a bonus the NHWC map
        # flattens into (B, N, C) tokens without a copy.
        self.to(memory_format=torch.channels_last)

    def no_weight_decay(self) -> set[str]:
        return {name for name, _ in self.named_parameters() if "attention_biases" in name}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.in_chans, self.stem.stride, "LeViT")
        if tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f"LeViT's attention biases are tied to the token grid of {self.img_size} x {self.img_size}"
                             f"-px images; got {x.shape[-2]} x {x.shape[-1]} px. Resize the images, or create the "
                             f"model with img_size={x.shape[-1]} (square images only).")
        x = self.stem(x.to(memory_format=torch.channels_last))
        return x.flatten(2).transpose(1, 2)  # (B, N, C): the stem's feature map as tokens, row-major

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens after the last stage: (B, res * res, embed_dim[-1]) (4 x 4 tokens at 224 px)."""
        return self.stages(self.embed(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        x = x.mean(dim=1)  # average pooling: LeViT has no class token
        if pre_logits:
            return x
        return classify(self.head, self.head_dist, x, x, self.distilled_training and self.training)

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every attention layer in order, shrinking ones included: (B, heads, N_q, N_k), N_q = N_k / 4 (rounded up
        per side) for the shrinking layers. Row i is what token i (row-major on its grid) looks at."""
        maps = []
        x = self.embed(x)
        for stage in self.stages:
            x, stage_maps = stage(x, return_attention=True)
            maps.extend(stage_maps)
        return maps

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = BNLinear(self.num_features, num_classes, self.drop_rate) if num_classes > 0 else nn.Identity()
        if self.head_dist is not None:
            self.head_dist = (BNLinear(self.num_features, num_classes, self.drop_rate) if num_classes > 0
                              else nn.Identity())

    def fuse(self) -> "LeViT":
        """A copy for inference with every BatchNorm folded into its linear or convolutional layer (see ``fuse_bn``)."""
        return fuse_bn(self)


@torch.no_grad()
def fuse_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` in which each ConvBN / LinearBN / BNLinear is one Conv2d / Linear with bias.

    Exact in eval mode (BN then uses its running statistics, an affine map); the copy has no BatchNorm left, so it
    cannot be trained as LeViT, nor converted to timm. The original model is left untouched.
    """
    fused = copy.deepcopy(model).eval()

    def replace(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, (ConvBN, LinearBN, BNLinear)):
                setattr(module, name, child.fuse())
            else:
                replace(child)

    replace(fused)
    fused.to(memory_format=torch.channels_last)  # the new convolutions too (see LeViT.__init__)
    fused.is_fused = True
    return fused


# timm <-> vitedu parameter names. Order matters only where one rule's output could match another's input: it can't.
_FROM_TIMM = [
    (r"^stem\.conv(\d)\.linear\.", r"stem.conv\1.conv."),
    (r"\.downsample\.attn_downsample\.", r".shrink.attn."),
    (r"\.downsample\.mlp\.", r".shrink.mlp."),
    (r"\.(proj|q)\.ln\.", r".\1."),
    (r"\.mlp\.ln1\.", r".mlp.fc1."),
    (r"\.mlp\.ln2\.", r".mlp.fc2."),
]
_TO_TIMM = [
    (r"^stem\.conv(\d)\.conv\.", r"stem.conv\1.linear."),
    (r"\.shrink\.attn\.", r".downsample.attn_downsample."),
    (r"\.shrink\.mlp\.", r".downsample.mlp."),
    (r"\.(proj|q)\.(linear|bn)\.", r".\1.ln.\2."),
    (r"\.mlp\.fc1\.", r".mlp.ln1."),
    (r"\.mlp\.fc2\.", r".mlp.ln2."),
]


def _rename(state_dict, rules) -> dict:
    out = {}
    for key, value in state_dict.items():
        if "attention_bias_idxs" in key:  # a persistent buffer in the official checkpoints; recomputed here
            continue
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def from_timm_keys(state_dict) -> dict:
    return _rename(state_dict, _FROM_TIMM)


def to_timm_keys(state_dict) -> dict:
    return _rename(state_dict, _TO_TIMM)


def _build_timm(model: LeViT) -> nn.Module:
    import timm

    if getattr(model, "is_fused", False):
        raise ValueError("this LeViT has its BatchNorms fused (fuse_bn): convert the unfused model to timm instead.")
    c = model.config
    # timm's levit_128s is LevitDistilled, levit_512 is Levit (no distillation head); the kwargs set the rest.
    name = "levit_128s" if c["distilled"] else "levit_512"
    kwargs = {k: c[k] for k in ("img_size", "in_chans", "num_classes", "embed_dim", "key_dim", "depth", "num_heads",
                                "attn_ratio", "mlp_ratio", "stem_type", "drop_rate", "drop_path_rate")}
    return timm.create_model(name, pretrained=False, **kwargs, act_layer="hard_swish")


register_family(Family(LeViT, _build_timm, from_timm_keys, to_timm_keys))


def _levit(defaults: dict, overrides: dict) -> LeViT:
    return LeViT(**{**defaults, **overrides})


# Table 2 of the paper (timm's model_cfgs); every one carries the distillation head, as timm's and the released weights.
_LEVIT = {
    "128s": dict(embed_dim=(128, 256, 384), key_dim=16, num_heads=(4, 6, 8), depth=(2, 3, 4)),
    "128": dict(embed_dim=(128, 256, 384), key_dim=16, num_heads=(4, 8, 12), depth=(4, 4, 4)),
    "192": dict(embed_dim=(192, 288, 384), key_dim=32, num_heads=(3, 5, 6), depth=(4, 4, 4)),
    "256": dict(embed_dim=(256, 384, 512), key_dim=32, num_heads=(4, 6, 8), depth=(4, 4, 4)),
    "384": dict(embed_dim=(384, 512, 768), key_dim=32, num_heads=(6, 9, 12), depth=(4, 4, 4)),
}


@register_model
def levit_128s(**kw) -> LeViT:
    return _levit(_LEVIT["128s"], kw)


@register_model
def levit_128(**kw) -> LeViT:
    return _levit(_LEVIT["128"], kw)


@register_model
def levit_192(**kw) -> LeViT:
    return _levit(_LEVIT["192"], kw)


@register_model
def levit_256(**kw) -> LeViT:
    return _levit(_LEVIT["256"], kw)


@register_model
def levit_384(**kw) -> LeViT:
    return _levit(_LEVIT["384"], kw)  # the paper trains it with drop_path_rate=0.1; timm's default is 0, as here


# Tiny preset for 32-px images and 10 classes. The paper's stride-16 stem would leave 2 x 2 tokens, so it uses the
# three-convolution stride-8 stem: 4 x 4 tokens, then 2 x 2 and 1 x 1 after the two shrinking attentions. No
# distillation head by default (pass distilled=True to train with a teacher).
_PICO_32 = dict(img_size=32, num_classes=10, embed_dim=(64, 128, 192), key_dim=16, num_heads=(2, 4, 6),
                depth=(1, 1, 1), stem_type="s8", distilled=False)


@register_model
def levit_pico_32(**kw) -> LeViT:
    return _levit(_PICO_32, kw)
