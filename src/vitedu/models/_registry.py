"""``create_model`` / ``list_models``: every model of the book by name, as in timm."""

from __future__ import annotations

import difflib
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


def create_model(name: str, pretrained: bool = False, **overrides) -> nn.Module:
    """Build a registered model; keyword ``overrides`` replace the preset's arguments (``num_classes=10``, ...).

    ``pretrained=True`` fetches timm's weights for the same name from the Hugging Face hub (needs internet, e.g.
    Colab) and converts them with :func:`vitedu.models.convert.from_timm`.
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=5, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {name!r}.{hint} See vitedu.list_models().")
    if pretrained:
        return _pretrained(name, overrides)
    return _MODELS[name](**overrides)


def _pretrained(name: str, overrides: dict) -> nn.Module:
    import timm

    from .convert import from_timm

    if not timm.list_models(name, pretrained=True):
        raise ValueError(f"timm publishes no pretrained weights for {name!r} (vitedu's small presets have none: train "
                         "them with vitedu.train.fit). Models with weights: timm.list_models(pretrained=True).")
    timm_kwargs = {k: v for k, v in overrides.items() if k in ("num_classes", "in_chans")}
    try:
        reference = timm.create_model(name, pretrained=True, **timm_kwargs)
    except Exception as error:  # no network, hub down, missing file: all mean the same to the reader
        raise RuntimeError(
            f"could not fetch timm's pretrained weights for {name!r} ({type(error).__name__}: {error}). "
            "Pretrained weights are downloaded from the Hugging Face hub and need internet (Colab has it). "
            "Offline, train the model yourself, or load weights you have with "
            "vitedu.models.load_weights(model, 'weights.safetensors')."
        ) from error
    return from_timm(reference, name, **overrides)
