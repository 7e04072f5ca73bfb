"""``vitedu bench models`` and ``vitedu bench train``: how fast is vitedu on this machine's CPU?

- ``models``: each from-scratch model next to its timm twin (same architecture, same weights, from
  ``vitedu.models.convert.to_timm``), for inference (eval, no_grad) and a training step (forward + backward).
- ``train``: the training engine (``vitedu.train.fit``) next to a bare hand-written PyTorch loop doing the same maths
  on the same model, initial weights and batches: the engine's overhead (target: at most 5%), and the fraction of the
  machine's fp32 matmul peak that training reaches. Both end with the same weights, which shows that the bare loop
  is the same computation.

Both alternate the two implementations' repetitions in one loop after a warm-up, so that a change in the machine's
load (other jobs, thermal throttling) hits both alike. Both count FLOPs and measure the fp32 matmul peak, to say what
fraction of the machine a model uses.

On a machine shared with other jobs the absolute numbers move from run to run (by several times when the other
jobs take the cores); the ratio of two interleaved implementations moves much less. There, ``--threads 1`` helps:
torch's threads wait for each other at every operation, so a core taken by another job slows a two-thread step by
several times, and the time of a single run jumps around.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import platform
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .train.config import TrainConfig

# The real-size models of the book, each with its timm twin except patchconvnet_s60 (timm has no PatchConvNet).
REAL_MODELS = ["deit_small_patch16_224", "deit3_small_patch16_224", "vit_small_patch16_18x2_224", "resnet50",
               "levit_128s", "resmlp_12_224", "patchconvnet_s60"]
TASKS = ("inference", "training")
# vitedu bench train: two chapter presets and one real-size model (quick: the presets only).
TRAIN_MODELS = ["vit_pico_patch4_32", "resnet_pico_32", "deit_tiny_patch16_224"]


def is_preset(name: str) -> bool:
    """The tiny CPU presets are named ``<family>_pico_...`` / ``<family>_nano_...``."""
    return "_pico_" in name or "_nano_" in name or name.endswith(("_pico", "_nano"))


def select_models(models: list[str] | None = None, quick: bool = False) -> tuple[list[str], list[str]]:
    """(names to benchmark, names skipped because no family registers them).

    The default is the real-size models and every registered preset; ``quick`` keeps only the presets.
    """
    from .models import list_models

    registered = set(list_models())
    if models is None:
        presets = [name for name in list_models() if is_preset(name)]
        models = presets if quick else REAL_MODELS + presets
    chosen = [name for name in models if name in registered]
    return chosen, [name for name in models if name not in registered]


def input_spec(model: nn.Module, name: str) -> tuple[int, int]:
    """(channels, image side) the model is made for: its config, else the size its name ends with, else 224."""
    config = getattr(model, "config", {})
    in_chans = config.get("in_chans", 3)
    img_size = config.get("img_size")
    if img_size is None:
        match = re.search(r"_(\d+)$", name)
        img_size = int(match.group(1)) if match else 224
    if isinstance(img_size, (tuple, list)):
        img_size = img_size[0]
    return in_chans, int(img_size)


def measure_peak_gflops(n: int = 2048, repeats: int = 3) -> float:
    """The fp32 matmul rate of this machine (GFLOP/s): the best of ``repeats`` n x n x n products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up: thread pool, caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def _loss(output) -> torch.Tensor:
    if isinstance(output, (tuple, list)):  # e.g. (class, distillation) logits while training
        return sum(_loss(o) for o in output)
    target = torch.zeros(output.shape[0], dtype=torch.long)
    return F.cross_entropy(output.float(), target)


def _inference_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step():
        with torch.no_grad():
            model(x)
    return step


def _training_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step():
        model.zero_grad(set_to_none=True)
        _loss(model(x)).backward()
    return step


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """FLOPs of a convolution's backward (a FlopCounterMode formula, called with shapes): each gradient asked for,
    of the input (a transposed convolution of the output gradient with the weight) and of the weight (a convolution of
    the input with the output gradient), takes as many multiply-adds as the forward; groups included, since the
    weight's shape already divides the input channels by them."""
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def count_flops(model: nn.Module, x: torch.Tensor, training: bool) -> int:
    """FLOPs (a multiply-add counts 2) of one forward, or of forward + backward, for the batch ``x``.

    Attention is counted through the math kernel: the fused CPU kernel has no formula in FlopCounterMode.
    Convolution gradients use ``conv_backward_flops``: torch's own formula counts a grouped convolution's weight
    gradient ``groups`` times over (it put PatchConvNet's training at 6.9 times its forward FLOPs, not 3).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model.train(training)
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops})
    # Autograd stays on even for inference: under no_grad, FlopCounterMode's module tracker fails on views of
    # parameters (e.g. an expanded class token). Only the forward runs, so only forward FLOPs are counted.
    with sdpa_kernel([SDPBackend.MATH]), counter:
        output = model(x)
        if training:
            _loss(output).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def timm_twin(model: nn.Module) -> tuple[nn.Module | None, str | None, str]:
    """(timm model with ``model``'s weights, its timm class, why there is none): vitedu runs alone without a twin."""
    from .models import convert

    try:
        twin = convert.to_timm(model)
    except (TypeError, ValueError) as error:
        return None, None, f"no timm twin ({error})"
    return twin, type(twin).__name__, ""


def _interleaved_times(steps: dict[str, Callable[..., None]], warmup: int, repeats: int,
                       prepare: dict[str, Callable[[], object]] | None = None,
                       min_seconds: float = 0.0) -> dict[str, list[float]]:
    """Alternate the implementations within each repetition, and which goes first, so drift hits both.

    With ``prepare`` each repetition runs ``steps[key](prepare[key]())`` and times only the step (the preparation,
    e.g. a fresh copy of a model, is left out). Returns every timed repetition's seconds per step, per implementation.

    ``min_seconds``: a repetition calls each step as many times as make the fastest step last that long (the same
    count for every implementation, from one warm call of each), and reports the mean time of a call. A 5 ms step
    timed once rides on the scheduler's jitter; timed 100 times in a row, it does not.
    """
    if min_seconds > 0 and prepare is not None:
        raise ValueError("min_seconds calls a step several times on the same state: it cannot be used with prepare.")
    times = {key: [] for key in steps}
    order = list(steps)
    calls = 1
    if min_seconds > 0:
        one_call = []
        for key in order:
            steps[key]()  # the first call allocates and picks its kernels
            start = time.perf_counter()
            steps[key]()
            one_call.append(time.perf_counter() - start)
        calls = max(1, math.ceil(min_seconds / min(one_call)))
    for rep in range(warmup + repeats):
        for key in (order if rep % 2 == 0 else order[::-1]):
            args = (prepare[key](),) if prepare is not None else ()
            start = time.perf_counter()
            for _ in range(calls):
                steps[key](*args)
            elapsed = (time.perf_counter() - start) / calls
            if rep >= warmup:
                times[key].append(elapsed)
    return times


@contextlib.contextmanager
def _bench_session(threads: int | None, peak_size: int):
    """torch's thread count set for the run (and restored after); yields the list of matmul rates measured during the
    run, starting with one now. The machine's peak is the best of them: other jobs only ever slow a rate down."""
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield [measure_peak_gflops(peak_size)]
    finally:
        torch.set_num_threads(previous_threads)


def compare_throughput(models: dict[str, tuple[nn.Module, torch.Tensor]], training: bool = False, warmup: int = 1,
                       repeats: int = 5) -> dict[str, dict]:
    """Images per second of several models, interleaved in one run (the chapters' speed comparisons).

    ``models`` maps a name to ``(model, batch)``; each repetition runs every model once, in alternating order.
    Inference runs in eval mode under no_grad; ``training=True`` times forward + backward in train mode. Returns per
    name: ``images_per_s`` (best repetition), ``images_per_s_median`` and every repetition's seconds. Pass two names
    of the result to :func:`paired_ratio` for a ratio that cancels the machine's drifts.
    """
    if not models:
        raise ValueError("compare_throughput needs at least one (model, batch) pair.")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}.")
    make = _training_step if training else _inference_step
    for model, _ in models.values():
        model.train(training)
    times = _interleaved_times({name: make(model, x) for name, (model, x) in models.items()}, warmup, repeats)
    return {name: {"images_per_s": x.shape[0] / min(times[name]),
                   "images_per_s_median": x.shape[0] / statistics.median(times[name]), "seconds": times[name]}
            for name, (_, x) in models.items()}


def paired_ratio(ours: list[float], reference: list[float]) -> tuple[float, tuple[float, float]]:
    """Median and interquartile range of reference / ours seconds over repetitions that ran back to back (> 1: ours
    faster). A pair cancels the slow drifts of the machine's load."""
    pairs = sorted(r / o for o, r in zip(ours, reference))
    return statistics.median(pairs), _quartiles(pairs)


def training_memory(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Memory of one training step (train mode) on the batch ``x``, in bytes.

    - ``activations``: the tensors autograd keeps from the forward pass for the backward pass, each storage counted
      once and the parameters left out. This is what grows with batch and resolution, and it is exact and the same
      on every device (the CPU has no peak-memory counter).
    - ``parameters``: the weights (the gradients take as much again, the optimizer's state more).
    - ``cuda_peak`` (on CUDA only): the allocator's peak during forward + backward, for the real figure.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:  # the graph holds every packed tensor, so no address is reused
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.train()
    model.zero_grad(set_to_none=True)
    cuda = x.is_cuda
    if cuda:
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(x)
    _loss(output).backward()
    model.zero_grad(set_to_none=True)
    result = {"activations": sum(saved.values()),
              "parameters": sum(p.numel() * p.element_size() for p in model.parameters())}
    if cuda:
        torch.cuda.synchronize(x.device)
        result["cuda_peak"] = torch.cuda.max_memory_allocated(x.device)
    return result


def benchmark_models(models: list[str] | None = None, quick: bool = False, batch: int | None = None,
                     repeats: int | None = None, warmup: int = 1, threads: int | None = None,
                     peak_size: int | None = None, progress: bool = True,
                     min_seconds: float | None = None) -> list[dict]:
    """Time every model against its timm twin; one dict per (model, task), see the module docstring.

    ``quick``: batch 8, 1 repetition, presets only (seconds, for tests). Names no family registers are skipped with
    a warning. ``min_seconds`` (default 0.5, quick: 0): each repetition repeats a short step until it lasts about
    that long (see ``_interleaved_times``). Each dict holds img/s of both implementations (from the best repetition; ``*_img_s_median`` from the
    median, ``*_times_s`` every repetition), their ratio (vitedu / timm, > 1: vitedu faster), the FLOPs per image,
    the achieved GFLOP/s and its fraction of the machine's matmul peak, and ``max_abs_diff``, the
    largest logit difference of the two models in eval mode on the benchmark input (they share their weights).
    """
    from tqdm.auto import tqdm

    from .models import create_model

    batch = batch or (8 if quick else 32)
    repeats = repeats or (1 if quick else 5)
    min_seconds = (0.0 if quick else 0.5) if min_seconds is None else min_seconds
    names, skipped = select_models(models, quick)
    if skipped:
        warnings.warn(f"not registered (skipped): {', '.join(skipped)}")
    rows = []
    peak_size = peak_size or (1024 if quick else 2048)
    with _bench_session(threads, peak_size) as peaks:
        bar = tqdm(total=len(names) * len(TASKS), desc="bench", disable=not progress)
        for name in names:
            torch.manual_seed(0)
            ours = create_model(name)
            twin, timm_name, note = timm_twin(ours)
            in_chans, img_size = input_spec(ours, name)
            x = torch.randn(batch, in_chans, img_size, img_size)
            impls = {"vitedu": ours} if twin is None else {"vitedu": ours, "timm": twin}
            diff = None
            if twin is not None:
                ours.eval(), twin.eval()
                with torch.no_grad():
                    diff = (ours(x) - twin(x)).abs().max().item()
            params = sum(p.numel() for p in ours.parameters())
            for task in TASKS:
                bar.set_postfix_str(f"{name} {task}")
                training = task == "training"
                make = _training_step if training else _inference_step
                # FLOPs grow linearly with the batch: count 2 images (BatchNorm needs 2 to train) and divide.
                flops = {key: count_flops(m, x[:2], training) / 2 for key, m in impls.items()}
                for m in impls.values():
                    m.train(training)
                times = _interleaved_times({key: make(m, x) for key, m in impls.items()}, warmup, repeats,
                                           min_seconds=min_seconds)
                # The best repetition: on a shared machine, interference only ever adds time.
                ips = {key: batch / min(t) for key, t in times.items()}
                row = {"model": name, "timm_model": timm_name, "task": task, "img_size": img_size,
                       "in_chans": in_chans, "batch": batch, "repeats": repeats, "warmup": warmup, "min_seconds": min_seconds,
                       "threads": torch.get_num_threads(), "params": params, "max_abs_diff": diff, "note": note}
                for key in ("vitedu", "timm"):
                    row[f"{key}_img_s"] = ips.get(key)
                    row[f"{key}_img_s_median"] = batch / statistics.median(times[key]) if key in times else None
                    row[f"{key}_gflops_per_img"] = flops[key] / 1e9 if key in flops else None
                    row[f"{key}_gflop_s"] = flops[key] * ips[key] / 1e9 if key in ips else None
                    row[f"{key}_times_s"] = times.get(key)
                row["ratio"] = ips["vitedu"] / ips["timm"] if "timm" in ips else None
                # Its quartiles say whether a gap is larger than the noise.
                paired = paired_ratio(times["vitedu"], times["timm"]) if "timm" in times else (None, None)
                row["ratio_paired"], row["ratio_paired_iqr"] = paired
                rows.append(row)
                peaks.append(measure_peak_gflops(peak_size))
                bar.update()
            del ours, twin, impls
        bar.close()
    peak = max(peaks)
    for row in rows:
        row["peak_gflop_s"] = peak
        for key in ("vitedu", "timm"):
            row[f"{key}_peak_frac"] = None if row[f"{key}_gflop_s"] is None else row[f"{key}_gflop_s"] / peak
    return rows


def _render(lines: list[list[str]], left: int) -> str:
    """Rows of cells as aligned columns, the first ``left`` left-aligned, a rule under the header."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for k, line in enumerate(lines):
        cells = [cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))]
        out.append("  ".join(cells))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _achieved(row: dict, key: str) -> str:
    """'GFLOP/s (fraction of the peak)' of implementation ``key``."""
    if row[f"{key}_gflop_s"] is None:
        return "-"
    return f"{row[f'{key}_gflop_s']:.1f} ({100 * row[f'{key}_peak_frac']:.0f}%)"


def _quartiles(values: list[float]) -> tuple[float, float]:
    """(first, third) quartile of a sorted list; both equal the value when there is one."""
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def format_table(rows: list[dict]) -> str:
    """The results of ``benchmark_models`` as a plain-text table."""
    header = ["model", "task", "px", "batch", "GFLOP/img", "vitedu img/s", "timm img/s", "ratio",
              "paired ratio [IQR]", "vitedu GFLOP/s (peak)", "timm GFLOP/s (peak)", "max|diff|"]
    lines = [header]
    for r in rows:
        iqr = r.get("ratio_paired_iqr")
        paired = "-" if iqr is None else f"{r['ratio_paired']:.2f} [{iqr[0]:.2f}, {iqr[1]:.2f}]"
        lines.append([r["model"], r["task"], str(r["img_size"]), str(r["batch"]),
                      _num(r["vitedu_gflops_per_img"], ".3f"),
                      _num(r["vitedu_img_s"], ".1f"), _num(r["timm_img_s"], ".1f"), _num(r["ratio"], ".2f"), paired,
                      _achieved(r, "vitedu"), _achieved(r, "timm"), _num(r["max_abs_diff"], ".1e")])
    return _render(lines, left=2)


# --- vitedu bench train ---------------------------------------------------------------------------------------------

def plain_config(batch: int) -> TrainConfig:
    """The engine's per-step work only: one epoch of AdamW and cross-entropy with the cosine schedule and no warm-up,
    Mixup/CutMix, label smoothing, clipping, EMA, distillation or autocast."""
    from .train.config import TrainConfig

    return TrainConfig(epochs=1, batch_size=batch, warmup_epochs=0, optimizer="adamw", loss="ce", label_smoothing=0.0,
                       mixup_alpha=0.0, cutmix_alpha=0.0, grad_clip=None, ema_decay=None, distillation="none",
                       amp="off")


def bare_fit(model: nn.Module, loader: Iterable, lr: float, min_lr: float, weight_decay: float, seed: int = 0) -> None:
    """One epoch of the plainest hand-written training loop with ``plain_config``'s maths: the yardstick of the
    engine's overhead. AdamW without weight decay on biases, norms and ``model.no_weight_decay()`` (as the engine and
    DeiT), cross-entropy, the engine's cosine schedule (``learning_rate``) through ``LambdaLR``. Trains ``model`` in
    place and returns nothing."""
    from .train.engine import learning_rate

    torch.manual_seed(seed)  # as fit: the same draws for any randomness in the model
    skip = getattr(model, "no_weight_decay", set)()
    named = list(model.named_parameters())
    decay = [p for name, p in named if p.ndim > 1 and name not in skip]
    no_decay = [p for name, p in named if p.ndim <= 1 or name in skip]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    total = len(loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate(s, total, 0, lr, min_lr) / lr)
    model.train()
    for x, y in loader:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        schedule.step()
        loss.item()  # as any loop that logs its loss: waits for the step to finish


def _max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point()),
               default=0.0)


def _time_training(initial: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, warmup: int,
                   repeats: int) -> tuple[dict[str, list[float]], dict[str, dict[str, torch.Tensor]]]:
    """Interleaved runs of ``fit`` and ``bare_fit``, each from a fresh copy of ``initial`` and a fresh loader over
    (``x``, ``y``). Returns (seconds of every timed run, final state dict of the last run), each keyed engine / bare."""
    from .data.loader import TensorLoader
    from .train.engine import fit

    trained = {}

    def fresh() -> tuple[nn.Module, TensorLoader]:
        return copy.deepcopy(initial), TensorLoader(x, y, config.batch_size, shuffle=True, seed=config.seed)

    def engine(run: tuple[nn.Module, TensorLoader]) -> None:
        model, loader = run
        fit(model, loader, None, config, progress=False)
        trained["engine"] = model

    def bare(run: tuple[nn.Module, TensorLoader]) -> None:
        model, loader = run
        bare_fit(model, loader, config.lr, config.min_lr, config.weight_decay, config.seed)
        trained["bare"] = model

    times = _interleaved_times({"engine": engine, "bare": bare}, warmup, repeats,
                               prepare={"engine": fresh, "bare": fresh})
    return times, {key: model.state_dict() for key, model in trained.items()}


def select_training_models(models: list[str] | None = None, quick: bool = False) -> tuple[list[str], list[str]]:
    """(names to benchmark, names no family registers): by default ``TRAIN_MODELS``, ``quick`` the presets among
    them."""
    if models is None:
        models = [name for name in TRAIN_MODELS if is_preset(name)] if quick else TRAIN_MODELS
    return select_models(models)


def benchmark_training(models: list[str] | None = None, quick: bool = False, batch: int | None = None,
                       steps: int | None = None, repeats: int | None = None, warmup: int = 1,
                       threads: int | None = None, peak_size: int | None = None, progress: bool = True) -> list[dict]:
    """Time ``vitedu.train.fit`` against ``bare_fit`` on each model; one dict per model, see the module docstring.

    A run is one epoch of ``steps`` batches of ``batch`` random images with random labels (a ``TensorLoader``,
    shuffled), from a fresh copy of the same initial weights, with ``plain_config`` (the engine's progress bar off).
    The time covers the whole call, so the engine's set-up counts as overhead. Defaults: batch 32 and 20 steps for a
    preset, batch 8 and 3 steps for a real-size model (one 224-px step takes seconds on a CPU), 5 repetitions;
    ``quick``: batch 8, 2 steps, 1 repetition, the presets (seconds, for tests).

    Each dict holds img/s of both loops (``engine_img_s`` / ``bare_img_s`` from the best repetition, ``*_median``
    from the median, ``*_times_s`` every repetition), ``ratio`` = engine / bare img/s (best repetitions),
    ``ratio_paired`` = the median over repetitions of bare time / engine time (each pair ran back to back),
    ``overhead_pct`` = 100 * (1 - ratio), the training FLOPs per image (forward + backward; the optimizer's few FLOPs
    per parameter are left out), the engine's GFLOP/s and its fraction of the machine's matmul peak, and the final
    weights of the two loops: ``weights_equal`` (bit for bit), ``max_abs_diff``, and ``max_abs_update`` (how far
    training moved the weights, so that equal weights mean something).
    """
    from tqdm.auto import tqdm

    from .models import create_model

    repeats = repeats or (1 if quick else 5)
    names, skipped = select_training_models(models, quick)
    if skipped:
        warnings.warn(f"not registered (skipped): {', '.join(skipped)}")
    rows = []
    peak_size = peak_size or (1024 if quick else 2048)
    with _bench_session(threads, peak_size) as peaks:
        bar = tqdm(total=len(names), desc="bench train", disable=not progress)
        for name in names:
            bar.set_postfix_str(name)
            torch.manual_seed(0)
            initial = create_model(name)
            in_chans, img_size = input_spec(initial, name)
            real = not is_preset(name)
            batch_ = batch or (8 if quick or real else 32)
            steps_ = steps or (2 if quick else 3 if real else 20)
            n = batch_ * steps_
            x = torch.randn(n, in_chans, img_size, img_size)
            y = torch.randint(getattr(initial, "num_classes", 10), (n,))
            config = plain_config(batch_)
            # FLOPs grow linearly with the batch: count 2 images (BatchNorm needs 2 to train) and divide.
            flops = count_flops(copy.deepcopy(initial), x[:2], training=True) / 2
            times, ends = _time_training(initial, x, y, config, warmup, repeats)
            # The best repetition: on a shared machine, interference only ever adds time.
            ips = {key: n / min(t) for key, t in times.items()}
            row = {"model": name, "img_size": img_size, "in_chans": in_chans, "batch": batch_, "steps": steps_,
                   "repeats": repeats, "warmup": warmup, "threads": torch.get_num_threads(),
                   "params": sum(p.numel() for p in initial.parameters()), "gflops_per_img": flops / 1e9}
            for key in ("engine", "bare"):
                row[f"{key}_img_s"] = ips[key]
                row[f"{key}_img_s_median"] = n / statistics.median(times[key])
                row[f"{key}_times_s"] = times[key]
            row["ratio"] = ips["engine"] / ips["bare"]
            row["ratio_paired"] = paired_ratio(times["engine"], times["bare"])[0]
            row["overhead_pct"] = 100 * (1 - row["ratio"])
            row["engine_gflop_s"] = flops * ips["engine"] / 1e9
            row["weights_equal"] = all(torch.equal(ends["engine"][k], ends["bare"][k]) for k in ends["engine"])
            row["max_abs_diff"] = _max_abs_diff(ends["engine"], ends["bare"])
            row["max_abs_update"] = _max_abs_diff(ends["engine"], initial.state_dict())
            rows.append(row)
            peaks.append(measure_peak_gflops(peak_size))
            bar.update()
            del initial, ends, x, y
        bar.close()
    peak = max(peaks)
    for row in rows:
        row["peak_gflop_s"] = peak
        row["engine_peak_frac"] = row["engine_gflop_s"] / peak
    return rows


def format_train_table(rows: list[dict]) -> str:
    """The results of ``benchmark_training`` as a plain-text table."""
    header = ["model", "px", "batch", "steps", "GFLOP/img", "engine img/s best/med", "bare img/s best/med", "ratio",
              "overhead", "paired ratio", "engine GFLOP/s (peak)", "final weights"]
    lines = [header]
    for r in rows:
        weights = "equal" if r["weights_equal"] else f"differ by {r['max_abs_diff']:.1e}"
        lines.append([r["model"], str(r["img_size"]), str(r["batch"]), str(r["steps"]), f"{r['gflops_per_img']:.3f}",
                      f"{r['engine_img_s']:.1f} / {r['engine_img_s_median']:.1f}",
                      f"{r['bare_img_s']:.1f} / {r['bare_img_s_median']:.1f}", f"{r['ratio']:.3f}",
                      f"{r['overhead_pct']:+.1f}%", f"{r['ratio_paired']:.3f}",
                      _achieved(r, "engine"), weights])
    return _render(lines, left=1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitedu bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True, metavar="{models,train}")
    models = sub.add_parser("models", help="vitedu vs timm throughput, interleaved",
                            description="Each model next to its timm twin (same weights): inference and training "
                                        "img/s, interleaved.")
    models.add_argument("--quick", action="store_true", help="batch 8, 1 repetition, presets only (seconds)")
    models.add_argument("--models", nargs="+", default=None, metavar="NAME",
                        help="model names (default: the real-size models and every preset)")
    models.add_argument("--batch", type=int, default=None, help="images per step (default 32, quick: 8)")
    models.add_argument("--repeats", type=int, default=None, help="timed repetitions per implementation (default 5)")
    models.add_argument("--min-seconds", type=float, default=None,
                        help="repeat a short step within a repetition until it lasts this long (default 0.5, "
                             "quick: 0)")
    train = sub.add_parser("train", help="the training engine vs a bare PyTorch loop, interleaved",
                           description="vitedu.train.fit next to a bare hand-written loop with the same maths, "
                                       "model, weights and batches: the engine's overhead and the achieved fraction "
                                       "of the fp32 matmul peak.")
    train.add_argument("--quick", action="store_true", help="batch 8, 2 steps, 1 repetition, presets only (seconds)")
    train.add_argument("--models", nargs="+", default=None, metavar="NAME",
                       help=f"model names (default: {', '.join(TRAIN_MODELS)})")
    train.add_argument("--batch", type=int, default=None,
                       help="images per step (default 32 for a preset, 8 for a real-size model; quick: 8)")
    train.add_argument("--steps", type=int, default=None,
                       help="steps per run, one epoch (default 20 for a preset, 3 for a real-size model; quick: 2)")
    train.add_argument("--repeats", type=int, default=None, help="timed runs per loop (default 5, quick: 1)")
    for sub_parser in (models, train):
        sub_parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions first (default 1)")
        sub_parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
        sub_parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results here")
        sub_parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _print_machine(threads: int, peak: float) -> None:
    import timm

    print(f"CPU: {platform.processor() or platform.machine()}, {threads} threads, torch {torch.__version__}, "
          f"timm {timm.__version__}; fp32 matmul peak {peak:.1f} GFLOP/s")


def _write_json(path: Path, rows: list[dict], what: str) -> None:
    import timm

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"benchmark": what, "torch": torch.__version__, "timm": timm.__version__, "machine": platform.machine(),
            "processor": platform.processor(), "python": platform.python_version(),
            "peak_gflop_s": rows[0]["peak_gflop_s"], "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path.write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    """``vitedu bench models ...`` / ``vitedu bench train ...`` (``argv`` starts with the benchmark's name)."""
    args = _parser().parse_args(argv)
    if args.models is not None:
        args.models = [m for item in args.models for m in item.split(",") if m]
    select = select_models if args.what == "models" else select_training_models
    names, skipped = select(args.models, args.quick)
    if skipped:
        print(f"skipped (not registered): {', '.join(skipped)}")
    if not names:
        print("nothing to benchmark")
        return 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped names were printed above
        if args.what == "models":
            rows = benchmark_models(names, quick=args.quick, batch=args.batch, repeats=args.repeats,
                                    warmup=args.warmup, threads=args.threads, progress=not args.no_progress,
                                    min_seconds=args.min_seconds)
        else:
            rows = benchmark_training(names, quick=args.quick, batch=args.batch, steps=args.steps,
                                      repeats=args.repeats, warmup=args.warmup, threads=args.threads,
                                      progress=not args.no_progress)
    _print_machine(rows[0]["threads"], rows[0]["peak_gflop_s"])
    if args.what == "models":
        print("img/s from the best of the interleaved repetitions; ratio = vitedu img/s / timm img/s (> 1: vitedu "
              "faster); paired ratio = median of timm / vitedu seconds of back-to-back repetitions, with its "
              "interquartile range; peak = best matmul rate seen during the run")
        print(format_table(rows))
        for r in rows:
            if r["note"] and r["task"] == TASKS[0]:
                print(f"{r['model']}: {r['note']}")
    else:
        print("each run: one epoch of `steps` batches of random images; engine = vitedu.train.fit (AdamW, CE, cosine, "
              "no warm-up), bare = the same maths in a hand-written loop\n"
              "img/s: best / median of the interleaved runs; ratio = engine / bare img/s (best); overhead = 1 - ratio "
              "(target <= 5%)\npaired ratio = median of bare / engine seconds of back-to-back runs; peak = best matmul "
              "rate seen during the run")
        print(format_train_table(rows))
    if args.json is not None:
        _write_json(args.json, rows, args.what)
    return 0


if __name__ == "__main__":
    sys.exit(main())
