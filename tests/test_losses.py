import pytest
import timm.loss
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from vitedu.models import create_model
from vitedu.train.config import TrainConfig
from vitedu.train.losses import BinaryCrossEntropy, DistillationLoss, make_criterion, make_mixup

K = 10


def mixed_targets(batch: int = 8, smoothing: float = 0.1, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=smoothing, num_classes=K)
    _, targets = mixup(torch.randn(batch, 3, 8, 8), torch.randint(0, K, (batch,)))
    return targets.double()


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("threshold", [None, 0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_matches_timm(smoothing, threshold, reduction):
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(8, K, generator=generator, dtype=torch.float64) * 3
    labels = torch.randint(0, K, (8,), generator=generator)
    ours = BinaryCrossEntropy(smoothing, threshold, reduction)
    reference = timm.loss.BinaryCrossEntropy(smoothing=smoothing, target_threshold=threshold, reduction=reduction)
    for targets in (labels, mixed_targets(smoothing=0.1)):
        a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        loss, expected = ours(a, targets), reference(b, targets)
        torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
        loss.sum().backward()
        expected.sum().backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)


def test_bce_smoothing_values_and_threshold_make_both_mixed_classes_positive():
    logits = torch.randn(2, 4, dtype=torch.float64)
    # index targets with smoothing 0.2 over 4 classes: off 0.05, on 0.85
    expected = torch.tensor([[0.05, 0.85, 0.05, 0.05], [0.05, 0.05, 0.05, 0.85]], dtype=torch.float64)
    torch.testing.assert_close(BinaryCrossEntropy(0.2)(logits, torch.tensor([1, 3])),
                               F.binary_cross_entropy_with_logits(logits, expected))
    # a 70/30 mix of classes 0 and 2: with threshold 0 both count as present
    mixed = torch.tensor([[0.7, 0.0, 0.3, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    multi_hot = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(BinaryCrossEntropy(target_threshold=0.0)(logits, mixed),
                               F.binary_cross_entropy_with_logits(logits, multi_hot))
    # dense targets are not smoothed again
    torch.testing.assert_close(BinaryCrossEntropy(0.2)(logits, mixed),
                               F.binary_cross_entropy_with_logits(logits, mixed))


def test_bce_rejects_bad_input():
    with pytest.raises(ValueError, match="dense targets of shape"):
        BinaryCrossEntropy()(torch.randn(4, K), torch.zeros(4, K + 1))
    with pytest.raises(ValueError, match="smoothing"):
        BinaryCrossEntropy(smoothing=1.0)
    with pytest.raises(ValueError, match="reduction"):
        BinaryCrossEntropy(reduction="avg")


def deit_distillation_reference(base, teacher, kind, alpha, tau, inputs, outputs, labels):
    """deit/losses.py DistillationLoss.forward, as quoted in the notes (section 0.2)."""
    outputs_kd = None
    if not isinstance(outputs, torch.Tensor):
        outputs, outputs_kd = outputs
    base_loss = base(outputs, labels)
    if kind == "none":
        return base_loss
    with torch.no_grad():
        teacher_outputs = teacher(inputs)
    if kind == "soft":
        T = tau
        distillation_loss = F.kl_div(F.log_softmax(outputs_kd / T, dim=1), F.log_softmax(teacher_outputs / T, dim=1),
                                     reduction="sum", log_target=True) * (T * T) / outputs_kd.numel()
    else:
        distillation_loss = F.cross_entropy(outputs_kd, teacher_outputs.argmax(dim=1))
    return base_loss * (1 - alpha) + distillation_loss * alpha


def make_teacher(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    # BatchNorm and Dropout make train mode visibly different from eval mode
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.Linear(16, K))


@pytest.mark.parametrize("kind,alpha,tau", [("hard", 0.5, 1.0), ("hard", 0.3, 1.0), ("soft", 0.5, 1.0),
                                            ("soft", 0.7, 3.0)])
@pytest.mark.parametrize("soft_targets", [False, True])
def test_distillation_matches_deit(kind, alpha, tau, soft_targets):
    teacher = make_teacher()
    reference_teacher = make_teacher().eval()
    base = SoftTargetCrossEntropy() if soft_targets else nn.CrossEntropyLoss(label_smoothing=0.1)
    criterion = DistillationLoss(base, teacher, kind, alpha, tau).train()
    assert not teacher.training  # train() on the loss keeps the teacher in eval mode
    generator = torch.Generator().manual_seed(2)
    inputs = torch.randn(8, 3, 2, 2, generator=generator)
    cls_logits = torch.randn(8, K, generator=generator, requires_grad=True)
    dist_logits = torch.randn(8, K, generator=generator, requires_grad=True)
    targets = mixed_targets().float() if soft_targets else torch.randint(0, K, (8,), generator=generator)
    loss = criterion(inputs, (cls_logits, dist_logits), targets)
    expected = deit_distillation_reference(base, reference_teacher, kind, alpha, tau, inputs,
                                           (cls_logits, dist_logits), targets)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    loss.backward()
    assert cls_logits.grad is not None and dist_logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_distillation_none_passes_through_and_tuple_errors():
    base = nn.CrossEntropyLoss()
    logits, dist = torch.randn(4, K), torch.randn(4, K)
    labels = torch.arange(4)
    criterion = DistillationLoss(base)
    torch.testing.assert_close(criterion(None, logits, labels), base(logits, labels))
    torch.testing.assert_close(criterion(None, (logits, dist), labels), base(logits, labels))
    with pytest.raises(ValueError, match=r"deit_tiny_distilled_patch16_224.*distilled_training = True"):
        DistillationLoss(base, make_teacher(), "hard")(torch.randn(4, 3, 2, 2), logits, labels)
    with pytest.raises(ValueError, match="needs a teacher"):
        DistillationLoss(base, None, "soft")
    with pytest.raises(ValueError, match="distillation is 'none'"):
        DistillationLoss(base, make_teacher(), "none")
    with pytest.raises(ValueError, match="kind"):
        DistillationLoss(base, make_teacher(), "medium")


def test_distillation_with_a_distilled_vitedu_model():
    torch.manual_seed(0)
    model = create_model("deit_pico_distilled_patch4_32", num_classes=K).train()
    teacher = create_model("vit_pico_patch4_28", in_chans=3, img_size=32, num_classes=K)
    criterion = make_criterion(TrainConfig(distillation="hard"), teacher)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="distilled_training"):
        criterion(x, model(x), y)
    model.distilled_training = True
    outputs = model(x)
    assert isinstance(outputs, tuple)
    criterion(x, outputs, y).backward()
    assert model.head_dist.weight.grad is not None


def test_make_criterion_bases():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(8, K, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, K, (8,), generator=generator)

    ce = make_criterion(TrainConfig(label_smoothing=0.1))
    assert isinstance(ce, DistillationLoss) and ce.kind == "none"
    torch.testing.assert_close(ce(None, logits, labels), F.cross_entropy(logits, labels, label_smoothing=0.1))

    mixed = mixed_targets()
    soft_ce = make_criterion(TrainConfig(label_smoothing=0.1, mixup_alpha=0.8))
    assert isinstance(soft_ce.base, SoftTargetCrossEntropy)
    torch.testing.assert_close(soft_ce(None, logits, mixed), (-mixed * logits.log_softmax(1)).sum(1).mean())

    bce = make_criterion(TrainConfig(loss="bce", label_smoothing=0.1, bce_target_threshold=0.2))
    assert isinstance(bce.base, BinaryCrossEntropy) and bce.base.smoothing == 0.1 and bce.base.target_threshold == 0.2
    bce_mix = make_criterion(TrainConfig(loss="bce", label_smoothing=0.1, cutmix_alpha=1.0))
    assert bce_mix.base.smoothing == 0.0 and bce_mix.base.target_threshold is None
    torch.testing.assert_close(bce_mix(None, logits, mixed), F.binary_cross_entropy_with_logits(logits, mixed))


def test_make_criterion_distillation():
    config = TrainConfig(distillation="soft", distillation_alpha=0.25, distillation_tau=2.0)
    with pytest.raises(ValueError, match="needs a teacher"):
        make_criterion(config)
    criterion = make_criterion(config, make_teacher())
    assert (criterion.kind, criterion.alpha, criterion.tau) == ("soft", 0.25, 2.0)


def test_make_mixup():
    assert make_mixup(TrainConfig(), K) is None
    config = TrainConfig(mixup_alpha=0.8, cutmix_alpha=1.0, mixup_switch_prob=0.25, label_smoothing=0.1, batch_size=8)
    mixup = make_mixup(config, K)
    assert isinstance(mixup, Mixup)
    assert (mixup.mixup_alpha, mixup.cutmix_alpha, mixup.mix_prob, mixup.switch_prob, mixup.mode) == (
        0.8, 1.0, 1.0, 0.25, "batch")
    assert (mixup.label_smoothing, mixup.num_classes) == (0.1, K)
    torch.manual_seed(0)
    images, targets = mixup(torch.rand(8, 1, 28, 28), torch.randint(0, K, (8,)))
    assert images.shape == (8, 1, 28, 28) and targets.shape == (8, K)
    torch.testing.assert_close(targets.sum(1), torch.ones(8))
    assert targets.min() >= 0.1 / K - 1e-7  # smoothed: no class has target 0
    with pytest.raises(ValueError, match="number of classes"):
        make_mixup(config, None)
