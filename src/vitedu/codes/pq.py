"""Product quantization (Jégou, Douze & Schmid): split ``x`` into ``M`` sub-vectors of ``d / M`` dimensions and
quantize each with its own k-means codebook of ``ksub = 2^nbits`` centroids; the code is the ``M`` centroid indices.
The implicit decoder concatenates the chosen centroids, which assumes that the sub-spaces are independent.
"""

from __future__ import annotations

import numpy as np

from ._checks import as_codes, as_vectors, check_fitted, check_positive_int


def _sq_dists(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared L2 distances (n, k) between rows of x and rows of c: ||x||^2 - 2 x.c + ||c||^2."""
    return (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]


def kmeans(x: np.ndarray, k: int, n_iter: int = 25, seed: int = 0) -> np.ndarray:
    """Lloyd's k-means, deterministic from ``seed``: init on ``k`` distinct random training points; an empty cluster
    takes the training point farthest from its centroid. Returns the (k, d) centroids."""
    x = as_vectors(x, "x")
    k = check_positive_int(k, "k")
    if len(x) < k:
        raise ValueError(f"k-means with k={k} centroids needs at least {k} training vectors, got {len(x)}; "
                         "give more training vectors or use fewer bits per sub-quantizer")
    x = x.astype(np.float64)
    rng = np.random.default_rng(seed)
    c = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(n_iter):
        dist = _sq_dists(x, c)
        assign = dist.argmin(1)
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros_like(c)
        np.add.at(sums, assign, x)
        nonempty = counts > 0
        c[nonempty] = sums[nonempty] / counts[nonempty, None]
        if not nonempty.all():
            err = dist[np.arange(len(x)), assign]
            far = np.argsort(-err)[: int((~nonempty).sum())]
            c[~nonempty] = x[far]
    return c


class ProductQuantizer:
    """PQ with ``M`` sub-quantizers of ``nbits`` bits each (``M * nbits`` bits per vector).

    ``centroids`` has shape (M, ksub, dsub) and the same layout as faiss's ``ProductQuantizer.centroids`` reshaped,
    so faiss's trained centroids can be loaded with :meth:`set_centroids`. Codes are unpacked: (n, M) integers.
    """

    def __init__(self, d: int, M: int, nbits: int = 8, n_iter: int = 25, seed: int = 0):
        self.d, self.M, self.nbits = (check_positive_int(v, n) for v, n in ((d, "d"), (M, "M"), (nbits, "nbits")))
        if self.d % self.M:
            raise ValueError(f"the dimension d={d} must be divisible by the number of sub-quantizers M={M}; "
                             f"choose M among {[m for m in range(1, d + 1) if d % m == 0]} or pad the vectors")
        if self.nbits > 16:
            raise ValueError(f"nbits={nbits} per sub-quantizer is too many (2^nbits centroids); use at most 16")
        self.dsub, self.ksub = self.d // self.M, 2 ** self.nbits
        self.n_iter, self.seed = check_positive_int(n_iter, "n_iter"), seed
        self.centroids = None

    def fit(self, x: np.ndarray):
        """k-means in each sub-space, sub-space ``m`` seeded with ``seed + m``."""
        x = as_vectors(x, "x", self.d)
        if len(x) < self.ksub:
            raise ValueError(f"PQ with nbits={self.nbits} has {self.ksub} centroids per sub-quantizer and needs at "
                             f"least {self.ksub} training vectors, got {len(x)}; lower nbits or add training data")
        xs = x.reshape(len(x), self.M, self.dsub)
        self.centroids = np.stack([kmeans(xs[:, m], self.ksub, self.n_iter, self.seed + m) for m in range(self.M)])
        return self

    def set_centroids(self, centroids: np.ndarray):
        """Use given centroids, of shape (M, ksub, dsub) or faiss's flat ``M * ksub * dsub`` vector; returns self."""
        c = np.asarray(centroids)
        if c.size != self.M * self.ksub * self.dsub:
            raise ValueError(f"expected M * ksub * dsub = {self.M * self.ksub * self.dsub} centroid values, "
                             f"got {c.size}")
        self.centroids = c.reshape(self.M, self.ksub, self.dsub).astype(np.float64)
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, d) floats -> (n, M) codes: index of the nearest centroid in each sub-space."""
        check_fitted(self, "centroids")
        x = as_vectors(x, "x", self.d)
        xs = x.reshape(len(x), self.M, self.dsub).astype(np.float64)
        dtype = np.uint8 if self.nbits <= 8 else np.uint16
        codes = np.empty((len(x), self.M), dtype=dtype)
        for m in range(self.M):
            codes[:, m] = _sq_dists(xs[:, m], self.centroids[m]).argmin(1)
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Implicit decoder: the concatenation of the chosen centroids."""
        check_fitted(self, "centroids")
        codes = as_codes(codes, "codes", self.M, self.ksub)
        return np.concatenate([self.centroids[m][codes[:, m]] for m in range(self.M)], axis=1)

    def features(self, codes: np.ndarray) -> np.ndarray:
        """Codes as one-hot indicators (n, M * ksub): the input of the learned decoders."""
        codes = as_codes(codes, "codes", self.M, self.ksub)
        onehot = np.zeros((len(codes), self.M * self.ksub))
        onehot[np.arange(len(codes))[:, None], np.arange(self.M) * self.ksub + codes] = 1.0
        return onehot
