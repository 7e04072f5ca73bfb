"""Chapter 08 (watermarking): the exercises' checks (right answers pass, typical wrong ones fail), the chapter's
figure helpers, and the paper's backbone loader (on a local file: nothing is downloaded)."""

import json
import urllib.error

import matplotlib
import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from scipy import special, stats

from vitedu import check
from vitedu import watermark as wm
from vitedu.experiments import dino, watermark_study as ws
from vitedu.paths import data_root

matplotlib.use("Agg")


def needs_dino_checkpoint():
    if not dino.checkpoint_path("DINO", "cpu").is_file():
        pytest.skip("no committed DINO checkpoint")


# ---- the checks -----------------------------------------------------------------------------------------------------

def right_threshold(fpr, d):
    return float(np.sqrt(1 - special.betaincinv((d - 1) / 2, 0.5, fpr)))


@pytest.mark.parametrize("wrong, hint", [
    (lambda f, d: right_threshold(2 * f, d), "ONE cone"),
    (lambda f, d: float(np.arccos(right_threshold(f, d))), "half-angle"),
    (lambda f, d: right_threshold(f, d) ** 2, "square root"),
    (lambda f, d: float(np.sqrt(1 - special.betaincinv(d / 2, 0.5, f))), "(d - 1) / 2"),
    (lambda f, d: float(np.sqrt(1 - special.betaincinv(0.5, (d - 1) / 2, f))), "swapped"),
    (lambda f, d: 0.5, "betaincinv"),
    (lambda f, d: "tau", "one number"),
])
def test_hypercone_threshold_check(wrong, hint):
    assert check.hypercone_threshold(right_threshold)
    assert check.hypercone_threshold(wm.threshold)
    result = check.hypercone_threshold(wrong)
    assert not result and hint in result.message


def test_hypercone_threshold_check_reports_an_exception():
    def broken(fpr, d):
        raise NotImplementedError

    result = check.hypercone_threshold(broken)
    assert not result and "NotImplementedError" in result.message


@pytest.mark.parametrize("wrong, hint", [
    (lambda f, c: (f @ c.T >= 0).float(), "{0, 1}"),
    (lambda f, c: torch.where(c @ f.T >= 0, 1.0, -1.0), "one row per image"),
    (lambda f, c: torch.where(f @ c.T >= 0, -1.0, 1.0), "flipped"),
    (lambda f, c: f @ c.T, "projections"),
    (lambda f, c: torch.ones(len(f), len(c)), "wrong bits"),
    (lambda f, c: [[1.0]], "torch.Tensor"),
])
def test_decode_bits_check(wrong, hint):
    assert check.decode_bits(lambda f, c: torch.where(f @ c.T >= 0, 1.0, -1.0))
    assert check.decode_bits(lambda f, c: torch.sign(f @ c.T))  # no projection is exactly 0 here
    result = check.decode_bits(wrong)
    assert not result and hint in result.message


@pytest.mark.parametrize("wrong, hint", [
    (lambda n, k: stats.binom.sf(n, k, 0.5), "includes the observed count"),
    (lambda n, k: stats.binom.pmf(n, k, 0.5), "exactly that count"),
    (lambda n, k: stats.binom.cdf(n, k, 0.5), "lower tail"),
    (lambda n, k: 0.5 ** n, "binomial"),
    (lambda n, k: 0.01, "C(k, j)"),
])
def test_bits_pvalue_check(wrong, hint):
    assert check.bits_pvalue(lambda n, k: stats.binom.sf(n - 1, k, 0.5))
    assert check.bits_pvalue(lambda n, k: sum(special.comb(k, j) for j in range(n, k + 1)) / 2 ** k)
    result = check.bits_pvalue(wrong)
    assert not result and hint in result.message


def test_break_mark_check():
    needs_dino_checkpoint()
    assert check.break_mark(lambda x: TF.adjust_hue(x, 0.1))  # the chapter's solution: hue is never augmented
    survives = check.break_mark(lambda x: x)
    assert not survives and "survives" in survives.message
    destroys = check.break_mark(lambda x: x.flip(-1))
    assert not destroys and "too much" in destroys.message
    resized = check.break_mark(lambda x: x[:, ::2, ::2])
    assert not resized and "shape" in resized.message
    out_of_range = check.break_mark(lambda x: x * 2)
    assert not out_of_range and "[0, 1]" in out_of_range.message


# ---- the chapter's helpers ------------------------------------------------------------------------------------------

def test_cosine_trace_follows_one_marking_run():
    needs_dino_checkpoint()
    fit = ws.photo_crops(120, 32, seed=0)
    extractor = wm.default_extractor("DINO").fit_whitening(fit)
    image = ws.photo_crops(1, 32, seed=5)[0]
    carrier = wm.make_carriers(extractor.dim, 1, seed=1)
    config = wm.MarkConfig(steps=6, target_psnr=40.0)
    rows = ws.cosine_trace(image, extractor, carrier, config, [0, 3, 6])
    assert [r["steps"] for r in rows] == [0, 3, 6]
    final = wm.mark(image, extractor, carrier, config=config).images
    with torch.no_grad():
        assert rows[0]["cosine"] == pytest.approx(wm.cosine(extractor(image[None]), carrier).item(), abs=1e-6)
        assert rows[-1]["cosine"] == pytest.approx(wm.cosine(extractor(final[None]), carrier).item(), abs=1e-5)
    assert rows[0]["psnr"] == float("inf") and all(r["psnr"] >= 40.0 for r in rows[1:])
    assert abs(rows[-1]["cosine"]) > abs(rows[0]["cosine"])  # marking pushes the feature towards the carrier
    assert all(0 <= r["pvalue"] <= 1 for r in rows)


def test_plots_draw_from_the_reference_ledger():
    import matplotlib.pyplot as plt

    result = json.loads((data_root() / "results" / "08_watermarking.json").read_text())["numbers"]
    ws.plot_thresholds(dims=(8, 63))
    ax = ws.plot_fpr_rows(result)
    assert len(ax.get_legend().get_texts()) == len(ws.SOURCES)
    fig = ws.plot_robustness(result, "reference")
    assert len(fig.axes[0].patches) == len(wm.ATTACKS)
    table = ws.ablation_table(result)
    assert [r["attack"] for r in table] == list(wm.ATTACKS)
    assert set(table[0]) == {"attack", "DINO", "supervised", "random", "DINO, no augmentation"}
    assert table[0]["DINO"] == result["ablation_backbones"]["DINO"]["zero_bit"][0]["tpr"]
    fig = ws.plot_ablation(result)
    assert len(fig.axes[0].patches) == len(wm.ATTACKS) * 4
    plt.close("all")


def test_fpr_curve_and_marking_figures():
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(0)
    carriers = wm.make_carriers(16, 4, seed=1)
    ax = ws.plot_fpr_curve({"gauss": torch.randn(500, 16, generator=g)}, carriers)
    empirical = ax.lines[0].get_data()
    # the step curve's share at the median |cosine| is about 1/2, and theory agrees there
    c, share = np.asarray(empirical[0]), np.asarray(empirical[1])
    i = np.searchsorted(share, 0.5)
    assert wm.false_positive_rate(float(c[i]), 16) == pytest.approx(0.5, abs=0.05)
    image = torch.rand(3, 16, 16, generator=g) * 0.8 + 0.1
    fig = ws.plot_marking(image, image + 0.01)
    assert "40.0 dB" in fig.axes[1].get_title()
    ws.plot_trace([{"steps": 0, "cosine": 0.1}, {"steps": 5, "cosine": -0.7}], tau=0.57)
    plt.close("all")


# ---- the paper's backbone -------------------------------------------------------------------------------------------

def test_resnet50_dino_loads_a_local_file_and_matches_torchvision(tmp_path):
    from torchvision.models import resnet50

    reference = resnet50(weights=None)
    reference.fc = torch.nn.Identity()
    path = tmp_path / "dino_resnet50_pretrain.pth"
    torch.save(reference.state_dict(), path)
    trunk = wm.resnet50_dino(path)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(trunk(x), reference.eval()(x))
    assert trunk.num_features == 2048 and not trunk.training
    extractor = wm.FeatureExtractor(trunk, image_size=64)
    assert extractor.dim == 2048 and extractor(x).shape == (2, 2048)
    # a DINO training checkpoint's prefixes and a classifier's weights are accepted
    nested = {f"module.backbone.{k}": v for k, v in reference.state_dict().items()}
    nested.update({"fc.weight": torch.zeros(10, 2048), "fc.bias": torch.zeros(10)})
    torch.save(nested, tmp_path / "nested.pth")
    with torch.no_grad():
        assert torch.equal(wm.resnet50_dino(tmp_path / "nested.pth")(x), trunk(x))


def test_resnet50_dino_errors_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="DINO|dino"):
        wm.resnet50_dino(tmp_path / "missing.pth")
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="missing keys"):
        wm.resnet50_dino(tmp_path / "partial.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="state dict"):
        wm.resnet50_dino(tmp_path / "list.pth")

    def offline(*args, **kwargs):
        assert args[0] == wm.features.DINO_RESNET50_URL and kwargs.get("weights_only") is True
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="pass its path"):
        wm.resnet50_dino()
