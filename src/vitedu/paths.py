"""Where vitedu finds vendored data, reference results and its cache."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def repo_root() -> Path | None:
    """The checkout vitedu was installed from (editable install or Colab clone), or None for a plain pip install."""
    candidate = PACKAGE_DIR.parents[1]
    return candidate if (candidate / "data").is_dir() and (candidate / "pyproject.toml").is_file() else None


def data_root() -> Path:
    """``$VITEDU_DATA`` if set, else the repository's ``data/`` folder, else ``~/.cache/vitedu/data``."""
    if os.environ.get("VITEDU_DATA"):
        return Path(os.environ["VITEDU_DATA"]).expanduser()
    root = repo_root()
    return root / "data" if root is not None else cache_dir() / "data"


def cache_dir() -> Path:
    """``$VITEDU_CACHE`` if set, else ``~/.cache/vitedu``: generated data sets live here."""
    path = Path(os.environ.get("VITEDU_CACHE", Path.home() / ".cache" / "vitedu")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
