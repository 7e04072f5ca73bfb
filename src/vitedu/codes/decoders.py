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


class MLPDecoder:
    """Non-linear decoder from the same codes: ``x_hat = [f(b), 1] A + MLP(f(b))``.

    The linear part starts at the least-squares decoder and the MLP's last layer at zero, so training starts from
    :class:`LinearDecoder`; Adam then minimises the training MSE, and the parameters with the lowest training MSE seen
    (the start included) are kept: on the training set it is never worse than the linear decoder. An MLP is one
    choice of non-linear decoder (it can use interactions between bits or between sub-quantizers that a linear map
    cannot); whether it helps on unseen vectors depends on the amount of training data.
    """

    def __init__(self, encoder, hidden: int = 256, epochs: int = 20, batch_size: int = 256, lr: float = 1e-3,
                 weight_decay: float = 0.0, seed: int = 0):
        if not hasattr(encoder, "features") or not hasattr(encoder, "encode"):
            raise TypeError(f"encoder must be an LSH, ITQ or ProductQuantizer, got {type(encoder).__name__}")
        for name, v in (("hidden", hidden), ("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.encoder, self.hidden, self.epochs, self.batch_size = encoder, hidden, epochs, batch_size
        self.lr, self.weight_decay, self.seed = lr, weight_decay, seed
        self.net = None
        self.train_mse: list[float] = []  # training MSE at the start and after each epoch

    def _build(self, n_features: int, d: int, A: np.ndarray):
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = nn.Linear(n_features, d)
                self.mlp = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, d))

            def forward(self, f):
                return self.linear(f) + self.mlp(f)

        hidden = self.hidden
        torch.manual_seed(self.seed)
        net = Net().double()
        with torch.no_grad():
            net.linear.weight.copy_(torch.from_numpy(A[:-1].T))
            net.linear.bias.copy_(torch.from_numpy(A[-1]))
            net.mlp[2].weight.zero_()
            net.mlp[2].bias.zero_()
        return net

    def _mse(self, F, X) -> float:
        import torch

        with torch.no_grad():
            return float(sum(((self.net(F[i:i + 4096]) - X[i:i + 4096]) ** 2).sum() for i in range(0, len(F), 4096))
                         / len(F))

    def fit(self, x: np.ndarray, codes: np.ndarray | None = None):
        import copy

        import torch

        x = as_vectors(x, "x", self.encoder.d).astype(np.float64)
        codes = self.encoder.encode(x) if codes is None else codes
        if len(codes) != len(x):
            raise ValueError(f"codes ({len(codes)} rows) and x ({len(x)} rows) must describe the same vectors")
        linear = LinearDecoder(self.encoder).fit(x, codes)
        F = torch.from_numpy(self.encoder.features(codes))
        X = torch.from_numpy(x)
        self.net = self._build(F.shape[1], x.shape[1], linear.A)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        self.train_mse = [self._mse(F, X)]
        best, best_state = self.train_mse[0], copy.deepcopy(self.net.state_dict())
        for _ in range(self.epochs):
            perm = torch.randperm(len(F), generator=gen)
            for i in range(0, len(F), self.batch_size):
                idx = perm[i:i + self.batch_size]
                loss = ((self.net(F[idx]) - X[idx]) ** 2).sum(1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            self.train_mse.append(self._mse(F, X))
            if self.train_mse[-1] < best:
                best, best_state = self.train_mse[-1], copy.deepcopy(self.net.state_dict())
        self.net.load_state_dict(best_state)
        return self

    def decode(self, codes: np.ndarray) -> np.ndarray:
        import torch

        check_fitted(self, "net")
        F = self.encoder.features(codes)
        with torch.no_grad():
            return np.concatenate([self.net(torch.from_numpy(F[i:i + 4096])).numpy() for i in range(0, len(F), 4096)]
                                  or [np.zeros((0, self.encoder.d))])
