"""GBDA on tiny random stand-in models (no trained weights): Gumbel-softmax, soft embeddings, the three loss terms,
determinism, bad input, the changed-token display, and the word-substitution baseline."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import BertConfig, BertModel

from vitedu.text import baseline
from vitedu.text.bertscore import BERTScorer
from vitedu.text.gbda import (GBDA, GBDAConfig, banned_tokens, changed_tokens, fluency_loss, gumbel_noise,
                              gumbel_softmax, highlight, highlight_html, margin_loss, sentence_perplexity)
from vitedu.text.hub import load_tokenizer
from vitedu.text.models import CausalLM, TextClassifier

TINY = dict(dim=16, depth=1, num_heads=2, max_length=20, embedding_init="random")
FAST = GBDAConfig(steps=4, batch_size=2, samples=8)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def models(tokenizer):
    torch.manual_seed(0)
    victim, lm = TextClassifier(**TINY).eval(), CausalLM(**TINY).eval()
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    scorer = BERTScorer(BertModel(config), tokenizer=tokenizer)
    return victim, lm, scorer


def test_gumbel_softmax_gives_distributions_that_sharpen_as_the_temperature_falls():
    logits = torch.randn(64, 50, generator=torch.Generator().manual_seed(0))
    peaks = []
    for temperature in (10.0, 1.0, 0.1, 0.01):
        sample = gumbel_softmax(logits, temperature, generator=torch.Generator().manual_seed(1))
        assert (sample >= 0).all()
        assert torch.allclose(sample.sum(-1), torch.ones(64), atol=1e-5)
        peaks.append(sample.max(-1).values.mean().item())
    assert peaks == sorted(peaks) and peaks[-1] > 0.99 and peaks[0] < 0.2
    # the same noise at every temperature: the argmax does not move, only the sharpness
    a = gumbel_softmax(logits, 1.0, generator=torch.Generator().manual_seed(1)).argmax(-1)
    b = gumbel_softmax(logits, 0.01, generator=torch.Generator().manual_seed(1)).argmax(-1)
    assert torch.equal(a, b)


def test_gumbel_samples_follow_the_categorical_distribution():
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0])
    hard = gumbel_softmax(logits.expand(20000, 4), 1.0, hard=True, generator=torch.Generator().manual_seed(0))
    assert set(hard.sum(-1).tolist()) == {1.0} and set(hard.unique().tolist()) == {0.0, 1.0}
    assert torch.allclose(hard.mean(0), logits.softmax(0), atol=0.015)


def test_hard_gumbel_is_straight_through():
    logits = torch.randn(3, 10, requires_grad=True)
    sample = gumbel_softmax(logits, 0.5, hard=True, generator=torch.Generator().manual_seed(0))
    (sample * torch.arange(10.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="temperature"):
        gumbel_softmax(logits, 0.0)


def test_soft_embedding_of_a_one_hot_equals_the_token_embedding(models, tokenizer):
    victim, lm, _ = models
    ids = torch.tensor([tokenizer("the flight was fine")["input_ids"]])
    one_hot = F.one_hot(ids, 30522).float()
    for model in (victim, lm):
        weight = model.get_input_embeddings().weight
        assert torch.allclose(one_hot @ weight, model.get_input_embeddings()(ids), atol=1e-6)
        assert torch.allclose(model(inputs_embeds=one_hot @ weight), model(input_ids=ids), atol=1e-5)


def test_margin_loss_is_zero_exactly_when_the_margin_reaches_kappa():
    kappa = 5.0
    for gap, expected in ((6.0, 0.0), (5.0, 0.0), (4.0, 1.0), (0.0, 5.0), (-2.0, 7.0)):
        logits = torch.tensor([[1.0, 1.0 + gap, 0.5 + gap]])  # true class 0; the best other leads by gap
        assert margin_loss(logits, 0, kappa).item() == pytest.approx(expected)
    logits = torch.randn(200, 3, generator=torch.Generator().manual_seed(0)) * 5
    labels = torch.zeros(200, dtype=torch.long)
    margin = logits[:, 1:].max(1).values - logits[:, 0]
    loss = margin_loss(logits, labels, kappa)
    assert torch.equal(loss == 0, margin >= kappa)
    with pytest.raises(ValueError, match="C >= 2"):
        margin_loss(torch.zeros(2, 1), 0)


def test_fluency_of_a_one_hot_is_the_lm_log_perplexity(models, tokenizer):
    _, lm, _ = models
    ids = torch.tensor([tokenizer("the crew was lovely today")["input_ids"]])
    one_hot = F.one_hot(ids, 30522).float()
    soft = fluency_loss(lm(inputs_embeds=one_hot @ lm.get_input_embeddings().weight), one_hot)
    assert soft.item() == pytest.approx(lm.token_nll(ids).mean().item(), rel=1e-5)
    assert sentence_perplexity(lm, [ids[0].tolist()])[0] == pytest.approx(soft.exp().item(), rel=1e-4)


def test_attack_is_deterministic_for_a_seed_and_returns_consistent_results(models, tokenizer):
    victim, lm, scorer = models
    attack = GBDA(victim, lm, scorer, tokenizer, FAST)
    a, b = attack.attack("the flight was late", "negative"), attack.attack("the flight was late", 0)
    assert a.adv_ids == b.adv_ids and a.history == b.history and a.queries == b.queries
    other = GBDA(victim, lm, scorer, tokenizer, GBDAConfig(**{**FAST.__dict__, "seed": 1})).attack(
        "the flight was late", 0)
    assert other.history["total"] != a.history["total"]
    assert set(a.history) == {"margin", "fluency", "similarity", "total"} and len(a.history["total"]) == FAST.steps
    assert 1 <= a.queries <= FAST.samples and a.label == 0
    assert a.adv_ids[0] == tokenizer.cls_token_id and a.adv_ids[-1] == tokenizer.sep_token_id
    pred = attack.predict(victim, [a.adv_ids])[0].item()
    assert a.adv_pred == pred and a.success == (pred != 0)
    assert 0 < a.bertscore <= 1 + 1e-5 and a.perplexity > 1 and a.clean_perplexity > 1
    assert "theta" not in a.summary()


def test_no_special_token_is_ever_sampled(models, tokenizer):
    victim, lm, scorer = models
    attack = GBDA(victim, None, None, tokenizer, GBDAConfig(steps=2, batch_size=2, init_coeff=0.0, lambda_sim=0,
                                                            lambda_perp=0))
    ids = attack.encode("a b c d e f")
    theta, _ = attack.optimise(ids, 0, torch.Generator().manual_seed(0))
    raw = (theta[None] + torch.zeros(50, *theta.shape)).argmax(-1)  # pure argmax: every row the same
    banned = banned_tokens(tokenizer)
    samples = (theta + gumbel_noise((500, *theta.shape), torch.Generator().manual_seed(0))).argmax(-1)
    assert not torch.isnan(theta + gumbel_noise((500, *theta.shape))).any()  # -inf + finite noise, never inf - inf
    assert not banned[samples].any() and not banned[raw].any()


def test_the_margin_falls_without_the_other_terms(models, tokenizer):
    victim, _, _ = models
    attack = GBDA(victim, None, None, tokenizer, GBDAConfig(steps=30, batch_size=4, lambda_sim=0, lambda_perp=0,
                                                            kappa=50.0, init_coeff=3.0))
    result = attack.attack("the flight was late and the crew was rude", 0)
    margins = result.history["margin"]
    assert sum(margins[-5:]) / 5 < sum(margins[:5]) / 5


def test_bad_input_gets_a_clear_error(models, tokenizer):
    victim, lm, scorer = models
    attack = GBDA(victim, lm, scorer, tokenizer, FAST)
    with pytest.raises(ValueError, match="empty text"):
        attack.attack("   ", 0)
    with pytest.raises(ValueError, match="max_length|limit"):
        attack.attack("word " * 40, 0)
    with pytest.raises(ValueError, match="unknown label"):
        attack.attack("the flight was late", "angry")
    with pytest.raises(ValueError, match="out of range"):
        attack.attack("the flight was late", 7)
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        attack.attack([5, 6, 7], 0)
    with pytest.raises(ValueError, match="needs a causal LM"):
        GBDA(victim, None, scorer, tokenizer, GBDAConfig(lambda_perp=1.0))
    with pytest.raises(ValueError, match="needs a BERTScorer"):
        GBDA(victim, lm, None, tokenizer, GBDAConfig(lambda_sim=1.0))
    with pytest.raises(ValueError, match="steps"):
        GBDAConfig(steps=-1)
    with pytest.raises(ValueError, match="shared vocabulary"):
        GBDA(victim, CausalLM(**{**TINY, "vocab_size": 100}), None, tokenizer, GBDAConfig(lambda_sim=0))


def test_changed_tokens_and_highlighting(tokenizer):
    ids = tokenizer("the flight was great")["input_ids"]
    adv = tokenizer("the plane was great <today>")["input_ids"]
    edits = changed_tokens(tokenizer, ids, adv)
    assert ("flight", "plane") in edits and any(old == "" and "today" in new for old, new in edits)
    assert changed_tokens(tokenizer, ids, ids) == []
    assert highlight(tokenizer, ids, adv).startswith("the [flight -> plane] was great")
    page = highlight_html(tokenizer, ids, adv)
    assert '<mark title="was: flight">plane</mark>' in page and "&lt;" in page  # escaped
    assert "<mark" not in highlight_html(tokenizer, ids, ids)


class KeywordVictim(nn.Module):
    """Class 0 unless the sentence holds the 'flip' token; counts the sentences it classifies."""

    max_length = 32

    def __init__(self, flip: int):
        super().__init__()
        self.flip = flip
        self.embed = nn.Embedding(30522, 4)
        self.seen = 0

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None):
        self.seen += len(input_ids)
        has = ((input_ids == self.flip) & attention_mask.bool()).any(1).float()
        return torch.stack([1 - has, has, torch.zeros_like(has)], 1) * 4


def test_baseline_finds_the_flipping_word_and_counts_queries(tokenizer):
    bad, awful = tokenizer.convert_tokens_to_ids(["bad", "awful"])
    victim = KeywordVictim(bad)
    ids = tokenizer("the food was good")["input_ids"]
    out = baseline.attack_ids(victim, ids, 0, similarity=None, min_similarity=0.0, max_queries=100, seed=0,
                              candidates=lambda token: [awful, bad])
    assert out["success"] and bad in out["adv_ids"] and out["queries"] == victim.seen
    assert len(out["adv_ids"]) == len(ids) and sum(a != b for a, b in zip(ids, out["adv_ids"])) == 1
    # the constraint: no candidate is similar enough, so the attack fails
    victim.seen = 0
    out = baseline.attack_ids(victim, ids, 0, similarity=lambda new: 0.5, min_similarity=0.9, max_queries=100,
                              seed=0, candidates=lambda token: [awful, bad])
    assert not out["success"] and out["adv_ids"] == ids and out["queries"] == victim.seen
    # the query budget is a hard limit
    victim.seen = 0
    out = baseline.attack_ids(victim, ids, 0, similarity=None, min_similarity=0.0, max_queries=3, seed=0,
                              candidates=lambda token: [awful, bad])
    assert out["queries"] <= 3 and victim.seen <= 3
    assert baseline.attack_ids(victim, ids, 0, None, 0.0, 50, 0, lambda t: [awful, bad]) == \
        baseline.attack_ids(victim, ids, 0, None, 0.0, 50, 0, lambda t: [awful, bad])
    with pytest.raises(ValueError, match="tokenizer"):
        baseline.attack_ids(victim, ids, 0, None, 0.0, 50, 0)


def test_embedding_neighbours_keep_the_piece_type_and_skip_banned(models, tokenizer):
    victim = models[0]
    banned = banned_tokens(tokenizer)
    neighbours = baseline.EmbeddingNeighbours(victim.get_input_embeddings().weight, tokenizer, k=10, banned=banned)
    word, piece = tokenizer.convert_tokens_to_ids(["flight", "##ing"])
    for token, is_piece in ((word, False), (piece, True)):
        found = neighbours(token)
        assert len(found) == 10 and token not in found and not banned[found].any()
        assert all(t.startswith("##") == is_piece for t in tokenizer.convert_ids_to_tokens(found))
