"""Evaluation: the empirical false-positive rate on unmarked images against the exact one, and robustness of marks
to attacks (true-positive rate of the zero-bit detector, bit accuracy of multi-bit decoding)."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from .attacks import ATTACKS
from .detect import _features, bit_accuracy, cosine, decode, detect, threshold
from .features import FeatureExtractor


def empirical_fpr(features, carriers, fprs: Sequence[float] = (1e-1, 1e-2, 1e-3)) -> list[dict]:
    """For unmarked ``features`` (N, d) and ``carriers`` (K, d) (K independent keys): for each target FPR, the share
    of the N * K (image, carrier) pairs the dual-hypercone detector flags, beside the theoretical rate. Rows
    ``{"fpr": target, "empirical": share, "trials": N * K, "detections": count}``."""
    features = _features(features)
    carriers = _features(carriers, "carriers")
    c = torch.stack([cosine(features, a) for a in carriers]).abs()  # (K, N)
    rows = []
    for fpr in fprs:
        hits = int((c >= threshold(fpr, features.shape[1])).sum())
        rows.append({"fpr": float(fpr), "empirical": hits / c.numel(), "trials": c.numel(), "detections": hits})
    return rows


@torch.no_grad()
def robustness(marked: torch.Tensor | Sequence[torch.Tensor], extractor: FeatureExtractor, carriers: torch.Tensor,
               message: torch.Tensor | None = None,
               attacks: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] = ATTACKS,
               fpr: float = 1e-6) -> list[dict]:
    """Each attack applied to each marked image (3, H, W) (a batch or a list of images of any sizes), then decoded.
    Zero-bit (``message=None``, one carrier): per attack the true-positive rate at ``fpr`` and the median p-value.
    Multi-bit: per attack the mean bit accuracy and the share of images decoded without error."""
    images = list(marked)
    rows = []
    for name, attack in attacks.items():
        feats = torch.cat([extractor(attack(x)[None]) for x in images])
        if message is None:
            out = detect(feats, carriers, fpr)
            rows.append({"attack": name, "tpr": out.detected.float().mean().item(),
                         "median p-value": float(np.median(out.pvalue))})
        else:
            acc = bit_accuracy(decode(feats, carriers), message)
            rows.append({"attack": name, "bit accuracy": acc.mean().item(),
                         "word accuracy": (acc == 1).float().mean().item()})
    return rows
