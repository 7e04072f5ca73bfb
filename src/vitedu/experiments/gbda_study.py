"""Chapter 10 (GBDA, Guo et al. 2021): can a gradient-optimised distribution over sentences fool a text transformer
with few, fluent, meaning-preserving edits, and do its samples transfer to another model?

Small-scale reproduction (issue 9, items 3-4) on the tweet-sentiment corpus of ``vitedu.text.data`` with the
models of ``vitedu.text.models.pretrained_models(budget)`` (victim, a second victim of another seed and shape, a
causal LM) and BERTScore over the MiniLM-L6 reference encoder with idf weights from the training tweets:

- a fixed set of test tweets (the first ones, in the split's order, of ``min_tokens``..``max_tokens`` tokens that
  the victim classifies correctly) attacked by **GBDA** (white-box) and by the **greedy substitution baseline**
  (black-box, MiniLM-embedding neighbours) under BERTScore F1 >= GBDA's mean: success rate, victim queries,
  BERTScore, perplexity under the LM, share of tokens changed;
- **transfer**: victim2's accuracy on the clean tweets, on GBDA's (and the baseline's) adversarial tweets, and a
  black-box transfer attack that samples up to ``transfer_samples`` sentences from GBDA's optimised distribution
  and queries victim2 with them;
- **ablation** on the first ``ablation_sentences``: without the fluency term (lambda_perp = 0) and without the
  similarity term (lambda_sim = 0);
- examples of adversarial tweets with the changed tokens.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, replace

import torch
from tqdm.auto import tqdm

from ..budget import Budget


@dataclass(frozen=True)
class Config:
    sentences: int  # test tweets attacked
    steps: int  # GBDA's Adam iterations (the paper's code: 100)
    batch_size: int  # Gumbel samples per iteration (the paper's code: 10)
    samples: int  # hard sentences drawn after optimisation, the most victim queries (the paper's code: 100)
    ablation_sentences: int  # the first of them also attacked without each regulariser
    baseline_queries: int  # the baseline's query budget per tweet
    transfer_samples: int  # sentences drawn from GBDA's distribution to query victim2
    lr: float = 0.3
    init_coeff: float = 15.0
    kappa: float = 5.0
    lambda_sim: float = 20.0
    lambda_perp: float = 1.0
    neighbours: int = 20  # the baseline's candidates per token
    min_tokens: int = 6  # [CLS] and [SEP] included
    max_tokens: int = 24  # shorter tweets: GBDA's cost grows with length x 30,522 tokens
    examples: int = 8
    seed: int = 0


CONFIGS = {
    "smoke": Config(sentences=3, steps=5, batch_size=2, samples=10, ablation_sentences=2, baseline_queries=40,
                    transfer_samples=10, examples=2),
    "cpu": Config(sentences=60, steps=50, batch_size=5, samples=100, ablation_sentences=12, baseline_queries=400,
                  transfer_samples=100),
    "gpu": Config(sentences=200, steps=100, batch_size=10, samples=100, ablation_sentences=50, baseline_queries=1000,
                  transfer_samples=1000, max_tokens=64),
}


def config(budget: Budget) -> Config:
    return budget.select(CONFIGS)


def gbda_config(cfg: Config, **overrides):
    from ..text.gbda import GBDAConfig

    settings = dict(steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size, init_coeff=cfg.init_coeff,
                    kappa=cfg.kappa, lambda_sim=cfg.lambda_sim, lambda_perp=cfg.lambda_perp, samples=cfg.samples,
                    seed=cfg.seed)
    return GBDAConfig(**{**settings, **overrides})


def select_sentences(victim, tokenizer, texts: list[str], labels: list[int], cfg: Config) -> list[tuple[str, int, list[int]]]:
    """The first ``cfg.sentences`` of ``texts`` with ``min_tokens``..``max_tokens`` tokens that ``victim`` classifies
    correctly: (text, label, ids)."""
    from ..text.gbda import predict_ids

    limit = min(cfg.max_tokens, victim.max_length)
    chosen, rows = [], tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    for text, label, ids in zip(texts, labels, rows):
        if not cfg.min_tokens <= len(ids) <= limit:
            continue
        if int(predict_ids(victim, [ids])[0]) != label:
            continue
        chosen.append((text, int(label), ids))
        if len(chosen) == cfg.sentences:
            break
    if not chosen:
        raise ValueError(f"no test text of {cfg.min_tokens}-{limit} tokens is classified correctly by the victim")
    return chosen


def _changed_share(tokenizer, ids, adv_ids) -> float:
    from ..text.gbda import changed_tokens

    edits = changed_tokens(tokenizer, ids, adv_ids)
    return sum(max(len(tokenizer.tokenize(old)), len(tokenizer.tokenize(new))) for old, new in edits) / (len(ids) - 2)


def _row(result, tokenizer, victim2_pred: int | None = None) -> dict:
    row = result.summary()
    row["changed"] = _changed_share(tokenizer, result.ids, result.adv_ids)
    if victim2_pred is not None:
        row["victim2_pred"] = victim2_pred
    return row


def transfer_attack(attack, theta: torch.Tensor, ids: list[int], label: int, target, n: int, seed: int) -> dict:
    """Black-box transfer: up to ``n`` sentences sampled from GBDA's optimised distribution ``theta`` (built on the
    white-box victim) are sent to ``target`` until one is misclassified."""
    generator = torch.Generator(device=theta.device).manual_seed(seed + 7919)
    rows = attack.sample(theta, ids, n, generator)
    preds = attack.predict(target, rows)
    fooled = (preds != label).nonzero()
    index = int(fooled[0, 0]) if len(fooled) else len(rows) - 1
    return {"success": bool(len(fooled)), "queries": index + 1, "adv_ids": rows[index]}


def study(models: dict, scorer, tokenizer, sentences: list[tuple[str, int, list[int]]], cfg: Config,
          progress: bool = True) -> dict:
    """GBDA, the baseline, transfer and the ablation on ``sentences`` (see the module's docstring). ``models``:
    "victim", "victim2", "lm" as :func:`~vitedu.text.models.pretrained_models` gives them."""
    from ..text.baseline import EmbeddingNeighbours, attack_ids
    from ..text.gbda import GBDA, banned_tokens, sentence_perplexity

    victim, victim2, lm = models["victim"], models["victim2"], models["lm"]
    attack = GBDA(victim, lm, scorer, tokenizer, gbda_config(cfg))
    times, start = {}, time.perf_counter()
    gbda_rows, transfer_rows = [], []
    for text, label, ids in tqdm(sentences, desc="GBDA", disable=not progress):
        result = attack.attack(ids, label, keep_theta=True)
        v2 = int(attack.predict(victim2, [result.adv_ids])[0])
        gbda_rows.append({**_row(result, tokenizer, v2), "text": text,
                          "victim2_clean_pred": int(attack.predict(victim2, [ids])[0])})
        transfer = transfer_attack(attack, result.theta, ids, label, victim2, cfg.transfer_samples, cfg.seed)
        score = scorer.score_ids(ids, [transfer["adv_ids"]])
        transfer_rows.append({**transfer, "label": label, "bertscore": float(score.f1[0]),
                              "perplexity": sentence_perplexity(lm, [transfer["adv_ids"]])[0]})
    times["gbda"] = time.perf_counter() - start

    # the baseline at GBDA's similarity: BERTScore F1 >= the mean of GBDA's successful attacks
    scores = [r["bertscore"] for r in gbda_rows if r["success"]]
    min_similarity = round(statistics.mean(scores), 3) if scores else 0.9
    neighbours = EmbeddingNeighbours(scorer.word_embeddings.weight, tokenizer, cfg.neighbours,
                                     banned=banned_tokens(tokenizer, scorer.word_embeddings.num_embeddings))
    baseline_rows = []
    for text, label, ids in tqdm(sentences, desc="baseline", disable=not progress):
        out = attack_ids(victim, ids, label, lambda new, ids=ids: float(scorer.score_ids(ids, [new]).f1[0]),
                         min_similarity, cfg.baseline_queries, cfg.seed, candidates=neighbours)
        adv = out["adv_ids"]
        clean_ppl, ppl = sentence_perplexity(lm, [ids, adv])
        baseline_rows.append({"text": text, "label": label, "ids": ids, "adv_ids": adv, "success": out["success"],
                              "queries": out["queries"], "bertscore": float(scorer.score_ids(ids, [adv]).f1[0]),
                              "perplexity": ppl, "clean_perplexity": clean_ppl,
                              "changed": _changed_share(tokenizer, ids, adv),
                              "victim2_pred": int(attack.predict(victim2, [adv])[0])})
    times["baseline"] = time.perf_counter() - start - times["gbda"]

    ablation = {"full": gbda_rows[:cfg.ablation_sentences]}
    for name, overrides in (("no fluency (lambda_perp=0)", {"lambda_perp": 0.0}),
                            ("no similarity (lambda_sim=0)", {"lambda_sim": 0.0})):
        ablated = GBDA(victim, lm, scorer, tokenizer, gbda_config(cfg, **overrides))
        ablation[name] = [_row(ablated.attack(ids, label), tokenizer)
                          for _, label, ids in tqdm(sentences[:cfg.ablation_sentences], desc=name,
                                                    disable=not progress)]
    times["ablation"] = time.perf_counter() - start - times["gbda"] - times["baseline"]
    return {"gbda": gbda_rows, "baseline": baseline_rows, "transfer": transfer_rows, "ablation": ablation,
            "baseline_min_similarity": min_similarity, "times": times}


def summarize(rows: list[dict]) -> dict:
    """Success rate; mean queries, BERTScore F1, perplexity and share of changed tokens over the successful
    attacks (the paper's convention for quality); clean perplexity of the same tweets for reference."""
    won = [r for r in rows if r["success"]]

    def mean(key, subset):
        values = [r[key] for r in subset if r.get(key) is not None and math.isfinite(r[key])]
        return statistics.mean(values) if values else None

    def median(key, subset):
        values = [r[key] for r in subset if r.get(key) is not None and math.isfinite(r[key])]
        return statistics.median(values) if values else None

    return {"sentences": len(rows), "success_rate": len(won) / len(rows) if rows else None,
            "adversarial_accuracy": 1 - len(won) / len(rows) if rows else None,
            "queries": mean("queries", won), "bertscore": mean("bertscore", won),
            "perplexity": mean("perplexity", won), "perplexity_median": median("perplexity", won),
            "clean_perplexity": mean("clean_perplexity", won), "clean_perplexity_median": median("clean_perplexity", won),
            "changed": mean("changed", won),
            # over every attacked tweet (the last sampled sentence where none fooled the victim): fair when the
            # variants compared fool different tweets
            "bertscore_all": mean("bertscore", rows), "perplexity_median_all": median("perplexity", rows),
            "changed_all": mean("changed", rows)}


def run(budget: Budget, device="cpu") -> dict:
    """The chapter's study as stored in the ledger: the models' clean numbers, the summaries (GBDA, baseline,
    transfer, ablation), every attacked tweet's row and examples with the changes marked."""
    from ..text import data
    from ..text.bertscore import BERTScorer, idf_weights
    from ..text.hub import load_tokenizer
    from ..text.models import pretrained_models

    cfg = config(budget)
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    models = pretrained_models(budget.name, device=device)
    times = {"models": time.perf_counter() - start}
    print(f"models: {times['models']:.0f} s", flush=True)
    tokenizer = load_tokenizer()
    split = data.load_split()
    scorer = BERTScorer(idf=idf_weights(tokenizer, split.train_texts), tokenizer=tokenizer).to(device)
    sentences = select_sentences(models["victim"], tokenizer, split.test_texts, split.test_labels, cfg)
    out = study(models, scorer, tokenizer, sentences, cfg)
    times.update(out["times"])
    for name, seconds in times.items():
        print(f"{name}: {seconds:.0f} s", flush=True)
    return {**ledger(out, cfg, models, tokenizer), "times": times, "seconds": time.perf_counter() - start}


def ledger(out: dict, cfg: Config, models: dict, tokenizer) -> dict:
    """The ledger's numbers from :func:`study`'s output: summaries (GBDA, baseline, transfer, ablation), the
    models' clean numbers, every attacked tweet's row and examples with the changes marked."""
    from ..text import data
    from ..text.gbda import highlight

    gbda, base = out["gbda"], out["baseline"]

    def accuracy_on(rows, key="victim2_pred"):
        won = [r for r in rows if r["success"]]
        return statistics.mean(r[key] == r["label"] for r in won) if won else None

    victim2 = {"clean_accuracy": statistics.mean(r["victim2_clean_pred"] == r["label"] for r in gbda),
               "on_gbda_adversarial": accuracy_on(gbda), "on_baseline_adversarial": accuracy_on(base),
               "sampling_attack": summarize(out["transfer"])}
    examples = [{"text": r["text"], "label": data.LABELS[r["label"]],
                 "adversarial": highlight(tokenizer, r["ids"], r["adv_ids"]), "victim_pred": data.LABELS[r["adv_pred"]],
                 "bertscore": r["bertscore"], "perplexity": r["perplexity"]} for r in gbda if r["success"]]
    return {"config": asdict(cfg), "gbda_config": asdict(gbda_config(cfg)),
            "models": {key: models.get(key) for key in ("victim_accuracy", "victim2_accuracy", "lm_perplexity")}
            | {"info": models.get("info")},
            "summary": {"gbda": summarize(gbda), "baseline": summarize(base)},
            "baseline_min_similarity": out["baseline_min_similarity"],
            "transfer": victim2,
            "ablation": {name: summarize(rows) for name, rows in out["ablation"].items()},
            "examples": examples[:cfg.examples],
            "rows": {"gbda": gbda, "baseline": base, "transfer": out["transfer"]},
            "study_times": out["times"]}


# ------------------------------------------------------------------------------------------- chapter helpers

def summary_table(result: dict) -> list[dict]:
    """One row per attack (GBDA, baseline, GBDA's samples sent to victim2): success, queries, quality."""
    rows = []
    for name, summary in (("GBDA (white-box)", result["summary"]["gbda"]),
                          ("greedy substitution (black-box)", result["summary"]["baseline"]),
                          ("GBDA samples -> victim2 (transfer)", result["transfer"]["sampling_attack"])):
        rows.append({"attack": name, "tweets": summary["sentences"], "success": _round(summary["success_rate"], 3),
                     "queries": _round(summary["queries"], 1), "BERTScore": _round(summary["bertscore"], 3),
                     "perplexity": _round(summary["perplexity_median"], 0),
                     "clean perplexity": _round(summary["clean_perplexity_median"], 0),
                     "tokens changed": _round(summary["changed"], 3)})
    return rows


def transfer_table(result: dict) -> list[dict]:
    """victim2's accuracy on the clean tweets and on each attack's adversarial tweets."""
    t = result["transfer"]
    return [{"inputs": "clean tweets", "victim2 accuracy": _round(t["clean_accuracy"], 3)},
            {"inputs": "GBDA's adversarial tweets", "victim2 accuracy": _round(t["on_gbda_adversarial"], 3)},
            {"inputs": "baseline's adversarial tweets", "victim2 accuracy": _round(t["on_baseline_adversarial"], 3)}]


def ablation_table(result: dict) -> list[dict]:
    """GBDA with and without each regulariser on the same tweets; perplexities are medians."""
    return [{"variant": name, "tweets": s["sentences"], "success": _round(s["success_rate"], 3),
             "BERTScore (fooled)": _round(s["bertscore"], 3), "BERTScore (all)": _round(s["bertscore_all"], 3),
             "perplexity (fooled)": _round(s["perplexity_median"], 0),
             "perplexity (all)": _round(s["perplexity_median_all"], 0),
             "tokens changed (all)": _round(s["changed_all"], 3)} for name, s in result["ablation"].items()]


def _round(value, digits):
    return None if value is None else round(value, digits) if digits else round(value)


def format_table(rows: list[dict]) -> str:
    """A plain-text table of dict rows (for the notebook and the terminal)."""
    if not rows:
        return ""
    keys = list(rows[0])
    cells = [[("-" if r[k] is None else str(r[k])) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def plot_quality(result: dict, ax=None):
    """Each successful adversarial tweet as a point (BERTScore F1, log perplexity under the LM), per attack:
    up and to the left is better (similar and fluent)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(5.5, 4))[1]
    for name, rows, marker in (("GBDA", result["rows"]["gbda"], "o"), ("baseline", result["rows"]["baseline"], "s")):
        won = [r for r in rows if r["success"]]
        ax.scatter([r["bertscore"] for r in won], [r["perplexity"] for r in won], marker=marker, alpha=0.7,
                   label=f"{name} ({len(won)} fooled)")
    clean = [r["clean_perplexity"] for r in result["rows"]["gbda"]]
    if clean:
        ax.axhline(statistics.median(clean), color="grey", ls="--", lw=1, label="clean tweets (median)")
    ax.set_yscale("log")
    ax.set_xlabel("BERTScore F1 vs the original")
    ax.set_ylabel("perplexity under the LM")
    ax.legend(fontsize=8)
    return ax


def plot_history(history: dict, ax=None):
    """The loss terms of one GBDA run over the iterations."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(5.5, 3.5))[1]
    for name, values in history.items():
        ax.plot(values, label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss term")
    ax.legend(fontsize=8)
    return ax


__all__ = ["CONFIGS", "Config", "ablation_table", "config", "format_table", "gbda_config", "ledger", "plot_history",
           "plot_quality", "run", "select_sentences", "study", "summarize", "summary_table", "transfer_table",
           "transfer_attack"]
