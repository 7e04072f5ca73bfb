"""Encode and search speed of vitedu.codes next to faiss, on the same data and the same transforms.

vitedu's codes are plain numpy, written to be read; faiss is optimised C++ (SIMD, lookup tables), so faiss is
faster: the table reports the ratio ``vitedu time / faiss time`` as measured, with no claim beyond this machine.
Each pair is timed alternately (median of ``repeats``) so that a change in the machine's load hits both alike.
Search is by asymmetric distance: vitedu ranks the decoded database exhaustively (:func:`vitedu.codes.search`),
faiss's ``IndexPQ`` does the same ranking with per-query lookup tables (ADC); LSH is searched by Hamming distance
in faiss (``IndexLSH``), so that row compares the two usual ways of searching binary codes, not the same maths.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from ._checks import as_vectors, check_positive_int
from .binary import ITQ, LSH
from .pq import ProductQuantizer
from .search import search


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is in requirements.txt
        raise ImportError("the speed comparison needs faiss: pip install faiss-cpu") from e
    return faiss


def _pair_times(fa, fb, repeats: int) -> tuple[float, float]:
    fa(), fb()  # warm-up
    ta, tb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fa()
        t1 = time.perf_counter()
        fb()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    return statistics.median(ta), statistics.median(tb)


def speed_vs_faiss(x_train: np.ndarray, database: np.ndarray, queries: np.ndarray, M: int = 8, nbits: int = 8,
                   lsh_bits: int = 64, itq_bits: int | None = None, k: int = 100, repeats: int = 3,
                   threads: int | None = 1, verbose: bool = True) -> list[dict]:
    """Time encode (PQ, LSH, ITQ) and search (PQ decoded vs faiss IndexPQ, LSH) in vitedu and faiss.

    The PQ uses faiss's trained centroids in both, LSH faiss's rotation, ITQ faiss's transform, so both sides
    compute the same codes. ``threads`` sets faiss's OpenMP threads (numpy's BLAS keeps its own). Returns one dict
    per task: ``task``, ``vitedu_s``, ``faiss_s``, ``ratio`` (vitedu / faiss), and prints a table when ``verbose``.
    """
    faiss = _faiss()
    x_train = as_vectors(x_train, "x_train").astype(np.float32)
    d = x_train.shape[1]
    database = as_vectors(database, "database", d).astype(np.float32)
    queries = as_vectors(queries, "queries", d).astype(np.float32)
    repeats, k = check_positive_int(repeats, "repeats"), check_positive_int(k, "k")
    itq_bits = min(d, lsh_bits) if itq_bits is None else itq_bits
    previous_threads = faiss.omp_get_max_threads()
    if threads is not None:
        faiss.omp_set_num_threads(check_positive_int(threads, "threads"))
    try:

        pq = ProductQuantizer(d, M, nbits)  # checks d % M with vitedu's message before faiss sees it
        fpq = faiss.ProductQuantizer(d, M, nbits)
        fpq.verbose = False
        fpq.train(x_train)
        pq.set_centroids(faiss.vector_to_array(fpq.centroids))

        flsh = faiss.IndexLSH(d, lsh_bits, True, False)
        flsh.train(x_train)
        lsh = LSH(d, lsh_bits).fit(x_train, projection=faiss.vector_to_array(flsh.rrot.A).reshape(lsh_bits, d))

        fitq = faiss.ITQTransform(d, itq_bits, True)
        fitq.train(x_train)
        itq = ITQ(d, itq_bits).set_transform(faiss.vector_to_array(fitq.pca_then_itq.A).reshape(itq_bits, d),
                                             mean=faiss.vector_to_array(fitq.mean))

        index_pq = faiss.IndexPQ(d, M, nbits)
        index_pq.pq = fpq
        index_pq.is_trained = True
        index_pq.add(database)
        decoded = pq.decode(pq.encode(database))
        flsh.add(database)
        decoded_lsh = lsh.decode(lsh.encode(database))
        k = min(k, len(database))

        tasks = {
            f"encode PQ {M}x{nbits}": (lambda: pq.encode(database), lambda: fpq.compute_codes(database)),
            f"encode LSH {lsh_bits}b": (lambda: lsh.encode(database), lambda: flsh.sa_encode(database)),
            f"encode ITQ {itq_bits}b": (lambda: itq.encode(database), lambda: fitq.apply(database) >= 0),
            f"search PQ k={k}": (lambda: search(queries, decoded, k), lambda: index_pq.search(queries, k)),
            f"search LSH k={k} (faiss: Hamming)": (lambda: search(queries, decoded_lsh, k),
                                                   lambda: flsh.search(queries, k)),
        }
        rows = []
        for task, (ours, theirs) in tasks.items():
            tv, tf = _pair_times(ours, theirs, repeats)
            rows.append({"task": task, "vitedu_s": tv, "faiss_s": tf, "ratio": tv / tf if tf > 0 else float("inf")})
        if verbose:
            print(f"{len(database)} database vectors, {len(queries)} queries, d={d}; median of {repeats}")
            print(f"{'task':<36}{'vitedu (s)':>12}{'faiss (s)':>12}{'ratio':>9}")
            for r in rows:
                print(f"{r['task']:<36}{r['vitedu_s']:>12.4f}{r['faiss_s']:>12.4f}{r['ratio']:>8.1f}x")
        return rows
    finally:  # faiss and torch share one OpenMP runtime: leave torch with the threads it had
        faiss.omp_set_num_threads(previous_threads)
