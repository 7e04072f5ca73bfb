"""Explore a ViT's attention by hand: an ipywidgets app for notebooks, and the same view as a static figure.

The app draws with matplotlib into a PNG shown by an ``Image`` widget: only core ipywidgets, no JavaScript extension
and no interactive matplotlib backend, so it runs alike in Jupyter, JupyterLab, VS Code and Colab.
"""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
from matplotlib.figure import Figure

from .attention import attention_stack, class_token_grid
from .segmentation import (
    draw_overlay,
    jaccard,
    masks_at,
    mass_mask,
    rollout_from_attentions,
)


def _ipywidgets():
    try:
        import ipywidgets
    except ImportError as error:
        raise ImportError("the attention explorer needs ipywidgets: pip install ipywidgets "
                          "(or pip install 'vitedu[book]').") from error
    return ipywidgets


def _map_of(attentions: list[torch.Tensor], prefix: int, index: int, layer: int, head: int | str,
            source: str = "attention") -> torch.Tensor:
    """One (g, g) map of image ``index``: the class token's attention in ``layer`` (one head or the heads' mean),
    or the rollout of blocks 0..layer."""
    one = [a[index:index + 1] for a in attentions]
    if source == "rollout":
        return rollout_from_attentions(one[:layer + 1], prefix)[0]
    grid = class_token_grid(one[layer], prefix)[0]
    return grid.mean(0) if head == "mean" else grid[head]


def _describe(layer: int, head: int | str, source: str) -> str:
    if source == "rollout":
        return f"rollout of blocks 0-{layer}"
    return f"block {layer}, " + ("mean of heads" if head == "mean" else f"head {head}")


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def attention_explorer(model: nn.Module, images: torch.Tensor, masks: torch.Tensor | None = None,
                       titles: list[str] | None = None):
    """An ipywidgets app: pick the image, block, head (or their mean), mass threshold and map (attention of one block,
    or rollout up to it); see the image, the map and its mass mask, with the Jaccard against ``masks`` (bool
    (B, H, W)) when given. Returns the widget; display it as the last line of a cell.

    The returned VBox also carries ``controls`` (dict of the widgets, set their ``value`` to drive it from code) and
    ``state`` (the map, mask, Jaccard and caption on show).
    """
    widgets = _ipywidgets()
    attentions = attention_stack(model, images)
    prefix, size = getattr(model, "num_prefix_tokens", 1), images.shape[-1]
    depth, heads = len(attentions), attentions[0].shape[1]
    quiet = dict(continuous_update=False, style={"description_width": "initial"})
    controls = {
        "image": widgets.IntSlider(value=0, min=0, max=len(images) - 1, description="image", **quiet),
        "layer": widgets.IntSlider(value=depth - 1, min=0, max=depth - 1, description="block", **quiet),
        "head": widgets.Dropdown(options=[("mean", "mean")] + [(str(h), h) for h in range(heads)], value="mean",
                                 description="head"),
        "mass": widgets.FloatSlider(value=0.6, min=0.1, max=1.0, step=0.05, description="mass", **quiet),
        "source": widgets.ToggleButtons(options=["attention", "rollout"], description="map"),
    }
    picture, caption = widgets.Image(format="png"), widgets.HTML()
    state: dict = {}

    def render(_=None) -> None:
        i, layer, head, mass, source = (controls[k].value for k in ("image", "layer", "head", "mass", "source"))
        controls["head"].disabled = source == "rollout"  # rollout fuses the heads
        heat = _map_of(attentions, prefix, i, layer, head, source)
        mask = masks_at(heat, size, mass)
        truth = masks[i] if masks is not None else None
        score = jaccard(mask, truth).item() if truth is not None else None
        name = titles[i] if titles else f"image {i}"
        text = f"{name}: {_describe(layer, head, source)}, {mass:.0%} of the mass"
        text += f" in {int(mass_mask(heat, mass).sum())} of {heat.numel()} patches"
        text += f", Jaccard {score:.3f}" if score is not None else ""
        fig = Figure(figsize=(6.0, 2.2))
        axes = fig.subplots(1, 3)
        draw_overlay(axes[0], images[i], outline=truth, title=name)
        draw_overlay(axes[1], images[i], heat=heat, title=_describe(layer, head, source))
        draw_overlay(axes[2], images[i], mask=mask, outline=truth,
                     title=f"mask, J = {score:.2f}" if score is not None else "mask")
        fig.tight_layout()
        picture.value, caption.value = _png(fig), text
        state.update(map=heat, mask=mask, jaccard=score, caption=text)

    for control in controls.values():
        control.observe(render, names="value")
    render()
    app = widgets.VBox([widgets.HBox([controls["image"], controls["layer"], controls["head"]]),
                        widgets.HBox([controls["mass"], controls["source"]]), caption, picture])
    app.controls, app.state = controls, state
    return app


def explorer_figure(model: nn.Module, images: torch.Tensor, masks: torch.Tensor | None = None, index: int = 0,
                    layers: list[int] | None = None, heads: list[int | str] | None = None, mass: float = 0.6):
    """The explorer as a static figure for the rendered book: image ``index``, one row per block in ``layers`` (all
    by default), one column per head in ``heads`` (every head, then "mean"). Each panel lays the class token's
    attention over the image and outlines its ``mass`` mask; the title gives the Jaccard when ``masks`` are given.
    Returns the figure."""
    attentions = attention_stack(model, images[index:index + 1])
    prefix, size = getattr(model, "num_prefix_tokens", 1), images.shape[-1]
    layers = list(range(len(attentions))) if layers is None else list(layers)
    heads = [*range(attentions[0].shape[1]), "mean"] if heads is None else list(heads)
    bad = [h for h in heads if h != "mean" and not (isinstance(h, int) and 0 <= h < attentions[0].shape[1])]
    if bad or not all(-len(attentions) <= layer < len(attentions) for layer in layers):
        raise ValueError(f"heads must be in 0..{attentions[0].shape[1] - 1} or 'mean' and layers in "
                         f"0..{len(attentions) - 1}, got heads {heads} and layers {layers}.")
    fig, axes = plt.subplots(len(layers), len(heads), figsize=(1.5 * len(heads), 1.6 * len(layers)), squeeze=False)
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            heat = _map_of(attentions, prefix, 0, layer, head)
            mask = masks_at(heat, size, mass)
            title = _describe(layer % len(attentions), head, "attention")
            if masks is not None:
                title += f"\nJ = {jaccard(mask, masks[index]).item():.2f}"
            draw_overlay(axes[r, c], images[index], heat=heat, outline=mask, title=title)
    fig.tight_layout()
    return fig
