"""Chapter 09 (compact codes as auto-encoders, Amara, Douze, Sablayrolles & Jégou 2021), the small-scale study.

The paper's claim: a compact code (LSH, ITQ, PQ) is the bottleneck of an auto-encoder whose decoder is usually the
encoder's implicit one (sign bits scaled, PQ centroids); a better decoder learned on the very same codes -- least
squares, or a non-linear one -- reconstructs the vectors better, and since search ranks the decoded database
vectors by their distance to the (uncompressed) query, it also searches better, with no change to the codes.

Measured here, for 32- and 64-bit codes of two kinds of vectors that exist offline:

- **vit**: the pooled features of the DINO-trained ``vit_pico_patch4_32`` of chapter 07 (committed checkpoint,
  ``data/checkpoints/07_dino_dino_cpu.safetensors``) on Scenes images;
- **gauss**: synthetic Gaussian vectors with a decaying spectrum (variance ``(i + 1) ** -decay`` along the axes of a
  random rotation), whose structure is known.

Each set is split into training vectors (encoders and decoders learn on them), database and queries (the ground
truth is the exact nearest database vector). For LSH, ITQ and PQ: the MSE of the database's reconstruction and the
recall@1/10/100 of the search with the implicit, the least-squares (``LinearDecoder``) and the MLP decoder
(``MLPDecoder``). A small encode/search timing against faiss (``vitedu.codes.bench``) is added when faiss is there.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from ..budget import Budget
from ..codes import ITQ, LSH, LinearDecoder, MLPDecoder, ProductQuantizer, recall_at, reconstruction_mse, search
from .recipe_study import StudyData, prepare

ENCODERS = ("LSH", "ITQ", "PQ")
DECODERS = ("implicit", "linear", "mlp")
RANKS = (1, 10, 100)
PAPER_CLAIM = ("Improved decoders (least squares, then non-linear) reconstruct the database better from the very "
               "same codes, and so search better: lower MSE and higher recall@R than the implicit decoder, for "
               "LSH, ITQ and PQ alike (Amara et al. 2021, Tables 1-3 on SIFT1M / Deep1M).")


@dataclass(frozen=True)
class Config:
    datasets: tuple[str, ...]  # "vit" and/or "gauss"
    n_train: int  # training vectors (encoders and decoders)
    n_database: int
    n_queries: int
    seeds: tuple[int, ...]  # of the reference run (``vitedu reproduce``): encoders, decoders and the synthetic draw
    live_seeds: tuple[int, ...] = (0,)  # of the chapter's own run
    bits: tuple[int, ...] = (32, 64)
    gauss_dim: int = 64
    gauss_decay: float = 1.0
    itq_iter: int = 50
    pq_iter: int = 20
    mlp_hidden: int = 256
    mlp_epochs: int = 20
    ridge: float = 0.0  # of the least-squares decoder (0: minimum-norm least squares)
    bench: bool = True  # the faiss timing (skipped when faiss is missing)
    bench_repeats: int = 3


CONFIGS = {
    "smoke": Config(("vit", "gauss"), 400, 300, 50, seeds=(0,), bits=(16, 32), itq_iter=5, pq_iter=5, mlp_hidden=32, mlp_epochs=2,
                    bench_repeats=1),
    "cpu": Config(("vit", "gauss"), 4000, 2000, 200, seeds=(0, 1, 2)),
    "gpu": Config(("vit", "gauss"), 20000, 10000, 1000, seeds=(0, 1, 2), mlp_hidden=512, mlp_epochs=50),
}


def config(budget: Budget) -> Config:
    return budget.select(CONFIGS)


def gaussian_vectors(n: int, d: int, decay: float = 1.0, seed: int = 0) -> np.ndarray:
    """``n`` vectors of a centred Gaussian in ``d`` dimensions whose variances are ``(i + 1) ** -decay`` along the
    axes of a random rotation (float32, (n, d))."""
    if n < 1 or d < 1:
        raise ValueError(f"n and d must be positive, got n={n}, d={d}.")
    if decay < 0:
        raise ValueError(f"decay must be >= 0 (0: isotropic), got {decay}.")
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scale = (np.arange(1, d + 1, dtype=np.float64) ** (-decay / 2))
    return ((rng.standard_normal((n, d)) * scale) @ q.T).astype(np.float32)


@lru_cache(maxsize=4)
def _vit_vectors(n: int, seed: int) -> np.ndarray:
    from . import dino

    cfg = dino.CONFIGS["cpu"]
    model = dino.load_model(cfg, "DINO")
    prepared = prepare(StudyData("scenes", n, 1, cfg.data.image_size, seed=seed))
    x = dino.features(model, dino.train_features(prepared)).numpy().astype(np.float32)
    x.setflags(write=False)
    return x


def vit_vectors(n: int, seed: int = 0) -> np.ndarray:
    """Pooled features (float32, (n, D)) of ``n`` Scenes images (seed ``seed``) by the DINO-trained
    ``vit_pico_patch4_32`` of chapter 07's committed cpu checkpoint. Nothing is downloaded."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}.")
    return _vit_vectors(int(n), int(seed)).copy()


def split(x: np.ndarray, n_train: int, n_database: int, n_queries: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A random split of ``x`` into disjoint "train", "database" and "queries" sets of the given sizes."""
    need = n_train + n_database + n_queries
    if len(x) < need:
        raise ValueError(f"x has {len(x)} vectors, fewer than n_train + n_database + n_queries = {need}.")
    order = np.random.default_rng(seed).permutation(len(x))
    return {"train": x[order[:n_train]], "database": x[order[n_train:n_train + n_database]],
            "queries": x[order[n_train + n_database:need]]}


def vectors(cfg: Config, dataset: str, seed: int = 0) -> dict[str, np.ndarray]:
    n = cfg.n_train + cfg.n_database + cfg.n_queries
    if dataset == "gauss":
        x = gaussian_vectors(n, cfg.gauss_dim, cfg.gauss_decay, seed=seed)
    elif dataset == "vit":
        x = vit_vectors(n, seed=0)  # the images are fixed; the seed changes the split
    else:
        raise ValueError(f"unknown dataset {dataset!r}: use 'vit' or 'gauss'.")
    return split(x, cfg.n_train, cfg.n_database, cfg.n_queries, seed=seed)


def pq_shape(d: int, bits: int) -> tuple[int, int]:
    """(M, nbits) of a PQ with ``bits`` bits in all: 8-bit sub-quantizers, M = bits / 8, which must divide d."""
    if bits % 8:
        raise ValueError(f"bits must be a multiple of 8 for 8-bit PQ sub-quantizers, got {bits}.")
    M = bits // 8
    if d % M:
        raise ValueError(f"the PQ with {bits} bits has M={M} sub-quantizers, which must divide d={d}.")
    return M, 8


def make_encoder(name: str, d: int, bits: int, cfg: Config, seed: int = 0):
    if name == "LSH":
        return LSH(d, bits, seed=seed)
    if name == "ITQ":
        return ITQ(d, min(bits, d), n_iter=cfg.itq_iter, seed=seed)
    if name == "PQ":
        M, nbits = pq_shape(d, bits)
        return ProductQuantizer(d, M, nbits, n_iter=cfg.pq_iter, seed=seed)
    raise ValueError(f"unknown encoder {name!r}: choose one of {', '.join(ENCODERS)}.")


def compare_decoders(split_: dict[str, np.ndarray], encoder_name: str, bits: int, cfg: Config, seed: int = 0) -> list[dict]:
    """One row per decoder (implicit, linear, mlp) of one encoder: the database MSE and recall@1/10/100."""
    train, db, queries = split_["train"], split_["database"], split_["queries"]
    enc = make_encoder(encoder_name, train.shape[1], bits, cfg, seed).fit(train)
    codes_train, codes_db = enc.encode(train), enc.encode(db)
    _, gt = search(queries, db, 1)
    decoders = {"implicit": enc,
                "linear": LinearDecoder(enc, ridge=cfg.ridge).fit(train, codes_train),
                "mlp": MLPDecoder(enc, hidden=cfg.mlp_hidden, epochs=cfg.mlp_epochs, seed=seed).fit(train, codes_train)}
    rows = []
    for name in DECODERS:
        decoded = decoders[name].decode(codes_db)
        _, idx = search(queries, decoded, max(RANKS))
        rec = recall_at(idx, gt, RANKS)
        rows.append({"encoder": encoder_name, "bits": bits, "decoder": name, "seed": seed,
                     "mse": reconstruction_mse(db, decoded), **{f"recall@{r}": float(rec[r]) for r in RANKS}})
    return rows


def study(cfg: Config, seeds=None) -> list[dict]:
    """Every dataset x bits x encoder x decoder x seed: a list of rows (dicts)."""
    rows = []
    for seed in (cfg.seeds if seeds is None else seeds):
        for dataset in cfg.datasets:
            sp = vectors(cfg, dataset, seed)
            for bits in cfg.bits:
                for enc in ENCODERS:
                    for row in compare_decoders(sp, enc, bits, cfg, seed):
                        rows.append({"dataset": dataset, "dim": int(sp["train"].shape[1]), **row})
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Mean (and spread over seeds) per dataset, bits, encoder and decoder, with the change against the implicit
    decoder of the same codes (``mse_ratio`` < 1 and ``d_recall@R`` > 0 are the paper's claim)."""
    keys = ["mse", *(f"recall@{r}" for r in RANKS)]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["bits"], r["encoder"], r["decoder"]), []).append(r)
    out = []
    for (dataset, bits, enc, dec), g in groups.items():
        row = {"dataset": dataset, "bits": bits, "encoder": enc, "decoder": dec, "seeds": len(g)}
        for k in keys:
            vals = np.array([x[k] for x in g])
            row[k] = float(vals.mean())
            row[f"{k}_std"] = float(vals.std())
        out.append(row)
    implicit = {(r["dataset"], r["bits"], r["encoder"]): r for r in out if r["decoder"] == "implicit"}
    for r in out:
        base = implicit[(r["dataset"], r["bits"], r["encoder"])]
        r["mse_ratio"] = r["mse"] / base["mse"] if base["mse"] > 0 else float("nan")
        for k in RANKS:
            r[f"d_recall@{k}"] = r[f"recall@{k}"] - base[f"recall@{k}"]
    return out


def verdict(summary: list[dict]) -> dict:
    """How often the claim holds among the (dataset, bits, encoder) cells: the linear / MLP decoder has lower MSE,
    and higher recall@10, than the implicit one."""
    out = {}
    for dec in ("linear", "mlp"):
        cells = [r for r in summary if r["decoder"] == dec]
        out[dec] = {"cells": len(cells), "lower_mse": sum(r["mse_ratio"] < 1 for r in cells),
                    "higher_recall@10": sum(r["d_recall@10"] > 0 for r in cells),
                    "not_lower_recall@10": sum(r["d_recall@10"] >= 0 for r in cells)}
    return out


def faiss_bench(cfg: Config, seed: int = 0) -> list[dict] | str:
    """``vitedu.codes.bench.speed_vs_faiss`` on the synthetic vectors, or the reason it was skipped."""
    if not cfg.bench:
        return "skipped: bench is off in this budget"
    try:
        from ..codes.bench import speed_vs_faiss

        sp = vectors(cfg, "gauss", seed)
        return speed_vs_faiss(sp["train"], sp["database"], sp["queries"], M=8, nbits=8, lsh_bits=64, itq_bits=32,
                              k=100, repeats=cfg.bench_repeats, verbose=False)
    except ImportError as e:
        return f"skipped: {e}"


def run(budget: Budget, device="cpu") -> dict:
    """The chapter's study, as stored in the ledger: every row, the per-cell summary with the change against the
    implicit decoder, the verdict counts, the paper's claim and the faiss timing. Runs on the CPU (numpy)."""
    cfg = config(budget)
    start = time.perf_counter()
    rows = study(cfg)
    summary = summarize(rows)
    study_s = time.perf_counter() - start
    return {"config": asdict(cfg), "paper_claim": PAPER_CLAIM, "summary": summary, "verdict": verdict(summary),
            "runs": rows, "study_s": study_s, "faiss_bench": faiss_bench(cfg)}


# ---- the chapter's figures and tables ------------------------------------------------------------------------------

def toy_vectors(n: int = 2000, seed: int = 0, angle: float = 30.0, stds: tuple[float, float] = (1.0, 0.3)) -> np.ndarray:
    """``n`` 2-D points of a centred Gaussian stretched along a direction ``angle`` degrees from the x axis (float32):
    the chapter's toy data, where every cell of every code can be drawn."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}.")
    if min(stds) <= 0:
        raise ValueError(f"stds must be positive, got {stds}.")
    rng = np.random.default_rng(seed)
    a = np.deg2rad(angle)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return ((rng.standard_normal((n, 2)) * np.asarray(stds)) @ rotation.T).astype(np.float32)


def cell_means(codes: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The best decoder a code can have on ``x``: the mean of the vectors that share each code (a table of one row
    per distinct code, only possible for short codes). Returns ``(distinct_codes, means)``."""
    codes, x = np.asarray(codes), np.asarray(x, dtype=np.float64)
    if codes.ndim != 2 or x.ndim != 2 or len(codes) != len(x):
        raise ValueError(f"codes (n, width) and x (n, d) must describe the same vectors, got {codes.shape} and "
                         f"{x.shape}.")
    distinct, inverse = np.unique(codes, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    means = np.zeros((len(distinct), x.shape[1]))
    np.add.at(means, inverse, x)
    return distinct, means / np.bincount(inverse)[:, None]


def plot_cells(encoder, x: np.ndarray, decoders: dict | None = None, ax=None, title: str | None = None,
               extent: float = 3.0, resolution: int = 300, hyperplanes: bool = True):
    """The cells of a trained 2-D encoder (one colour per code), the points ``x``, the separating lines of a binary
    encoder and, for each decoder in ``decoders`` ({label: decoder}; the encoder itself is its implicit decoder),
    the reconstruction of every code that ``x`` uses. Returns the axes."""
    import matplotlib.pyplot as plt

    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != 2 or getattr(encoder, "d", None) != 2:
        raise ValueError("plot_cells draws 2-D data: x must be (n, 2) and the encoder built with d=2.")
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    grid = np.linspace(-extent, extent, resolution)
    gx, gy = np.meshgrid(grid, grid)
    points = np.stack([gx.ravel(), gy.ravel()], 1)
    _, cell = np.unique(encoder.encode(points), axis=0, return_inverse=True)
    ax.imshow(cell.reshape(resolution, resolution) % 10, origin="lower", extent=(-extent, extent) * 2,
              cmap="tab10", vmin=0, vmax=9, alpha=0.35, interpolation="nearest")
    ax.scatter(x[:, 0], x[:, 1], s=2, c="0.25", alpha=0.35, lw=0)
    if hyperplanes and getattr(encoder, "W", None) is not None:
        for w, t in zip(encoder.W, encoder.thresholds):  # the line (p - mean) . w = t
            point = encoder.mean + t * w / (w @ w)
            direction = np.array([-w[1], w[0]]) / np.linalg.norm(w)
            ends = point + np.outer([-3 * extent, 3 * extent], direction)
            ax.plot(ends[:, 0], ends[:, 1], color="k", lw=0.8)
    codes = np.unique(encoder.encode(x), axis=0)
    for (label, decoder), marker in zip((decoders or {}).items(), "oXs^Dv"):
        rec = decoder.decode(codes)
        ax.scatter(rec[:, 0], rec[:, 1], marker=marker, s=36, edgecolor="k", lw=0.6, label=label, zorder=3)
    if decoders:
        ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
    ax.set(xlim=(-extent, extent), ylim=(-extent, extent), aspect="equal", xticks=[], yticks=[])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def format_summary(summary: list[dict], dataset: str | None = None) -> str:
    """The summary (from :func:`summarize` or the ledger) as a text table, one line per encoder, bits and decoder:
    MSE, its ratio to the implicit decoder's, and recall@1/10/100 (mean ± spread over seeds when there are several)."""
    rows = [r for r in summary if dataset is None or r["dataset"] == dataset]
    if not rows:
        raise ValueError(f"no rows for dataset {dataset!r}; the summary has {sorted({r['dataset'] for r in summary})}")
    head = f"{'data':<6}{'bits':>5} {'encoder':<4} {'decoder':<9}{'MSE':>14}{'÷ implicit':>11}"
    lines = [head + "".join(f"{'R@' + str(k):>14}" for k in RANKS)]
    for r in rows:
        spread = r.get("seeds", 1) > 1

        def cell(key, fmt):
            value = format(r[key], fmt)
            return f"{value} ± {format(r[key + '_std'], fmt)}" if spread else value
        lines.append(f"{r['dataset']:<6}{r['bits']:>5} {r['encoder']:<4} {r['decoder']:<9}{cell('mse', '.3f'):>14}"
                     f"{r['mse_ratio']:>11.2f}" + "".join(f"{cell(f'recall@{k}', '.3f'):>14}" for k in RANKS))
    return "\n".join(lines)


def plot_summary(summary: list[dict], title: str | None = None):
    """One row per dataset; columns: the MSE relative to the implicit decoder of the same codes, then recall@1, @10
    and @100; bars grouped by encoder and bits, one colour per decoder (error bars: spread over seeds)."""
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in summary))
    if not datasets:
        raise ValueError("the summary is empty")
    metrics = [("mse_ratio", "MSE ÷ implicit decoder's")] + [(f"recall@{k}", f"recall@{k}") for k in RANKS]
    fig, axes = plt.subplots(len(datasets), len(metrics), figsize=(3.3 * len(metrics), 2.6 * len(datasets)),
                             squeeze=False)
    width = 0.8 / len(DECODERS)
    for row, dataset in zip(axes, datasets):
        rows = [r for r in summary if r["dataset"] == dataset]
        groups = list(dict.fromkeys((r["bits"], r["encoder"]) for r in rows))
        by = {(r["bits"], r["encoder"], r["decoder"]): r for r in rows}
        for ax, (key, label) in zip(row, metrics):
            for j, dec in enumerate(DECODERS):
                vals = [by[(b, e, dec)][key] for b, e in groups]
                err = None if key == "mse_ratio" else [by[(b, e, dec)].get(key + "_std", 0.0) for b, e in groups]
                ax.bar(np.arange(len(groups)) + (j - 1) * width, vals, width, yerr=err, label=dec, color=f"C{j}")
            if key == "mse_ratio":
                ax.axhline(1.0, color="k", lw=0.6)
            ax.set_xticks(np.arange(len(groups)), [f"{e}\n{b}b" for b, e in groups], fontsize=7)
            ax.set_title(f"{dataset}: {label}", fontsize=9)
    axes[0, 0].legend(fontsize=7, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def rank_agreement(queries: np.ndarray, database: np.ndarray, decoded: np.ndarray, top: int | None = None) -> float:
    """How well the asymmetric distances ``||q - x_hat||`` order the database like the true ``||q - x||``: Spearman's
    rank correlation per query, averaged over queries; over the whole database, or only over each query's ``top``
    true nearest neighbours (the part of the ranking that recall@R looks at). Queries whose decoded distances are all
    tied on that set (no order to compare) are left out."""
    from scipy.stats import spearmanr

    true = search(queries, database, len(database))  # sorted by true distance
    idx = true[1] if top is None else true[1][:, :check_top(top, len(database))]
    q = np.asarray(queries, dtype=np.float64)[:, None, :]
    est = ((q - np.asarray(decoded, dtype=np.float64)[idx]) ** 2).sum(-1)
    ref = np.take_along_axis(((q - np.asarray(database, dtype=np.float64)[None]) ** 2).sum(-1), idx, 1)
    rhos = [spearmanr(a, b)[0] for a, b in zip(ref, est) if np.ptp(b) > 0]
    if not rhos:
        raise ValueError("every query sees all its decoded distances tied: nothing to rank")
    return float(np.mean(rhos))


def check_top(top: int, n: int) -> int:
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or not 2 <= top <= n:
        raise ValueError(f"top must be an integer between 2 and the database size {n}, got {top!r}")
    return int(top)
