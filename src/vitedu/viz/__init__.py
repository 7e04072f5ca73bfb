"""Figures: training curves, attention maps, DINO segmentation masks, attributions and the attention explorer."""

from .attention import attention_stack, class_token_grid, cls_attention, show_cls_attention, upsample
from .attribution import integrated_gradients, occlusion, show_attributions
from .plots import LiveCurves, plot_history
from .segmentation import (
    attention_rollout,
    best_head_jaccard,
    draw_overlay,
    jaccard,
    mask_jaccard_scores,
    masks_at,
    mass_mask,
    rollout_from_attentions,
    segment,
    show_segmentation,
)
from .widgets import attention_explorer, explorer_figure

__all__ = [
    "cls_attention", "show_cls_attention", "upsample", "LiveCurves", "plot_history",
    "attention_rollout", "attention_stack", "best_head_jaccard", "class_token_grid", "draw_overlay", "jaccard",
    "mask_jaccard_scores", "mass_mask", "masks_at", "rollout_from_attentions", "segment", "show_segmentation",
    "integrated_gradients", "occlusion", "show_attributions", "attention_explorer", "explorer_figure",
]
