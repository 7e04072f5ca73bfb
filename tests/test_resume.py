"""A run interrupted anywhere and resumed ends with the same weights, bit for bit, as a run never interrupted."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vitedu
from vitedu.data.loader import Loader, TensorLoader
from vitedu.train import TrainConfig, checkpoint, fit

# Every source of randomness a recipe has: per-image augmentation drawing from torch, numpy and python RNGs, Mixup,
# stochastic depth, an EMA, LAMB, and periodic mid-epoch checkpoints.
RUN_SCRIPT = textwrap.dedent("""
    import random, sys, time
    import numpy as np
    import torch
    import vitedu
    from vitedu.data.loader import Loader
    from vitedu.train import TrainConfig, fit

    class Noisy(torch.utils.data.Dataset):
        def __init__(self, n=48, delay=0.0):
            g = torch.Generator().manual_seed(0)
            self.x, self.y, self.delay = torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 4, delay
        def __len__(self):
            return len(self.y)
        def __getitem__(self, i):
            time.sleep(self.delay)
            shift = random.randint(-2, 2)
            x = torch.roll(self.x[i], shift, dims=-1) + 0.1 * torch.randn(1, 28, 28) + float(np.random.rand())
            return x, self.y[i]

    CONFIG = TrainConfig(epochs=3, batch_size=8, lr=2e-3, optimizer="lamb", loss="bce", mixup_alpha=0.8,
                         cutmix_alpha=1.0, label_smoothing=0.1, ema_decay=0.9, warmup_epochs=1, seed=0)

    def train(output_dir, resume=False, delay=0.0, checkpoint_every=1):
        torch.manual_seed(0)
        model = vitedu.create_model("vit_pico_patch4_28", num_classes=4, depth=2, drop_path_rate=0.2)
        loader = Loader(Noisy(delay=delay), CONFIG.batch_size, shuffle=True, seed=CONFIG.seed, drop_last=True)
        return model, fit(model, loader, config=CONFIG, output_dir=output_dir, resume=resume,
                          checkpoint_every=checkpoint_every)

    if __name__ == "__main__":
        train(sys.argv[1], delay=float(sys.argv[2]))
""")


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    (folder / "run_for_test.py").write_text(RUN_SCRIPT)
    sys.path.insert(0, str(folder))
    import run_for_test

    yield folder / "run_for_test.py", run_for_test
    sys.path.remove(str(folder))
    sys.modules.pop("run_for_test", None)


@pytest.fixture(scope="module")
def reference(script, tmp_path_factory):
    """The uninterrupted run: its final weights and history."""
    _, run = script
    out = tmp_path_factory.mktemp("uninterrupted")
    model, history = run.train(out)
    return load_file(str(out / "model.safetensors")), load_file(str(out / "ema.safetensors")), history


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class Interrupt(Exception):
    pass


def test_resume_after_an_exception_mid_epoch(script, reference, tmp_path):
    _, run = script
    ref_model, ref_ema, ref_history = reference
    calls = {"n": 0}
    original = run.Noisy.__getitem__

    def flaky(self, i):  # dies while loading the 4th batch of epoch 2 (6 batches an epoch), between two checkpoints
        calls["n"] += 1
        if calls["n"] == (6 + 3) * 8 + 5:
            raise Interrupt
        return original(self, i)

    run.Noisy.__getitem__ = flaky
    try:
        with pytest.raises(Interrupt):
            run.train(tmp_path, checkpoint_every=2)
    finally:
        run.Noisy.__getitem__ = original
    state = torch.load(checkpoint.latest(tmp_path) / "state.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 2)  # the last checkpoint was inside epoch 2
    # Randomness drawn after the crash must not matter: the checkpoint brings every RNG back.
    torch.rand(5), np.random.rand(3), random.random()
    model, history = run.train(tmp_path, resume=True, checkpoint_every=2)
    assert_same_weights(load_file(str(tmp_path / "model.safetensors")), ref_model)
    assert_same_weights(load_file(str(tmp_path / "ema.safetensors")), ref_ema)
    assert history.step_losses == ref_history.step_losses
    assert [e["train_loss"] for e in history.epochs] == [e["train_loss"] for e in ref_history.epochs]
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 3


def test_resume_after_sigkill_at_a_random_moment(script, reference, tmp_path):
    path, run = script
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    process = subprocess.Popen([sys.executable, str(path), str(tmp_path), "0.004"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and process.poll() is None:  # kill once a few checkpoints are written
            found = checkpoint.latest(tmp_path) if (tmp_path / "checkpoints" / "latest").exists() else None
            if found is not None and int(found.name.split("-")[1]) >= 8:
                break
            time.sleep(0.01)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(random.Random().uniform(0, 0.1))  # anywhere, including in the middle of writing a checkpoint
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert not (tmp_path / "model.safetensors").exists()  # it really died before the end
    run.train(tmp_path, resume=True)
    assert_same_weights(load_file(str(tmp_path / "model.safetensors")), reference[0])
    assert_same_weights(load_file(str(tmp_path / "ema.safetensors")), reference[1])


def test_an_existing_run_is_never_overwritten(script, reference, tmp_path):
    _, run = script
    run.train(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="resume=True"):
        run.train(tmp_path)
    other = vitedu.create_model("resmlp_pico_32", num_classes=4)
    loader = TensorLoader(torch.rand(16, 3, 32, 32), torch.arange(16) % 4, 8)
    with pytest.raises(ValueError, match="not a"):
        fit(other, loader, config=run.CONFIG, output_dir=tmp_path, resume=True)
    assert (tmp_path / "model.safetensors").read_bytes() == before


def test_a_checkpoint_of_another_shape_is_refused(script, tmp_path):
    _, run = script
    run.train(tmp_path)
    wider = vitedu.create_model("vit_pico_patch4_28", num_classes=4, depth=3)
    loader = TensorLoader(torch.rand(16, 1, 28, 28), torch.arange(16) % 4, 8)
    with pytest.raises(ValueError, match="does not fit"):
        fit(wider, loader, config=run.CONFIG, output_dir=tmp_path, resume=True)


def test_tensor_loader_with_batch_transform_resumes_exactly(tmp_path):
    x, y = torch.rand(40, 1, 28, 28), torch.arange(40) % 2

    def jitter(batch):  # a batch-level augmentation drawing from the global RNG
        return batch + 0.05 * torch.randn_like(batch)

    config = TrainConfig(epochs=2, batch_size=8, lr=1e-3, seed=0)

    def train(out, fail_at=None, resume=False):
        torch.manual_seed(0)
        model = vitedu.create_model("vit_pico_patch4_28", num_classes=2, depth=1)
        loader = TensorLoader(x, y, 8, shuffle=True, transform=jitter)
        if fail_at is not None:
            def stop(batch, n=[0]):
                n[0] += 1
                if n[0] == fail_at:
                    raise Interrupt
                return jitter(batch)
            loader.transform = stop
        fit(model, loader, config=config, output_dir=out, resume=resume, checkpoint_every=3)
        return load_file(str(out / "model.safetensors"))

    reference = train(tmp_path / "a")
    with pytest.raises(Interrupt):
        train(tmp_path / "b", fail_at=8)
    assert_same_weights(train(tmp_path / "b", resume=True), reference)


def test_loader_order_is_a_function_of_seed_and_epoch():
    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 30

        def __getitem__(self, i):
            return torch.tensor([float(i), torch.rand(()).item()]), i

    loader = Loader(Items(), 4, shuffle=True, seed=1)
    loader.set_epoch(2)
    full = torch.cat([x for x, _ in loader.iter_from(0)])
    tail = torch.cat([x for x, _ in loader.iter_from(3)])
    assert torch.equal(full[12:], tail)  # same images, same augmentation draws
    assert sorted(full[:, 0].long().tolist()) == list(range(30))
    loader.set_epoch(3)
    assert not torch.equal(torch.cat([x for x, _ in loader.iter_from(0)]), full)
    repeated = Loader(Items(), 6, shuffle=True, seed=1, repeats=3)
    indices = torch.cat([x for x, _ in repeated.iter_from(0)])[:, 0].long().tolist()
    assert len(indices) == 30 and len(set(indices)) == 10  # each image three times, differently augmented
    halves = [Loader(Items(), 5, shuffle=True, seed=1, num_replicas=2, rank=r) for r in (0, 1)]
    parts = [set(torch.cat([x for x, _ in h.iter_from(0)])[:, 0].long().tolist()) for h in halves]
    assert not parts[0] & parts[1] and len(parts[0] | parts[1]) == 30
