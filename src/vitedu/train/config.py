"""Every setting of a training run in one dataclass: the engine reads it, recipes are made of it, checkpoints store it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

OPTIMIZERS = ("adamw", "lamb", "sgd")
LOSSES = ("ce", "bce")
AUGMENTS = ("none", "flip", "randaugment", "3augment")
CROPS = ("none", "rrc", "src")
DISTILLATIONS = ("none", "hard", "soft")
TRAINABLE = ("all", "attention", "head")
AMP_MODES = ("auto", "off", "bf16", "fp16")
CLIP_MODES = ("norm", "agc", "param")  # param: each parameter tensor's norm on its own (DINO's clip_gradients)
TUPLE_SETTINGS = ("crop_scale", "blur_radius")  # stored as lists in JSON and TOML


@dataclass(frozen=True)
class TrainConfig:
    """The knobs of one run. ``lr`` is the learning rate of the whole (global) batch ``batch_size``."""

    # schedule
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 1.0
    warmup_lr: float = 1e-6
    # optimiser
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    weight_decay_end: float | None = None  # cosine from weight_decay to this over training, per step (DINO 0.04 -> 0.4)
    momentum: float = 0.9  # sgd only
    grad_clip: float | None = None
    clip_mode: str = "norm"  # "agc": adaptive gradient clipping (LeViT), grad_clip is then the clip factor
    # loss
    loss: str = "ce"
    label_smoothing: float = 0.0
    bce_target_threshold: float | None = None  # BCE: binarise the (mixed) targets with target > threshold
    # per-image augmentation (applied by the data set's transform, see vitedu.data.transforms)
    crop: str = "rrc"  # rrc: random resized crop; src: simple random crop (DeiT III); none
    crop_scale: tuple[float, float] = (0.08, 1.0)
    augment: str = "flip"  # none | flip | randaugment | 3augment (flip is part of all but none)
    rand_augment: str = "rand-m9-mstd0.5-inc1"
    color_jitter: float = 0.0
    blur_radius: tuple[float, float] = (0.1, 2.0)  # 3-Augment's Gaussian blur: sigma drawn from this range (pixels)
    random_erasing: float = 0.0
    repeated_aug: int = 1  # > 1: each image appears this many times per epoch (differently augmented)
    eval_crop_ratio: float = 0.875
    # per-batch augmentation (applied by the engine)
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mixup_switch_prob: float = 0.5
    # model options the recipe sets (passed to create_model by whoever builds the model)
    drop_path: float = 0.0
    drop_path_schedule: str | None = None  # "uniform" (official DeiT III) or "linear" (timm); None: the model's default
    layer_scale: float | None = None  # LayerScale init value; None: the model's default
    # the rest of the run
    ema_decay: float | None = None
    ema_decay_end: float | None = None  # cosine from ema_decay to this, per step (DINO's teacher: 0.996 -> 1)
    amp: str = "auto"  # auto: bf16/fp16 autocast on CUDA, fp32 on CPU
    distillation: str = "none"
    distillation_alpha: float = 0.5
    distillation_tau: float = 1.0
    trainable: str = "all"  # attention: only the attention weights (plus head and position embedding) train;
    # head: only the classifier (a linear probe on frozen features)
    seed: int = 0
    extra: dict = field(default_factory=dict)  # free-form notes a recipe carries (source, paper table, ...)

    def __post_init__(self):
        choices = dict(optimizer=OPTIMIZERS, loss=LOSSES, augment=AUGMENTS, crop=CROPS, distillation=DISTILLATIONS,
                       trainable=TRAINABLE, amp=AMP_MODES, clip_mode=CLIP_MODES)
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {', '.join(valid)}.")
        positive = dict(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, repeated_aug=self.repeated_aug)
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}.")
        if self.drop_path_schedule not in (None, "uniform", "linear"):
            raise ValueError(f"drop_path_schedule must be 'uniform', 'linear' or None, got {self.drop_path_schedule!r}.")
        if self.warmup_epochs < 0 or self.weight_decay < 0:
            raise ValueError("warmup_epochs and weight_decay cannot be negative.")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in (0, 1), got {self.ema_decay}.")
        if self.ema_decay_end is not None and (self.ema_decay is None or not 0 < self.ema_decay_end <= 1):
            raise ValueError(f"ema_decay_end must lie in (0, 1] and needs ema_decay, got {self.ema_decay_end} "
                             f"(ema_decay {self.ema_decay}).")
        if self.weight_decay_end is not None and self.weight_decay_end < 0:
            raise ValueError(f"weight_decay_end cannot be negative, got {self.weight_decay_end}.")
        for name in TUPLE_SETTINGS:
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be a (low, high) pair with 0 <= low <= high, got {getattr(self, name)}.")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}.")

    def replace(self, **changes) -> "TrainConfig":
        """A copy with ``changes``; unknown names raise an error that lists the valid ones."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"unknown training setting(s) {', '.join(sorted(unknown))}; valid: "
                            f"{', '.join(f.name for f in fields(self))}.")
        return replace(self, **changes)

    def to_dict(self) -> dict:
        data = asdict(self)
        for name in TUPLE_SETTINGS:
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        data = dict(data)
        for name in TUPLE_SETTINGS:
            if name in data:
                data[name] = tuple(data[name])
        return cls().replace(**data)

    def model_overrides(self, model_name: str) -> dict:
        """The ``create_model`` arguments this config sets for ``model_name``: its stochastic depth, and its LayerScale
        init and drop-path schedule where the model family has them (a ResNet has no LayerScale)."""
        import inspect

        import torch

        from ..models import create_model

        with torch.device("meta"):  # no memory, no time: only the class is wanted
            accepted = inspect.signature(type(create_model(model_name)).__init__).parameters
        wanted = {"drop_path_rate": self.drop_path, "init_values": self.layer_scale,
                  "drop_path_schedule": self.drop_path_schedule}
        return {k: v for k, v in wanted.items() if v is not None and k in accepted}

    @property
    def uses_mixup(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0
