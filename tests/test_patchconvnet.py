from functools import partial

import pytest
import torch
import torch.nn as nn
from timm.layers import DropPath, to_2tuple, trunc_normal_
from timm.models._efficientnet_blocks import SqueezeExcite as TimmSqueezeExcite
from timm.models.cait import LayerScaleBlockClassAttn

import vitedu.models.patchconvnet as pcn
from vitedu.models._registry import create_model
from vitedu.models.convert import load_checked

# ---------------------------------------------------------------------------------------------------------------
# The reference: a faithful minimal copy of the official PatchConvNet, facebookresearch/deit patchconvnet_models.py
# (Copyright (c) 2015-present, Facebook, Inc.; Apache License 2.0). Changes: imports for timm 1.x
# (timm.models.efficientnet_blocks became timm.models._efficientnet_blocks, timm.models.layers became timm.layers),
# no registry, the multi-class-token variant (S60_multi) left out. The computations are the official ones.
# ---------------------------------------------------------------------------------------------------------------


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        x = self.fc1(x)
        x = self.act(x)
        x = self.drop(x)
        x = self.fc2(x)
        x = self.drop(x)
        return x


class Learned_Aggregation_Layer(nn.Module):
    def __init__(self, dim, num_heads=1, qkv_bias=False, qk_scale=None, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, N, C = x.shape
        q = self.q(x[:, 0]).unsqueeze(1).reshape(B, 1, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        k = self.k(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        q = q * self.scale
        v = self.v(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        attn = q @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        attn = self.attn_drop(attn)
        x_cls = (attn @ v).transpose(1, 2).reshape(B, 1, C)
        x_cls = self.proj(x_cls)
        x_cls = self.proj_drop(x_cls)
        return x_cls


class Layer_scale_init_Block_only_token(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop=0.0, attn_drop=0.0,
                 drop_path=0.0, act_layer=nn.GELU, norm_layer=nn.LayerNorm, Attention_block=Learned_Aggregation_Layer,
                 Mlp_block=Mlp, init_values=1e-4):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention_block(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                    attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        mlp_hidden_dim = int(dim * mlp_ratio)
        self.mlp = Mlp_block(in_features=dim, hidden_features=mlp_hidden_dim, act_layer=act_layer, drop=drop)
        self.gamma_1 = nn.Parameter(init_values * torch.ones((dim)), requires_grad=True)
        self.gamma_2 = nn.Parameter(init_values * torch.ones((dim)), requires_grad=True)

    def forward(self, x, x_cls):
        u = torch.cat((x_cls, x), dim=1)
        x_cls = x_cls + self.drop_path(self.gamma_1 * self.attn(self.norm1(u)))
        x_cls = x_cls + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x_cls)))
        return x_cls


class Conv_blocks_se(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.qkv_pos = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=1),
            nn.GELU(),
            nn.Conv2d(dim, dim, groups=dim, kernel_size=3, padding=1, stride=1, bias=True),
            nn.GELU(),
            TimmSqueezeExcite(dim, rd_ratio=0.25),
            nn.Conv2d(dim, dim, kernel_size=1),
        )

    def forward(self, x):
        B, N, C = x.shape
        H = W = int(N ** 0.5)
        x = x.transpose(-1, -2)
        x = x.reshape(B, C, H, W)
        x = self.qkv_pos(x)
        x = x.reshape(B, C, N)
        x = x.transpose(-1, -2)
        return x


class Layer_scale_init_Block(nn.Module):
    def __init__(self, dim, drop_path=0.0, act_layer=nn.GELU, norm_layer=nn.LayerNorm, Attention_block=None,
                 init_values=1e-4):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention_block(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.gamma_1 = nn.Parameter(init_values * torch.ones((dim)), requires_grad=True)

    def forward(self, x):
        return x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x)))


def conv3x3(in_planes, out_planes, stride=1):
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False))


class ConvStem(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768):
        super().__init__()
        img_size = to_2tuple(img_size)
        patch_size = to_2tuple(patch_size)
        num_patches = (img_size[1] // patch_size[1]) * (img_size[0] // patch_size[0])
        self.img_size = img_size
        self.patch_size = patch_size
        self.num_patches = num_patches
        self.proj = nn.Sequential(
            conv3x3(in_chans, embed_dim // 8, 2),
            nn.GELU(),
            conv3x3(embed_dim // 8, embed_dim // 4, 2),
            nn.GELU(),
            conv3x3(embed_dim // 4, embed_dim // 2, 2),
            nn.GELU(),
            conv3x3(embed_dim // 2, embed_dim, 2),
        )

    def forward(self, x, padding_size=None):
        x = self.proj(x).flatten(2).transpose(1, 2)
        return x


class PatchConvnet(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=768, depth=12,
                 num_heads=1, qkv_bias=False, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
                 norm_layer=nn.LayerNorm, block_layers=Layer_scale_init_Block,
                 block_layers_token=Layer_scale_init_Block_only_token, Patch_layer=ConvStem, act_layer=nn.GELU,
                 Attention_block=Conv_blocks_se, dpr_constant=True, init_scale=1e-4,
                 Attention_block_token_only=Learned_Aggregation_Layer, Mlp_block_token_only=Mlp, depth_token_only=1,
                 mlp_ratio_clstk=3.0):
        super().__init__()
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.patch_embed = Patch_layer(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                       embed_dim=embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, int(embed_dim)))
        if not dpr_constant:
            dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        else:
            dpr = [drop_path_rate for i in range(depth)]
        self.blocks = nn.ModuleList([
            block_layers(dim=embed_dim, drop_path=dpr[i], norm_layer=norm_layer, act_layer=act_layer,
                         Attention_block=Attention_block, init_values=init_scale)
            for i in range(depth)])
        self.blocks_token_only = nn.ModuleList([
            block_layers_token(dim=int(embed_dim), num_heads=num_heads, mlp_ratio=mlp_ratio_clstk, qkv_bias=qkv_bias,
                               qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate, drop_path=0.0,
                               norm_layer=norm_layer, act_layer=act_layer, Attention_block=Attention_block_token_only,
                               Mlp_block=Mlp_block_token_only, init_values=init_scale)
            for i in range(depth_token_only)])
        self.norm = norm_layer(int(embed_dim))
        self.head = nn.Linear(int(embed_dim), num_classes) if num_classes > 0 else nn.Identity()
        self.rescale = 0.02
        trunc_normal_(self.cls_token, std=self.rescale)
        self.apply(self._init_weights)

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=self.rescale)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def forward_features(self, x):
        B = x.shape[0]
        x = self.patch_embed(x)
        cls_tokens = self.cls_token.expand(B, -1, -1)
        for i, blk in enumerate(self.blocks):
            x = blk(x)
        for i, blk in enumerate(self.blocks_token_only):
            cls_tokens = blk(x, cls_tokens)
        x = torch.cat((cls_tokens, x), dim=1)
        x = self.norm(x)
        return x[:, 0]

    def forward(self, x):
        x = self.forward_features(x)
        x = self.head(x)
        return x


def official_s60(**kwargs):
    # The official S60 entry point, except that keyword arguments may also replace its width, depth and heads.
    s60 = dict(patch_size=16, embed_dim=384, depth=60, num_heads=1, qkv_bias=True,
               norm_layer=partial(nn.LayerNorm, eps=1e-6), Patch_layer=ConvStem, Attention_block=Conv_blocks_se,
               depth_token_only=1, mlp_ratio_clstk=3.0)
    return PatchConvnet(**{**s60, **kwargs})

# ---------------------------------------------------------------------------------------------------------------


def randomise(model: nn.Module, seed: int = 0) -> None:
    """Every parameter away from its initial value (LayerScale 1e-4..1e-6, zero biases, unit LayerNorms), so a
    wrong computation cannot still match. Matrices and kernels keep O(1) activations; vectors are standard normal."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            scale = p[0].numel() ** -0.5 if p.ndim >= 2 and p.shape[0] > 1 else 1.0
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * scale)
    assert not list(model.buffers()), "randomise the buffers too"


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def from_official(official: nn.Module, name: str, **overrides) -> pcn.PatchConvNet:
    return load_checked(create_model(name, **overrides), pcn.from_official_keys(official.state_dict()),
                        "the official state dict")


@pytest.mark.parametrize("name, millions", [("patchconvnet_s60", 25.23), ("patchconvnet_s120", 47.72),
                                            ("patchconvnet_b60", 99.39), ("patchconvnet_b120", 188.61),
                                            ("patchconvnet_l60", 176.01)])
def test_parameter_counts_match_the_paper(name, millions):
    with torch.device("meta"):  # shapes only
        model = create_model(name)
    assert round(num_params(model) / 1e6, 2) == millions


def test_s60_matches_the_official_code_both_ways():
    official = official_s60().eval()
    randomise(official)
    ours = from_official(official, "patchconvnet_s60").double().eval()
    official.double()
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        expected = official(x)
        torch.testing.assert_close(ours(x), expected, atol=1e-9, rtol=1e-9)
        back = official_s60().double().eval()
        back.load_state_dict(pcn.to_official_keys(ours.state_dict()))  # strict: every key, both ways
        torch.testing.assert_close(back(x), expected, atol=1e-9, rtol=1e-9)
        assert ours.attention_maps(x)[0].shape == (1, 1, 1, 1 + 14 * 14)


def test_tiny_config_matches_the_official_code():
    # Two heads in the pooling, to exercise the head split (the official default is one).
    config = dict(img_size=64, embed_dim=64, depth=3, num_heads=2, num_classes=10)
    official = official_s60(**config).eval()
    randomise(official, 1)
    ours = from_official(official, "patchconvnet_s60", **config).double().eval()
    official.double()
    x = torch.randn(3, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), official(x), atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(ours.forward_head(ours.forward_features(x), pre_logits=True),
                                   official.forward_features(x), atol=1e-10, rtol=1e-10)


def test_pooling_block_equals_timm_cait_class_attention_block():
    dim = 48
    ours = pcn.AttentionPooling(dim, num_heads=1, mlp_ratio=3.0, qkv_bias=True).double()
    reference = LayerScaleBlockClassAttn(dim, num_heads=1, mlp_ratio=3.0, qkv_bias=True,
                                         norm_layer=partial(nn.LayerNorm, eps=1e-6)).double()
    randomise(reference, 2)
    renamed = {k.replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma"): v
               for k, v in reference.state_dict().items()}
    load_checked(ours, renamed)
    x, cls = torch.randn(2, 25, dim, dtype=torch.float64), torch.randn(2, 1, dim, dtype=torch.float64)
    with torch.no_grad():
        expected = reference(x, cls)
        torch.testing.assert_close(ours(x, cls), expected, atol=1e-12, rtol=1e-12)
        explicit, attn = ours(x, cls, return_attention=True)
        torch.testing.assert_close(explicit, expected, atol=1e-12, rtol=1e-12)
    assert attn.shape == (2, 1, 1, 26)


def test_squeeze_excite_equals_timm():
    ours, reference = pcn.SqueezeExcite(40).double(), TimmSqueezeExcite(40, rd_ratio=0.25).double()
    randomise(reference, 3)
    load_checked(ours, reference.state_dict())
    x = torch.randn(2, 40, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(ours(x), reference(x), atol=1e-12, rtol=1e-12)


def test_attention_maps_and_grid():
    model = create_model("patchconvnet_pico_32").double().eval()
    randomise(model, 4)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    (attn,) = model.attention_maps(x)
    assert attn.shape == (2, 1, 1, 1 + 8 * 8)  # 4x stem: an 8 x 8 grid
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 1, 1, dtype=torch.float64))
    grid = model.attention_grid(x)
    assert grid.shape == (2, 8, 8)
    torch.testing.assert_close(grid[:, 2, 5], attn[:, 0, 0, 1 + 2 * 8 + 5])  # row-major patch order
    # the same class token through the explicit path as through the fused one
    tokens, _ = model.trunk(x)
    cls = model.cls_token.expand(2, -1, -1)
    torch.testing.assert_close(model.pool(tokens, cls, return_attention=True)[0], model.pool(tokens, cls))
    # a non-square image works too (no position embedding)
    assert model.attention_grid(torch.randn(1, 3, 32, 48, dtype=torch.float64)).shape == (1, 8, 12)


def test_pico_stem_has_no_norm_and_no_bias():
    model = create_model("patchconvnet_pico_32")
    convs = [m for m in model.stem if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 and all(c.bias is None and c.stride == (2, 2) for c in convs)
    assert [c.out_channels for c in convs] == [48, 96]
    assert all(isinstance(m, (nn.Conv2d, nn.GELU)) for m in model.stem)
    assert num_params(model) < 1_000_000


def test_average_pooling_variant():
    token, avg = create_model("patchconvnet_pico_32"), create_model("patchconvnet_pico_avg_32")
    assert avg.cls_token is None and avg.pool is None and avg.no_weight_decay() == set()
    assert num_params(token) - num_params(avg) == num_params(token.pool) + token.cls_token.numel()
    # same stem and trunk keys and shapes: the comparison changes the pooling only
    trunk = {k: v.shape for k, v in token.state_dict().items() if k.startswith(("stem.", "blocks."))}
    assert trunk == {k: v.shape for k, v in avg.state_dict().items() if k.startswith(("stem.", "blocks."))}
    x = torch.randn(2, 3, 32, 32)
    assert avg.forward_features(x).shape == (2, 64, 96) and avg(x).shape == (2, 10)
    with pytest.raises(ValueError, match="no attention map"):
        avg.attention_maps(x)
    with pytest.raises(ValueError, match="no official layout"):
        pcn.to_official_keys(avg.state_dict())


@pytest.mark.parametrize("name", ["patchconvnet_pico_32", "patchconvnet_pico_avg_32"])
def test_features_backward_and_reset_classifier(name):
    model = create_model(name, num_classes=42)
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.num_features)


def test_layerscale_init_is_the_official_one():
    for name, value in [("patchconvnet_s60", 1e-4), ("patchconvnet_s120", 1e-6), ("patchconvnet_b60", 1e-6),
                        ("patchconvnet_b120", 1e-6), ("patchconvnet_l60", 1e-6), ("patchconvnet_l120", 1e-6)]:
        model = create_model(name, depth=1, embed_dim=32)
        assert torch.all(model.blocks[0].ls.gamma == value) and torch.all(model.pool.ls2.gamma == value), name


def test_bad_inputs_raise_clear_errors():
    model = create_model("patchconvnet_pico_32")
    with pytest.raises(ValueError, match="3-channel"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match="divisible by 16"):
        create_model("patchconvnet_s60", depth=1)(torch.randn(1, 3, 200, 200))
    with pytest.raises(ValueError, match="global_pool"):
        create_model("patchconvnet_pico_32", global_pool="max")
    with pytest.raises(ValueError, match="multiple of 2"):
        create_model("patchconvnet_pico_32", embed_dim=95)
    official = official_s60(img_size=64, embed_dim=64, depth=3)
    with pytest.raises(ValueError, match=r"unexpected 13: blocks\.2\."):  # one block too many, 13 tensors each
        from_official(official, "patchconvnet_s60", img_size=64, embed_dim=64, depth=2)
    with pytest.raises(ValueError, match=r"wrong shape .*head\.weight: \(1000, 64\) vs model \(10, 64\)"):
        from_official(official, "patchconvnet_s60", img_size=64, embed_dim=64, depth=3, num_classes=10)
