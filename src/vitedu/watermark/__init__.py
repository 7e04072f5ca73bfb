"""Watermarking images in self-supervised latent spaces (Fernandez et al., 2022, arXiv 2112.09581).

A mark lives in feature space, not in pixels: an image is marked by nudging its pixels until its feature phi(x)
(a frozen backbone followed by a whitening layer) falls in a secret region around carriers drawn from a seed.
Zero-bit: the dual hypercone |cos(phi(x), a)| >= tau, whose false-positive rate is exact (``threshold``,
``false_positive_rate``). Multi-bit: the signs of the projections on k carriers (``decode``, ``bits_pvalue``).
``mark`` optimises the pixels under a PSNR constraint with random augmentations; ``attacks`` holds the edits
(JPEG, crop, resize, rotation, blur, brightness, contrast) to evaluate robustness with.
"""

from .carriers import make_carriers, make_message
from .detect import (
    Detection,
    bit_accuracy,
    bits_pvalue,
    cosine,
    decode,
    detect,
    false_positive_rate,
    pvalue,
    threshold,
)
from .features import (
    DEFAULT_BACKBONE,
    FeatureExtractor,
    Whitening,
    check_images,
    default_extractor,
    resnet50_dino,
    to_rgb,
)
from .mark import MarkConfig, Marked, mark, psnr, ssim
from . import attacks
from .attacks import ATTACKS
from .evaluate import empirical_fpr, robustness

__all__ = [
    "make_carriers", "make_message",
    "Detection", "bit_accuracy", "bits_pvalue", "cosine", "decode", "detect", "false_positive_rate", "pvalue",
    "threshold",
    "DEFAULT_BACKBONE", "FeatureExtractor", "Whitening", "check_images", "default_extractor", "resnet50_dino", "to_rgb",
    "MarkConfig", "Marked", "mark", "psnr", "ssim", "attacks", "ATTACKS",
    "empirical_fpr", "robustness",
]
