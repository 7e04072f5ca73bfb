"""Which pixels a classifier's decision depends on: integrated gradients and occlusion, computed with captum.

Attention maps say where the class token looks; attributions say which pixels change the output. Both need a model
that maps images to class logits: for a DINO backbone, put the linear probe on top, ``nn.Sequential(backbone, probe)``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
import torch.nn as nn

from .attention import eval_mode
from .segmentation import draw_overlay


def _captum_attr():
    try:
        from captum import attr
    except ImportError as error:
        raise ImportError("attributions are computed with captum, which is not installed: pip install captum "
                          "(or pip install 'vitedu[book]').") from error
    return attr


def _check_float_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = (tuple(images.shape), images.dtype) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor (B, C, H, W) as the model takes it (Scenes.float_images()), "
                         f"got {got}.")


def _targets(model: nn.Module, images: torch.Tensor, target: int | torch.Tensor | None) -> torch.Tensor:
    """The class each image is explained for: ``target`` as a (B,) tensor, the predicted class when it is None."""
    if target is not None:
        return torch.as_tensor(target, device=images.device).expand(len(images))
    with torch.no_grad():
        logits = model(images)
    if logits.ndim != 2:
        raise ValueError(f"the model must return class logits (B, classes), got {tuple(logits.shape)}: put a "
                         f"classifier (e.g. the linear probe) on top of a backbone.")
    return logits.argmax(-1)


def _baseline(images: torch.Tensor, baseline: str | float | torch.Tensor) -> torch.Tensor:
    """The reference input, shaped like ``images``: "black" is all zeros in the model's input space."""
    if isinstance(baseline, str):
        if baseline != "black":
            raise ValueError(f"baseline must be 'black', a number or a tensor broadcastable to the images, "
                             f"got {baseline!r}.")
        return torch.zeros_like(images)
    return torch.as_tensor(baseline, dtype=images.dtype, device=images.device).expand_as(images).clone()


def _per_pixel(attributions: torch.Tensor, signed: bool, reduce: str) -> torch.Tensor:
    """(B, C, H, W) -> (B, H, W): channels summed (or averaged), signed or as a magnitude."""
    per_pixel = attributions.sum(1) if reduce == "sum" else attributions.mean(1)
    return per_pixel.detach() if signed else per_pixel.detach().abs()


def integrated_gradients(model: nn.Module, images: torch.Tensor, target: int | torch.Tensor | None = None,
                         steps: int = 32, baseline: str | float | torch.Tensor = "black",
                         signed: bool = False) -> torch.Tensor:
    """Integrated gradients (Sundararajan et al., 2017, eq. 1): (x - x') * mean gradient along the straight path
    from the baseline x' to x, summed over channels: (B, H, W).

    ``target`` defaults to each image's predicted class. With ``signed=True`` the attributions keep their sign and
    add up to f(x) - f(x') for the target (the completeness axiom), up to the error of the ``steps``-point integral;
    by default their magnitude is returned (|sum over channels|).
    """
    attr = _captum_attr()
    _check_float_images(images)
    with eval_mode(model):
        target = _targets(model, images, target)
        attributions = attr.IntegratedGradients(model).attribute(images, baselines=_baseline(images, baseline),
                                                                 target=target, n_steps=steps)
    return _per_pixel(attributions, signed, "sum")


def _patch_size(model: nn.Module) -> int:
    for module in model.modules():
        if hasattr(module, "patch_embed"):
            return module.patch_embed.patch_size
    raise ValueError(f"{type(model).__name__} has no patch_embed to take the window size from: pass window=.")


def occlusion(model: nn.Module, images: torch.Tensor, target: int | torch.Tensor | None = None,
              window: int | None = None, stride: int | None = None, baseline: str | float | torch.Tensor = "black",
              signed: bool = False, batch: int = 16) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus, 2014): slide a ``window`` x ``window`` square of the baseline over the image;
    each pixel gets the drop of the target logit, f(x) - f(x occluded), averaged over the windows that cover it.
    Returns (B, H, W); the magnitude unless ``signed``.

    ``window`` defaults to the model's patch size (one patch hidden at a time), ``stride`` to the window.
    ``batch`` occluded copies of the images go through the model at once.
    """
    attr = _captum_attr()
    _check_float_images(images)
    window = window or _patch_size(model)
    stride = stride or window
    channels = images.shape[1]
    with eval_mode(model):
        target = _targets(model, images, target)
        attributions = attr.Occlusion(model).attribute(
            images, sliding_window_shapes=(channels, window, window), strides=(channels, stride, stride),
            baselines=_baseline(images, baseline), target=target, perturbations_per_eval=batch)
    return _per_pixel(attributions, signed, "mean")  # every channel holds the same value: the window spans them all


def show_attributions(images: torch.Tensor, maps: dict[str, torch.Tensor], titles: list[str] | None = None):
    """One row per image: the image, then each named map (B, H, W) or (B, g, g) laid over it, side by side.
    Attention maps (cls_attention, attention_rollout) can sit in the same dict. Returns the figure."""
    n = len(images)
    for name, values in maps.items():
        if len(values) != n:
            raise ValueError(f"map {name!r} has {len(values)} entries for {n} images.")
    fig, axes = plt.subplots(n, 1 + len(maps), figsize=(1.7 * (1 + len(maps)), 1.7 * n), squeeze=False)
    for i in range(n):
        draw_overlay(axes[i, 0], images[i], title=titles[i] if titles else "image")
        for j, (name, values) in enumerate(maps.items(), start=1):
            draw_overlay(axes[i, j], images[i], heat=values[i], title=name)
    fig.tight_layout()
    return fig
