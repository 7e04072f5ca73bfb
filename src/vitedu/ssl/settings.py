"""DINO's own settings: the head, the multi-crop views, the temperatures, what ``TrainConfig`` does not hold.

``DINOSettings()`` is the official ViT-S/16 run (facebookresearch/dino ``main_dino.py`` defaults, the README's
100-epoch command), each value with its source in ``SOURCES`` (tags as in ``vitedu.train.recipes``: ``[code]`` read in
the official code, ``[README]`` its commands, ``[mem]`` the paper from memory, not checked against the PDF). The
``dino`` recipe carries them in ``TrainConfig.extra["dino"]`` (as ``to_dict()``), so ``config.json`` records them;
everything a supervised run also has (optimizer, schedule, weight decay and its cosine, the teacher's momentum as
``ema_decay`` -> ``ema_decay_end``, clipping, drop path, the global crops' scale ``crop_scale``, the blur radius
``blur_radius``) stays in ``TrainConfig``. This module imports nothing heavy, so the recipes can use it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

LOCAL_SIZE_AT_224 = 96  # [code] main_dino.py DataAugmentationDINO: 96-px local crops beside 224-px global ones
TUPLES = ("local_scale",)  # stored as lists in JSON

SOURCES = {
    "out_dim": "[code] main_dino.py --out_dim 65536 (K in the paper)",
    "hidden_dim": "[code] vision_transformer.py DINOHead hidden_dim=2048",
    "bottleneck_dim": "[code] DINOHead bottleneck_dim=256",
    "head_layers": "[code] DINOHead nlayers=3",
    "norm_last_layer": "[code] --norm_last_layer True; [README] 'boosting' runs of ViT-S set false",
    "use_bn_in_head": "[code] --use_bn_in_head False",
    "local_crops": "[code] --local_crops_number 8",
    "local_size": f"[code] {LOCAL_SIZE_AT_224} px with 224-px global crops (DataAugmentationDINO)",
    "local_scale": "[code] --local_crops_scale 0.05 0.4",
    "warmup_teacher_temp": "[code] --warmup_teacher_temp 0.04",
    "teacher_temp": "[code] --teacher_temp 0.04; the paper: 0.07 after a 30-epoch warm-up [mem], the README's "
                    "'boosting' command",
    "warmup_teacher_temp_epochs": "[code] --warmup_teacher_temp_epochs 0; the paper and the README's 'boosting' "
                                  "command: 30",
    "student_temp": "[code] DINOLoss student_temp=0.1",
    "center_momentum": "[code] DINOLoss center_momentum=0.9",
    "freeze_last_layer": "[code] --freeze_last_layer 1",
}


@dataclass(frozen=True)
class DINOSettings:
    """The settings of a DINO run that ``TrainConfig`` lacks; defaults: the official ViT-S/16 run (``SOURCES``).

    ``local_size`` None means the paper's ratio, 96 px for 224-px global crops, at the run's resolution
    (:meth:`local_size_for`). Epoch counts (``warmup_teacher_temp_epochs``, ``freeze_last_layer``) are epochs of the
    run; ``Recipe.scaled`` adapts them to a shorter run (:meth:`scaled`).
    """

    # projection head (vision_transformer.py DINOHead)
    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    head_layers: int = 3
    norm_last_layer: bool = True
    use_bn_in_head: bool = False
    # multi-crop: 2 global crops at the run's image size (scale: TrainConfig.crop_scale) and these local ones
    local_crops: int = 8
    local_size: int | None = None
    local_scale: tuple[float, float] = (0.05, 0.4)
    # the loss (main_dino.py DINOLoss)
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    student_temp: float = 0.1
    center_momentum: float = 0.9
    freeze_last_layer: int = 1

    def __post_init__(self):
        for name in ("out_dim", "hidden_dim", "bottleneck_dim", "head_layers"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        for name in ("local_crops", "warmup_teacher_temp_epochs", "freeze_last_layer"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}.")
        if self.local_size is not None and (not _is_int(self.local_size) or self.local_size < 1):
            raise ValueError(f"local_size must be a positive number of pixels or None (96/224 of the image size), "
                             f"got {self.local_size!r}.")
        low, high = self.local_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"local_scale must be (min, max) with 0 < min <= max <= 1 (fractions of the image area), "
                             f"got {self.local_scale}.")
        for name in ("warmup_teacher_temp", "teacher_temp", "student_temp"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if not 0 <= self.center_momentum <= 1:  # 1: the centre never moves from 0 (no centering, a collapse demo)
            raise ValueError(f"center_momentum must lie in [0, 1], got {self.center_momentum}.")

    @property
    def n_crops(self) -> int:
        """All views: the 2 global crops and the local ones."""
        return 2 + self.local_crops

    def replace(self, **changes: Any) -> "DINOSettings":
        """A copy with ``changes``; an unknown name raises a TypeError that lists the valid ones."""
        unknown = set(changes) - set(names())
        if unknown:
            raise TypeError(f"unknown DINO setting(s) {', '.join(sorted(unknown))}; valid: {', '.join(names())}.")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The settings as JSON-ready values (tuples as lists)."""
        data = dataclasses.asdict(self)
        for name in TUPLES:
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "DINOSettings":
        """The inverse of :meth:`to_dict`; returns DINOSettings."""
        data = {k: tuple(v) if k in TUPLES else v for k, v in data.items()}
        return cls().replace(**data)

    def scaled(self, epochs: int, paper_epochs: int) -> "DINOSettings":
        """These settings for a run of ``epochs`` instead of ``paper_epochs``; returns DINOSettings.

        The teacher-temperature warm-up keeps its share of training (as ``Recipe.scaled`` does with the lr warm-up),
        rounded to whole epochs since DINO's temperature changes once per epoch. The last layer stays frozen for the
        paper's number of epochs (the official help: 'during the first epoch'), but at most ``epochs - 1``, so that
        it trains at all in a short run (a one-epoch run does not freeze it).
        """
        warmup = min(epochs, round(self.warmup_teacher_temp_epochs * epochs / paper_epochs))
        return self.replace(warmup_teacher_temp_epochs=warmup,
                            freeze_last_layer=min(self.freeze_last_layer, max(epochs - 1, 0)))

    def local_size_for(self, image_size: int, patch_size: int = 1) -> int:
        """The local crops' size in pixels for global crops of ``image_size``: ``local_size`` if set, else the paper's
        96/224 of ``image_size`` rounded to a multiple of ``patch_size`` (at least one patch). Returns an int."""
        if self.local_size is not None:
            return self.local_size
        return max(patch_size, round(LOCAL_SIZE_AT_224 * image_size / 224 / patch_size) * patch_size)

    def check(self, epochs: int) -> None:
        """Raise a ValueError saying what to change when a setting does not fit a run of ``epochs`` epochs."""
        if self.warmup_teacher_temp_epochs > epochs:
            raise ValueError(f"warmup_teacher_temp_epochs={self.warmup_teacher_temp_epochs} is longer than the run "
                             f"({epochs} epochs): set warmup_teacher_temp_epochs <= {epochs}.")


def names() -> list[str]:
    """The names of the DINO settings, in order."""
    return [f.name for f in dataclasses.fields(DINOSettings)]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
