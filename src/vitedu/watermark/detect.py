"""Decoding in feature space: the zero-bit dual-hypercone detector and multi-bit decoding by signs.

Zero-bit. A feature phi(x) is declared marked when it lies in the dual hypercone of axis the carrier a and half-angle
theta: |cos(phi(x), a)| >= tau = cos(theta). For a feature uniformly distributed on the unit sphere of R^d (an unmarked
image, ideally, after whitening) the false-positive rate is the share of the sphere inside the two cones,

    FPR(tau) = P(|cos(phi, a)| >= tau) = I_{1 - tau^2}((d - 1) / 2, 1 / 2),          (paper, eq. 3)

with I_x(a, b) the regularised incomplete beta function. So tau is set exactly from the target FPR (1e-6 in the
paper) by inverting it, and the p-value of an observed cosine c is FPR(|c|).

Multi-bit. k carriers a_1..a_k carry k bits m in {-1, 1}^k: bit i is read as the sign of phi(x)^T a_i. Under the null
hypothesis (an unmarked image) every decoded bit is right with probability 1/2, independently for orthogonal
carriers, so the p-value of n correct bits out of k is the binomial tail P(Bin(k, 1/2) >= n).

Everything here depends on phi(x) only through its direction: detection is invariant to the feature's scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import special, stats


def _check_dim(dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 2:
        raise ValueError(f"the feature dimension d must be an integer >= 2, got {dim!r}.")
    return int(dim)


def _check_fpr(fpr) -> np.ndarray:
    values = np.asarray(fpr, dtype=np.float64)
    if not np.all((values > 0) & (values < 1)):
        raise ValueError(f"a false-positive rate must lie strictly between 0 and 1, got {fpr!r} (1e-6 is the paper's).")
    return values


def false_positive_rate(tau, dim: int):
    """The share of the unit sphere of R^dim with |cos(u, a)| >= tau: I_{1 - tau^2}((dim - 1) / 2, 1 / 2) (eq. 3).

    ``tau`` is a float or an array of thresholds in [0, 1]; returns a float or an array like it."""
    dim = _check_dim(dim)
    tau = np.asarray(tau, dtype=np.float64)
    if not np.all((tau >= 0) & (tau <= 1)):
        raise ValueError(f"a cosine threshold tau = cos(theta) must lie in [0, 1], got {tau!r}.")
    out = special.betainc((dim - 1) / 2, 0.5, 1 - tau ** 2)
    return float(out) if out.ndim == 0 else out


def threshold(fpr, dim: int):
    """The cosine threshold tau = cos(theta) of the dual hypercone whose false-positive rate is ``fpr`` in dimension
    ``dim``: the inverse of :func:`false_positive_rate`, tau = sqrt(1 - I^{-1}_{fpr}((dim - 1) / 2, 1 / 2))."""
    dim = _check_dim(dim)
    fpr = _check_fpr(fpr)
    out = np.sqrt(1 - special.betaincinv((dim - 1) / 2, 0.5, fpr))
    return float(out) if out.ndim == 0 else out


def _features(features, name: str = "features") -> torch.Tensor:
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor or numpy array of shape (N, d) or (d,), "
                        f"got {type(features).__name__}.")
    if not features.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {features.dtype}: convert with .float().")
    if features.ndim == 1:
        features = features[None]
    if features.ndim != 2:
        raise ValueError(f"{name} must have shape (N, d) or (d,), got {tuple(features.shape)}.")
    return features


def _carriers(carriers, dim: int) -> torch.Tensor:
    carriers = _features(carriers, "carriers")
    if carriers.shape[1] != dim:
        raise ValueError(f"the carriers have dimension {carriers.shape[1]} but the features have {dim}: "
                         "make the carriers with make_carriers(d) for the features' d.")
    return carriers


def cosine(features, carrier) -> torch.Tensor:
    """cos(phi, a) for each row phi of ``features`` (N, d) and one ``carrier`` (d,) or (1, d): a tensor (N,).
    A zero feature has cosine 0 (it lies in no cone)."""
    features = _features(features)
    carrier = _carriers(carrier, features.shape[1])
    if len(carrier) != 1:
        raise ValueError(f"zero-bit detection uses one carrier, got {len(carrier)}: pass carriers[i], or use decode() "
                         "for multi-bit messages.")
    f = features.double()
    a = carrier[0].double()
    return (f @ a / (f.norm(dim=1) * a.norm()).clamp_min(1e-300)).to(features.dtype)


def pvalue(features, carrier) -> np.ndarray:
    """The p-value of each feature's detection: the probability that a random direction lies as deep in the dual
    hypercone, I_{1 - c^2}((d - 1) / 2, 1 / 2) with c = cos(phi, a). An array (N,) in [0, 1]; small means marked."""
    c = cosine(features, carrier).double().abs().clamp(max=1).cpu().numpy()
    return special.betainc((_features(features).shape[1] - 1) / 2, 0.5, 1 - c ** 2)


@dataclass(frozen=True)
class Detection:
    """The zero-bit detector's verdict for N features: ``detected`` (bool, N), ``cosine`` (N), ``pvalue`` (N) and the
    threshold ``tau`` used for the target ``fpr``."""
    detected: torch.Tensor
    cosine: torch.Tensor
    pvalue: np.ndarray
    tau: float
    fpr: float


def detect(features, carrier, fpr: float = 1e-6) -> Detection:
    """Zero-bit detection: marked when |cos(phi(x), a)| >= tau with tau = threshold(fpr, d) (the dual hypercone)."""
    features = _features(features)
    fpr = float(_check_fpr(fpr))
    tau = threshold(fpr, features.shape[1])
    c = cosine(features, carrier)
    return Detection(c.abs() >= tau, c, pvalue(features, carrier), tau, fpr)


def _message(message, k: int) -> torch.Tensor:
    message = torch.as_tensor(message)
    if message.ndim != 1 or len(message) != k:
        raise ValueError(f"the message must be a vector of {k} bits (one per carrier), got shape "
                         f"{tuple(message.shape)}.")
    if not torch.all((message == 1) | (message == -1)):
        raise ValueError("the message's bits must be -1 or 1 (not 0/1: map b to 2 * b - 1).")
    return message.float()


def decode(features, carriers) -> torch.Tensor:
    """The bits read from each feature: sign(phi(x)^T a_i) for i = 1..k, a float tensor (N, k) in {-1, 1}
    (a projection of exactly 0 reads as +1)."""
    features = _features(features)
    carriers = _carriers(carriers, features.shape[1])
    projections = features.double() @ carriers.double().T
    return torch.where(projections >= 0, 1.0, -1.0).float()


def bit_accuracy(decoded, message) -> torch.Tensor:
    """The share of bits decoded right for each row of ``decoded`` (N, k) against ``message`` (k,): a tensor (N,)."""
    decoded = torch.as_tensor(decoded)
    if decoded.ndim == 1:
        decoded = decoded[None]
    message = _message(message, decoded.shape[1])
    return (decoded == message).float().mean(dim=1)


def bits_pvalue(correct, k: int) -> np.ndarray:
    """The p-value of ``correct`` right bits out of ``k``: P(Bin(k, 1/2) >= correct), the probability that an unmarked
    image decodes at least that well by chance. ``correct`` is an int or an array of ints in [0, k]."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"the number of bits k must be a positive integer, got {k!r}.")
    correct = np.asarray(correct)
    if not np.all((correct >= 0) & (correct <= k) & (correct == np.round(correct))):
        raise ValueError(f"the number of correct bits must be an integer in [0, {k}], got {correct!r}.")
    return stats.binom.sf(correct - 1, k, 0.5)
