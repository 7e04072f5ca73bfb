"""``vitedu bench models``: how fast are the from-scratch models next to timm's, on this machine's CPU?

For each model and its timm twin (same architecture, same weights, from ``vitedu.models.convert.to_timm``) it times
inference (eval, no_grad) and a training step (forward + backward), alternating vitedu and timm repetitions in one
loop after a warm-up, so that a change in the machine's load (other jobs, thermal throttling) hits both alike. It
also counts each model's FLOPs and measures the fp32 matmul peak, to say what fraction of the machine a model uses.

On a machine shared with other jobs the absolute numbers move from run to run (by several times when the other
jobs take the cores); the ratio of two interleaved implementations moves much less.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

# The real-size models of the book, each with its timm twin except patchconvnet_s60 (timm has no PatchConvNet).
REAL_MODELS = ["deit_small_patch16_224", "deit3_small_patch16_224", "vit_small_patch16_18x2_224", "resnet50",
               "levit_128s", "resmlp_12_224", "patchconvnet_s60"]
TASKS = ("inference", "training")


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


def count_flops(model: nn.Module, x: torch.Tensor, training: bool) -> int:
    """FLOPs (a multiply-add counts 2) of one forward, or of forward + backward, for the batch ``x``.

    Attention is counted through the math kernel: the fused CPU kernel has no formula in FlopCounterMode.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model.train(training)
    counter = FlopCounterMode(display=False)
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


def _interleaved_times(steps: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Alternate the implementations within each repetition, and which goes first, so drift hits both."""
    times = {key: [] for key in steps}
    order = list(steps)
    for rep in range(warmup + repeats):
        for key in (order if rep % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            steps[key]()
            elapsed = time.perf_counter() - start
            if rep >= warmup:
                times[key].append(elapsed)
    return times


def benchmark_models(models: list[str] | None = None, quick: bool = False, batch: int | None = None,
                     repeats: int | None = None, warmup: int = 1, threads: int | None = None,
                     peak_size: int | None = None, progress: bool = True) -> list[dict]:
    """Time every model against its timm twin; one dict per (model, task), see the module docstring.

    ``quick``: batch 8, 1 repetition, presets only (seconds, for tests). Names no family registers are skipped with
    a warning. Each dict holds img/s of both implementations (from the best repetition; ``*_img_s_median`` from the
    median, ``*_times_s`` every repetition), their ratio (vitedu / timm, > 1: vitedu faster), the FLOPs per image,
    the achieved GFLOP/s and its fraction of the machine's matmul peak, and ``max_abs_diff``, the
    largest logit difference of the two models in eval mode on the benchmark input (they share their weights).
    """
    from tqdm.auto import tqdm

    from .models import create_model

    batch = batch or (8 if quick else 32)
    repeats = repeats or (1 if quick else 5)
    names, skipped = select_models(models, quick)
    if skipped:
        warnings.warn(f"not registered (skipped): {', '.join(skipped)}")
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    rows = []
    peak_size = peak_size or (1024 if quick else 2048)
    try:
        # The machine's peak is the best matmul rate seen during the run: other jobs only ever slow it down.
        peaks = [measure_peak_gflops(peak_size)]
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
                times = _interleaved_times({key: make(m, x) for key, m in impls.items()}, warmup, repeats)
                # The best repetition: on a shared machine, interference only ever adds time.
                ips = {key: batch / min(t) for key, t in times.items()}
                row = dict(model=name, timm_model=timm_name, task=task, img_size=img_size, in_chans=in_chans,
                           batch=batch, repeats=repeats, warmup=warmup, threads=torch.get_num_threads(),
                           params=params, max_abs_diff=diff, note=note)
                for key in ("vitedu", "timm"):
                    row[f"{key}_img_s"] = ips.get(key)
                    row[f"{key}_img_s_median"] = batch / statistics.median(times[key]) if key in times else None
                    row[f"{key}_gflops_per_img"] = flops[key] / 1e9 if key in flops else None
                    row[f"{key}_gflop_s"] = flops[key] * ips[key] / 1e9 if key in ips else None
                    row[f"{key}_times_s"] = times.get(key)
                row["ratio"] = ips["vitedu"] / ips["timm"] if "timm" in ips else None
                rows.append(row)
                peaks.append(measure_peak_gflops(peak_size))
                bar.update()
            del ours, twin, impls
        bar.close()
    finally:
        torch.set_num_threads(previous_threads)
    peak = max(peaks)
    for row in rows:
        row["peak_gflop_s"] = peak
        for key in ("vitedu", "timm"):
            row[f"{key}_peak_frac"] = None if row[f"{key}_gflop_s"] is None else row[f"{key}_gflop_s"] / peak
    return rows


def format_table(rows: list[dict]) -> str:
    """The results as a plain-text table."""
    def num(value, fmt):
        return "-" if value is None else format(value, fmt)

    header = ["model", "task", "px", "batch", "GFLOP/img", "vitedu img/s", "timm img/s", "ratio",
              "vitedu GFLOP/s (peak)", "timm GFLOP/s (peak)", "max|diff|"]
    lines = [header]
    for r in rows:
        def achieved(key):
            if r[f"{key}_gflop_s"] is None:
                return "-"
            return f"{r[f'{key}_gflop_s']:.1f} ({100 * r[f'{key}_peak_frac']:.0f}%)"

        lines.append([r["model"], r["task"], str(r["img_size"]), str(r["batch"]),
                      num(r["vitedu_gflops_per_img"], ".3f"),
                      num(r["vitedu_img_s"], ".1f"), num(r["timm_img_s"], ".1f"), num(r["ratio"], ".2f"),
                      achieved("vitedu"), achieved("timm"), num(r["max_abs_diff"], ".1e")])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for k, line in enumerate(lines):
        cells = [cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))]
        out.append("  ".join(cells))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitedu bench models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 8, 1 repetition, presets only (seconds)")
    parser.add_argument("--models", nargs="+", default=None, metavar="NAME",
                        help="model names (default: the real-size models and every preset)")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default 32, quick: 8)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions per implementation (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions first (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.models is not None:
        args.models = [m for item in args.models for m in item.split(",") if m]
    names, skipped = select_models(args.models, args.quick)
    if skipped:
        print(f"skipped (not registered): {', '.join(skipped)}")
    if not names:
        print("nothing to benchmark")
        return 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped names were printed above
        rows = benchmark_models(names, quick=args.quick, batch=args.batch, repeats=args.repeats,
                                warmup=args.warmup, threads=args.threads, progress=not args.no_progress)
    import timm

    peak = rows[0]["peak_gflop_s"]
    print(f"CPU: {platform.processor() or platform.machine()}, {rows[0]['threads']} threads, "
          f"torch {torch.__version__}, timm {timm.__version__}; fp32 matmul peak {peak:.1f} GFLOP/s")
    print("img/s from the best of the interleaved repetitions; ratio = vitedu img/s / timm img/s (> 1: vitedu "
          "faster); peak = best matmul rate seen during the run")
    print(format_table(rows))
    for r in rows:
        if r["note"] and r["task"] == TASKS[0]:
            print(f"{r['model']}: {r['note']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(torch=torch.__version__, timm=timm.__version__, machine=platform.machine(),
                    processor=platform.processor(), python=platform.python_version(), peak_gflop_s=peak,
                    time=time.strftime("%Y-%m-%dT%H:%M:%S"))
        args.json.write_text(json.dumps(dict(meta=meta, results=rows), indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
