"""``vitedu reproduce CHAPTER`` and friends."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time


def _reproduce(args) -> int:
    from . import experiments, results
    from .budget import ENV_VAR
    from .env import setup

    name, experiment = experiments.get(args.chapter)
    if args.budget is not None:
        os.environ[ENV_VAR] = args.budget
    session = setup(seed=0)
    chosen = session.budget
    commit = results.git_commit()
    print(f"reproducing {name} at the {chosen} budget on {session.device} (code: {commit})")
    start = time.perf_counter()
    numbers = experiment.run(chosen, device=session.device)
    wall = time.perf_counter() - start
    command = "vitedu reproduce " + " ".join(shlex.quote(a) for a in [name, "--budget", chosen.name])
    path = results.save(name, numbers, budget=chosen.name, command=command, wall_time_s=wall, commit=commit,
                        path=args.output)
    print(f"wrote {path} ({wall:.0f} s)")
    return 0


def _list(args) -> int:
    from . import experiments
    from .models import list_models

    print("chapters:", ", ".join(experiments.EXPERIMENTS))
    print("models:", ", ".join(list_models(args.pattern)))
    return 0


def main(argv: list[str] | None = None) -> int:
    from .budget import BUDGETS

    parser = argparse.ArgumentParser(prog="vitedu", description="Run the experiments of the vitedu book.")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="run a chapter's experiment headless and write data/results/CHAPTER.json")
    rep.add_argument("chapter", help="chapter name or number, e.g. 00_vit_in_minutes or 00")
    rep.add_argument("--budget", choices=BUDGETS, default=None, help="default: $VITEDU_BUDGET, else gpu/cpu")
    rep.add_argument("--output", type=_path, default=None, help="write here instead of data/results/CHAPTER.json")
    rep.set_defaults(func=_reproduce)
    bench = sub.add_parser("bench", help="benchmarks: `vitedu bench models --help`, `vitedu bench train --help`",
                           add_help=False)
    bench.add_argument("what", choices=["models", "train"],
                       help="models: vitedu vs timm throughput; train: the training engine vs a bare loop")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=lambda args: __import__("vitedu.bench", fromlist=["main"]).main([args.what, *args.rest]))
    from .train import run as train_run

    trn = sub.add_parser("train", help="train a model with a paper's recipe on an ImageFolder tree (also under "
                                       "torchrun)", description=train_run.DESCRIPTION)
    train_run.add_arguments(trn).set_defaults(func=train_run.run)
    from .ssl import evaluate as ssl_evaluate

    for command in ssl_evaluate.COMMANDS:  # vitedu knn, vitedu linear: frozen features of a (DINO) backbone
        ssl_evaluate.add_parser(sub, command)
    lst = sub.add_parser("list", help="list chapters with experiments, and models")
    lst.add_argument("pattern", nargs="?", default="*")
    lst.set_defaults(func=_list)
    args = parser.parse_args(argv)
    return args.func(args)


def _path(value: str):
    from pathlib import Path

    return Path(value)


if __name__ == "__main__":
    sys.exit(main())
