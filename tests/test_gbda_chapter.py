"""Chapter 10 (GBDA): the exercises' checks (right answers pass, typical wrong ones get their hint) and the hub victim
adapter of the scaling-up section, on a tiny local BERT classifier (nothing is downloaded)."""

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification, BertModel

from vitedu import check
from vitedu.text.bertscore import BERTScorer, idf_weights
from vitedu.text.gbda import GBDA, GBDAConfig, HubClassifier, gumbel_softmax, margin_loss
from vitedu.text.hub import load_tokenizer
from vitedu.text.models import CausalLM, accuracy


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def tiny_bert(num_labels=4, max_position_embeddings=40):
    """The configuration of a one-block BERT over the BERT vocabulary (weights random: seed first)."""
    torch.manual_seed(0)
    return BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=max_position_embeddings, num_labels=num_labels)


# ---- exercise 1: the Gumbel-softmax ----------------------------------------------------------------------------------

def right_gumbel(logits, temperature):
    gumbels = -torch.log(-torch.log(torch.rand_like(logits).clamp_min(1e-20)))
    return torch.softmax((logits + gumbels) / temperature, dim=-1)


@pytest.mark.parametrize("wrong, hint", [
    (lambda logits, t: torch.softmax(logits / t, -1), "every sample is the same"),
    (lambda logits, t: torch.softmax((logits + torch.randn_like(logits)) / t, -1), "Gumbel-max"),
    (lambda logits, t: torch.softmax((logits - torch.log(torch.rand_like(logits))) / t, -1), "Gumbel-max"),
    (lambda logits, t: torch.softmax((logits - torch.log(-torch.log(torch.rand_like(logits)))) * t, -1), "Divide"),
    (lambda logits, t: torch.exp((logits - torch.log(-torch.log(torch.rand_like(logits)))) / t), "distribution"),
    (lambda logits, t: F.one_hot((logits - torch.log(-torch.log(torch.rand_like(logits)))).argmax(-1),
                                 logits.shape[-1]).float(), "hard one-hots"),
    (lambda logits, t: right_gumbel(logits, t).detach(), "no gradient"),
    (lambda logits, t: logits[:2], "shape"),
])
def test_gumbel_softmax_check(wrong, hint):
    assert check.gumbel_softmax(right_gumbel)
    assert check.gumbel_softmax(gumbel_softmax)  # the library's own, with its defaults
    result = check.gumbel_softmax(wrong)
    assert not result and hint in result.message, result.message


def test_gumbel_softmax_check_leaves_the_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check.gumbel_softmax(right_gumbel)
    assert torch.equal(torch.rand(3), expected)


def test_gumbel_softmax_check_reports_an_exception():
    def broken(logits, temperature):
        raise NotImplementedError

    result = check.gumbel_softmax(broken)
    assert not result and "NotImplementedError" in result.message


# ---- exercise 2: the margin loss -------------------------------------------------------------------------------------

def right_margin(logits, labels, kappa):
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf")).max(1).values
    return (true - others + kappa).clamp(min=0)


def _true(logits, labels):
    return logits.gather(1, labels[:, None]).squeeze(1)


def _others(logits, labels):
    return logits.scatter(1, labels[:, None], float("-inf")).max(1).values


@pytest.mark.parametrize("wrong, hint", [
    (lambda z, y, k: _true(z, y) - _others(z, y) + k, "clamp at 0"),
    (lambda z, y, k: (_others(z, y) - _true(z, y) + k).clamp(min=0), "sign is flipped"),
    (lambda z, y, k: (_true(z, y) - z.max(1).values + k).clamp(min=0), "skip the true class"),
    (lambda z, y, k: (_true(z, y) - _others(z, y) - k).clamp(min=0), "kappa is added"),
    (lambda z, y, k: (_true(z, y) - z.mean(1) + k).clamp(min=0), "per row"),
    (lambda z, y, k: right_margin(z, y, k).mean(), "one loss per row"),
])
def test_margin_loss_check(wrong, hint):
    assert check.margin_loss(right_margin)
    assert check.margin_loss(margin_loss)
    result = check.margin_loss(wrong)
    assert not result and hint in result.message, result.message


# ---- exercise 3: BERTScore from a similarity matrix ----------------------------------------------------------------

def right_bertscore(sim, ref_idf, cand_idf):
    recall = (sim.max(dim=0).values * ref_idf).sum() / ref_idf.sum()
    precision = (sim.max(dim=1).values * cand_idf).sum() / cand_idf.sum()
    return precision, recall, 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("wrong, hint", [
    (lambda s, ri, ci: right_bertscore(s.T, ci, ri), "swapped"),
    (lambda s, ri, ci: right_bertscore(s, torch.ones_like(ri), torch.ones_like(ci)), "no idf weights"),
    (lambda s, ri, ci: ((s.max(1).values * ci).sum(), (s.max(0).values * ri).sum(),
                        2 * (s.max(1).values * ci).sum() * (s.max(0).values * ri).sum()
                        / ((s.max(1).values * ci).sum() + (s.max(0).values * ri).sum())), "normalised"),
    (lambda s, ri, ci: ((s.mean(1) * ci).sum() / ci.sum(), (s.mean(0) * ri).sum() / ri.sum(), 0.5), "best"),
    (lambda s, ri, ci: (*right_bertscore(s, ri, ci)[:2], sum(right_bertscore(s, ri, ci)[:2]) / 2), "harmonic"),
    (lambda s, ri, ci: right_bertscore(s, ri, ci)[:2], "three numbers"),
    (lambda s, ri, ci: (0.5, 0.5, 0.5), "expected"),
])
def test_bertscore_check(wrong, hint):
    assert check.bertscore(right_bertscore)
    result = check.bertscore(wrong)
    assert not result and hint in result.message, result.message


def test_the_bertscore_exercise_is_the_librarys_bertscore(tokenizer):
    """The formula the check expects gives vitedu's BERTScorer numbers on a real pair of sentences."""
    torch.manual_seed(0)
    scorer = BERTScorer(BertModel(tiny_bert()), idf=idf_weights(tokenizer, ["the flight was late", "the cat sat"]),
                        tokenizer=tokenizer)
    ref, cand = tokenizer(["the flight was late again", "the plane was late"])["input_ids"]
    ref_t, cand_t = torch.tensor([ref]), torch.tensor([cand])
    with torch.no_grad():
        sim = scorer.embed(cand_t)[0] @ scorer.embed(ref_t)[0].T
    got = right_bertscore(sim, scorer.idf[ref_t[0]], scorer.idf[cand_t[0]])
    want = scorer.score_ids(ref, [cand])
    for value, expected in zip(got, (want.precision, want.recall, want.f1)):
        assert abs(float(value) - float(expected)) < 1e-5


# ---- the hub victim adapter (scaling up) -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hub_victim(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_bert_classifier")
    BertForSequenceClassification(tiny_bert()).save_pretrained(folder)
    return HubClassifier.from_pretrained(str(folder))


def test_hub_classifier_takes_ids_or_soft_one_hots(hub_victim, tokenizer):
    ids = torch.tensor([tokenizer("the flight was late")["input_ids"]])
    with torch.no_grad():
        from_ids = hub_victim(ids)
        one_hot = F.one_hot(ids, 30522).float()
        from_probs = hub_victim(inputs_embeds=one_hot @ hub_victim.get_input_embeddings().weight)
    assert from_ids.shape == (1, 4) and hub_victim.num_classes == 4 and hub_victim.max_length == 40
    assert torch.allclose(from_ids, from_probs, atol=1e-5)
    assert not any(p.requires_grad for p in hub_victim.parameters())
    with pytest.raises(ValueError, match="exactly one"):
        hub_victim(ids, inputs_embeds=one_hot @ hub_victim.get_input_embeddings().weight)
    with pytest.raises(ValueError, match="40 positions"):
        hub_victim(torch.ones(1, 41, dtype=torch.long))
    with pytest.raises(TypeError, match="transformers model"):
        HubClassifier(torch.nn.Linear(2, 2))
    # the chapter's accuracy() works on it as on vitedu's classifiers
    assert 0.0 <= accuracy(hub_victim, tokenizer, ["good", "bad news", "sports"], [0, 1, 3]) <= 1.0


def test_gbda_attacks_a_four_class_hub_victim(hub_victim, tokenizer):
    """AG News has 4 classes: GBDA accepts label 3 for a 4-class victim, and still refuses labels out of range."""
    lm = CausalLM(dim=16, depth=1, num_heads=2, max_length=32, embedding_init="random").eval()
    scorer = BERTScorer(BertModel(tiny_bert()), tokenizer=tokenizer)
    attack = GBDA(hub_victim, lm, scorer, tokenizer, GBDAConfig(steps=3, batch_size=2, samples=4))
    assert attack.max_length == 32
    result = attack.attack("stocks fall as oil prices rise", 3)
    assert result.label == 3 and 1 <= result.queries <= 4 and 0 < result.bertscore <= 1 + 1e-6
    with pytest.raises(ValueError, match="out of range"):
        attack.attack("stocks fall as oil prices rise", 4)
    with pytest.raises(ValueError, match="unknown label"):
        attack.attack("stocks fall as oil prices rise", "sports")


def test_the_scaling_up_code_runs_offline(tmp_path, monkeypatch):
    """The chapter's Colab code block, executed as written except for its sizes, on a fake AG News, a tiny local BERT
    in place of the hub victim and the CPU in place of CUDA: it catches API drift in the code readers copy."""
    import json
    import re
    import sys
    import types

    from vitedu.paths import repo_root

    cells = json.loads((repo_root() / "chapters" / "10_gbda.ipynb").read_text())["cells"]
    text = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    block = re.search(r"```python\n(.*?)```", text[text.index("## Scaling up"):], re.S).group(1)
    folder = tmp_path / "victim"
    BertForSequenceClassification(tiny_bert(max_position_embeddings=160)).save_pretrained(folder)
    substitutions = {'"textattack/bert-base-uncased-ag-news"': repr(str(folder)), '"cuda"': '"cpu"',
                     "dim=256, depth=4, num_heads=8": "dim=16, depth=1, num_heads=2",
                     '"runs/ag_news_lm"': repr(str(tmp_path / "lm")),
                     "steps=100, batch_size=10": "steps=2, batch_size=2",
                     "[:500]": "[:8]", "[:100]": "[:2]"}
    for old, new in substitutions.items():
        assert old in block, f"the chapter's scaling-up code no longer contains {old}: update this test"
        block = block.replace(old, new)
    topics = ["world", "sports", "business", "science"]
    parts = {part: {"text": [f"{topics[i % 4]} news number {i} about markets and games" for i in range(n)],
                    "label": [i % 4 for i in range(n)]} for part, n in (("train", 24), ("test", 8))}
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda name: parts))
    namespace: dict = {}
    exec(compile(block, "10_gbda scaling up", "exec"), namespace)
    assert len(namespace["results"]) == 2 and all(1 <= r.queries <= 100 for r in namespace["results"])
