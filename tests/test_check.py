
import vitedu
from vitedu import check


def reference_patchify(images, P):
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, -1, C * P * P)


def test_patchify_passes_and_hints():
    passed = check.patchify(reference_patchify)
    assert passed and repr(passed).startswith("[PASS] patchify")
    channel_last = lambda im, P: im.reshape(im.shape[0], im.shape[1], im.shape[2] // P, P, im.shape[3] // P, P) \
        .permute(0, 2, 4, 3, 5, 1).reshape(im.shape[0], -1, im.shape[1] * P * P)  # noqa: E731
    result = check.patchify(channel_last)
    assert not result and "channel first" in result.message
    columns_first = lambda im, P: reference_patchify(im.transpose(2, 3), P)  # noqa: E731
    assert not check.patchify(columns_first)
    assert "shape" in check.patchify(lambda im, P: im.flatten(2)).message
    assert "raised" in check.patchify(lambda im, P: 1 / 0).message
    assert repr(check.patchify(columns_first)).startswith("[NOT YET] patchify")


def test_attention_passes_and_hints():
    def correct(q, k, v):
        w = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1)
        return w @ v, w

    assert check.attention(correct)
    unscaled = check.attention(lambda q, k, v: ((q @ k.transpose(-2, -1)).softmax(-1) @ v,
                                                (q @ k.transpose(-2, -1)).softmax(-1)))
    assert not unscaled and "sqrt(d)" in unscaled.message
    wrong_axis = check.attention(lambda q, k, v: ((q @ k.transpose(-2, -1) / 8 ** 0.5).softmax(-2) @ v,
                                                  (q @ k.transpose(-2, -1) / 8 ** 0.5).softmax(-2)))
    assert not wrong_axis and "last dimension" in wrong_axis.message
    assert "pair" in check.attention(lambda q, k, v: v).message


def test_parameter_count_passes_and_hints():
    model = vitedu.create_model("vit_pico_patch4_28")
    total = sum(p.numel() for p in model.parameters())
    assert check.vit_parameter_count(total)
    assert "class token" in check.vit_parameter_count(total - 64).message
    assert "position embedding" in check.vit_parameter_count(total - 50 * 64).message
    block = sum(p.numel() for p in model.blocks[0].parameters())
    assert "block" in check.vit_parameter_count(total - block).message
    assert "off by" in check.vit_parameter_count(total + 7).message


def test_bce_loss_check():
    import torch.nn.functional as F

    assert check.bce_loss(lambda logits, t: F.binary_cross_entropy_with_logits(logits, (t > 0).float()))
    soft = check.bce_loss(lambda logits, t: F.binary_cross_entropy_with_logits(logits, t))
    assert not soft and "binarise" in soft.message
    summed = check.bce_loss(lambda logits, t: F.binary_cross_entropy_with_logits(
        logits, (t > 0).float(), reduction="none").sum(1).mean())
    assert not summed and "average" in summed.message


def test_solarize_check():
    import torch

    assert check.solarize(lambda im, th: torch.where(im >= th, 255 - im, im))
    assert not check.solarize(lambda im, th: torch.where(im > th + 10, 255 - im, im))
    assert not check.solarize(lambda im, th: 255 - im)


def test_layer_scale_parameters_check():
    assert check.layer_scale_parameters(2 * 4 * 64)
    half = check.layer_scale_parameters(4 * 64)
    assert not half and "two residual branches" in half.message


def test_mixup_and_lr_scaling_checks():
    import math

    assert check.mixup(lambda x, y, lam: (lam * x + (1 - lam) * x.flip(0), lam * y + (1 - lam) * y.flip(0)))
    wrong_partner = check.mixup(lambda x, y, lam: (lam * x + (1 - lam) * x.roll(1, 0), lam * y + (1 - lam) * y.roll(1, 0)))
    assert not wrong_partner
    labels_only = check.mixup(lambda x, y, lam: (lam * x + (1 - lam) * x.flip(0), y))
    assert not labels_only and "targets" in labels_only.message

    def rule(opt, lr, b, ref):
        return lr * (math.sqrt(b / ref) if opt == "lamb" else b / ref)

    assert check.lr_scaling(rule)
    assert not check.lr_scaling(lambda opt, lr, b, ref: lr * b / ref)


def _mass_student(maps, mass, *, strict=True, include_crossing=True, normalise=True, per_map=True):
    """A student's mass mask, right by default; each switch is one of the usual mistakes."""
    import torch

    flat = maps.flatten(-2) if per_map else maps.reshape(-1)
    values, order = flat.sort(dim=-1, descending=True)
    cumulative = values.cumsum(-1)
    threshold = mass * (cumulative[..., -1:] if normalise else 1.0)
    ranked = cumulative - values if include_crossing else cumulative
    keep = ranked < threshold if strict else ranked <= threshold
    return torch.zeros_like(keep).scatter(-1, order, keep).reshape(maps.shape)


def _mass_official(maps, mass):
    """The official visualize_attention.py way: ascending sort, keep where the ascending cumsum exceeds 1 - mass."""
    import torch

    flat = maps.flatten(-2)
    flat = flat / flat.sum(-1, keepdim=True)
    values, order = flat.sort(dim=-1)
    keep = values.cumsum(-1) > 1 - mass
    return torch.zeros_like(keep).scatter(-1, order, keep).reshape(maps.shape)


def test_mass_mask_check():
    from vitedu.viz.segmentation import mass_mask

    assert check.mass_mask(mass_mask)
    assert check.mass_mask(_mass_student)
    assert check.mass_mask(_mass_official)
    dtype = check.mass_mask(lambda m, mass: _mass_student(m, mass).float())
    assert not dtype and "bool" in dtype.message
    shape = check.mass_mask(lambda m, mass: _mass_student(m, mass).flatten(-2))
    assert not shape and "shape" in shape.message
    too_many = check.mass_mask(lambda m, mass: _mass_student(m, mass, strict=False))
    assert not too_many and "too many" in too_many.message and "exactly 0.75" in too_many.message
    too_few = check.mass_mask(lambda m, mass: _mass_student(m, mass, include_crossing=False))
    assert not too_few and "too few" in too_few.message
    too_few_inclusive = check.mass_mask(lambda m, mass: _mass_student(m, mass, include_crossing=False, strict=False))
    assert not too_few_inclusive and "too few" in too_few_inclusive.message
    unnormalised = check.mass_mask(lambda m, mass: _mass_student(m, mass, normalise=False))
    assert not unnormalised and "own total" in unnormalised.message
    whole_batch = check.mass_mask(lambda m, mass: _mass_student(m, mass, per_map=False))
    assert not whole_batch and "each (g, g) map on its own" in whole_batch.message
    raised = check.mass_mask(lambda m, mass: m.sort(dim=(-2, -1)))
    assert not raised and "raised TypeError" in raised.message


def test_jaccard_check():
    import torch

    from vitedu.viz.segmentation import jaccard

    def correct(pred, target):
        inter, union = (pred & target).sum((-2, -1)), (pred | target).sum((-2, -1))
        return torch.where(union == 0, 1.0, inter / union.clamp(min=1))

    assert check.jaccard(jaccard)
    assert check.jaccard(correct)
    whole = check.jaccard(lambda p, t: (p & t).sum() / (p | t).sum())
    assert not whole and "per image" in whole.message
    whole_broadcast = check.jaccard(lambda p, t: ((p & t).sum() / (p | t).sum()).expand(len(p)))
    assert not whole_broadcast and "per image" in whole_broadcast.message
    precision = check.jaccard(lambda p, t: (p & t).sum((-2, -1)) / p.sum((-2, -1)))
    assert not precision and "precision" in precision.message
    recall = check.jaccard(lambda p, t: (p & t).sum((-2, -1)) / t.sum((-2, -1)))
    assert not recall and "recall" in recall.message
    floor = check.jaccard(lambda p, t: (p & t).sum((-2, -1)) // (p | t).sum((-2, -1)))
    assert not floor and "true division" in floor.message
    floor_float = check.jaccard(lambda p, t: ((p & t).sum((-2, -1)) // (p | t).sum((-2, -1))).float())
    assert not floor_float and "true division" in floor_float.message
    nan_when_empty = check.jaccard(lambda p, t: (p & t).sum((-2, -1)) / (p | t).sum((-2, -1)))
    assert not nan_when_empty and "0/0 as 1" in nan_when_empty.message
    zero_when_empty = check.jaccard(lambda p, t: (p & t).sum((-2, -1)) / (p | t).sum((-2, -1)).clamp(min=1))
    assert not zero_when_empty and "0/0 as 1" in zero_when_empty.message
    raised = check.jaccard(lambda p, t: (p * 1.0) & t)
    assert not raised and "raised NotImplementedError" in raised.message


def _dino_student(s, t, c, tau_s, tau_t, *, same_view=False, centering=True, sharpen=True, log=True, pair_mean=True):
    """A student's DINO loss, right by default; each switch is one of the usual mistakes."""
    import torch.nn.functional as F

    B = len(t) // 2
    student = (F.log_softmax if log else F.softmax)(s / tau_s, dim=-1).chunk(len(s) // B)
    teacher = F.softmax(((t - c) if centering else t) / (tau_t if sharpen else 1.0), dim=-1).chunk(2)
    terms = [-(q * p).sum(-1).mean() for iq, q in enumerate(teacher) for v, p in enumerate(student)
             if same_view or v != iq]
    return sum(terms) / (len(terms) if pair_mean else 1)


def test_dino_loss_check():
    from vitedu.ssl.dino import DINOLoss

    def with_the_module(s, t, c, tau_s, tau_t):
        loss = DINOLoss(s.shape[1], len(s) // (len(t) // 2), epochs=1, warmup_teacher_temp=tau_t, teacher_temp=tau_t,
                        warmup_teacher_temp_epochs=0, student_temp=tau_s)
        loss.center.copy_(c)
        return loss(s, t, 0)

    assert check.dino_loss(_dino_student)
    assert check.dino_loss(with_the_module)
    assert check.dino_loss(lambda *args: _dino_student(*args).item())  # a float is one number too
    mistakes = {
        "same view": dict(same_view=True), "not centred": dict(centering=False),
        "not sharpened": dict(sharpen=False), "log-probabilities": dict(log=False), "summed over the pairs":
        dict(pair_mean=False),
    }
    for hint, switch in mistakes.items():
        result = check.dino_loss(lambda *args, switch=switch: _dino_student(*args, **switch))
        assert not result and hint in result.message, (hint, result)
    swapped = check.dino_loss(lambda s, t, c, tau_s, tau_t: _dino_student(s, t, c, tau_t, tau_s))
    assert not swapped and "swapped" in swapped.message
    four_views_only = check.dino_loss(lambda s, t, c, tau_s, tau_t: _dino_student(s[:4 * (len(t) // 2)], t, c, tau_s,
                                                                                   tau_t))
    assert not four_views_only and "from the shapes" in four_views_only.message
    per_image = check.dino_loss(lambda s, t, c, tau_s, tau_t: -(((t - c) / tau_t).softmax(-1)
                                                                * (s[:len(t)] / tau_s).log_softmax(-1)).sum(-1))
    assert not per_image and "one number" in per_image.message
    raised = check.dino_loss(lambda s, t, c, tau_s, tau_t: s @ t)
    assert not raised and "raised RuntimeError" in raised.message


def test_every_check_reports_a_raising_answer():
    def fails(*args):
        raise ValueError("boom")

    for exercise in (check.patchify, check.attention, check.bce_loss, check.solarize, check.mixup, check.lr_scaling,
                     check.mass_mask, check.jaccard, check.dino_loss):
        result = exercise(fails)
        assert not result and "raised ValueError: boom" in result.message, exercise.__name__
