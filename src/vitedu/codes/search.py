"""Search by asymmetric distance (raw query vs decoded database vector), recall@R and reconstruction MSE."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ._checks import as_vectors, check_positive_int


def search(queries: np.ndarray, database: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours in squared L2 of each query among ``database`` rows (e.g. decoded vectors).

    Returns ``(distances, indices)``, both (n_queries, k), sorted by increasing distance, ties by index, like
    ``faiss.IndexFlatL2.search``.
    """
    queries = as_vectors(queries, "queries")
    database = as_vectors(database, "database", queries.shape[1])
    k = check_positive_int(k, "k")
    if k > len(database):
        raise ValueError(f"k={k} is larger than the database ({len(database)} vectors)")
    db = database.astype(np.float64)
    db_norms = (db * db).sum(1)
    D = np.empty((len(queries), k))
    I = np.empty((len(queries), k), dtype=np.int64)  # noqa: E741
    for lo in range(0, len(queries), chunk):
        q = queries[lo:lo + chunk].astype(np.float64)
        dist = (q * q).sum(1)[:, None] - 2.0 * q @ db.T + db_norms[None, :]
        part = np.argpartition(dist, k - 1, axis=1)[:, :k] if k < len(db) else np.tile(np.arange(len(db)), (len(q), 1))
        pd = np.take_along_axis(dist, part, 1)
        order = np.lexsort((part, pd), axis=1)
        I[lo:lo + chunk] = np.take_along_axis(part, order, 1)
        D[lo:lo + chunk] = np.take_along_axis(pd, order, 1)
    return D, I


def recall_at(indices: np.ndarray, ground_truth: np.ndarray, ranks: Iterable[int] = (1, 10, 100)) -> dict[int, float]:
    """1-recall@R: the fraction of queries whose true nearest neighbour (``ground_truth[:, 0]`` or a 1-D array) is
    among the first R results of ``indices`` (n_queries, >= R), for each R in ``ranks``."""
    indices = np.asarray(indices)
    gt = np.asarray(ground_truth)
    gt = gt[:, 0] if gt.ndim == 2 else gt
    if indices.ndim != 2 or gt.ndim != 1 or len(gt) != len(indices):
        raise ValueError(f"indices must be (n_queries, k) and ground_truth (n_queries,) or (n_queries, >=1); got "
                         f"{indices.shape} and {np.shape(ground_truth)}")
    out = {}
    for r in ranks:
        r = check_positive_int(r, "rank")
        if r > indices.shape[1]:
            raise ValueError(f"recall@{r} needs at least {r} results per query, got {indices.shape[1]}; "
                             f"search with k >= {r}")
        out[r] = float((indices[:, :r] == gt[:, None]).any(1).mean())
    return out


def reconstruction_mse(x: np.ndarray, x_hat: np.ndarray) -> float:
    """Mean over vectors of the squared L2 reconstruction error ``||x - x_hat||^2`` (faiss's convention)."""
    x = as_vectors(x, "x")
    x_hat = as_vectors(x_hat, "x_hat", x.shape[1])
    if len(x) != len(x_hat):
        raise ValueError(f"x and x_hat must have the same number of vectors, got {len(x)} and {len(x_hat)}")
    return float(((x.astype(np.float64) - x_hat) ** 2).sum(1).mean())


def evaluate(encoder, decoder, database: np.ndarray, queries: np.ndarray, ranks: Iterable[int] = (1, 10, 100)) -> dict:
    """Encode ``database``, decode it with ``decoder`` (the encoder itself for its implicit decoder, or a
    LinearDecoder), search the queries among the decoded vectors; returns {"mse": ..., "recall": {R: ...}}."""
    ranks = tuple(ranks)
    codes = encoder.encode(database)
    decoded = decoder.decode(codes)
    _, gt = search(queries, database, 1)
    _, I = search(queries, decoded, max(ranks))  # noqa: E741
    return {"mse": reconstruction_mse(database, decoded), "recall": recall_at(I, gt, ranks)}
