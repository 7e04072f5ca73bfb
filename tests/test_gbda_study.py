"""Chapter 10 (GBDA): the study, run by ``vitedu reproduce 10_gbda``, on tiny random stand-in models."""

import json
from dataclasses import replace

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from transformers import BertConfig, BertModel

from vitedu.budget import Budget
from vitedu.experiments import gbda_study as gs, get
from vitedu.text.bertscore import BERTScorer
from vitedu.text.hub import load_tokenizer
from vitedu.text.models import CausalLM, TextClassifier

TINY = dict(dim=16, depth=1, num_heads=2, max_length=24, embedding_init="random")
TEXTS = ["the flight was late and the crew was rude", "what a lovely crew on this flight today",
         "my bag is lost again, thanks for nothing", "ok", "the seats were fine and the food was hot"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def stand_ins(tokenizer):
    torch.manual_seed(0)
    models = {"victim": TextClassifier(**TINY).eval(), "victim2": TextClassifier(**{**TINY, "dim": 8}).eval(),
              "lm": CausalLM(**TINY).eval(), "victim_accuracy": 0.5, "victim2_accuracy": 0.4, "lm_perplexity": 900.0,
              "info": {}}
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    return models, BERTScorer(BertModel(config), tokenizer=tokenizer)


def small_config():
    return replace(gs.config(Budget("smoke")), sentences=3, ablation_sentences=2, steps=3, samples=6,
                   transfer_samples=6, baseline_queries=30, neighbours=4, examples=2)


def test_registered_and_every_budget_is_valid():
    assert get("10") == ("10_gbda", gs)
    for name in ("smoke", "cpu", "gpu"):
        cfg = gs.config(Budget(name))
        attack = gs.gbda_config(cfg)  # a valid GBDAConfig
        assert attack.lr == 0.3 and attack.kappa == 5.0 and attack.lambda_perp == 1.0
        assert cfg.ablation_sentences <= cfg.sentences and cfg.min_tokens >= 3 and cfg.max_tokens <= 64
    assert gs.config(Budget("cpu")).sentences >= 50
    gpu = gs.config(Budget("gpu"))
    assert (gpu.steps, gpu.batch_size, gpu.samples) == (100, 10, 100)  # the official code's settings
    assert gs.gbda_config(gs.config(Budget("cpu")), lambda_sim=0.0).lambda_sim == 0.0


def test_select_sentences_keeps_correct_ones_of_the_right_length(stand_ins, tokenizer):
    victim = stand_ins[0]["victim"]
    from vitedu.text.gbda import predict_ids

    labels = [int(predict_ids(victim, [tokenizer(t)["input_ids"]])[0]) for t in TEXTS]
    wrong = [(lab + 1) % 3 for lab in labels]
    cfg = replace(small_config(), sentences=10, min_tokens=6)
    chosen = gs.select_sentences(victim, tokenizer, TEXTS, labels, cfg)
    assert [c[0] for c in chosen] == [t for t in TEXTS if len(tokenizer(t)["input_ids"]) >= 6]  # "ok" is too short
    assert all(c[2] == tokenizer(c[0])["input_ids"] for c in chosen)
    mixed = [labels[0]] + wrong[1:]
    assert [c[0] for c in gs.select_sentences(victim, tokenizer, TEXTS, mixed, cfg)] == [TEXTS[0]]
    assert len(gs.select_sentences(victim, tokenizer, TEXTS, labels, replace(cfg, sentences=2))) == 2
    with pytest.raises(ValueError, match="classified correctly"):
        gs.select_sentences(victim, tokenizer, TEXTS, wrong, cfg)


def test_summarize_counts_successes_and_averages_over_them():
    rows = [{"success": True, "queries": 2, "bertscore": 0.9, "perplexity": 100.0, "clean_perplexity": 50.0,
             "changed": 0.1},
            {"success": False, "queries": 100, "bertscore": 0.99, "perplexity": 60.0, "clean_perplexity": 40.0,
             "changed": 0.0},
            {"success": True, "queries": 4, "bertscore": 0.7, "perplexity": 300.0, "clean_perplexity": 30.0,
             "changed": 0.3}]
    s = gs.summarize(rows)
    assert s["sentences"] == 3 and s["success_rate"] == pytest.approx(2 / 3)
    assert s["adversarial_accuracy"] == pytest.approx(1 / 3)
    assert s["queries"] == 3 and s["bertscore"] == pytest.approx(0.8) and s["perplexity_median"] == 200.0
    assert s["bertscore_all"] == pytest.approx((0.9 + 0.99 + 0.7) / 3) and s["perplexity_median_all"] == 100.0
    none = gs.summarize([{**rows[1]}])
    assert none["success_rate"] == 0 and none["queries"] is None and none["bertscore"] is None


def test_study_on_stand_ins_is_complete_deterministic_and_json(stand_ins, tokenizer):
    models, scorer = stand_ins
    cfg = small_config()
    sentences = [(t, 0, tokenizer(t)["input_ids"]) for t in TEXTS[:3]]
    out = gs.study(models, scorer, tokenizer, sentences, cfg, progress=False)
    again = gs.study(models, scorer, tokenizer, sentences, cfg, progress=False)
    for key in ("gbda", "baseline", "transfer"):
        assert len(out[key]) == 3
        assert [r["adv_ids"] for r in out[key]] == [r["adv_ids"] for r in again[key]]
    assert set(out["ablation"]) == {"full", "no fluency (lambda_perp=0)", "no similarity (lambda_sim=0)"}
    assert all(len(rows) == 2 for rows in out["ablation"].values())
    for row in out["gbda"]:
        assert 1 <= row["queries"] <= cfg.samples and 0 <= row["changed"] <= 1.5
        assert row["success"] == (row["adv_pred"] != row["label"])
    for row in out["baseline"]:
        assert row["queries"] <= cfg.baseline_queries
        assert not row["success"] or row["bertscore"] >= out["baseline_min_similarity"] - 1e-6
    for row in out["transfer"]:
        assert 1 <= row["queries"] <= cfg.transfer_samples
    result = gs.ledger(out, cfg, models, tokenizer)
    json.dumps(result)  # the ledger is plain JSON
    assert result["summary"]["gbda"]["sentences"] == 3
    assert 0 <= result["transfer"]["clean_accuracy"] <= 1
    assert len(result["examples"]) <= cfg.examples
    for table in (gs.summary_table(result), gs.transfer_table(result), gs.ablation_table(result)):
        assert table and gs.format_table(table).count("\n") == len(table) + 1
    assert gs.summary_table(result)[0]["attack"].startswith("GBDA")
    gs.plot_quality(result)
    gs.plot_history({"margin": [3.0, 2.0], "total": [1.0, 0.5]})
    assert gs.format_table([]) == ""
