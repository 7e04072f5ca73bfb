"""DINO building blocks (vitedu.ssl) against direct, loop-based implementations of the paper's and official code's
formulas (facebookresearch/dino: main_dino.py, utils.py, vision_transformer.py, eval_knn.py)."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from vitedu.data.loader import Loader
from vitedu.data.transforms import TensorImages
from vitedu.models import create_model
from vitedu.models.vit import vit_pico_patch4_32
from vitedu.ssl import (
    DINOHead,
    DINOLoss,
    DINOObjective,
    GaussianBlur,
    MultiCropAugmentation,
    MultiCropWrapper,
    Solarization,
    cancel_last_layer_gradients,
    extract_features,
    knn_accuracy,
    knn_classify,
    knn_scores,
    linear_probe,
)
from vitedu.train import TrainConfig, fit
from vitedu.train.engine import cosine

# ---------------------------------------------------------------------------------------------------------------------
# DINOLoss
# ---------------------------------------------------------------------------------------------------------------------


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    return [e / sum(exps) for e in exps]


def _reference_loss(student, teacher, center, n_crops, student_temp, teacher_temp):
    """Paper eq. 2 / Algorithm 1, one image and one pair of views at a time, in float64 python."""
    batch = student.shape[0] // n_crops
    student, teacher, center = student.double().tolist(), teacher.double().tolist(), center.double().tolist()[0]
    terms, entropies, kls = [], [], []
    for b in range(batch):
        for i in range(2):  # the teacher sees the 2 global views only
            t_row = teacher[i * batch + b]
            q = _softmax([(t - c) / teacher_temp for t, c in zip(t_row, center)])
            entropies.append(-sum(p * math.log(p) for p in q if p > 0))
            for v in range(n_crops):
                if v == i:
                    continue
                p = _softmax([s / student_temp for s in student[v * batch + b]])
                terms.append(-sum(qk * math.log(pk) for qk, pk in zip(q, p)))
                kls.append(sum(qk * math.log(qk / pk) for qk, pk in zip(q, p) if qk > 0))
    return sum(terms) / len(terms), sum(entropies) / len(entropies), sum(kls) / len(kls)


def _outputs(n_crops=4, batch=3, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(n_crops * batch, dim, generator=g) * 2
    teacher = torch.randn(2 * batch, dim, generator=g) * 2
    return student, teacher


def test_loss_matches_loop_reference_with_warmup_temperature_and_centre():
    n_crops, batch, dim = 4, 3, 6
    student, teacher = _outputs(n_crops, batch, dim)
    loss_fn = DINOLoss(dim, n_crops, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=4,
                       epochs=10, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.copy_(torch.linspace(-1, 1, dim).unsqueeze(0))  # a non-zero centre must be subtracted
    centre_before = loss_fn.center.clone()
    epoch = 1
    tau_t = 0.04 + (0.07 - 0.04) * epoch / 3  # linspace(0.04, 0.07, 4)[1]
    ref_loss, ref_entropy, ref_kl = _reference_loss(student, teacher, centre_before, n_crops, 0.1, tau_t)

    monitored = loss_fn.collapse_metrics(student, teacher, epoch)  # before forward: same centre
    loss = loss_fn(student, teacher, epoch)

    assert loss.item() == pytest.approx(ref_loss, rel=1e-5)
    assert monitored["teacher_entropy"] == pytest.approx(ref_entropy, rel=1e-5)
    assert monitored["kl"] == pytest.approx(ref_kl, rel=1e-4, abs=1e-6)
    assert loss_fn.last_metrics["teacher_entropy"].item() == pytest.approx(ref_entropy, rel=1e-5)
    assert loss_fn.last_metrics["kl"].item() == pytest.approx(ref_kl, rel=1e-4, abs=1e-5)
    # centre update (eq. 4): c <- 0.9 c + 0.1 * mean of the teacher outputs
    expected_centre = 0.9 * centre_before + 0.1 * teacher.mean(0, keepdim=True)
    torch.testing.assert_close(loss_fn.center, expected_centre)


def test_loss_gradient_flows_to_student_only():
    student, teacher = _outputs()
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    DINOLoss(6, 4, epochs=40)(student, teacher, 0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None  # the teacher is a stop-gradient target


def test_teacher_temperature_schedule_follows_its_definition():
    loss_fn = DINOLoss(8, 2, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=30, epochs=100)
    temps = [loss_fn.teacher_temp(e) for e in range(100)]
    for e in range(30):
        assert temps[e] == pytest.approx(0.04 + (0.07 - 0.04) * e / 29)  # linear warm-up, ends on 0.07
    assert temps[30:] == [pytest.approx(0.07)] * 70
    with pytest.raises(ValueError, match="epochs="):
        loss_fn.teacher_temp(100)
    with pytest.raises(ValueError, match="warm-up"):
        DINOLoss(8, 2, warmup_teacher_temp_epochs=30, epochs=10)


def test_centre_is_an_ema_of_batch_means_and_is_saved():
    loss_fn = DINOLoss(5, 2, epochs=3, warmup_teacher_temp_epochs=1, center_momentum=0.9)
    expected = torch.zeros(1, 5)
    for step in range(3):
        student, teacher = _outputs(2, 4, 5, seed=step)
        loss_fn(student, teacher, step)
        expected = 0.9 * expected + 0.1 * teacher.mean(0, keepdim=True)
        torch.testing.assert_close(loss_fn.center, expected)
    restored = DINOLoss(5, 2, epochs=3, warmup_teacher_temp_epochs=1)
    restored.load_state_dict(loss_fn.state_dict())
    torch.testing.assert_close(restored.center, expected)


def test_centre_update_runs_under_torch_distributed(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        loss_fn = DINOLoss(6, 4, epochs=40)
        student, teacher = _outputs(4, 3, 6)
        loss_fn(student, teacher, 0)  # all-reduces the batch sum; one process: the local mean
        torch.testing.assert_close(loss_fn.center, 0.1 * teacher.mean(0, keepdim=True))
    finally:
        dist.destroy_process_group()


def test_uniform_teacher_has_maximal_entropy():
    dim = 7
    loss_fn = DINOLoss(dim, 2, epochs=1, warmup_teacher_temp_epochs=0)
    student, _ = _outputs(2, 3, dim)
    metrics = loss_fn.collapse_metrics(student, torch.ones(6, dim), 0)  # collapse to the uniform distribution
    assert metrics["teacher_entropy"] == pytest.approx(math.log(dim), rel=1e-6)


def test_loss_rejects_bad_shapes():
    loss_fn = DINOLoss(6, 4, epochs=40)
    student, teacher = _outputs(4, 3, 6)
    with pytest.raises(ValueError, match="images\\[:2\\]"):
        loss_fn(student, student, 0)  # teacher given all views
    with pytest.raises(ValueError, match="out_dim=6"):
        loss_fn(student[:, :5], teacher[:, :5], 0)
    with pytest.raises(ValueError, match="n_crops"):
        DINOLoss(6, 1, epochs=10)


# ---------------------------------------------------------------------------------------------------------------------
# Schedules and EMA
# ---------------------------------------------------------------------------------------------------------------------


def _official_cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0):
    # utils.py cosine_scheduler, verbatim
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
    schedule = np.concatenate((warmup_schedule, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


@pytest.mark.parametrize("args", [(0.04, 0.4, 10, 5), (0.996, 1.0, 9, 4), (1.0, 0.1, 6, 3)])
def test_engine_cosine_is_the_official_schedule_without_warmup(args):
    start, end, epochs, steps_per_epoch = args
    ours = [cosine(step, epochs * steps_per_epoch, start, end) for step in range(epochs * steps_per_epoch)]
    np.testing.assert_allclose(ours, _official_cosine_scheduler(*args), rtol=0, atol=1e-15)


def _dino_run(tmp_path, name, epochs=2, stop_after=None, resume=False):
    """A tiny DINO run through vitedu.train.fit: 8 images of 16 px, 2 global (16 px) + 2 local (8 px) crops, one
    step per epoch; ``stop_after``: interrupt after that many epochs (after the checkpoint, as a crash would)."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8)
    augment = MultiCropAugmentation(16, 8, local_crops=2, mean=(0.5,), std=(0.25,), blur_radius=(0.1, 0.2))
    loader = Loader(TensorImages(images, torch.zeros(8, dtype=torch.long), augment), 8, shuffle=True, seed=0)
    backbone = create_model("vit_pico_patch4_32", img_size=16, in_chans=1, num_classes=0)
    model = MultiCropWrapper(backbone, DINOHead(backbone.num_features, 32, hidden_dim=16, bottleneck_dim=8))
    objective = DINOObjective(DINOLoss(32, n_crops=4, epochs=epochs, warmup_teacher_temp_epochs=1))
    config = TrainConfig(epochs=epochs, batch_size=8, lr=1e-3, warmup_epochs=0, weight_decay=0.04,
                         weight_decay_end=0.4, ema_decay=0.9, ema_decay_end=1.0, grad_clip=3.0, clip_mode="param",
                         crop="none", augment="none")

    def crash(history):
        if stop_after is not None and len(history.epochs) == stop_after:
            raise KeyboardInterrupt

    try:
        fit(model, loader, None, config, output_dir=tmp_path / name, resume=resume, objective=objective,
            callbacks=[crash], progress=False)
    except KeyboardInterrupt:
        pass
    return model, objective


def test_a_dino_run_resumes_to_the_same_student_teacher_and_centre(tmp_path):
    from safetensors.torch import load_file

    whole, whole_objective = _dino_run(tmp_path, "whole")
    _dino_run(tmp_path, "parts", stop_after=1)
    parts, parts_objective = _dino_run(tmp_path, "parts", resume=True)
    for (name, a), b in zip(whole.state_dict().items(), parts.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(whole_objective.loss.center, parts_objective.loss.center)
    assert whole_objective.loss.center.abs().sum() > 0  # the centre moved, so resuming had to restore it
    logs = [[json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
            for run in ("whole", "parts")]
    for whole_epoch, parts_epoch in zip(*logs, strict=True):  # the collapse metrics survive the interruption
        assert whole_epoch["teacher_entropy"] == parts_epoch["teacher_entropy"] > 0
        assert whole_epoch["kl"] == parts_epoch["kl"]
    teachers = [load_file(tmp_path / run / "ema.safetensors") for run in ("whole", "parts")]
    assert teachers[0].keys() == teachers[1].keys() and all(torch.equal(teachers[0][k], teachers[1][k])
                                                            for k in teachers[0])


def test_dino_needs_its_teacher():
    batch = ([torch.zeros(2, 1, 16, 16)] * 2, torch.zeros(2))
    with pytest.raises(ValueError, match="EMA of the student"):
        DINOObjective(DINOLoss(8, n_crops=2, epochs=1, warmup_teacher_temp_epochs=0))(nn.Linear(1, 1), batch, 0, None)


def test_objectives_refuse_supervised_only_settings():
    model = nn.Linear(2, 2)
    loader = [(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))]
    with pytest.raises(ValueError, match="belong to the supervised loss"):
        fit(model, loader, None, TrainConfig(epochs=1, mixup_alpha=0.8, ema_decay=0.9),
            objective=DINOObjective(DINOLoss(2, n_crops=2, epochs=1, warmup_teacher_temp_epochs=0)), progress=False)


# ---------------------------------------------------------------------------------------------------------------------
# Head and wrapper
# ---------------------------------------------------------------------------------------------------------------------


def test_dino_head_normalises_and_fixes_the_last_layer_norm():
    torch.manual_seed(0)
    head = DINOHead(16, 32, hidden_dim=24, bottleneck_dim=8, nlayers=3, norm_last_layer=True)
    seen = {}
    head.last_layer.register_forward_pre_hook(lambda module, args: seen.update(x=args[0]))
    out = head(torch.randn(5, 16) * 10)
    assert out.shape == (5, 32)
    torch.testing.assert_close(seen["x"].norm(dim=-1), torch.ones(5))
    g = head.last_layer.parametrizations.weight.original0
    assert torch.equal(g, torch.ones(32, 1)) and not g.requires_grad
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(32))  # rows are unit prototypes
    assert [type(m) for m in head.mlp] == [nn.Linear, nn.GELU, nn.Linear, nn.GELU, nn.Linear]
    assert all(m.bias.abs().sum() == 0 and m.weight.abs().max() <= 2 for m in head.mlp if isinstance(m, nn.Linear))
    assert head.mlp[2].weight.std().item() == pytest.approx(0.02, rel=0.15)  # trunc_normal_(std=.02)
    assert DINOHead(16, 32, hidden_dim=24, bottleneck_dim=8, norm_last_layer=False).last_layer.parametrizations \
        .weight.original0.requires_grad


def test_cancel_last_layer_gradients_only_in_frozen_epochs():
    torch.manual_seed(0)
    head = DINOHead(6, 10, hidden_dim=8, bottleneck_dim=4, norm_last_layer=False)
    for epoch, expect_none in ((0, True), (1, False)):
        head.zero_grad(set_to_none=True)
        head(torch.randn(3, 6)).pow(2).sum().backward()
        cancel_last_layer_gradients(head, epoch, freeze_last_layer_epochs=1)
        for name, p in head.named_parameters():
            assert (p.grad is None) == (expect_none and "last_layer" in name), name


def test_multicrop_wrapper_groups_by_resolution_without_changing_outputs():
    torch.manual_seed(0)
    backbone = vit_pico_patch4_32(num_classes=0).eval()
    head = DINOHead(backbone.embed_dim, 12, hidden_dim=16, bottleneck_dim=8)
    model = MultiCropWrapper(backbone, head).eval()
    crops = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)]
    out = model(crops)
    assert out.shape == (8, 12)
    with torch.no_grad():
        one_at_a_time = torch.cat([head(backbone.forward_head(backbone.forward_features(c), pre_logits=True))
                                   for c in crops])
    torch.testing.assert_close(out, one_at_a_time, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Multi-crop augmentation
# ---------------------------------------------------------------------------------------------------------------------


def _image(mode: str, size: int = 40) -> Image.Image:
    rng = np.random.default_rng(0)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("L", 1)])
def test_multicrop_views_have_the_right_number_shapes_and_channels(mode, channels):
    torch.manual_seed(0)
    aug = MultiCropAugmentation(32, 16, local_crops=3, mean=(0.5,) * channels, std=(0.25,) * channels,
                                blur_radius=(0.01, 0.3))
    for _ in range(5):  # several draws, so the random ops (jitter, grayscale, solarization) all get a chance to run
        views = aug(_image(mode))
        assert [tuple(v.shape) for v in views] == [(channels, 32, 32)] * 2 + [(channels, 16, 16)] * 3
        assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)


def test_multicrop_view_specific_ops_follow_the_paper():
    aug = MultiCropAugmentation(32, 16)
    global1, global2, local = (t.transforms for t in aug.transforms["RGB"])
    blur = [[(op.p, op.radius) for op in ts if isinstance(op, GaussianBlur)] for ts in (global1, global2, local)]
    assert blur == [[(1.0, (0.1, 2.0))], [(0.1, (0.1, 2.0))], [(0.5, (0.1, 2.0))]]
    assert [[op.p for op in ts if isinstance(op, Solarization)] for ts in (global1, global2, local)] == [[], [0.2], []]
    assert global1[0].scale == (0.4, 1.0) and local[0].scale == (0.05, 0.4)


def test_multicrop_rejects_mismatched_stats_and_modes():
    aug = MultiCropAugmentation(32, 16, local_crops=1)  # ImageNet's 3-channel statistics
    with pytest.raises(ValueError, match="mean and std with 1 value"):
        aug(_image("L"))
    with pytest.raises(ValueError, match="convert"):
        aug(_image("RGB").convert("RGBA"))


# ---------------------------------------------------------------------------------------------------------------------
# k-NN and linear evaluation
# ---------------------------------------------------------------------------------------------------------------------


def _brute_force_knn(train, labels, test, k, temperature, num_classes):
    scores = torch.zeros(len(test), num_classes, dtype=torch.float64)
    for n, query in enumerate(test.double()):
        sims = [float(query @ x.double() / (query.norm() * x.double().norm())) for x in train]
        for i in sorted(range(len(train)), key=lambda j: -sims[j])[:k]:
            scores[n, int(labels[i])] += math.exp(sims[i] / temperature)
    return scores


def test_knn_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(40, 5, generator=g) * 3, torch.randn(13, 5, generator=g)
    labels = torch.randint(0, 4, (40,), generator=g)
    reference = _brute_force_knn(train, labels, test, k=7, temperature=0.5, num_classes=4)
    scores = knn_scores(train, labels, test, k=7, temperature=0.5, batch_size=4)
    torch.testing.assert_close(scores.double(), reference, rtol=1e-5, atol=1e-6)
    assert torch.equal(knn_classify(train, labels, test, k=7, temperature=0.5, batch_size=4), reference.argmax(1))
    test_labels = reference.argmax(1)
    test_labels[:3] = (test_labels[:3] + 1) % 4  # 3 of 13 wrong
    assert knn_accuracy(train, labels, test, test_labels, k=7, temperature=0.5) == pytest.approx(10 / 13)


def test_knn_rejects_bad_input():
    train, labels, test = torch.randn(10, 4), torch.arange(10) % 2, torch.randn(3, 4)
    with pytest.raises(ValueError, match="lower k"):
        knn_classify(train, labels, test, k=11)
    with pytest.raises(ValueError, match="same dimension"):
        knn_classify(train, labels, torch.randn(3, 5), k=3)
    with pytest.raises(ValueError, match="integer class indices"):
        knn_classify(train, labels.float(), test, k=3)
    with pytest.raises(ValueError, match="one class index per training"):
        knn_classify(train, labels[:5], test, k=3)


def _blobs(n_per_class, seed, num_classes=4, dim=16):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(dim)[:num_classes] * 4
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    return centres[labels] + torch.randn(len(labels), dim, generator=g), labels


def test_linear_probe_separates_blobs_deterministically():
    (x_train, y_train), (x_test, y_test) = _blobs(50, seed=0), _blobs(25, seed=1)
    accuracy, layer = linear_probe(x_train, y_train, x_test, y_test, epochs=8, lr=0.1, batch_size=50, scale_lr=False)
    assert accuracy >= 0.95
    again, layer2 = linear_probe(x_train, y_train, x_test, y_test, epochs=8, lr=0.1, batch_size=50, scale_lr=False)
    assert again == accuracy and torch.equal(layer.weight, layer2.weight)
    with pytest.raises(ValueError, match="same dimension"):
        linear_probe(x_train, y_train, x_test[:, :8], y_test)


def test_extract_features_gives_normalised_class_tokens_and_restores_mode():
    torch.manual_seed(0)
    model = vit_pico_patch4_32(num_classes=0).train()
    images, labels = torch.randn(6, 3, 32, 32), torch.arange(6)
    loader = [(images[:4], labels[:4]), (images[4:], labels[4:])]
    features, out_labels = extract_features(model, loader)
    assert model.training and features.shape == (6, model.embed_dim) and torch.equal(out_labels, labels)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(6))
    with torch.no_grad():
        expected = model.eval().forward_head(model.forward_features(images), pre_logits=True)
    torch.testing.assert_close(features, torch.nn.functional.normalize(expected, dim=1), rtol=1e-5, atol=1e-5)
