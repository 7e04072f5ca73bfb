import numpy as np
import pytest
import torch
from PIL import Image
from scipy import special, stats

import vitedu.watermark as wm
from vitedu.models import create_model


def random_directions(n: int, dim: int, seed: int, chunk: int = 20000) -> torch.Tensor:
    """n Gaussian vectors of R^dim, i.e. uniform random directions (detection ignores their norms)."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(min(chunk, n - i), dim, generator=g) for i in range(0, n, chunk)])


def assert_binomial(hits: int, n: int, p: float, z: float = 5.0):
    """hits ~ Bin(n, p) within z standard deviations (a 5-sigma band fails by chance about once in 2e6 runs)."""
    sd = (n * p * (1 - p)) ** 0.5
    assert abs(hits - n * p) <= z * sd, f"{hits} hits out of {n}, expected {n * p:.1f} +- {z * sd:.1f}"


@pytest.mark.parametrize("dim, n, fprs", [(8, 200_000, (1e-1, 1e-2, 1e-3)), (64, 200_000, (1e-1, 1e-2, 1e-3)),
                                           (512, 100_000, (1e-1, 1e-2, 1e-3)), (2048, 40_000, (1e-1, 1e-2))])
def test_threshold_matches_monte_carlo(dim, n, fprs):
    carrier = wm.make_carriers(dim, seed=dim)[0]
    c = wm.cosine(random_directions(n, dim, seed=1), carrier).abs()
    for fpr in fprs:
        tau = wm.threshold(fpr, dim)
        assert_binomial(int((c >= tau).sum()), n, fpr)


def test_monte_carlo_rejects_a_wrong_formula():
    """The tolerance above is tight enough to catch an off-by-one in the beta's first parameter."""
    dim, n, fpr = 8, 200_000, 1e-2
    c = wm.cosine(random_directions(n, dim, seed=2), wm.make_carriers(dim)[0]).abs()
    wrong_tau = np.sqrt(1 - special.betaincinv(dim / 2, 0.5, fpr))
    with pytest.raises(AssertionError):
        assert_binomial(int((c >= wrong_tau).sum()), n, fpr)


def test_threshold_large_dimension_chi_square_representation():
    """At d = 2048 and FPR 1e-3, many more samples through cos = g1 / sqrt(g1^2 + chi2_{d-1}) (the same law)."""
    dim, n, fpr = 2048, 2_000_000, 1e-3
    rng = np.random.default_rng(3)
    g1 = rng.standard_normal(n)
    c = np.abs(g1) / np.sqrt(g1 ** 2 + rng.chisquare(dim - 1, n))
    assert_binomial(int((c >= wm.threshold(fpr, dim)).sum()), n, fpr)


def test_closed_forms_in_low_dimension():
    tau = np.linspace(0, 1, 11)
    # d = 2: the angle is uniform, P(|cos| >= tau) = (2 / pi) arccos(tau)
    np.testing.assert_allclose(wm.false_positive_rate(tau, 2), 2 / np.pi * np.arccos(tau), atol=1e-12)
    # d = 3: Archimedes, the cosine is uniform on [-1, 1], P(|cos| >= tau) = 1 - tau
    np.testing.assert_allclose(wm.false_positive_rate(tau, 3), 1 - tau, atol=1e-12)
    for dim in (2, 3, 64, 2048):
        for fpr in (0.5, 1e-3, 1e-6, 1e-12):
            # (at d = 2 the cone is so narrow that 1 - tau^2 loses digits to rounding)
            rel = 1e-6 if dim > 2 else 1e-3
            assert wm.false_positive_rate(wm.threshold(fpr, dim), dim) == pytest.approx(fpr, rel=rel)
    # a smaller FPR needs a narrower cone (larger tau); a larger dimension, a wider one
    assert wm.threshold(1e-6, 64) > wm.threshold(1e-3, 64) > wm.threshold(1e-1, 64)
    assert wm.threshold(1e-6, 2048) < wm.threshold(1e-6, 64)


def test_detection_is_invariant_to_scale():
    dim = 32
    carrier = wm.make_carriers(dim, seed=5)[0]
    features = random_directions(200, dim, seed=6)
    features[:20] += 3 * carrier * features[:20].norm(dim=1, keepdim=True)  # some inside the cone
    ref = wm.detect(features, carrier, fpr=1e-3)
    assert 0 < int(ref.detected.sum()) < len(features)
    for scale in (1e-4, 0.5, 7.0, 1e4, -2.0):
        out = wm.detect(features * scale, carrier, fpr=1e-3)
        assert torch.equal(out.detected, ref.detected)
        torch.testing.assert_close(out.cosine, ref.cosine * np.sign(scale), atol=1e-6, rtol=1e-5)
        np.testing.assert_allclose(out.pvalue, ref.pvalue, rtol=1e-4, atol=1e-12)
    # each feature scaled by its own factor
    per_row = wm.detect(features * torch.rand(200, 1) * 100 + 0, carrier, fpr=1e-3)
    assert torch.equal(per_row.detected, ref.detected)
    # the carrier's scale does not matter either
    assert torch.equal(wm.detect(features, 10 * carrier, fpr=1e-3).detected, ref.detected)


def test_pvalues_are_monotone_bounded_and_uniform_under_the_null():
    dim = 16
    carrier = wm.make_carriers(dim, seed=7)[0]
    other = wm.make_carriers(dim, k=2, seed=7)[1]
    other = other - (other @ carrier) * carrier
    other = other / other.norm()
    angles = torch.linspace(0, np.pi / 2, 50)
    features = torch.cos(angles)[:, None] * carrier + torch.sin(angles)[:, None] * other  # |cos| decreasing
    p = wm.pvalue(features, carrier)
    assert np.all((p >= 0) & (p <= 1))
    assert np.all(np.diff(p) >= 0) and p[0] == pytest.approx(0, abs=1e-12) and p[-1] == pytest.approx(1)
    # the p-value at the threshold is the FPR
    tau = wm.threshold(1e-4, dim)
    at_tau = tau * carrier + np.sqrt(1 - tau ** 2) * other
    assert wm.pvalue(at_tau, carrier)[0] == pytest.approx(1e-4, rel=1e-4)
    # unmarked (random) features have uniform p-values
    null = wm.pvalue(random_directions(5000, dim, seed=8), carrier)
    assert stats.kstest(null, "uniform").pvalue > 1e-4
    # bits: fewer right bits, larger p-value; all k right by chance has probability 2^-k
    k = 30
    pb = wm.bits_pvalue(np.arange(k + 1), k)
    assert np.all(np.diff(pb) < 0) and pb[0] == 1 and pb[-1] == pytest.approx(2.0 ** -k)
    assert wm.bits_pvalue(15, k) == pytest.approx(stats.binom.sf(14, k, 0.5))


def test_decoding_a_message_with_its_own_carriers_gives_it_back():
    dim, k = 64, 30
    carriers = wm.make_carriers(dim, k, seed=9)
    torch.testing.assert_close(carriers @ carriers.T, torch.eye(k), atol=1e-5, rtol=0)
    assert torch.equal(carriers, wm.make_carriers(dim, k, seed=9))
    assert not torch.allclose(carriers, wm.make_carriers(dim, k, seed=10))
    messages = torch.stack([wm.make_message(k, seed=s) for s in range(5)])
    assert set(messages.unique().tolist()) == {-1.0, 1.0}
    noise = random_directions(5, dim, seed=11) * 0.3
    features = 2.0 * messages @ carriers + noise  # each projection 2 m_i + noise, |noise_i| << 2
    decoded = wm.decode(features, carriers)
    assert torch.equal(decoded, messages)
    for row, message in zip(decoded, messages):
        assert wm.bit_accuracy(row, message).item() == 1.0
    # a feature carrying another message decodes to that one, so accuracy drops
    flipped = messages[0].clone()
    flipped[:10] *= -1
    assert wm.bit_accuracy(wm.decode(flipped @ carriers, carriers), messages[0]).item() == pytest.approx(20 / 30)
    # random features decode about half the bits
    acc = wm.bit_accuracy(wm.decode(random_directions(2000, dim, seed=12), carriers), messages[0])
    assert abs(acc.mean().item() - 0.5) < 0.02


def test_whitening_gives_identity_covariance():
    g = torch.Generator().manual_seed(13)
    mixing = torch.randn(24, 24, generator=g) * torch.logspace(-1, 1, 24)
    features = torch.randn(3000, 24, generator=g) @ mixing + 5
    layer = wm.Whitening.fit(features)
    out = layer(features)
    assert layer.dim == 24
    torch.testing.assert_close(out.mean(0), torch.zeros(24), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.cov(out.T), torch.eye(24), atol=1e-4, rtol=0)
    # a reduced whitening keeps the leading directions, still with identity covariance
    small = wm.Whitening.fit(features, dim=8)
    torch.testing.assert_close(torch.cov(small(features).T), torch.eye(8), atol=1e-4, rtol=0)


def tiny_extractor(seed: int = 0) -> wm.FeatureExtractor:
    torch.manual_seed(seed)
    backbone = create_model("vit_pico_patch4_32", num_classes=0)
    return wm.FeatureExtractor(backbone, image_size=32)


def test_extractor_whitening_on_images_of_a_random_backbone():
    extractor = tiny_extractor()
    g = torch.Generator().manual_seed(14)
    images = torch.rand(300, 3, 48, 40, generator=g)
    raw = extractor(images[:4])
    assert raw.shape == (4, extractor.backbone.num_features)
    extractor.fit_whitening(images)
    feats = extractor(images)
    assert feats.shape == (300, extractor.dim) and extractor.dim >= extractor.backbone.num_features - 1
    torch.testing.assert_close(torch.cov(feats.T), torch.eye(extractor.dim), atol=1e-3, rtol=0)
    # differentiable in the pixels (marking needs it), and the backbone stays frozen and in eval mode
    x = images[:2].clone().requires_grad_(True)
    extractor.train()
    extractor(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not extractor.backbone.training
    assert all(p.grad is None for p in extractor.backbone.parameters())


def test_default_extractor_is_the_dino_backbone():
    path = pytest.importorskip("vitedu.experiments.dino").checkpoint_path("DINO", "cpu")
    if not path.is_file():
        pytest.skip("no committed DINO checkpoint")
    extractor = wm.default_extractor()
    assert extractor.image_size == 32 and extractor.dim == 64
    assert extractor(torch.rand(2, 3, 64, 64)).shape == (2, 64)
    with pytest.raises(ValueError, match="kind"):
        wm.default_extractor("imagenet")


def test_images_are_converted_explicitly_or_rejected():
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = wm.to_rgb(rgb)
    assert out.shape == (3, 20, 30) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    gray = wm.to_rgb(Image.fromarray(rgb[:, :, 0]))
    assert gray.shape == (3, 20, 30) and torch.equal(gray[0], gray[2])
    rgba = np.concatenate([rgb, np.zeros((20, 30, 1), np.uint8)], axis=2)
    torch.testing.assert_close(wm.to_rgb(rgba), out)
    assert torch.all(wm.to_rgb(Image.fromarray(rgba), alpha="white") == 1)  # fully transparent over white
    with pytest.raises(ValueError, match="at least"):
        wm.to_rgb(rgb[:4, :4])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        wm.to_rgb(torch.full((3, 16, 16), 2.0))
    with pytest.raises(TypeError, match="uint8"):
        wm.to_rgb(torch.zeros(3, 16, 16, dtype=torch.int32))
    with pytest.raises(ValueError, match="channels"):
        wm.to_rgb(torch.zeros(2, 16, 16))
    extractor = tiny_extractor()
    for bad, match in [(torch.rand(2, 1, 32, 32), "grayscale.*to_rgb"), (torch.rand(2, 4, 32, 32), "RGBA.*to_rgb"),
                       (torch.rand(3, 32, 32), r"images\[None\]"), (torch.zeros(2, 3, 32, 32, dtype=torch.uint8),
                                                                    "255"),
                       (torch.rand(2, 3, 4, 4), "too small"), (np.zeros((2, 3, 32, 32)), "tensor")]:
        with pytest.raises((ValueError, TypeError), match=match):
            extractor(bad)


def test_bad_input_gets_clear_errors():
    for fpr in (0, 1, -0.1, 1.5):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            wm.threshold(fpr, 64)
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            wm.detect(torch.randn(3, 64), wm.make_carriers(64)[0], fpr=fpr)
    for dim in (1, 0, 2.5):
        with pytest.raises(ValueError, match=">= 2"):
            wm.threshold(1e-3, dim)
        with pytest.raises(ValueError, match=">= 2"):
            wm.make_carriers(dim)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        wm.false_positive_rate(1.5, 8)
    with pytest.raises(ValueError, match="k <= 8"):
        wm.make_carriers(8, 9)
    carriers = wm.make_carriers(16, 4)
    with pytest.raises(ValueError, match="dimension 16 but the features have 8"):
        wm.decode(torch.randn(2, 8), carriers)
    with pytest.raises(ValueError, match="one carrier"):
        wm.detect(torch.randn(2, 16), carriers)
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        wm.decode(torch.randn(2, 3, 16), carriers)
    with pytest.raises(TypeError, match="floating point"):
        wm.decode(torch.ones(2, 16, dtype=torch.long), carriers)
    with pytest.raises(ValueError, match="-1 or 1"):
        wm.bit_accuracy(torch.ones(1, 4), torch.tensor([0.0, 1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="4 bits"):
        wm.bit_accuracy(torch.ones(1, 4), torch.ones(5))
    with pytest.raises(ValueError, match=r"integer in \[0, 30\]"):
        wm.bits_pvalue(31, 30)
    with pytest.raises(ValueError, match="more than 24 images"):
        wm.Whitening.fit(torch.randn(10, 24))


def marking_setup(seed: int = 0):
    """A tiny random ViT, whitened on smooth random images, and four of those images to mark."""
    extractor = tiny_extractor(seed)
    g = torch.Generator().manual_seed(seed + 1)
    images = torch.nn.functional.interpolate(torch.rand(160, 3, 8, 8, generator=g), size=48, mode="bilinear")
    extractor.fit_whitening(images)
    return extractor, images[:4]


def test_zero_bit_marking_meets_the_psnr_target_and_is_detected():
    extractor, images = marking_setup()
    carrier = wm.make_carriers(extractor.dim, seed=3)
    assert not wm.detect(extractor(images), carrier[0], fpr=1e-6).detected.any()
    for augment in (False, True):
        config = wm.MarkConfig(steps=40, target_psnr=40.0, augment=augment)
        marked = wm.mark(images, extractor, carrier, config=config)
        assert marked.images.shape == images.shape and marked.images.min() >= 0 and marked.images.max() <= 1
        assert torch.all(marked.psnr >= 40.0) and torch.all(wm.psnr(marked.images, images) >= 40.0)
        assert torch.all(marked.ssim > 0.9)
        out = wm.detect(extractor(marked.images), carrier[0], fpr=1e-6)
        assert out.detected.all(), out.pvalue
        assert len(marked.losses) == 40 and marked.losses[-1] < marked.losses[0]
    # the image-quality loss terms keep the constraint and the mark
    config = wm.MarkConfig(steps=40, target_psnr=40.0, lambda_mse=10.0, lambda_ssim=10.0)
    marked = wm.mark(images, extractor, carrier, config=config)
    assert torch.all(marked.psnr >= 40.0) and wm.detect(extractor(marked.images), carrier[0]).detected.all()
    # one image (3, H, W) in, one out
    single = wm.mark(images[0], extractor, carrier, config=wm.MarkConfig(steps=2))
    assert single.images.shape == images[0].shape
    # marking needs gradients, so a caller's no_grad (e.g. around an evaluation loop) must not change it
    with torch.no_grad():
        quiet = wm.mark(images[0], extractor, carrier, config=wm.MarkConfig(steps=2))
    torch.testing.assert_close(quiet.images, single.images, rtol=0, atol=0)


def test_multi_bit_marking_decodes_its_message_on_the_unattacked_image():
    extractor, images = marking_setup(seed=1)
    k = 10
    carriers = wm.make_carriers(extractor.dim, k, seed=4)
    message = wm.make_message(k, seed=5)
    marked = wm.mark(images, extractor, carriers, message, config=wm.MarkConfig(steps=40, target_psnr=40.0))
    assert torch.all(marked.psnr >= 40.0)
    decoded = wm.decode(extractor(marked.images), carriers)
    assert torch.all(wm.bit_accuracy(decoded, message) == 1.0)
    # the marks survive the 8-bit rounding of saving the image
    saved = torch.stack([wm.attacks.from_pil(wm.attacks.to_pil(x)) for x in marked.images])
    assert wm.bit_accuracy(wm.decode(extractor(saved), carriers), message).mean() > 0.9


def test_psnr_projection_and_ssim():
    from vitedu.watermark.mark import project_psnr

    g = torch.Generator().manual_seed(15)
    x0 = torch.rand(3, 3, 32, 32, generator=g) * 0.5 + 0.25
    delta = torch.randn(3, 3, 32, 32, generator=g) * torch.tensor([0.1, 0.01, 1e-4]).view(-1, 1, 1, 1)
    projected = project_psnr(delta, 40.0)
    assert torch.all(wm.psnr(x0 + projected, x0) >= 40.0)
    torch.testing.assert_close(projected[2], delta[2])  # already above the target: untouched
    assert wm.psnr(x0 + projected, x0)[0] == pytest.approx(40.0, abs=0.01)  # scaled onto the target
    assert wm.ssim(x0, x0) == pytest.approx(1.0)
    noisy = [wm.ssim((x0 + s * torch.randn(x0.shape, generator=g)).clamp(0, 1), x0).mean() for s in (0.01, 0.1)]
    assert 1 > noisy[0] > noisy[1] > 0
    with pytest.raises(ValueError, match="same shape"):
        wm.psnr(x0, x0[:, :, :16])


def test_attacks_edit_images_as_a_user_would():
    g = torch.Generator().manual_seed(16)
    image = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=64, mode="bilinear")[0]
    for name, attack in wm.ATTACKS.items():
        out = attack(image)
        assert out.ndim == 3 and out.shape[0] == 3 and out.dtype == torch.float32, name
        assert out.min() >= 0 and out.max() <= 1, name
        assert name == "none" or not torch.equal(out, image), name
    assert wm.attacks.crop(image, 0.25).shape == (3, 32, 32)
    assert wm.attacks.resize(image, 0.5).shape == (3, 32, 32)
    assert (wm.attacks.jpeg(image, 10) - image).abs().mean() > (wm.attacks.jpeg(image, 90) - image).abs().mean()
    roundtrip = wm.attacks.from_pil(wm.attacks.to_pil(image))
    assert (roundtrip - image).abs().max() <= 0.5 / 255 + 1e-6
    with pytest.raises(ValueError, match="1..95"):
        wm.attacks.jpeg(image, 0)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        wm.attacks.crop(image, 0)
    with pytest.raises(ValueError, match=r"one image \(3, H, W\)"):
        wm.attacks.blur(image[None])


def test_marking_bad_input():
    extractor, images = marking_setup()
    carrier = wm.make_carriers(extractor.dim)
    with pytest.raises(ValueError, match="grayscale.*to_rgb"):
        wm.mark(images[:, :1], extractor, carrier)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        wm.mark(images * 255, extractor, carrier)
    with pytest.raises(ValueError, match="one carrier"):
        wm.mark(images, extractor, wm.make_carriers(extractor.dim, 3))
    with pytest.raises(ValueError, match="3 bits"):
        wm.mark(images, extractor, wm.make_carriers(extractor.dim, 3), torch.ones(4))
    with pytest.raises(ValueError, match="-1 or 1"):
        wm.mark(images, extractor, wm.make_carriers(extractor.dim, 3), torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="dimension"):
        wm.mark(images, extractor, wm.make_carriers(extractor.dim + 1))
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        wm.MarkConfig(fpr=0)
    with pytest.raises(ValueError, match="steps"):
        wm.MarkConfig(steps=0)


def test_empirical_fpr_of_random_features_matches_theory():
    dim = 32
    rows = wm.empirical_fpr(random_directions(20000, dim, seed=17), wm.make_carriers(dim, 5, seed=18),
                            fprs=(1e-1, 1e-2, 1e-3))
    assert [r["fpr"] for r in rows] == [1e-1, 1e-2, 1e-3]
    for row in rows:
        assert row["trials"] == 100000
        assert_binomial(row["detections"], row["trials"], row["fpr"])
        assert row["empirical"] == row["detections"] / row["trials"]
    # features all along a carrier are all flagged
    carriers = wm.make_carriers(dim, 1, seed=18)
    assert wm.empirical_fpr(carriers.repeat(10, 1), carriers, fprs=(1e-6,))[0]["empirical"] == 1.0


def test_robustness_table():
    extractor, images = marking_setup()
    carrier = wm.make_carriers(extractor.dim, seed=3)
    marked = wm.mark(images, extractor, carrier, config=wm.MarkConfig(steps=40, target_psnr=40.0)).images
    attacks = {"none": wm.ATTACKS["none"], "brightness 1.5": wm.ATTACKS["brightness 1.5"]}
    rows = wm.robustness(marked, extractor, carrier, attacks=attacks)
    assert [r["attack"] for r in rows] == ["none", "brightness 1.5"]
    assert rows[0]["tpr"] == 1.0 and rows[0]["median p-value"] < 1e-6
    assert wm.robustness(images, extractor, carrier, attacks=attacks)[0]["tpr"] == 0.0  # unmarked: none flagged
    k = 6
    carriers, message = wm.make_carriers(extractor.dim, k, seed=4), wm.make_message(k, seed=5)
    marked = wm.mark(images, extractor, carriers, message, config=wm.MarkConfig(steps=40, target_psnr=40.0)).images
    rows = wm.robustness(list(marked), extractor, carriers, message, attacks=attacks)
    assert rows[0]["bit accuracy"] == 1.0 and rows[0]["word accuracy"] == 1.0
    assert 0 <= rows[1]["bit accuracy"] <= 1


def test_marking_is_deterministic_given_its_seed():
    extractor, images = marking_setup()
    carrier = wm.make_carriers(extractor.dim, seed=3)
    first = wm.mark(images[:1], extractor, carrier, config=wm.MarkConfig(steps=10, seed=1)).images
    again = wm.mark(images[:1], extractor, carrier, config=wm.MarkConfig(steps=10, seed=1)).images
    torch.testing.assert_close(first, again, atol=1e-6, rtol=0)
