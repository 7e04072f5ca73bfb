"""Compact codes for nearest-neighbour search, seen as auto-encoders (Amara, Douze, Sablayrolles & Jégou, 2021).

Encoders: :class:`LSH`, :class:`ITQ` (binary codes) and :class:`ProductQuantizer`; each has ``fit``, ``encode`` and
``decode`` (its implicit decoder). :class:`LinearDecoder` learns a better, backward-compatible decoder from the same
codes. :func:`search` ranks decoded vectors by asymmetric distance; :func:`recall_at` and :func:`reconstruction_mse`
score them.
"""

from .binary import ITQ, LSH, BinaryEncoder, pack_bits, random_rotation, unpack_bits
from .decoders import LinearDecoder
from .pq import ProductQuantizer, kmeans
from .search import evaluate, recall_at, reconstruction_mse, search

__all__ = ["BinaryEncoder", "ITQ", "LSH", "LinearDecoder", "ProductQuantizer", "evaluate", "kmeans", "pack_bits",
           "random_rotation", "recall_at", "reconstruction_mse", "search", "unpack_bits"]
