"""Improved, backward-compatible decoders: learned from the very same codes, without re-encoding the database.

The linear least-squares decoder maps the code features ``f(b)`` (signs ``s = 2b - 1`` for binary codes, one-hot
indicators for PQ) to ``x_hat = [f(b), 1] A`` with ``A = argmin ||[F, 1] A - X||_F^2`` on the training set. Every
implicit decoder in this package is of that form (``mean + (t + alpha s) W^+`` for LSH / ITQ, the block-diagonal
centroid matrix for PQ), so on the training set the learned decoder's MSE is never larger than the implicit one's.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from ._checks import as_vectors, check_fitted


class LinearDecoder:
    """Least-squares linear decoder for the codes of ``encoder`` (an LSH, ITQ or ProductQuantizer)."""

    def __init__(self, encoder, ridge: float = 0.0, chunk: int = 4096):
        if not hasattr(encoder, "features") or not hasattr(encoder, "encode"):
            raise TypeError(f"encoder must be an LSH, ITQ or ProductQuantizer, got {type(encoder).__name__}")
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        self.encoder, self.ridge, self.chunk = encoder, float(ridge), chunk
        self.A = None  # (n_features + 1, d)

    def _design(self, codes: np.ndarray, lo: int, hi: int) -> np.ndarray:
        f = self.encoder.features(codes[lo:hi])
        return np.concatenate([f, np.ones((len(f), 1))], axis=1)

    def fit(self, x: np.ndarray, codes: np.ndarray | None = None):
        """Fit on training vectors ``x`` and their codes (computed with the encoder when not given); returns self."""
        x = as_vectors(x, "x", self.encoder.d).astype(np.float64)
        codes = self.encoder.encode(x) if codes is None else codes
        if len(codes) != len(x):
            raise ValueError(f"codes ({len(codes)} rows) and x ({len(x)} rows) must describe the same vectors")
        # normal equations accumulated by chunks: G = F^T F, H = F^T X (F is one-hot and large for PQ)
        G = H = None
        for lo in range(0, len(x), self.chunk):
            F = self._design(codes, lo, lo + self.chunk)
            G = F.T @ F if G is None else G + F.T @ F
            H = F.T @ x[lo:lo + self.chunk] if H is None else H + F.T @ x[lo:lo + self.chunk]
        if self.ridge:
            G = G + self.ridge * np.eye(len(G))
        # minimum-norm solution: G is singular for PQ (each block of one-hot columns sums to the constant column)
        self.A = scipy.linalg.lstsq(G, H, lapack_driver="gelsy")[0]
        return self

    def decode(self, codes: np.ndarray) -> np.ndarray:
        check_fitted(self, "A")
        return np.concatenate([self._design(codes, lo, lo + self.chunk) @ self.A
                               for lo in range(0, len(codes), self.chunk)] or [np.zeros((0, self.encoder.d))])
