"""The feature extractor phi: any vitedu backbone's pooled (pre-logits) feature, followed by a PCA-whitening layer
learned on a set of images, so that unmarked images' features are centred and isotropic, as the hypercone's exact
false-positive rate assumes (paper, section 3: the normalisation layer)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MIN_SIZE = 8  # images smaller than this on a side carry too few pixels to mark

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_rgb(image, alpha: str = "drop") -> torch.Tensor:
    """An image as the float RGB tensor (3, H, W) in [0, 1] that marking and extraction take, converted explicitly.

    Accepts a PIL image, a numpy array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (uint8 in 0..255 or float in
    [0, 1]), or a tensor (C, H, W) likewise. Grayscale is repeated over the three channels; an alpha channel is
    dropped (``alpha='drop'``) or composited over white (``alpha='white'``).
    """
    if alpha not in ("drop", "white"):
        raise ValueError(f"alpha must be 'drop' or 'white', got {alpha!r}.")
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else image.mode))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise ValueError(f"a numpy image must have shape (H, W) or (H, W, C), got {image.shape}.")
        image = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"an image must be a PIL image, numpy array or torch tensor, got {type(image).__name__}.")
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(f"an image tensor must have shape (C, H, W), got {tuple(image.shape)} "
                         "(for a batch, convert each image).")
    if image.dtype == torch.uint8:
        image = image.float() / 255
    elif image.is_floating_point():
        image = image.float()
        if image.min() < 0 or image.max() > 1:
            raise ValueError("a float image must lie in [0, 1] (divide 0..255 values by 255).")
    else:
        raise TypeError(f"an image must be uint8 (0..255) or float (0..1), got {image.dtype}.")
    channels = image.shape[0]
    if channels == 4:
        rgb, a = image[:3], image[3:]
        image = rgb if alpha == "drop" else rgb * a + (1 - a)
    elif channels == 1:
        image = image.repeat(3, 1, 1)
    elif channels != 3:
        raise ValueError(f"an image needs 1 (grayscale), 3 (RGB) or 4 (RGBA) channels, got {channels}.")
    if min(image.shape[1:]) < MIN_SIZE:
        raise ValueError(f"the image is {tuple(image.shape[1:])} pixels: at least {MIN_SIZE} on each side is needed.")
    return image.contiguous()


def check_images(images: torch.Tensor) -> torch.Tensor:
    """Images as the extractor takes them: a float tensor (B, 3, H, W) in [0, 1]; else a clear error with the fix."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch tensor (B, 3, H, W), got {type(images).__name__}: "
                        "convert with vitedu.watermark.to_rgb(image)[None].")
    if images.ndim == 3:
        raise ValueError(f"images must be a batch (B, 3, H, W), got {tuple(images.shape)}: add a batch axis with "
                         "images[None].")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}.")
    if not images.is_floating_point():
        raise TypeError(f"images must be float in [0, 1], got {images.dtype}: divide uint8 images by 255 "
                        "(vitedu.watermark.to_rgb does it).")
    if images.shape[1] != 3:
        kind = {1: "grayscale", 4: "RGBA"}.get(images.shape[1], f"{images.shape[1]}-channel")
        raise ValueError(f"images must have 3 (RGB) channels, got {kind} images {tuple(images.shape)}: convert them "
                         "explicitly with vitedu.watermark.to_rgb (grayscale is repeated, alpha dropped).")
    if min(images.shape[2:]) < MIN_SIZE:
        raise ValueError(f"images of {tuple(images.shape[2:])} pixels are too small: at least {MIN_SIZE} on a side.")
    return images


class Whitening(nn.Module):
    """PCA whitening y = W (x - mu), W = Lambda^{-1/2} U^T, from the eigen-decomposition U Lambda U^T of the
    covariance of features fitted with :meth:`fit`: the fitted features come out centred with identity covariance.

    Directions of (numerically) zero variance are dropped, so the output may have fewer dimensions than the input:
    a ViT's final LayerNorm, for one, confines its features to a hyperplane. ``weight`` is (d_out, d_in)."""

    def __init__(self, dim_in: int, dim_out: int | None = None):
        super().__init__()
        dim_out = dim_in if dim_out is None else dim_out
        self.register_buffer("mean", torch.zeros(dim_in))
        self.register_buffer("weight", torch.eye(dim_out, dim_in))

    @property
    def dim(self) -> int:
        """The output dimension d of the whitened features."""
        return self.weight.shape[0]

    @classmethod
    def fit(cls, features: torch.Tensor, dim: int | None = None, rtol: float = 1e-8) -> Whitening:
        """Whitening learned on ``features`` (N, D) with N > D. Keeps the ``dim`` leading principal directions
        (default: all) among those with variance above ``rtol`` times the largest."""
        if not isinstance(features, torch.Tensor) or features.ndim != 2 or not features.is_floating_point():
            raise ValueError("whitening is fitted on a float tensor of features (N, D), got "
                             f"{getattr(features, 'shape', type(features).__name__)}.")
        n, d = features.shape
        if n <= d:
            raise ValueError(f"whitening {d}-dimensional features needs more than {d} images to estimate their "
                             f"covariance, got {n}: fit on more images.")
        if dim is not None and not 2 <= dim <= d:
            raise ValueError(f"the whitened dimension must lie in [2, {d}], got {dim}.")
        x = features.double()
        mean = x.mean(dim=0)
        cov = (x - mean).T @ (x - mean) / (n - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
        keep = int((eigenvalues > rtol * eigenvalues[0]).sum())
        keep = keep if dim is None else min(keep, dim)
        if keep < 2:
            raise ValueError("the features vary along fewer than 2 directions: the backbone gives (nearly) constant "
                             "features on these images; use more varied images or another backbone.")
        layer = cls(d, keep)
        layer.mean.copy_(mean.float())
        layer.weight.copy_((eigenvectors[:, :keep] / eigenvalues[:keep].sqrt()).T.float())
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.weight.T


class FeatureExtractor(nn.Module):
    """phi(x): images (B, 3, H, W) in [0, 1] -> resized to ``image_size`` (if given), normalised with ``mean`` and
    ``std``, the backbone's pooled pre-logits feature (``forward_head(forward_features(x), pre_logits=True)`` for a
    vitedu model), then the whitening layer once :meth:`fit_whitening` has learned it. Differentiable in the pixels,
    so marking can optimise them. The backbone is frozen and kept in eval mode."""

    def __init__(self, backbone: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD, image_size: int | None = None,
                 whitening: Whitening | None = None):
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std are per RGB channel (3 values each, std > 0), got {mean} and {std}.")
        self.backbone = backbone.eval().requires_grad_(False)
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.image_size = image_size
        self.whitening = whitening

    def train(self, mode: bool = True):  # the backbone stays in eval mode (batch norm statistics, dropout)
        super().train(mode)
        self.backbone.eval()
        return self

    def raw_features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's features before whitening, (B, D)."""
        from ..ssl.dino import backbone_features

        x = check_images(images)
        if self.image_size is not None and tuple(x.shape[2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        x = (x - self.pixel_mean) / self.pixel_std
        out = backbone_features(self.backbone, x)
        if out.ndim != 2:
            raise ValueError(f"the backbone gives features of shape {tuple(out.shape)}, not (B, D): wrap it so that it "
                             "returns pooled features.")
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.raw_features(images)
        return self.whitening(out) if self.whitening is not None else out

    @property
    def dim(self) -> int:
        """The feature dimension d."""
        if self.whitening is not None:
            return self.whitening.dim
        if not hasattr(self.backbone, "num_features"):
            raise AttributeError("the backbone has no num_features attribute: fit the whitening layer "
                                 "(fit_whitening), or read the dimension off extractor(images).shape[1].")
        return int(self.backbone.num_features)

    @torch.no_grad()
    def fit_whitening(self, images: torch.Tensor, dim: int | None = None, batch_size: int = 128) -> FeatureExtractor:
        """Learn the whitening layer on ``images`` (N, 3, H, W) in [0, 1] (N > the backbone's D), keeping ``dim``
        dimensions (default: every direction the features vary along); returns self."""
        check_images(images)
        feats = torch.cat([self.raw_features(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
        self.whitening = Whitening.fit(feats, dim=dim).to(feats.device)
        return self


DEFAULT_BACKBONE = "the DINO-trained vit_pico_patch4_32 of chapter 07 (data/checkpoints/07_dino_dino_cpu.safetensors)"


@lru_cache(maxsize=None)
def _scenes_statistics(budget_name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from ..experiments import dino
    from ..experiments.recipe_study import prepare

    prepared = prepare(dino.CONFIGS[budget_name].data)
    return prepared.mean, prepared.std


def default_extractor(kind: str = "DINO", budget_name: str = "cpu") -> FeatureExtractor:
    """The book's default phi (not yet whitened): the backbone the DINO chapter's reference run kept (``kind`` =
    'DINO' or 'supervised'), or the same ViT with its random initial weights (``kind='random'``), reading 32-pixel
    images normalised with the Scenes training statistics that backbone was trained with. Nothing is downloaded.
    The paper's backbone, a DINO ResNet-50, can be wrapped the same way: ``FeatureExtractor(resnet, image_size=224)``.
    """
    from ..experiments import dino

    if kind not in ("DINO", "supervised", "random"):
        raise ValueError(f"kind must be 'DINO', 'supervised' or 'random', got {kind!r}.")
    cfg = dino.CONFIGS[budget_name]
    if kind == "random":
        from ..models import create_model

        with torch.random.fork_rng():  # the initial weights of seed 0, leaving the caller's random state alone
            torch.manual_seed(0)
            backbone = create_model(cfg.model, num_classes=0)
    else:
        backbone = dino.load_model(cfg, kind, path=dino.checkpoint_path(kind, budget_name))
    mean, std = _scenes_statistics(budget_name)
    return FeatureExtractor(backbone, mean, std, image_size=cfg.data.image_size)


DINO_RESNET50_URL = "https://dl.fbaipublicfiles.com/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth"


def resnet50_dino(weights=None) -> nn.Module:
    """The paper's backbone: torchvision's ResNet-50 trunk (the classifier replaced by the identity, so it returns the
    pooled 2048-dimensional feature) with the official DINO ResNet-50 weights (backbone only, ``DINO_RESNET50_URL``).

    ``weights=None`` downloads them once through ``torch.hub`` (about 90 MB, cached in ``~/.cache/torch/hub``); a path
    loads a local copy of that file. Either way the file is read with ``weights_only=True``. Wrap the result for
    marking as ``FeatureExtractor(resnet50_dino(), image_size=224)`` (ImageNet normalisation, the default)."""
    from pathlib import Path

    from torchvision.models import resnet50

    if weights is None:
        try:
            state = torch.hub.load_state_dict_from_url(DINO_RESNET50_URL, map_location="cpu", weights_only=True)
        except OSError as error:  # URLError and socket errors are OSErrors
            raise RuntimeError(
                f"could not download the DINO ResNet-50 weights ({error}). Offline, download {DINO_RESNET50_URL} on "
                "a machine with internet and pass its path: resnet50_dino('dino_resnet50_pretrain.pth').") from error
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no weights file at {path}: download {DINO_RESNET50_URL} and pass its path, or "
                                    "pass weights=None to download it through torch.hub.")
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"the weights file holds a {type(state).__name__}, not a state dict of tensors.")
    # the official file is the bare backbone; a full DINO training checkpoint nests it as teacher/student 'backbone.'
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    trunk = resnet50(weights=None)
    trunk.fc = nn.Identity()
    missing, unexpected = trunk.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.startswith("fc.")]  # a classifier, if present, is not used
    if missing or unexpected:
        raise ValueError(f"these are not ResNet-50 backbone weights: {len(missing)} missing keys (e.g. "
                         f"{missing[:3]}) and {len(unexpected)} unexpected ones (e.g. {unexpected[:3]}).")
    trunk.num_features = 2048
    return trunk.eval()
