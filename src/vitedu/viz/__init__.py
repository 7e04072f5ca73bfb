"""Figures: training curves and attention maps."""

from .attention import cls_attention, show_cls_attention, upsample
from .plots import LiveCurves, plot_history

__all__ = ["cls_attention", "show_cls_attention", "upsample", "LiveCurves", "plot_history"]
