"""The model zoo: one file per family, every model by name through ``create_model``."""

from . import vit  # noqa: F401  (registers the ViT family)
from ._registry import create_model, list_models, register_model
from .vit import VisionTransformer, resize_pos_embed

__all__ = ["create_model", "list_models", "register_model", "VisionTransformer", "resize_pos_embed"]
