"""Checkpoints that survive a kill at any moment, and that bring a run back exactly where it stopped.

A checkpoint is a folder ``<output>/checkpoints/step-<global step>/`` holding

- ``model.safetensors`` (and ``ema.safetensors``): the weights, readable by anyone without running pickle;
- ``state.pt``: optimizer, schedule, gradient scaler, RNG states, position (epoch, step) and the history so far, read
  back with ``torch.load(weights_only=True)``;
- ``meta.json``: what model and settings wrote it, for humans and for the mismatch check.

It is written into a temporary folder first and renamed into place; then ``<output>/checkpoints/latest`` (a small
text file, itself replaced atomically) is pointed at it, and only then are older checkpoints deleted. A kill at any
point leaves ``latest`` naming a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from ..models.convert import load_checked

LATEST = "latest"


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def rng_state() -> dict:
    """Every RNG a training step draws from, as tensors and plain numbers (safe for ``weights_only`` loading)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                        cached], "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_weights(module: nn.Module, path: str | Path) -> Path:
    """The module's weights as one safetensors file, written atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        save_file(_weights(module), tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(output_dir: str | Path, *, model: nn.Module, state: dict, meta: dict, ema: nn.Module | None = None,
         keep: int = 1) -> Path:
    """Write one checkpoint atomically (see the module docstring) and return its folder.

    ``state`` must hold ``global_step``; everything in it must be tensors, numbers, strings, lists, tuples or dicts.
    The ``keep`` newest checkpoints are kept.
    """
    root = checkpoint_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state['global_step']:09d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        save_file(_weights(model), str(tmp / "model.safetensors"))
        if ema is not None:
            save_file(_weights(ema), str(tmp / "ema.safetensors"))
        torch.save(state, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
        if final.exists():  # a second save at the same step (e.g. end of epoch right after a periodic save)
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_text_atomic(root / LATEST, final.name + "\n")
    for old in sorted(root.glob("step-*"))[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):  # left behind by a run killed while writing
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None when it has none."""
    root = checkpoint_root(output_dir)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    folder = root / pointer.read_text().strip()
    if not (folder / "state.pt").is_file():
        raise FileNotFoundError(f"{pointer} names {folder.name}, which is incomplete or missing. Delete {root} to "
                                "start over, or point 'latest' at a complete step-* folder.")
    return folder


def read_meta(folder: str | Path) -> dict:
    return json.loads((Path(folder) / "meta.json").read_text())


def load(folder: str | Path, model: nn.Module, ema: nn.Module | None = None) -> dict:
    """Load the weights into ``model`` (and ``ema``), checking that they fit first; return the state dict of
    ``state.pt`` (optimizer, schedule, RNG, position, history) for the engine to restore."""
    folder = Path(folder)
    meta = read_meta(folder)
    load_checked(model, load_file(str(folder / "model.safetensors")),
                 f"the checkpoint {folder} (written by model {meta.get('model', '?')})")
    if ema is not None:
        ema_file = folder / "ema.safetensors"
        if not ema_file.is_file():
            raise FileNotFoundError(f"{folder} has no EMA weights, but this run keeps an EMA (ema_decay is set). "
                                    "Resume with the settings the run started with.")
        load_checked(ema, load_file(str(ema_file)), f"the EMA weights of {folder}")
    return torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
