import json
import math

import pytest
import torch

import vitedu
from vitedu.data.loader import TensorLoader
from vitedu.train import TrainConfig, evaluate, fit, learning_rate, param_groups


def two_blobs(n=256, seed=0):
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=generator)
    x = torch.randn(n, 1, 28, 28, generator=generator) * 0.5
    x[y == 1, :, :14] += 1.0  # class 1 is brighter in the top half
    return x, y


def test_schedule_warms_up_then_decays():
    rates = [learning_rate(s, total_steps=100, warmup_steps=10, lr=1.0, min_lr=0.01, warmup_lr=0.0) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))
    assert rates[-1] == pytest.approx(0.01, abs=0.01)
    assert learning_rate(0, 100, 10, lr=1.0, warmup_lr=0.5) == pytest.approx(0.55)
    assert learning_rate(0, 100, 0, lr=1.0) == pytest.approx(1.0)  # no warm-up: start at the peak


def test_no_weight_decay_on_biases_norms_and_tokens():
    model = vitedu.create_model("vit_pico_patch4_28")
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"cls_token", "pos_embed", "norm.weight", "head.bias"} <= skipped
    assert all(p.ndim > 1 for p in decay["params"]) and decay["weight_decay"] == 0.05


def test_fit_learns_and_logs(tmp_path):
    torch.manual_seed(0)
    x, y = two_blobs()
    model = vitedu.create_model("vit_pico_patch4_28", num_classes=2, depth=1)
    before = evaluate(model, TensorLoader(x, y, 64))["acc"]
    seen = []
    history = fit(model, TensorLoader(x, y, 32, shuffle=True), TensorLoader(x, y, 64), epochs=3, lr=3e-3,
                  log_path=tmp_path / "log.jsonl", callbacks=[lambda h: seen.append(len(h.epochs))])
    assert history.last["val_acc"] > 0.95 and history.last["val_acc"] > before
    assert seen == [1, 2, 3] and len(history.step_losses) == 3 * 8
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3] and math.isclose(lines[-1]["val_acc"], history.last["val_acc"])


def test_fit_rejects_empty_data_and_diverging_loss():
    model = vitedu.create_model("vit_pico_patch4_28", depth=1)
    with pytest.raises(ValueError, match="empty"):
        TensorLoader(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long), 8)
    with pytest.raises(ValueError, match="no batches"):
        fit(model, [], epochs=1, lr=1e-3)
    x, y = two_blobs(32)
    with pytest.raises(FloatingPointError, match="learning rate"):
        fit(model, TensorLoader(x * float("nan"), y, 8), epochs=1, lr=1e-3)


def test_runs_are_reproducible():
    x, y = two_blobs(64)
    losses = []
    for _ in range(2):
        torch.manual_seed(1)
        model = vitedu.create_model("vit_pico_patch4_28", num_classes=2, depth=1)
        losses.append(fit(model, TensorLoader(x, y, 16, shuffle=True, seed=3), epochs=1, lr=1e-3).step_losses)
    assert losses[0] == losses[1]


def test_eval_every_skips_epochs_but_always_evaluates_the_last():
    x, y = two_blobs(64)
    model = vitedu.create_model("vit_pico_patch4_28", num_classes=2, depth=1)
    history = fit(model, TensorLoader(x, y, 16), TensorLoader(x, y, 32), epochs=5, lr=1e-3, eval_every=2)
    assert ["val_acc" in e for e in history.epochs] == [False, True, False, True, True]
    with pytest.raises(ValueError, match="eval_every"):
        fit(model, TensorLoader(x, y, 16), epochs=1, lr=1e-3, eval_every=0)


def test_weight_decay_follows_its_cosine_and_spares_the_no_decay_group():
    from vitedu.train.engine import Objective, cosine

    class NoGradient(Objective):  # zero gradients: AdamW's only change is the decoupled decay w <- w (1 - lr wd)
        def __call__(self, model, batch, epoch, ema_model):
            return (model.weight * 0).sum() + (model.bias * 0).sum(), 1

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    weight, bias = model.weight.detach().clone(), model.bias.detach().clone()
    config = TrainConfig(epochs=1, batch_size=1, lr=0.1, min_lr=0.1, warmup_epochs=0, weight_decay=0.1,
                         weight_decay_end=0.5)
    fit(model, [None] * 4, None, config, objective=NoGradient(), progress=False)
    expected = weight
    for step in range(4):
        expected = expected * (1 - 0.1 * cosine(step, 4, 0.1, 0.5))
    torch.testing.assert_close(model.weight.detach(), expected, rtol=1e-6, atol=0)
    assert torch.equal(model.bias.detach(), bias)  # biases are in the no-decay group
    assert cosine(0, 4, 0.1, 0.5) == pytest.approx(0.1) and cosine(2, 4, 0.1, 0.5) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="weight_decay_end cannot be negative"):
        config.replace(weight_decay_end=-1.0)
    with pytest.raises(ValueError, match="ema_decay_end must lie in"):
        config.replace(ema_decay_end=0.99)  # needs ema_decay


def test_clip_each_parameter_bounds_every_gradient_on_its_own():
    from vitedu.train.engine import clip_each_parameter

    big, small = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    big.grad, small.grad = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.3, 0.4])
    clip_each_parameter([big, small], 1.0)
    assert big.grad.norm().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(small.grad, torch.tensor([0.3, 0.4]))  # under the bound: untouched
