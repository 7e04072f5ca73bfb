"""Secret carriers: random unit directions of the feature space, drawn from a seed (the key of the watermark)."""

from __future__ import annotations

import torch


def make_carriers(dim: int, k: int = 1, seed: int = 0, orthonormal: bool = True) -> torch.Tensor:
    """``k`` secret carriers a_1..a_k of dimension ``dim``, a float tensor (k, dim) of unit rows.

    Each carrier is a standard Gaussian vector normalised to the unit sphere, i.e. a uniformly random direction.
    With ``orthonormal=True`` (the default, so that the k projections of the multi-bit scheme do not interfere and
    the decoded bits of an unmarked image are independent) the k directions are orthonormalised by a QR
    decomposition, which keeps them uniformly distributed as a set (k rows of a random orthogonal matrix); this needs
    ``k <= dim``. The same seed always gives the same
    carriers, and does not touch torch's global random state.
    """
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(f"the feature dimension must be an integer >= 2 (on a circle or more), got {dim!r}.")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"the number of carriers k must be a positive integer, got {k!r}.")
    if orthonormal and k > dim:
        raise ValueError(f"{k} orthonormal carriers do not fit in dimension {dim}: use k <= {dim}, or "
                         "orthonormal=False for merely random unit carriers.")
    g = torch.Generator().manual_seed(int(seed))
    a = torch.randn(k, dim, generator=g, dtype=torch.float64)
    if orthonormal:
        q, r = torch.linalg.qr(a.T)  # a.T = q r, q (dim, k) with orthonormal columns
        a = (q * torch.sign(torch.diagonal(r))).T  # fix the signs so q is the Haar-distributed one
    return (a / a.norm(dim=1, keepdim=True)).float()


def make_message(k: int, seed: int = 0) -> torch.Tensor:
    """A random message of ``k`` bits in {-1, 1}, a float tensor (k,), from a seed."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"the number of bits k must be a positive integer, got {k!r}.")
    g = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, 2, (k,), generator=g).float() * 2 - 1
