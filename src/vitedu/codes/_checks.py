"""Input checks shared by the encoders, decoders and search: clear errors saying what is wrong and how to fix it."""

from __future__ import annotations

import numpy as np


def as_vectors(x, name: str = "x", d: int | None = None) -> np.ndarray:
    """``x`` as a 2-D float array of shape (n, d); raises TypeError / ValueError naming the problem."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of shape (n, d), got {type(x).__name__}; "
                        f"for a torch tensor use {name}.detach().cpu().numpy()")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype}; convert with {name}.astype(np.float32)")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n vectors, d dimensions), got shape {x.shape}; "
                         f"for a single vector use {name}[None, :]")
    if d is not None and x.shape[1] != d:
        raise ValueError(f"{name} has dimension {x.shape[1]} but this object was built for d={d}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def as_codes(codes, name: str, width: int, high: int) -> np.ndarray:
    """``codes`` as a 2-D integer array of shape (n, width) with values in [0, high)."""
    if not isinstance(codes, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(codes).__name__}")
    if codes.dtype == np.bool_:
        codes = codes.astype(np.uint8)
    if not np.issubdtype(codes.dtype, np.integer):
        raise TypeError(f"{name} must hold integers (the output of encode), got {codes.dtype}")
    if codes.ndim != 2 or codes.shape[1] != width:
        raise ValueError(f"{name} must have shape (n, {width}), got {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= high):
        raise ValueError(f"{name} values must lie in [0, {high}), got range [{codes.min()}, {codes.max()}]")
    return codes


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_fitted(obj, attr: str) -> None:
    if getattr(obj, attr, None) is None:
        raise RuntimeError(f"{type(obj).__name__} is not trained yet: call .fit(x_train) first")
