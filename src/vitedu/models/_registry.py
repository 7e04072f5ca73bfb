"""``create_model`` / ``list_models``: every model of the book by name, as in timm."""

from __future__ import annotations

import fnmatch
from typing import Callable

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (e.g. ``'vit_*'``)."""
    return sorted(name for name in _MODELS if fnmatch.fnmatch(name, pattern))


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model; keyword ``overrides`` replace the preset's arguments (``num_classes=10``, ...)."""
    if name not in _MODELS:
        close = [m for m in _MODELS if name.split("_")[0] in m][:8]
        hint = f" Similar names: {', '.join(close)}." if close else ""
        raise KeyError(f"unknown model {name!r}.{hint} See vitedu.list_models().")
    return _MODELS[name](**overrides)
