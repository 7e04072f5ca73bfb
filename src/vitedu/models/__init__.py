"""The model zoo: one file per family, every model by name through ``create_model``.

Every model has ``forward_features`` / ``forward_head``; attention-based models also have ``attention_maps(x)``,
one (B, heads, queries, keys) tensor per attention layer. ``convert.from_timm`` / ``convert.to_timm`` move weights
between vitedu and timm.
"""

from . import levit, patchconvnet, resmlp, resnet, vit  # noqa: F401  (each family registers its models on import)
from ._registry import create_model, list_models, register_model
from .convert import from_timm, load_weights, to_timm
from .vit import VisionTransformer, resize_pos_embed

__all__ = ["create_model", "list_models", "register_model", "from_timm", "load_weights", "to_timm",
           "VisionTransformer", "resize_pos_embed"]
