"""Binary codes: LSH (random projections + sign) and ITQ (PCA + iterative rotation), as encoders with the implicit
decoder that Hamming distance assumes.

Both encoders are ``b = 1[(x - mean) W^T >= t]`` with ``W`` of shape (nbits, d) and thresholds ``t``; they differ in
how ``W`` is chosen. In sign form ``s = 2b - 1`` the Hamming distance is ``||s - s'||^2 / 4``: it treats every bit as
an equal, independent ``+-1`` coordinate in the projected space. The implicit decoder is the vector that this picture
implies, mapped back to input space: ``x_hat = mean + (t + alpha s) W^+`` (``W^+`` the pseudo-inverse, ``W^T`` when
the rows are orthonormal). Hamming ranking does not depend on the scale ``alpha``, so it is fitted in closed form on
the training set (the most favourable choice for the implicit decoder's MSE).
"""

from __future__ import annotations

import numpy as np

from ._checks import as_codes, as_vectors, check_fitted, check_positive_int


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """(n, nbits) 0/1 array -> (n, ceil(nbits / 8)) uint8; bit ``i`` in byte ``i // 8``, position ``i % 8`` (faiss)."""
    if not isinstance(bits, np.ndarray) or bits.ndim != 2:
        raise ValueError("bits must be a 2-D numpy array (n, nbits) of 0/1 values, as returned by encode")
    bits = as_codes(bits, "bits", bits.shape[1], 2)
    return np.packbits(bits.astype(np.uint8), axis=1, bitorder="little")


def unpack_bits(packed: np.ndarray, nbits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: (n, ceil(nbits / 8)) uint8 -> (n, nbits) uint8 in {0, 1}."""
    nbits = check_positive_int(nbits, "nbits")
    if not isinstance(packed, np.ndarray) or packed.dtype != np.uint8 or packed.ndim != 2:
        raise TypeError("packed must be a 2-D uint8 array (n, code_size), as faiss stores binary codes")
    if packed.shape[1] != (nbits + 7) // 8:
        raise ValueError(f"packed has {packed.shape[1]} bytes per code but {nbits} bits need {(nbits + 7) // 8}")
    return np.unpackbits(packed, axis=1, count=nbits, bitorder="little")


def random_rotation(d_in: int, d_out: int, seed: int = 0) -> np.ndarray:
    """(d_out, d_in) matrix with orthonormal rows (or columns when d_out > d_in): QR of a Gaussian matrix."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((max(d_in, d_out), min(d_in, d_out)))
    q, r = np.linalg.qr(g)
    q *= np.sign(np.diag(r))  # unique QR: Haar-distributed
    return q if d_out >= d_in else q.T


class BinaryEncoder:
    """Shared maths of LSH and ITQ: ``b = 1[(x - mean) W^T >= t]``; subclasses set ``mean``, ``W``, ``thresholds``."""

    def __init__(self, d: int, nbits: int):
        self.d = check_positive_int(d, "d")
        self.nbits = check_positive_int(nbits, "nbits")
        self.mean = self.W = self.thresholds = None
        self.alpha = None  # scale of the implicit decoder

    def set_transform(self, W: np.ndarray, mean: np.ndarray | None = None, thresholds: np.ndarray | None = None):
        """Use a given projection (e.g. faiss's), then fit nothing else; returns self."""
        W = np.asarray(W, dtype=np.float64)
        if W.shape != (self.nbits, self.d):
            raise ValueError(f"W must have shape (nbits, d) = ({self.nbits}, {self.d}), got {W.shape}")
        self.W = W
        self.mean = np.zeros(self.d) if mean is None else np.asarray(mean, dtype=np.float64).reshape(self.d)
        self.thresholds = (np.zeros(self.nbits) if thresholds is None
                           else np.asarray(thresholds, dtype=np.float64).reshape(self.nbits))
        self._W_pinv = np.linalg.pinv(self.W)  # (d, nbits)
        self.alpha = None  # a new transform needs a new scale (fit_scale)
        return self

    def project(self, x: np.ndarray) -> np.ndarray:
        check_fitted(self, "W")
        x = as_vectors(x, "x", self.d)
        return (x - self.mean) @ self.W.T - self.thresholds

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, d) floats -> (n, nbits) uint8 bits in {0, 1}."""
        return (self.project(x) >= 0).astype(np.uint8)  # >= as faiss: a zero projection gives bit 1

    def features(self, codes: np.ndarray) -> np.ndarray:
        """Codes as the signs ``s = 2b - 1`` (n, nbits) that Hamming distance compares; input of the decoders."""
        codes = as_codes(codes, "codes", self.nbits, 2)
        return 2.0 * codes - 1.0

    def fit_scale(self, x: np.ndarray):
        """Fit the implicit decoder's scale ``alpha`` on ``x`` (done by ``fit``; call it after :meth:`set_transform`
        to decode); returns self."""
        x = as_vectors(x, "x", self.d)
        # least-squares scale of x_hat = mean + (t + alpha s) W^+ : closed form <s W^+, r> / ||s W^+||^2
        s_back = self.features(self.encode(x)) @ self._W_pinv.T
        r = x - self.mean - self.thresholds @ self._W_pinv.T
        den = float((s_back * s_back).sum())
        self.alpha = float((s_back * r).sum()) / den if den > 0 else 0.0
        return self

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Implicit decoder: ``mean + (t + alpha s) W^+`` (see the module docstring)."""
        check_fitted(self, "W")
        if self.alpha is None:
            raise RuntimeError(f"{type(self).__name__}'s implicit decoder has no scale yet: after set_transform, "
                               "call .fit_scale(x_train)")
        s = self.features(codes)
        return self.mean + (self.thresholds + self.alpha * s) @ self._W_pinv.T


class LSH(BinaryEncoder):
    """Locality-sensitive hashing: ``nbits`` random orthonormal projections, then the sign.

    Same transform as ``faiss.IndexLSH(d, nbits, rotate_data=True, train_thresholds=...)``: faiss draws its own
    rotation with its own generator, so equal codes need faiss's matrix, passed with :meth:`set_transform` (the test
    does this). ``train_thresholds=True`` puts each threshold at the median of its projection on the training set
    (faiss does the same); otherwise thresholds are 0 and the data is not centred, as in faiss.
    """

    def __init__(self, d: int, nbits: int, seed: int = 0, train_thresholds: bool = False):
        super().__init__(d, nbits)
        self.seed = seed
        self.train_thresholds = train_thresholds

    def fit(self, x: np.ndarray, projection: np.ndarray | None = None):
        """Draw the projections (or use ``projection``, (nbits, d), e.g. faiss's), train thresholds if asked and the
        implicit decoder's scale; returns self."""
        x = as_vectors(x, "x", self.d)
        self.set_transform(random_rotation(self.d, self.nbits, self.seed) if projection is None else projection)
        if self.train_thresholds:
            self.thresholds = np.median(x @ self.W.T, axis=0)
        self.fit_scale(x)
        return self


class ITQ(BinaryEncoder):
    """Iterative quantization (Gong & Lazebnik): centre, project on the top ``nbits`` principal directions ``P``, then
    learn an orthogonal rotation ``R`` minimising the quantization loss ``Q(B, R) = ||B - V R||_F^2`` with ``V`` the
    projected data and ``B = sign(V R)``, alternating the two exact minimisations:

    - fix ``R``: ``B = sign(V R)``;
    - fix ``B``: ``R = U W^T`` from the SVD ``V^T B = U S W^T`` (orthogonal Procrustes).

    Each step can only lower ``Q``, so ``objective`` (recorded once per iteration) never increases. The encoder is
    ``W = (P^T R)^T``, i.e. ``b = 1[(x - mean) P^T R >= 0]``.

    faiss's ``ITQTransform(d, nbits, do_pca=True)`` is the same transform but also L2-normalises the centred vectors
    before the PCA and starts from its own random rotation, so trained matrices differ; codes only depend on the sign
    of each projection, so with faiss's mean and matrix passed to :meth:`set_transform` the codes are equal (tested).
    """

    def __init__(self, d: int, nbits: int, n_iter: int = 50, seed: int = 0):
        super().__init__(d, nbits)
        if nbits > d:
            raise ValueError(f"ITQ keeps nbits principal directions, so nbits ({nbits}) must be <= d ({d}); "
                             "use LSH for longer codes")
        self.n_iter = check_positive_int(n_iter, "n_iter")
        self.seed = seed
        self.objective: list[float] = []

    def fit(self, x: np.ndarray):
        x = as_vectors(x, "x", self.d).astype(np.float64)
        if len(x) < 2:
            raise ValueError("ITQ needs at least 2 training vectors to compute a PCA")
        mean = x.mean(axis=0)
        xc = x - mean
        # PCA: top nbits eigenvectors of the covariance, as rows of P (nbits, d)
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        P = vt[: self.nbits]
        V = xc @ P.T
        R = random_rotation(self.nbits, self.nbits, self.seed)
        self.objective = []
        for _ in range(self.n_iter):
            VR = V @ R
            B = np.where(VR >= 0, 1.0, -1.0)  # fix R, minimise over B
            self.objective.append(float(((B - VR) ** 2).sum()))  # Q(B, R)
            U, _, Wt = np.linalg.svd(V.T @ B)  # fix B, minimise over R (orthogonal Procrustes)
            R = U @ Wt
        self.P, self.R = P, R
        self.set_transform((P.T @ R).T, mean=mean)
        self.fit_scale(x)
        return self
