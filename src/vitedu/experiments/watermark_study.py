"""Chapter 08 (watermarking, Fernandez et al. 2022): do marks hidden in a self-supervised latent space keep the
detector's promised false-positive rate on real images, and do they survive common edits at PSNR >= 40 dB?

Small-scale reproduction (issue 7, section 2) with the book's own phi, the DINO-trained ``vit_pico_patch4_32`` of
chapter 07 (``watermark.default_extractor``) followed by a whitening layer:

- **false positives**: the whitening is fitted on one set of random crops of the real photos of ``vitedu.data``;
  the zero-bit detector is run with ``n_carriers`` independent keys on that fitted set, on held-out crops (another
  seed) and on Scenes test images, and the share flagged is compared with the exact rate (eq. 3) at several target
  FPRs, with a Clopper-Pearson 95% interval;
- **robustness**: held-out crops marked zero-bit (cone set by FPR 1e-6) and with 30 bits, at PSNR >= 40 dB, then
  every attack of ``watermark.ATTACKS``: true-positive rate at FPR 1e-6, bit accuracy;
- **ablations** (a smaller set): the backbone (DINO / supervised / random weights) and marking with or without
  augmentation.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from ..budget import Budget
from .. import watermark as wm

SOURCES = ("fitted crops", "held-out crops", "Scenes test")


@dataclass(frozen=True)
class Config:
    fit_images: int  # random photo crops the whitening is fitted on
    heldout_images: int  # other crops (another seed), for the false-positive rate
    scenes_images: int  # Scenes test images, for the false-positive rate
    n_carriers: int  # independent keys: trials = images x carriers
    marked_images: int  # held-out crops marked, for robustness
    ablation_images: int  # fewer, for the backbone and augmentation ablations
    steps: int  # marking steps
    lr: float = 0.01  # of marking's Adam
    fprs: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)
    crop_size: int = 64  # pixels of the crops (the extractor resizes to its 32)
    target_psnr: float = 40.0
    bits: int = 30
    detection_fpr: float = 1e-6
    backbones: tuple[str, ...] = ("DINO", "supervised", "random")
    backbone_budget: str = "cpu"  # which DINO reference checkpoints phi loads
    seed: int = 0
    live_seeds: tuple[int, ...] = (0,)  # the chapter's own run


CONFIGS = {
    "smoke": Config(fit_images=160, heldout_images=64, scenes_images=64, n_carriers=4, marked_images=4,
                    ablation_images=2, steps=5, fprs=(1e-1, 1e-2), backbones=("DINO", "random")),
    "cpu": Config(fit_images=2000, heldout_images=4000, scenes_images=2000, n_carriers=48, marked_images=96,
                  ablation_images=24, steps=150),
    "gpu": Config(fit_images=10000, heldout_images=10000, scenes_images=5000, n_carriers=63, marked_images=500,
                  ablation_images=100, steps=200),
}


def config(budget: Budget) -> Config:
    return budget.select(CONFIGS)


def photo_crops(n: int, size: int = 64, seed: int = 0, min_frac: float = 0.125, max_frac: float = 0.5) -> torch.Tensor:
    """``n`` random square crops of the real photos of ``vitedu.data`` (photo, side between ``min_frac`` and
    ``max_frac`` of its shorter side, and position drawn from ``seed``), resized to ``size`` pixels: float images
    (n, 3, size, size) in [0, 1]."""
    from ..data import list_photos, load_photo

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of crops must be a positive integer, got {n!r}.")
    if not 0 < min_frac <= max_frac <= 1:
        raise ValueError(f"crop fractions need 0 < min_frac <= max_frac <= 1, got {min_frac} and {max_frac}.")
    if size < wm.features.MIN_SIZE:
        raise ValueError(f"crops need at least {wm.features.MIN_SIZE} pixels on a side, got {size}.")
    photos = [wm.to_rgb(load_photo(name)) for name in list_photos()]
    rng = np.random.default_rng(seed)
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        photo = photos[rng.integers(len(photos))]
        h, w = photo.shape[1:]
        side = max(wm.features.MIN_SIZE, int(round(min(h, w) * rng.uniform(min_frac, max_frac))))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = photo[:, top:top + side, left:left + side][None]
        out[i] = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False,
                               antialias=True)[0].clamp(0, 1)
    return out


def scenes_images(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` Scenes test images (32 px) as float images in [0, 1]."""
    from ..data import make_scenes

    return make_scenes(n, "test", 32, seed=seed).images.float() / 255


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) ``level`` confidence interval of a binomial proportion from ``k`` successes in
    ``n`` trials."""
    if not isinstance(n, (int, np.integer)) or n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1 trials, got k={k}, n={n}.")
    if not 0 < level < 1:
        raise ValueError(f"the confidence level must lie strictly between 0 and 1, got {level}.")
    alpha = 1 - level
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


@torch.no_grad()
def features_of(extractor: wm.FeatureExtractor, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([extractor(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def fpr_rows(features: torch.Tensor, carriers: torch.Tensor, fprs, source: str) -> list[dict]:
    """``watermark.empirical_fpr`` rows with the source and a 95% Clopper-Pearson interval on the share flagged
    (the trials are images x carriers; a bound is exact only if those are independent)."""
    rows = []
    for row in wm.empirical_fpr(features, carriers, fprs):
        low, high = clopper_pearson(row["detections"], row["trials"])
        rows.append({"source": source, **row, "ci_low": low, "ci_high": high,
                     "theory_in_ci": bool(low <= row["fpr"] <= high)})
    return rows


def false_positive_study(extractor: wm.FeatureExtractor, fit: torch.Tensor, sets: dict[str, torch.Tensor],
                         cfg: Config) -> list[dict]:
    """The empirical FPR of ``n_carriers`` keys on each set of unmarked images (the whitening already fitted on
    ``fit``), beside the target."""
    carriers = wm.make_carriers(extractor.dim, cfg.n_carriers, seed=cfg.seed + 1000)
    rows = fpr_rows(features_of(extractor, fit), carriers, cfg.fprs, SOURCES[0])
    for source, images in sets.items():
        rows += fpr_rows(features_of(extractor, images), carriers, cfg.fprs, source)
    return rows


def robustness_study(extractor: wm.FeatureExtractor, images: torch.Tensor, cfg: Config, augment: bool = True,
                     multi_bit: bool = True) -> dict:
    """Zero-bit and (if ``multi_bit``) 30-bit marks on ``images`` at PSNR >= ``cfg.target_psnr``, each attack of
    ``watermark.ATTACKS`` applied: TPR at ``cfg.detection_fpr`` and bit accuracy per attack, and the marks' quality."""
    mark_cfg = wm.MarkConfig(steps=cfg.steps, lr=cfg.lr, target_psnr=cfg.target_psnr, fpr=cfg.detection_fpr,
                             augment=augment, seed=cfg.seed)
    carrier = wm.make_carriers(extractor.dim, 1, seed=cfg.seed + 1)
    zero = wm.mark(images, extractor, carrier, config=mark_cfg)
    out = {"zero_bit": wm.robustness(zero.images, extractor, carrier[0], fpr=cfg.detection_fpr),
           "zero_bit_psnr": [zero.psnr.min().item(), zero.psnr.mean().item()],
           "zero_bit_ssim": zero.ssim.mean().item()}
    if multi_bit:
        carriers = wm.make_carriers(extractor.dim, cfg.bits, seed=cfg.seed + 2)
        message = wm.make_message(cfg.bits, seed=cfg.seed + 3)
        multi = wm.mark(images, extractor, carriers, message, config=mark_cfg)
        out["multi_bit"] = wm.robustness(multi.images, extractor, carriers, message)
        out["multi_bit_psnr"] = [multi.psnr.min().item(), multi.psnr.mean().item()]
        out["multi_bit_ssim"] = multi.ssim.mean().item()
    return out


def extractor_for(kind: str, fit: torch.Tensor, cfg: Config) -> wm.FeatureExtractor:
    return wm.default_extractor(kind, cfg.backbone_budget).fit_whitening(fit)


def run(budget: Budget, device="cpu") -> dict:
    """The chapter's study as stored in the ledger: false-positive rates per image set and target, the robustness
    tables of the DINO phi, and the backbone and augmentation ablations (zero-bit TPR per attack). CPU only (the
    extractor is small; ``device`` is accepted for the CLI's signature)."""
    cfg = config(budget)
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    fit = photo_crops(cfg.fit_images, cfg.crop_size, seed=cfg.seed)
    heldout = photo_crops(cfg.heldout_images, cfg.crop_size, seed=cfg.seed + 1)
    scenes = scenes_images(cfg.scenes_images)
    extractors = {kind: extractor_for(kind, fit, cfg) for kind in cfg.backbones}
    main = extractors[cfg.backbones[0]]
    fpr = false_positive_study(main, fit, {SOURCES[1]: heldout, SOURCES[2]: scenes}, cfg)
    times = {"fpr": time.perf_counter() - start}
    print(f"false positives: {times['fpr']:.0f} s", flush=True)
    marked_set = heldout[:cfg.marked_images]
    robust = robustness_study(main, marked_set, cfg)
    times["robustness"] = time.perf_counter() - start - times["fpr"]
    print(f"robustness: {times['robustness']:.0f} s", flush=True)
    small = heldout[:cfg.ablation_images]
    backbones = {}
    for kind, extractor in extractors.items():
        backbones[kind] = {"fpr": false_positive_study(extractor, fit, {SOURCES[1]: heldout}, cfg),
                           **robustness_study(extractor, small, cfg, multi_bit=False)}
        print(f"ablation {kind}: {time.perf_counter() - start:.0f} s in all", flush=True)
    no_augment = robustness_study(main, small, cfg, augment=False, multi_bit=False)
    times["ablations"] = time.perf_counter() - start - times["fpr"] - times["robustness"]
    return {"config": asdict(cfg), "dim": main.dim, "fpr": fpr, "robustness": robust,
            "ablation_backbones": backbones,
            "ablation_augmentation": {"with": backbones[cfg.backbones[0]], "without": no_augment},
            "times": times, "seconds": time.perf_counter() - start}


def fpr_table(result: dict) -> list[dict]:
    """The ledger's false-positive rows, one per (source, target), rounded for printing."""
    return [{"source": r["source"], "target": r["fpr"], "empirical": round(r["empirical"], 5),
             "95% CI": (round(r["ci_low"], 5), round(r["ci_high"], 5)), "trials": r["trials"]}
            for r in result["fpr"]]


def robustness_table(result: dict) -> list[dict]:
    """Per attack: the zero-bit TPR at FPR 1e-6 and the 30-bit accuracy of the ledger's main run."""
    robust = result["robustness"]
    multi = {r["attack"]: r for r in robust.get("multi_bit", [])}
    return [{"attack": r["attack"], "tpr": r["tpr"], "bit accuracy": multi.get(r["attack"], {}).get("bit accuracy")}
            for r in robust["zero_bit"]]


# ---- the chapter's figures ------------------------------------------------------------------------------------------


def cosine_trace(image: torch.Tensor, extractor: wm.FeatureExtractor, carrier: torch.Tensor,
                 config: wm.MarkConfig, checkpoints) -> list[dict]:
    """How zero-bit marking of one ``image`` (3, H, W) progresses: for each number of steps k in ``checkpoints``,
    the cosine cos(phi(x_k), a) of the unedited image marked for k steps, its PSNR and its p-value. Marking is
    deterministic, so the image marked for k steps is the k-th iterate of one longer run (0 steps: the original)."""
    from dataclasses import replace

    rows = []
    for k in checkpoints:
        x = image if k == 0 else wm.mark(image, extractor, carrier, config=replace(config, steps=int(k))).images
        with torch.no_grad():
            feature = extractor(x[None])
        rows.append({"steps": int(k), "cosine": wm.cosine(feature, carrier).item(),
                     "pvalue": float(wm.pvalue(feature, carrier)[0]),
                     "psnr": float("inf") if k == 0 else wm.psnr(x[None], image[None]).item()})
    return rows


def plot_thresholds(dims=(16, 63, 256, 2048), fprs=None, ax=None):
    """The cone's cosine threshold tau = cos(theta) against the target FPR, one curve per dimension d."""
    import matplotlib.pyplot as plt

    fprs = np.logspace(-12, -0.5, 200) if fprs is None else np.asarray(fprs)
    ax = ax or plt.subplots(figsize=(5, 3.4))[1]
    for d in dims:
        ax.plot(fprs, wm.threshold(fprs, d), label=f"d = {d}")
    ax.axvline(1e-6, color="grey", ls=":", lw=1)
    ax.set(xscale="log", xlabel="target false-positive rate", ylabel=r"threshold $\tau = \cos\theta$",
           title="half-angle of the dual hypercone")
    ax.legend(fontsize=8)
    return ax


def plot_fpr_curve(features: dict[str, torch.Tensor], carriers: torch.Tensor, ax=None):
    """The share of (image, carrier) pairs with |cos(phi(x), a)| >= tau, against tau, for each set of unmarked
    ``features`` (name -> (N, d)), beside the exact rate I_{1 - tau^2}((d - 1) / 2, 1 / 2) (paper, eq. 3)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(5, 3.4))[1]
    dim = carriers.shape[1]
    for name, feats in features.items():
        c = torch.stack([wm.cosine(feats, a).abs() for a in carriers]).flatten().sort(descending=True).values
        share = np.arange(1, len(c) + 1) / len(c)  # share of pairs at or above each observed |cosine|
        ax.step(c.numpy(), share, where="post", label=f"{name} ({len(c):,} pairs)")
    tau = np.linspace(0, 0.95, 300)
    ax.plot(tau, wm.false_positive_rate(tau, dim), "k--", lw=1.2, label=f"theory, d = {dim}")
    ax.set(yscale="log", xlabel=r"threshold $\tau$", ylabel="false-positive rate",
           ylim=(0.5 / max(len(f) * len(carriers) for f in features.values()), 1.1))
    ax.legend(fontsize=8)
    return ax


def plot_fpr_rows(result: dict, ax=None):
    """The ledger's false-positive rows: empirical share flagged (with its 95% interval) against the target, per
    source; on the diagonal the detector keeps its promise."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(4.2, 3.6))[1]
    for i, source in enumerate(dict.fromkeys(r["source"] for r in result["fpr"])):
        rows = [r for r in result["fpr"] if r["source"] == source]
        target = np.array([r["fpr"] for r in rows]) * 1.08 ** (i - 1)  # nudged apart so the bars do not overlap
        share = np.array([r["empirical"] for r in rows])
        err = [share - [r["ci_low"] for r in rows], [r["ci_high"] for r in rows] - share]
        ax.errorbar(target, np.maximum(share, 1e-12), yerr=err, fmt="o", ms=4, capsize=3, label=source)
    lims = [min(r["fpr"] for r in result["fpr"]) / 3, 0.3]
    ax.plot(lims, lims, "k:", lw=1)
    ax.set(xscale="log", yscale="log", xlim=lims, ylim=lims, xlabel="target FPR", ylabel="empirical FPR")
    ax.legend(fontsize=8)
    return ax


def plot_marking(original: torch.Tensor, marked: torch.Tensor, amplify: float = 10.0):
    """The original, the marked image and their difference amplified ``amplify`` times around grey."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(8, 2.9))
    difference = (0.5 + amplify * (marked - original)).clamp(0, 1)
    value = wm.psnr(marked[None], original[None]).item()
    for ax, image, title in zip(axes, (original, marked, difference),
                                ("original", f"marked (PSNR {value:.1f} dB)", f"difference x {amplify:g}")):
        ax.imshow(image.permute(1, 2, 0).numpy())
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_trace(rows: list[dict], tau: float, ax=None):
    """The cosine of a marked image with the carrier against the marking steps, with the detection threshold."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(5, 3.2))[1]
    ax.plot([r["steps"] for r in rows], [abs(r["cosine"]) for r in rows], marker="o")
    ax.axhline(tau, color="C3", ls="--", lw=1, label=rf"$\tau$ at FPR 1e-6 = {tau:.3f}")
    ax.set(xlabel="marking steps", ylabel=r"$|\cos(\phi(x), a)|$", ylim=(0, 1))
    ax.legend(fontsize=8)
    return ax


def plot_robustness(result: dict, title: str = ""):
    """Per attack: the zero-bit TPR at FPR 1e-6 and the 30-bit accuracy (chance: 0.5) of a study's main run."""
    import matplotlib.pyplot as plt

    rows = robustness_table(result)
    names = [r["attack"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    axes[0].barh(names, [r["tpr"] for r in rows], color="C0")
    axes[0].set(xlim=(0, 1), xlabel="zero-bit TPR at FPR 1e-6")
    axes[1].barh(names, [r["bit accuracy"] or 0 for r in rows], color="C1")
    axes[1].axvline(0.5, color="grey", ls=":", lw=1)
    axes[1].set(xlim=(0, 1), xlabel=f"bit accuracy, {result['config']['bits']} bits")
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def ablation_table(result: dict) -> list[dict]:
    """Zero-bit TPR at FPR 1e-6 per attack for each backbone (marked with augmentation) and for the main backbone
    marked without augmentation."""
    columns = {kind: run["zero_bit"] for kind, run in result["ablation_backbones"].items()}
    columns[f"{result['config']['backbones'][0]}, no augmentation"] = result["ablation_augmentation"]["without"][
        "zero_bit"]
    names = [r["attack"] for r in next(iter(columns.values()))]
    return [{"attack": name, **{kind: rows[i]["tpr"] for kind, rows in columns.items()}}
            for i, name in enumerate(names)]


def plot_ablation(result: dict, title: str = ""):
    """Grouped bars of :func:`ablation_table`."""
    import matplotlib.pyplot as plt

    table = ablation_table(result)
    kinds = [k for k in table[0] if k != "attack"]
    y = np.arange(len(table))
    height = 0.8 / len(kinds)
    fig, ax = plt.subplots(figsize=(6.5, 0.42 * len(table) + 1))
    for j, kind in enumerate(kinds):
        ax.barh(y + (j - (len(kinds) - 1) / 2) * height, [r[kind] for r in table], height, label=kind)
    ax.set_yticks(y, [r["attack"] for r in table])
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="zero-bit TPR at FPR 1e-6", title=title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
