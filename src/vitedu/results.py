"""The reproduction ledger: ``data/results/CHAPTER.json``, written by ``vitedu reproduce`` and read by the chapters."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from .paths import data_root, repo_root


def results_dir() -> Path:
    return data_root() / "results"


def git_commit() -> str | None:
    """HEAD of the repository vitedu runs from, with ``-dirty`` when tracked files differ from it."""
    root = repo_root()
    if root is None:
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def save(chapter: str, numbers: dict, *, budget: str, command: str, wall_time_s: float, commit: str | None = None,
         path: Path | None = None) -> Path:
    """Write one chapter's reference results atomically, with everything needed to repeat the run.

    ``commit`` is the code version the run started from (read it before running: files may change during a long run).
    """
    from . import __version__

    record = {
        "chapter": chapter,
        "budget": budget,
        "numbers": numbers,
        "command": command,
        "vitedu_version": __version__,
        "git_commit": commit if commit is not None else git_commit(),
        "machine": machine(),
        "wall_time_s": round(wall_time_s, 1),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path = path or results_dir() / f"{chapter}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.part")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def load(chapter: str) -> dict:
    """The committed reference results of ``chapter`` (the whole record; the measurements are under ``numbers``)."""
    path = results_dir() / f"{chapter}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no reference results for {chapter!r} at {path}. Produce them with "
            f"`vitedu reproduce {chapter} --budget cpu` (they ship with the repository under data/results/)."
        )
    return json.loads(path.read_text())
