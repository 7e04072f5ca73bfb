"""BERTScore over the MiniLM reference encoder: self-score 1, soft one-hots = ids, gradients, idf, and agreement with
the reference implementation (bert_score.utils.greedy_cos_idf) when it is installed."""

import importlib.util
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel

from vitedu.text.bertscore import BERTScorer, idf_weights
from vitedu.text.hub import load_tokenizer

TEXTS = ["the flight was great", "the flight was late again", "worst airline ever", "great crew, great food"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def minilm_scorer(tokenizer):
    return BERTScorer(idf=idf_weights(tokenizer, TEXTS), tokenizer=tokenizer)


def tiny_encoder(seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    return BertModel(config).eval()


def test_idf_weights_follow_bert_score(tokenizer):
    idf = idf_weights(tokenizer, TEXTS)
    m = len(TEXTS)
    the, great, unseen = tokenizer.convert_tokens_to_ids(["the", "great", "zebra"])
    assert idf[the] == pytest.approx(math.log((m + 1) / (2 + 1)))  # in 2 texts
    assert idf[great] == pytest.approx(math.log((m + 1) / (2 + 1)))  # twice in one text counts once, and once more
    assert idf[unseen] == pytest.approx(math.log(m + 1))
    assert idf[tokenizer.cls_token_id] == idf[tokenizer.sep_token_id] == idf[tokenizer.pad_token_id] == 0
    with pytest.raises(ValueError, match="at least one text"):
        idf_weights(tokenizer, [])


def test_self_score_is_one_and_a_paraphrase_scores_between(minilm_scorer):
    score = minilm_scorer.score_texts("the flight was late again", ["the flight was late again",
                                                                    "the plane was delayed once more",
                                                                    "purple bananas sing loudly"])
    for value in (score.precision, score.recall, score.f1):
        assert value[0].item() == pytest.approx(1.0, abs=1e-5)
    assert 1.0 > score.f1[1] > score.f1[2] > 0


def test_soft_one_hot_equals_ids_and_is_differentiable(minilm_scorer, tokenizer):
    ref_ids = torch.tensor(tokenizer("the flight was late again")["input_ids"])
    cand_ids = torch.tensor([tokenizer("the plane was late")["input_ids"]])
    reference = minilm_scorer.reference(ref_ids)
    hard = minilm_scorer(reference, ids=cand_ids)
    probs = F.one_hot(cand_ids, 30522).float().requires_grad_(True)
    soft = minilm_scorer(reference, probs=probs)
    assert torch.allclose(minilm_scorer.embed(probs=probs.detach()), minilm_scorer.embed(ids=cand_ids), atol=1e-5)
    for a, b in ((hard.recall, soft.recall), (hard.precision, soft.precision), (hard.f1, soft.f1)):
        assert torch.allclose(a, b, atol=1e-5)
    soft.recall.sum().backward()
    assert probs.grad is not None and probs.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in minilm_scorer.encoder.parameters())  # the encoder stays frozen


def test_padding_does_not_change_a_score(minilm_scorer, tokenizer):
    ref = tokenizer("worst airline ever")["input_ids"]
    short, long = tokenizer("worst flight")["input_ids"], tokenizer("the worst airline of all time")["input_ids"]
    together = minilm_scorer.score_ids(ref, [short, long])
    alone = minilm_scorer.score_ids(ref, [short])
    assert together.f1[0].item() == pytest.approx(alone.f1[0].item(), abs=1e-5)


def _bert_score_utils():
    """bert_score.utils without its package __init__ (which imports pandas)."""
    spec = importlib.util.find_spec("bert_score")
    if spec is None:
        pytest.skip("bert_score is not installed (pip install bert-score): reference comparison skipped")
    package = types.ModuleType("bert_score")
    package.__version__, package.__path__ = "stub", list(spec.submodule_search_locations)
    saved = sys.modules.get("bert_score")
    sys.modules["bert_score"] = package
    try:
        utils_spec = importlib.util.spec_from_file_location("bert_score.utils",
                                                            spec.submodule_search_locations[0] + "/utils.py")
        utils = importlib.util.module_from_spec(utils_spec)
        utils_spec.loader.exec_module(utils)
    finally:
        if saved is None:
            sys.modules.pop("bert_score")
        else:
            sys.modules["bert_score"] = saved
    return utils


def test_matches_bert_score_reference_implementation(tokenizer):
    utils = _bert_score_utils()
    encoder = tiny_encoder()
    idf = idf_weights(tokenizer, TEXTS)
    scorer = BERTScorer(encoder, idf=idf, tokenizer=tokenizer)
    ref = tokenizer("the flight was late again")["input_ids"]
    cands = [tokenizer(t)["input_ids"] for t in ("the plane was late", "great crew, great food, great day")]
    ours = scorer.score_ids(ref, cands)
    # the reference: same encoder states, bert_score's greedy matching with idf
    width = max(len(c) for c in cands)
    hyp_ids = torch.zeros(len(cands), width, dtype=torch.long)
    hyp_mask = torch.zeros_like(hyp_ids)
    for i, c in enumerate(cands):
        hyp_ids[i, :len(c)], hyp_mask[i, :len(c)] = torch.tensor(c), 1
    ref_ids = torch.tensor([ref] * len(cands))
    with torch.no_grad():
        ref_states = encoder(ref_ids).last_hidden_state
        hyp_states = encoder(hyp_ids, attention_mask=hyp_mask).last_hidden_state
    p, r, f = utils.greedy_cos_idf(ref_states, torch.ones_like(ref_ids), idf[ref_ids].clone(), hyp_states,
                                   hyp_mask, idf[hyp_ids].clone() * hyp_mask)
    assert torch.allclose(ours.precision, p, atol=1e-5)
    assert torch.allclose(ours.recall, r, atol=1e-5)
    assert torch.allclose(ours.f1, f, atol=1e-5)


def test_bad_input_errors(tokenizer):
    scorer = BERTScorer(tiny_encoder(), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="one weight per token"):
        BERTScorer(tiny_encoder(), idf=torch.ones(10), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="no weighted token"):
        scorer.reference(torch.tensor([tokenizer.cls_token_id, tokenizer.sep_token_id]))
    with pytest.raises(ValueError, match="exceed"):
        scorer.embed(ids=torch.ones(1, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="exactly one"):
        scorer.embed()
    with pytest.raises(ValueError, match="distributions over the vocabulary"):
        scorer.embed(probs=torch.ones(1, 3, 7))
