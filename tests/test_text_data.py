"""The offline tweet corpus: cleaning, the fixed stratified split, token ids, labels, and the hub loader's errors."""

import sys
import types
from collections import Counter

import pytest
import torch

from vitedu.text import data
from vitedu.text.hub import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def corpus():
    return data.load_corpus()


def test_clean_removes_mojibake_urls_entities_and_extra_spaces():
    assert data.clean("I look at Google\u0562_\ufffd\ufffd_\ufffd\ufffds cars") == "I look at Google s cars"
    assert data.clean("cars_\ufffd_.no thank you") == "cars .no thank you"
    assert data.clean("crazed &amp; drunk   drivers") == "crazed & drunk drivers"
    assert data.clean("see http://t.co/qgqe2JoYMD via @x") == "see http via @x"
    assert data.clean("  \ufffd\ufffd  ") == ""
    assert data.clean("snake_case stays") == "snake_case stays"  # underscores between ASCII words are kept


def test_corpus_is_clean_unique_and_labelled(corpus):
    texts = [t for t, _ in corpus]
    assert 36_000 <= len(corpus) <= 37_500  # 38,158 rows, 37,243 distinct raw texts, fewer once cleaned
    assert len(set(texts)) == len(texts)
    assert all(t and t == t.strip() and t.isascii() for t in texts)
    counts = Counter(y for _, y in corpus)
    assert set(counts) == {0, 1, 2}
    assert counts[0] / len(corpus) == pytest.approx(0.43, abs=0.01)  # the majority class, negative
    assert corpus[1] == ("self-driving cars just seem lazy and a waste of money", data.label_id("negative"))


def test_split_is_deterministic_stratified_and_disjoint(corpus):
    split = data.load_split()
    again = data.load_split()
    assert split.train_texts == again.train_texts and split.test_texts == again.test_texts
    assert not set(split.train_texts) & set(split.test_texts)
    assert len(split.train_texts) + len(split.test_texts) == len(corpus)
    assert len(split.test_texts) == pytest.approx(0.1 * len(corpus), abs=2)
    counts = split.counts()
    total = Counter(y for _, y in corpus)
    for i, name in enumerate(data.LABELS):
        assert counts["test"][name] == round(0.1 * total[i])  # per class, not just overall
        assert counts["train"][name] + counts["test"][name] == total[i]
    by_text = dict(corpus)
    assert all(by_text[t] == y for t, y in zip(split.test_texts, split.test_labels))
    other = data.load_split(seed=1)
    assert set(other.test_texts) != set(split.test_texts)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        data.load_split(test_fraction=1.0)


def test_label_id_accepts_names_and_indices_and_rejects_the_rest():
    assert [data.label_id(n) for n in data.LABELS] == [0, 1, 2]
    assert data.label_id(" Positive ") == 2 and data.label_id(1) == 1
    for bad in ("happy", 3, -1, True, None, 1.0):
        with pytest.raises(ValueError, match="label"):
            data.label_id(bad)


def test_encode_pads_with_pad_and_masks_real_tokens(tokenizer):
    ids, mask = data.encode(tokenizer, ["a great day", "awful"])
    assert ids.dtype == torch.long and mask.dtype == torch.long and ids.shape == mask.shape == (2, 5)
    assert ids[:, 0].eq(tokenizer.cls_token_id).all()
    assert tokenizer.convert_ids_to_tokens(ids[1].tolist()) == ["[CLS]", "awful", "[SEP]", "[PAD]", "[PAD]"]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    long_text = " ".join(["word"] * 100)
    cut, cut_mask = data.encode(tokenizer, [long_text], max_length=16)
    assert cut.shape == (1, 16) and cut[0, -1].item() == tokenizer.sep_token_id and cut_mask.all()


def test_pad_ids_right_pads_token_lists_and_masks_them():
    ids, mask = data.pad_ids([[101, 7, 102], [101, 102]], pad_id=0)
    assert ids.tolist() == [[101, 7, 102], [101, 102, 0]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert ids.dtype == mask.dtype == torch.long
    ids, _ = data.pad_ids([[5], [5, 6]], pad_id=9)
    assert ids.tolist() == [[5, 9], [5, 6]]
    with pytest.raises(ValueError, match="no token lists"):
        data.pad_ids([])


def test_encode_errors_say_which_text_and_how_to_fix(tokenizer):
    with pytest.raises(ValueError, match="text 1 .* has no tokens"):
        data.encode(tokenizer, ["fine", ""])
    with pytest.raises(ValueError, match="text 0 .* 102 tokens, more than max_length=64.*truncate=True"):
        data.encode(tokenizer, [" ".join(["word"] * 100)], truncate=False)
    with pytest.raises(ValueError, match="no texts"):
        data.encode(tokenizer, [])
    with pytest.raises(ValueError, match="not a string"):
        data.encode(tokenizer, ["ok", 3])


def test_hub_dataset_without_datasets_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(ImportError, match="pip install datasets"):
        data.load_hub_dataset("ag_news")


def test_hub_dataset_offline_and_unknown_name(monkeypatch):
    def offline(name):
        raise ConnectionError("Couldn't reach 'ag_news' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(ConnectionError, match="needs the network.*load_split"):
        data.load_hub_dataset("ag_news")
    with pytest.raises(ValueError, match="ag_news, yelp_polarity, imdb"):
        data.load_hub_dataset("sst2")


def test_hub_dataset_becomes_a_text_split(monkeypatch):
    parts = {"train": {"text": [f"review {i} &amp; more" for i in range(10)], "label": [i % 2 for i in range(10)]},
             "test": {"text": ["bad", "good"], "label": [0, 1]}}
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda name: parts))
    split = data.load_hub_dataset("imdb", max_train=4)
    assert split.labels == ("negative", "positive")
    assert len(split.train_texts) == 4 and all("&" in t and "&amp;" not in t for t in split.train_texts)
    assert split.test_texts == ["bad", "good"] and split.test_labels == [0, 1]
    assert split.counts()["test"] == {"negative": 1, "positive": 1}
