"""Readers and writers of the TEXMEX vector formats used by SIFT1M / BigANN and Deep1M / Deep1B.

Each record is a little-endian int32 dimension ``d`` followed by ``d`` components: float32 in ``.fvecs``, uint8 in
``.bvecs``, int32 in ``.ivecs`` (ground-truth neighbour ids). Files are memory-mapped, so ``count`` / ``offset``
read a slice of a billion-vector file without loading it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_DTYPES = {".fvecs": np.float32, ".bvecs": np.uint8, ".ivecs": np.int32}


def _dtype_for(path: Path) -> np.dtype:
    if path.suffix not in _DTYPES:
        raise ValueError(f"{path.name}: unknown extension {path.suffix!r}; expected one of {sorted(_DTYPES)}")
    return np.dtype(_DTYPES[path.suffix])


def read_vecs(path, count: int | None = None, offset: int = 0) -> np.ndarray:
    """Read ``count`` vectors (all when None) starting at vector ``offset`` from a .fvecs / .bvecs / .ivecs file.

    Returns an (n, d) array of float32, uint8 or int32 (a copy, not a view of the file)."""
    path = Path(path)
    dtype = _dtype_for(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    size = path.stat().st_size
    if size < 4:
        raise ValueError(f"{path} is empty or too short to hold a vector")
    d = int(np.fromfile(path, dtype="<i4", count=1)[0])
    if d <= 0:
        raise ValueError(f"{path}: the first record announces dimension {d}; is this really a {path.suffix} file?")
    record = 4 + d * dtype.itemsize
    if size % record:
        raise ValueError(f"{path}: size {size} bytes is not a multiple of the record size {record} (4 + {d} x "
                         f"{dtype.itemsize}); the file is truncated or not a {path.suffix} file")
    n_total = size // record
    if offset < 0 or offset > n_total:
        raise ValueError(f"offset={offset} is outside the file's {n_total} vectors")
    n = n_total - offset if count is None else min(int(count), n_total - offset)
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=offset * record, shape=(n, record))
    dims = raw[:, :4].copy().view("<i4")[:, 0]
    if (dims != d).any():
        bad = int(np.flatnonzero(dims != d)[0]) + offset
        raise ValueError(f"{path}: vector {bad} has dimension {dims[bad - offset]}, expected {d} like the first")
    return raw[:, 4:].copy().view(dtype.newbyteorder("<")).astype(dtype).reshape(n, d)


def write_vecs(path, x: np.ndarray) -> None:
    """Write an (n, d) array in the format given by the extension (values cast to its dtype, with a range check)."""
    path = Path(path)
    dtype = _dtype_for(path)
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"x must be a 2-D array (n, d) with d >= 1, got shape {x.shape}")
    if np.issubdtype(dtype, np.integer) and x.size:
        info = np.iinfo(dtype)
        if x.min() < info.min or x.max() > info.max or not np.array_equal(x, np.round(x)):
            raise ValueError(f"{path.suffix} stores {dtype} values; x has values outside that type")
    n, d = x.shape
    out = np.empty((n, 4 + d * dtype.itemsize), dtype=np.uint8)
    out[:, :4] = np.full((n, 1), d, dtype="<i4").view(np.uint8)
    out[:, 4:] = np.ascontiguousarray(x.astype(dtype.newbyteorder("<"))).view(np.uint8).reshape(n, -1)
    out.tofile(path)


def load_sift1m(root) -> dict[str, np.ndarray]:
    """SIFT1M (ANN_SIFT1M from http://corpus-texmex.irisa.fr/), unpacked in ``root``: returns ``learn`` (100k x 128),
    ``base`` (1M x 128), ``query`` (10k x 128) as float32 and ``groundtruth`` (10k x 100) int32."""
    root = Path(root)
    names = {"learn": "sift_learn.fvecs", "base": "sift_base.fvecs", "query": "sift_query.fvecs",
             "groundtruth": "sift_groundtruth.ivecs"}
    missing = [n for n in names.values() if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{root} lacks {missing}: download ANN_SIFT1M (sift.tar.gz) from "
                                "http://corpus-texmex.irisa.fr/ and unpack it there")
    return {k: read_vecs(root / v) for k, v in names.items()}
