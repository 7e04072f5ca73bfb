"""ResMLP (Touvron et al., 2021, arXiv 2105.03404): an image classifier made of linear layers only.

Patches are embedded as in ViT; each block then mixes information across patches with one linear layer
``Linear(N, N)`` applied to every channel alike (no attention, no position embedding: the layer's weights depend on
the positions), and across channels with a per-patch MLP. There is no normalisation: an Affine layer
``alpha * x + beta`` takes LayerNorm's place, and LayerScale keeps the residual branches small at first.

Parameter names are our own (``affine1``, ``cross_patch``, ...). ``from_timm`` / ``to_timm`` convert from and to
timm's ``resmlp_*`` models, and ``from_official_keys`` / ``to_official_keys`` from and to the official checkpoints
(facebookresearch/deit, resmlp_models.py).
"""

from __future__ import annotations

import copy
import re
from functools import partial

import torch
import torch.nn as nn

from ._registry import register_model
from .convert import Family, StateDict, register_family
from .layers import DropPath, LayerScale, Mlp, PatchEmbed, check_images, classify, init_transformer_weights


class Affine(nn.Module):
    """Aff(x) = Diag(alpha) x + beta (section 2), per channel. It holds no statistics of the data, so it behaves the
    same in training and at test time, and folds into a neighbouring linear layer (see ``fold_affine``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta, self.alpha, x)  # beta + alpha * x in one kernel instead of two


class ResMLPBlock(nn.Module):
    """Section 2, eqs. (1)-(2):  Z = X + ls1 * (A Aff(X)^T)^T   (cross-patch, A is N x N, shared by the channels);
    Y = Z + ls2 * C GELU(B Aff(Z))   (cross-channel MLP, per patch).

    The paper writes the outer scaling as a second Affine; the code (and this one) uses LayerScale, whose shift would
    be redundant with the biases of A and C.
    """

    def __init__(self, dim: int, num_patches: int, mlp_ratio: float = 4.0, init_values: float = 1e-4,
                 drop_path: float = 0.0):
        super().__init__()
        self.affine1 = Affine(dim)
        self.cross_patch = nn.Linear(num_patches, num_patches)
        self.ls1 = LayerScale(dim, init_values)
        self.affine2 = Affine(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, N, D)
        mixed = self.cross_patch(self.affine1(x).transpose(1, 2)).transpose(1, 2)  # each channel: a mix of patches
        x = x + self.drop_path(self.ls1(mixed))
        x = x + self.drop_path(self.ls2(self.mlp(self.affine2(x))))
        return x


class ResMLP(nn.Module):
    """Patch embedding, ``depth`` ResMLP blocks, a final Affine, the mean over patches and a linear head.

    ``distilled=True`` adds a second head on the same pooled features, trained against a teacher as in DeiT: the
    forward returns the average of the two heads, or the pair (class, distillation) in training mode when
    ``model.distilled_training`` is set. timm's ResMLP has one head, so a distilled ResMLP has no timm counterpart.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 384, depth: int = 12, mlp_ratio: float = 4.0, init_values: float = 1e-4,
                 drop_path_rate: float = 0.0, distilled: bool = False):
        super().__init__()
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.distilled_training = False  # DeiT: return (class, distillation) logits separately while training
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.num_patches = self.patch_embed.num_patches
        # The official code drops every block with the same probability (no linear ramp over depth).
        self.blocks = nn.Sequential(*[ResMLPBlock(embed_dim, self.num_patches, mlp_ratio, init_values, drop_path_rate)
                                      for _ in range(depth)])
        self.affine = Affine(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.head_dist = (nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()) if distilled else None
        # As the official code: every Linear (the N x N cross-patch layers too) truncated normal 0.02, zero biases;
        # the patch-embedding convolution keeps PyTorch's default.
        init_transformer_weights(self)

    def _check(self, x: torch.Tensor) -> None:
        check_images(x, self.in_chans, self.patch_size, "ResMLP")
        if tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f"ResMLP's cross-patch layers mix exactly {self.num_patches} patches, so this model takes "
                             f"{self.img_size} x {self.img_size} px images only; got {x.shape[-2]} x {x.shape[-1]} px. "
                             f"Resize the images, or build the model with img_size={x.shape[-1]} (new weights).")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The patch tokens after the last block and the final Affine: (B, N, D)."""
        self._check(x)
        return self.affine(self.blocks(self.patch_embed(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        x = x.mean(dim=1)  # average pooling over the patches
        if pre_logits:
            return x
        return classify(self.head, self.head_dist, x, x, self.distilled_training and self.training)

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def cross_patch_weights(self) -> torch.Tensor:
        """The N x N matrices A of the cross-patch layers, stacked: (depth, N, N), a detached copy.

        Row n of layer l holds the weights with which patch n gathers all the patches (in row-major grid order), so
        ``w[l, n].reshape(G, G)`` with ``G = model.patch_embed.grid_size`` is an image: the paper's Figure 2 draws
        these rows, which become local, convolution-like filters during training.
        """
        return torch.stack([block.cross_patch.weight.detach().clone() for block in self.blocks])

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if self.head_dist is not None:
            self.head_dist = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()


@torch.no_grad()
def fold_affine(model: ResMLP) -> ResMLP:
    """A copy of ``model`` with the Affine layers that feed a linear layer folded into it (exact, for inference):
    ``W (alpha * x + beta) + b = (W Diag(alpha)) x + (W beta + b)``. That holds for ``affine2`` (into ``mlp.fc1``) and
    the final ``affine`` (into the heads: the mean over patches commutes with it). Folded Affines become the
    identity (alpha = 1, beta = 0), so the copy keeps the same keys; its logits are the same, its pre-logits
    features are not (the final Affine now lives in the heads). Without a head (``num_classes=0``) the final
    Affine stays.

    ``affine1`` stays: the cross-patch layer mixes patches and its bias is per patch, while Aff scales and shifts
    channels. ``A (alpha_c x_c + beta_c) + b = alpha_c A x_c + beta_c (A 1) + b``: the term ``beta_c (A 1)_n``
    depends on both the patch n and the channel c, which neither A's bias nor LayerScale can represent, and moving
    alpha into LayerScale would scale the bias b by alpha_c too.
    """
    folded = copy.deepcopy(model)

    def fold(affine: Affine, linear: nn.Linear) -> None:
        linear.bias += linear.weight @ affine.beta
        linear.weight *= affine.alpha

    def make_identity(affine: Affine) -> None:
        affine.alpha.fill_(1.0)
        affine.beta.zero_()

    for block in folded.blocks:
        fold(block.affine2, block.mlp.fc1)
        make_identity(block.affine2)
    heads = [h for h in (folded.head, folded.head_dist) if isinstance(h, nn.Linear)]
    for head in heads:
        fold(folded.affine, head)
    if heads:
        make_identity(folded.affine)
    return folded


# Key maps. timm (mlp_mixer.py) and the official code both call the Affines norm1/norm2/norm; timm stores their
# alpha and beta as (1, 1, D), the official code and this one as (D,).
_TO_TIMM = [(r"^patch_embed\.", "stem."), (r"\.affine1\.", ".norm1."), (r"\.affine2\.", ".norm2."),
            (r"^affine\.", "norm."), (r"\.cross_patch\.", ".linear_tokens."), (r"\.mlp\.", ".mlp_channels."),
            (r"\.ls(\d)\.gamma$", r".ls\1")]
_FROM_TIMM = [(r"^stem\.", "patch_embed."), (r"\.norm1\.", ".affine1."), (r"\.norm2\.", ".affine2."),
              (r"^norm\.", "affine."), (r"\.linear_tokens\.", ".cross_patch."), (r"\.mlp_channels\.", ".mlp."),
              (r"\.ls(\d)$", r".ls\1.gamma")]
_TO_OFFICIAL = [(r"\.affine1\.", ".norm1."), (r"\.affine2\.", ".norm2."), (r"^affine\.", "norm."),
                (r"\.cross_patch\.", ".attn."), (r"\.ls(\d)\.gamma$", r".gamma_\1")]
_FROM_OFFICIAL = [(r"\.norm1\.", ".affine1."), (r"\.norm2\.", ".affine2."), (r"^norm\.", "affine."),
                  (r"\.attn\.", ".cross_patch."), (r"\.gamma_(\d)$", r".ls\1.gamma")]


def _rename(state_dict: StateDict, rules: list[tuple[str, str]], affine_shape: tuple[int, ...] | None) -> dict:
    out = {}
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        if affine_shape is not None and key.endswith((".alpha", ".beta")):
            value = value.reshape(affine_shape)
        out[key] = value
    return out


def from_timm_keys(state_dict: StateDict) -> dict:
    return _rename(state_dict, _FROM_TIMM, (-1,))


def to_timm_keys(state_dict: StateDict) -> dict:
    if any(k.startswith("head_dist.") for k in state_dict):
        raise ValueError("timm's ResMLP has one head: a distilled ResMLP (head_dist) has no timm counterpart.")
    return _rename(state_dict, _TO_TIMM, (1, 1, -1))


def from_official_keys(state_dict: StateDict) -> dict:
    """Official facebookresearch/deit ResMLP checkpoint (``resmlp_12_no_dist.pth``, ...) to this layout."""
    return _rename(state_dict, _FROM_OFFICIAL, (-1,))


def to_official_keys(state_dict: StateDict) -> dict:
    if any(k.startswith("head_dist.") for k in state_dict):
        raise ValueError("the official ResMLP has one head: a distilled ResMLP (head_dist) has no official layout.")
    return _rename(state_dict, _TO_OFFICIAL, None)


def _build_timm(model: ResMLP) -> nn.Module:
    """timm's ``MlpMixer`` with ResMLP blocks, the class behind timm's ``resmlp_*`` names, for any configuration
    (those names fix patch size, depth and width)."""
    from timm.models.mlp_mixer import Affine as TimmAffine
    from timm.models.mlp_mixer import MlpMixer, ResBlock

    c = model.config
    if c["distilled"]:
        raise ValueError("timm's ResMLP has one head: a distilled ResMLP has no timm counterpart.")
    return MlpMixer(num_classes=c["num_classes"], img_size=c["img_size"], in_chans=c["in_chans"],
                    patch_size=c["patch_size"], num_blocks=c["depth"], embed_dim=c["embed_dim"],
                    mlp_ratio=c["mlp_ratio"], block_layer=partial(ResBlock, init_values=c["init_values"]),
                    norm_layer=TimmAffine)


register_family(Family(ResMLP, _build_timm, from_timm_keys, to_timm_keys))


def _resmlp(defaults: dict, overrides: dict) -> ResMLP:
    return ResMLP(**{**defaults, **overrides})


# The paper's sizes with timm's names; LayerScale init as in the official code (timm: 1e-4 for resmlp_12_224).
@register_model
def resmlp_12_224(**kw) -> ResMLP:
    return _resmlp(dict(patch_size=16, embed_dim=384, depth=12, init_values=0.1), kw)


@register_model
def resmlp_24_224(**kw) -> ResMLP:
    return _resmlp(dict(patch_size=16, embed_dim=384, depth=24, init_values=1e-5), kw)


@register_model
def resmlp_36_224(**kw) -> ResMLP:
    return _resmlp(dict(patch_size=16, embed_dim=384, depth=36, init_values=1e-6), kw)


@register_model
def resmlp_big_24_224(**kw) -> ResMLP:
    """ResMLP-B24/8: 8-px patches, so N = 784 and each cross-patch layer is 784 x 784."""
    return _resmlp(dict(patch_size=8, embed_dim=768, depth=24, init_values=1e-6), kw)


# Tiny preset for the book's CPU budgets: 32-px images, 4-px patches (an 8 x 8 grid, so 64 x 64 cross-patch maps).
_PICO_32 = dict(img_size=32, patch_size=4, in_chans=3, num_classes=10, embed_dim=128, depth=6, mlp_ratio=4.0,
                init_values=0.1)


@register_model
def resmlp_pico_32(**kw) -> ResMLP:
    return _resmlp(_PICO_32, kw)


@register_model
def resmlp_pico_distilled_32(**kw) -> ResMLP:
    return _resmlp(dict(_PICO_32, distilled=True), kw)


# The same for Fashion-MNIST: 28-px gray images, 4-px patches (a 7 x 7 grid, so 49 x 49 cross-patch maps).
_PICO_28 = dict(_PICO_32, img_size=28, in_chans=1)


@register_model
def resmlp_pico_28(**kw) -> ResMLP:
    return _resmlp(_PICO_28, kw)


@register_model
def resmlp_pico_distilled_28(**kw) -> ResMLP:
    return _resmlp(dict(_PICO_28, distilled=True), kw)
