"""Chapter 08 (watermarking): the study, run by ``vitedu reproduce 08_watermarking``, and its helpers."""

import numpy as np
import pytest
import torch
from scipy import stats

from vitedu import watermark as wm
from vitedu.budget import Budget
from vitedu.experiments import dino, get, watermark_study as ws


def test_registered_and_every_budget_is_valid():
    assert get("08") == ("08_watermarking", ws)
    for name in ("smoke", "cpu", "gpu"):
        cfg = ws.config(Budget(name))
        assert cfg.fit_images > 64  # the whitening needs more images than the feature dimension
        assert cfg.backbones[0] == "DINO" and set(cfg.backbones) <= {"DINO", "supervised", "random"}
        assert cfg.ablation_images <= cfg.marked_images <= cfg.heldout_images
        assert cfg.n_carriers <= 63 and cfg.bits == 30 and cfg.target_psnr >= 40 and cfg.detection_fpr == 1e-6
        assert all(0 < f < 1 for f in cfg.fprs)
        wm.MarkConfig(steps=cfg.steps, lr=cfg.lr, target_psnr=cfg.target_psnr)  # valid marking settings
    cpu = ws.config(Budget("cpu"))
    assert cpu.backbones == ("DINO", "supervised", "random")
    assert cpu.heldout_images * cpu.n_carriers >= 100_000  # enough trials to resolve FPR 1e-3


def test_photo_crops_are_deterministic_distinct_and_real():
    a = ws.photo_crops(6, size=24, seed=3)
    assert a.shape == (6, 3, 24, 24) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, ws.photo_crops(6, size=24, seed=3))
    b = ws.photo_crops(6, size=24, seed=4)
    assert not torch.equal(a, b)
    assert a.std(dim=(1, 2, 3)).min() > 0.01  # photos, not blank images
    for bad in [dict(n=0), dict(n=2, size=4), dict(n=2, min_frac=0.6, max_frac=0.5), dict(n=2, max_frac=1.5)]:
        with pytest.raises(ValueError):
            ws.photo_crops(**bad)


def test_clopper_pearson_interval():
    low, high = ws.clopper_pearson(10, 100)
    assert low < 0.1 < high
    # the defining property: the binomial tails at the bounds are alpha / 2
    assert stats.binom.sf(9, 100, low) == pytest.approx(0.025, rel=1e-6)
    assert stats.binom.cdf(10, 100, high) == pytest.approx(0.025, rel=1e-6)
    assert ws.clopper_pearson(0, 50)[0] == 0.0 and ws.clopper_pearson(50, 50)[1] == 1.0
    # coverage: intervals of simulated binomials contain the true rate at least 95% of the time (it is conservative)
    rng = np.random.default_rng(0)
    hits = [lo <= 0.03 <= hi for lo, hi in (ws.clopper_pearson(int(k), 200) for k in rng.binomial(200, 0.03, 400))]
    assert np.mean(hits) >= 0.93
    with pytest.raises(ValueError, match="k <= n"):
        ws.clopper_pearson(5, 3)
    with pytest.raises(ValueError, match="level"):
        ws.clopper_pearson(1, 3, level=1.0)


def test_fpr_rows_match_theory_on_isotropic_features_and_flag_a_biased_set():
    g = torch.Generator().manual_seed(0)
    carriers = wm.make_carriers(16, 8, seed=1)
    rows = ws.fpr_rows(torch.randn(5000, 16, generator=g), carriers, (0.1, 0.01), "gauss")
    assert [r["source"] for r in rows] == ["gauss", "gauss"] and rows[0]["trials"] == 40000
    assert all(r["theory_in_ci"] and r["ci_low"] <= r["empirical"] <= r["ci_high"] for r in rows)
    # features leaning along the first carrier are flagged far more often than the target: the CI excludes it
    biased = torch.randn(5000, 16, generator=g) + 2 * carriers[0]
    rows = ws.fpr_rows(biased, carriers[:1], (0.1,), "biased")
    assert rows[0]["ci_low"] > 0.1 and not rows[0]["theory_in_ci"]


def test_smoke_study_end_to_end():
    path = dino.checkpoint_path("DINO", "cpu")
    if not path.is_file():
        pytest.skip("no committed DINO checkpoint")
    cfg = ws.config(Budget("smoke"))
    record = ws.run(Budget("smoke"))
    assert record["dim"] >= 2 and record["seconds"] > 0
    sources = [r["source"] for r in record["fpr"]]
    assert sources == [s for s in ws.SOURCES for _ in cfg.fprs]
    assert record["fpr"][0]["trials"] == cfg.fit_images * cfg.n_carriers
    assert all(0 <= r["empirical"] <= 1 and r["ci_low"] <= r["empirical"] <= r["ci_high"] for r in record["fpr"])
    robust = record["robustness"]
    assert [r["attack"] for r in robust["zero_bit"]] == list(wm.ATTACKS)
    assert [r["attack"] for r in robust["multi_bit"]] == list(wm.ATTACKS)
    assert robust["zero_bit_psnr"][0] >= cfg.target_psnr and robust["multi_bit_psnr"][0] >= cfg.target_psnr
    assert all(0 <= r["tpr"] <= 1 for r in robust["zero_bit"])
    assert all(0 <= r["bit accuracy"] <= 1 for r in robust["multi_bit"])
    assert set(record["ablation_backbones"]) == set(cfg.backbones)
    assert "multi_bit" not in record["ablation_augmentation"]["without"]
    table = ws.robustness_table(record)
    assert len(table) == len(wm.ATTACKS) and table[0]["bit accuracy"] is not None
    assert len(ws.fpr_table(record)) == len(record["fpr"])
