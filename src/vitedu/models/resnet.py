"""ResNet (He et al., 2016), the baseline of "ResNet strikes back" (Wightman, Touvron and Jegou, 2021), from scratch.

RSB changes only the training procedure, so this is the plain torchvision "v1.5" ResNet: a 7x7 stride-2 stem and a
3x3 stride-2 max-pool, four stages of residual blocks, global average pooling and one linear classifier. "v1.5"
puts the stride of a downsampling bottleneck on its 3x3 convolution (the original v1 put it on the first 1x1, which
throws away 3 of every 4 positions before looking at them).

Parameter names are torchvision's, which timm keeps (``conv1, bn1, layer{1-4}.{j}.conv1..3/bn1..3/downsample.0/1,
fc``): checkpoints of either load with the identity key map.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._registry import register_model
from .convert import Family, register_family
from .layers import DropPath, check_images

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
           "resnet_pico_28", "resnet_pico_32"]


def _shortcut(in_chs: int, out_chs: int, stride: int) -> nn.Module | None:
    """Projection shortcut W_s x (He et al., eq. 2) where the shape changes: a strided 1x1 conv and a BN."""
    if stride == 1 and in_chs == out_chs:
        return None  # identity shortcut, eq. 1
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False), nn.BatchNorm2d(out_chs))


class BasicBlock(nn.Module):
    """y = ReLU(x + BN(conv3x3(ReLU(BN(conv3x3(x)))))): two 3x3 convolutions (ResNet-18/34)."""

    expansion = 1  # output channels = planes * expansion

    def __init__(self, in_chs: int, planes: int, stride: int = 1, drop_path: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_chs, planes, stride)
        self.drop_path = DropPath(drop_path)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.drop_path(self.bn2(self.conv2(x)))
        x += shortcut  # in place, as timm: one feature map less to allocate per block, faster on CPU
        return self.act2(x)


class Bottleneck(nn.Module):
    """1x1 reduce to ``planes``, 3x3 (carrying the stride: "v1.5"), 1x1 expand to 4 x planes (ResNet-50/101/152).

    The 3x3 runs at a quarter of the block's width, so a deeper network costs about as much as a shallower one.
    """

    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1, drop_path: float = 0.0):
        super().__init__()
        out_chs = planes * self.expansion
        self.conv1 = nn.Conv2d(in_chs, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_chs, out_chs, stride)
        self.drop_path = DropPath(drop_path)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.drop_path(self.bn3(self.conv3(x)))
        x += shortcut  # in place (see BasicBlock): BN's backward does not need its output
        return self.act3(x)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """Stem, four stages (the first keeps the resolution, each later one halves it), average pool, classifier.

    ``stem='imagenet'``: 7x7 stride-2 conv (64 channels, as torchvision and timm) and 3x3 stride-2 max-pool, 224 px
    down to 56 before the first stage.
    ``stem='cifar'``: one 3x3 stride-1 conv and no pool, for 28-32 px images, which the ImageNet stem would shrink
    to 8 x 8 before any block sees them. Its width is ``channels[0]``.
    """

    def __init__(self, block: str = "bottleneck", layers: tuple[int, ...] = (3, 4, 6, 3),
                 channels: tuple[int, ...] = (64, 128, 256, 512), in_chans: int = 3, num_classes: int = 1000,
                 stem: str = "imagenet", zero_init_last: bool = True, drop_path_rate: float = 0.0):
        super().__init__()
        if block not in _BLOCKS:
            raise ValueError(f"block must be one of {sorted(_BLOCKS)}, got {block!r}.")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' (7x7 conv + max-pool) or 'cifar' (3x3 conv), got {stem!r}.")
        if len(layers) != len(channels):
            raise ValueError(f"one width per stage: got {len(layers)} stage depths and {len(channels)} widths.")
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        block_cls = _BLOCKS[block]
        self.in_chans, self.num_classes = in_chans, num_classes
        stem_chs = 64 if stem == "imagenet" else channels[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, stem_chs, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_chans, stem_chs, 3, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(stem_chs)
        self.act1 = nn.ReLU(inplace=True)
        # Stochastic depth grows linearly with the block index, 0 for the first block (timm's rule, RSB A1/A2: 0.05).
        num_blocks = sum(layers)
        rates = [drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
        in_chs = stem_chs
        for i, (depth, planes) in enumerate(zip(layers, channels)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(depth):
                blocks.append(block_cls(in_chs, planes, stride if j == 0 else 1, rates.pop(0)))
                in_chs = planes * block_cls.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))  # torchvision's names: layer1 ... layer4
        self.num_stages = len(layers)
        self.reduction = (4 if stem == "imagenet" else 1) * 2 ** (len(layers) - 1)  # input px per output position
        self.num_features = in_chs
        self.fc = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(zero_init_last)
        # NHWC weights, and NHWC inputs in forward_features: oneDNN's CPU convolutions run 1.1-1.4x faster on them
        # than on NCHW (cuDNN's too, under mixed precision); the results are the same up to float rounding.
        self.to(memory_format=torch.channels_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # He init, as torchvision
        if zero_init_last:
            # Goyal et al. (2017): the last BN of each residual branch starts at 0, so every block starts as the
            # identity and the network trains like a shallower one at first. timm's default; torchvision's is off.
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    m.zero_init_last()

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, (B, num_features, H / reduction, W / reduction) (rounded up)."""
        name = f"this ResNet ({self.config['stem']} stem)"
        check_images(x, self.in_chans, 1, name)
        if min(x.shape[-2:]) < self.reduction:
            raise ValueError(f"{name} downsamples by {self.reduction}: an image side of {min(x.shape[-2:])} px is "
                             f"smaller than one output cell. Use images of at least {self.reduction} px "
                             "(for small images, the 'cifar' stem downsamples less).")
        x = self.maxpool(self.act1(self.bn1(self.conv1(x.to(memory_format=torch.channels_last)))))
        for stage in self.stages():
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))  # global average pooling: any image size gives one vector
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def _build_timm(model: ResNet) -> nn.Module:
    """timm's ResNet of the same configuration. timm always builds a downsampling stem (7x7 stride 2 + max-pool), so
    for the 'cifar' stem its class is built directly with that stem swapped for a 3x3 stride-1 convolution:
    everything after the stem (blocks, stages, head) stays timm's code."""
    import timm
    from timm.models.resnet import BasicBlock as TimmBasic
    from timm.models.resnet import Bottleneck as TimmBottleneck
    from timm.models.resnet import ResNet as TimmResNet

    c = model.config
    kwargs = dict(block=TimmBottleneck if c["block"] == "bottleneck" else TimmBasic, layers=tuple(c["layers"]),
                  channels=tuple(c["channels"]), in_chans=c["in_chans"], num_classes=c["num_classes"],
                  zero_init_last=c["zero_init_last"], drop_path_rate=c["drop_path_rate"])
    if c["stem"] == "imagenet":
        return timm.create_model("resnet50" if c["block"] == "bottleneck" else "resnet18", pretrained=False, **kwargs)
    width = c["channels"][0]
    if width % 2:
        raise ValueError(f"the timm twin of a 'cifar' stem needs an even first width, got {width}.")
    # A "deep" stem ends with 2 * stem_width channels, so timm builds the first stage for a `width`-channel input.
    reference = TimmResNet(stem_type="deep", stem_width=width // 2, **kwargs)
    reference.conv1 = nn.Conv2d(c["in_chans"], width, 3, padding=1, bias=False)
    reference.maxpool = nn.Identity()
    return reference


register_family(Family(ResNet, _build_timm))


def _resnet(defaults: dict, overrides: dict) -> ResNet:
    return ResNet(**{**defaults, **overrides})


@register_model
def resnet18(**kw) -> ResNet:
    return _resnet(dict(block="basic", layers=(2, 2, 2, 2)), kw)


@register_model
def resnet34(**kw) -> ResNet:
    return _resnet(dict(block="basic", layers=(3, 4, 6, 3)), kw)


@register_model
def resnet50(**kw) -> ResNet:
    """25,557,032 parameters, about 4.1 GFLOPs (multiply-adds) at 224 px: the model of "ResNet strikes back"."""
    return _resnet(dict(block="bottleneck", layers=(3, 4, 6, 3)), kw)


@register_model
def resnet101(**kw) -> ResNet:
    return _resnet(dict(block="bottleneck", layers=(3, 4, 23, 3)), kw)


@register_model
def resnet152(**kw) -> ResNet:
    return _resnet(dict(block="bottleneck", layers=(3, 8, 36, 3)), kw)


# ResNet-18 at a quarter of the width with the 'cifar' stem: 0.70M parameters; 32 px becomes 32, 16, 8, 4 px maps.
_PICO_32 = dict(block="basic", layers=(2, 2, 2, 2), channels=(16, 32, 64, 128), in_chans=3, num_classes=10,
                stem="cifar")


@register_model
def resnet_pico_32(**kw) -> ResNet:
    return _resnet(_PICO_32, kw)


@register_model
def resnet_pico_28(**kw) -> ResNet:
    """The same network for 28-px grayscale images (Fashion-MNIST)."""
    return _resnet(dict(_PICO_32, in_chans=1), kw)
