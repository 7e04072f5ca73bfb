"""Checkpoints between vitedu and timm (or the official repositories), in both directions.

Each model family registers how its parameter names map to timm's and which timm model has the same
architecture. ``from_timm`` and ``to_timm`` are the only conversion path: ``create_model(name, pretrained=True)``
and the parity tests both go through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.nn as nn

StateDict = Mapping[str, torch.Tensor]


def _same(state_dict: StateDict) -> dict[str, torch.Tensor]:
    return dict(state_dict)


@dataclass(frozen=True)
class Family:
    """How one vitedu model class corresponds to timm.

    ``build_timm(model)`` builds timm's model of the same architecture (fresh weights), through timm's registered
    names where they can express the configuration and timm's classes where they cannot;
    ``from_timm_keys`` / ``to_timm_keys`` rename (and if needed reshape) a state dict between the two layouts.
    """

    model_class: type
    build_timm: Callable[[nn.Module], nn.Module]
    from_timm_keys: Callable[[StateDict], dict] = _same
    to_timm_keys: Callable[[StateDict], dict] = _same


_FAMILIES: dict[type, Family] = {}


def register_family(family: Family) -> None:
    _FAMILIES[family.model_class] = family


def family_of(model: nn.Module) -> Family:
    for cls in type(model).__mro__:
        if cls in _FAMILIES:
            return _FAMILIES[cls]
    raise TypeError(f"{type(model).__name__} has no timm counterpart registered in vitedu.models.convert.")


def load_checked(model: nn.Module, state_dict: StateDict, source: str = "the state dict") -> nn.Module:
    """``load_state_dict`` that names every missing, unexpected or mis-shaped key before loading anything."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f"{k}: {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items()
                  if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or unexpected or mismatched:
        def show(keys):
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")

        problems = [f"missing {len(missing)}: {show(missing)}" if missing else "",
                    f"unexpected {len(unexpected)}: {show(unexpected)}" if unexpected else "",
                    f"wrong shape {len(mismatched)}: {show(mismatched)}" if mismatched else ""]
        raise ValueError(
            f"{source} does not fit {type(model).__name__}: " + "; ".join(p for p in problems if p) + ". "
            "Build the model with the same configuration as the checkpoint (depth, width, number of classes, "
            "image size), or convert a timm checkpoint with vitedu.models.convert.from_timm."
        )
    model.load_state_dict(state_dict)
    return model


def from_timm(source: nn.Module | StateDict, name: str, **overrides) -> nn.Module:
    """A vitedu model ``name`` (with ``overrides``) holding the weights of a timm model or timm state dict."""
    from ._registry import create_model

    model = create_model(name, **overrides)
    state_dict = source.state_dict() if isinstance(source, nn.Module) else source
    return load_checked(model, family_of(model).from_timm_keys(state_dict), "the timm state dict")


def to_timm(model: nn.Module) -> nn.Module:
    """The timm model of the same architecture, holding ``model``'s weights (in eval mode)."""
    family = family_of(model)
    reference = family.build_timm(model)
    load_checked(reference, family.to_timm_keys(model.state_dict()), f"the converted {type(model).__name__} weights")
    return reference.eval()


def load_weights(model: nn.Module, path: str, source_layout: str = "vitedu") -> nn.Module:
    """Load weights from a ``.safetensors`` file or a PyTorch checkpoint (read with ``weights_only=True``).

    ``source_layout='timm'`` renames timm keys through the model family's key map first. A checkpoint saved by a
    training loop may hold the weights under ``'model'`` or ``'state_dict'``; those are found too.
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state_dict = load_file(str(path))
    else:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("model", "state_dict"):
            if isinstance(state_dict, dict) and isinstance(state_dict.get(key), dict):
                state_dict = state_dict[key]
                break
    if source_layout == "timm":
        state_dict = family_of(model).from_timm_keys(state_dict)
    elif source_layout != "vitedu":
        raise ValueError(f"source_layout must be 'vitedu' or 'timm', got {source_layout!r}.")
    return load_checked(model, state_dict, str(path))
