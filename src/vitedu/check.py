"""Automatic checks for the exercises: a correct answer passes, a wrong one gets a hint.

Each check returns a :class:`CheckResult`: a notebook shows its verdict when the check is a cell's last line
(``print`` it elsewhere), and it is truthy when the answer passes, so a grader can write
``assert vitedu.check.patchify(student_patchify)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CheckResult:
    exercise: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        mark = "PASS" if self.passed else "NOT YET"
        return f"[{mark}] {self.exercise}: {self.message}"


def _call(exercise: str, fn: Callable, *args):
    try:
        return fn(*args), None
    except Exception as error:  # the student's code may raise anything; report it as a hint
        return None, CheckResult(exercise, False, f"your function raised {type(error).__name__}: {error}")


def patchify(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> CheckResult:
    """Exercise: ``fn(images (B, C, H, W), P) -> (B, N, C*P*P)``, patches row by row, each flattened as (C, P, P)."""
    name = "patchify"
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 12, 8, generator=generator)
    expected = F.unfold(images, kernel_size=4, stride=4).transpose(1, 2)  # (B, N, C*P*P), channel-major
    got, error = _call(name, fn, images, 4)
    if error is not None:
        return error
    if not isinstance(got, torch.Tensor):
        return CheckResult(name, False, f"return a torch.Tensor, not {type(got).__name__}.")
    if got.shape != expected.shape:
        return CheckResult(name, False, f"shape {tuple(got.shape)}, expected {tuple(expected.shape)} = (batch, "
                        "number of patches (H/P)*(W/P), values per patch C*P*P). Non-square images count too.")
    if torch.allclose(got, expected):
        return CheckResult(name, True, "your patches match the strided convolution's view of the image.")
    if torch.allclose(got.sort(dim=-1).values, expected.sort(dim=-1).values):
        return CheckResult(name, False, "each patch holds the right pixels in another order: flatten every patch "
                        "channel first, as (C, P, P), the order of a Conv2d kernel.")
    if torch.allclose(got.flatten(1).sort().values, expected.flatten(1).sort().values):
        return CheckResult(name, False, "the right pixels, but patches are cut or ordered differently: go row by row "
                        "(top-left, then to the right), and reshape height before width.")
    return CheckResult(name, False, "the values differ from the image's pixels: check the reshape/permute sequence "
                    "(B, C, H/P, P, W/P, P) -> (B, H/P, W/P, C, P, P).")


def attention(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> CheckResult:
    """Exercise: ``fn(q, k, v)`` with (B, h, T, d) inputs returns ``(output, weights)`` of scaled dot-product attention."""
    name = "attention"
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    scores = q @ k.transpose(-2, -1)
    weights = (scores / 8 ** 0.5).softmax(-1)
    got, error = _call(name, fn, q, k, v)
    if error is not None:
        return error
    if not (isinstance(got, tuple) and len(got) == 2):
        return CheckResult(name, False, "return a pair (output, attention weights).")
    out, w = got
    if w.shape != weights.shape or out.shape != v.shape:
        return CheckResult(name, False, f"output {tuple(out.shape)} / weights {tuple(w.shape)}; expected "
                        f"{tuple(v.shape)} / {tuple(weights.shape)}.")
    if torch.allclose(w, weights) and torch.allclose(out, weights @ v):
        return CheckResult(name, True, "softmax(QK^T / sqrt(d)) V, as in the paper.")
    if torch.allclose(w, scores.softmax(-1)):
        return CheckResult(name, False, "the weights are unscaled: divide the scores by sqrt(d) before the softmax.")
    if torch.allclose(w, (scores / 8 ** 0.5).softmax(-2)):
        return CheckResult(name, False, "the softmax runs over the queries: each query's weights over the keys must sum "
                        "to 1 (softmax over the last dimension).")
    if torch.allclose(w, weights):
        return CheckResult(name, False, "the weights are right; the output must be weights @ v.")
    return CheckResult(name, False, "the weights differ from softmax(q @ k^T / sqrt(d)); check the transpose of k.")


def vit_parameter_count(answer: int, model_name: str = "vit_pico_patch4_28") -> CheckResult:
    """Exercise: the number of parameters of ``model_name``, worked out by hand from its configuration."""
    from .models import create_model

    name = f"parameter count of {model_name}"
    model = create_model(model_name)
    total = sum(p.numel() for p in model.parameters())
    if answer == total:
        return CheckResult(name, True, f"{total:,} parameters.")
    parts = {
        "the class token": model.cls_token.numel(),
        "the position embedding": model.pos_embed.numel(),
        "the biases": sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias")),
        "the LayerNorm weights and biases": sum(p.numel() for n, p in model.named_parameters() if "norm" in n),
        "the classification head": sum(p.numel() for p in model.head.parameters()),
    }
    for part, count in parts.items():
        if answer == total - count:
            return CheckResult(name, False, f"close: you left out {part}.")
    block = sum(p.numel() for p in model.blocks[0].parameters())
    if (total - answer) % block == 0 and answer < total:
        return CheckResult(name, False, f"you are {(total - answer) // block} block(s) short: count all {len(model.blocks)}.")
    return CheckResult(name, False, f"off by {answer - total:+,}. Count per block: qkv (3 D^2 + 3 D), projection "
                    "(D^2 + D), two LayerNorms (4 D), MLP (2 D H + H + D with H = mlp_ratio * D); then patch "
                    "embedding, class token, position embedding, final norm and head.")
