"""Compact codes for nearest-neighbour search, seen as auto-encoders (Amara, Douze, Sablayrolles & Jégou, 2021).

Encoders: :class:`LSH`, :class:`ITQ` (binary codes) and :class:`ProductQuantizer`; each has ``fit``, ``encode`` and
``decode`` (its implicit decoder). :class:`LinearDecoder` (least squares) and :class:`MLPDecoder` (non-linear) learn
better, backward-compatible decoders from the same codes. :func:`search` ranks decoded vectors by asymmetric
distance; :func:`recall_at` and :func:`reconstruction_mse` score them. :mod:`vitedu.codes.io` reads the .fvecs /
.bvecs / .ivecs files of SIFT1M and Deep1M; :func:`vitedu.codes.bench.speed_vs_faiss` compares encode and search
speed with faiss.
"""

from .binary import ITQ, LSH, BinaryEncoder, pack_bits, random_rotation, unpack_bits
from .decoders import LinearDecoder, MLPDecoder
from .io import load_sift1m, read_vecs, write_vecs
from .pq import ProductQuantizer, kmeans
from .search import evaluate, recall_at, reconstruction_mse, search

__all__ = ["BinaryEncoder", "ITQ", "LSH", "LinearDecoder", "MLPDecoder", "ProductQuantizer", "evaluate", "kmeans",
           "load_sift1m", "pack_bits", "random_rotation", "read_vecs", "recall_at", "reconstruction_mse", "search",
           "unpack_bits", "write_vecs"]
