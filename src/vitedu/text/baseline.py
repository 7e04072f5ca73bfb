"""A black-box baseline for GBDA: greedy token substitution under a similarity constraint (TextFooler-like).

1. Rank the positions by importance: the drop of the true class's probability when the token is deleted
   (one victim query per position).
2. In that order, try each position's candidate replacements (one query each, one batch per position). A candidate
   counts only if ``similarity(new ids) >= min_similarity`` (e.g. BERTScore against the input, the same measure
   that GBDA optimises). If one fools the victim, stop; else keep the allowed candidate that lowers the true class's
   probability most, and go on to the next position.

Candidates default to the nearest tokens in an embedding space (:class:`EmbeddingNeighbours`: cosine, same kind of
piece, whole word or '##' continuation). The seed breaks ties between equally important positions, so two runs
with one seed agree. Every sentence the victim classifies is a query, and the attack stops at ``max_queries``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitedu.text.data import pad_ids


class EmbeddingNeighbours:
    """The ``k`` tokens nearest to a token by cosine in ``weight`` [vocab, d], of the same piece type ('##' or
    not), never a banned token (e.g. :func:`vitedu.text.gbda.banned_tokens`); cached per token."""

    def __init__(self, weight: torch.Tensor, tokenizer, k: int = 20, banned: torch.Tensor | None = None):
        if k < 1:
            raise ValueError(f"k must be >= 1 neighbours, got {k}")
        self.unit = F.normalize(weight.detach().float(), dim=-1)
        self.k = k
        tokens = tokenizer.convert_ids_to_tokens(list(range(weight.shape[0])))
        self.continuation = torch.tensor([t.startswith("##") for t in tokens])
        self.banned = torch.zeros(weight.shape[0], dtype=torch.bool) if banned is None else banned.clone()
        self._cache: dict[int, list[int]] = {}

    def __call__(self, token: int) -> list[int]:
        if token not in self._cache:
            cos = self.unit @ self.unit[token]
            allowed = (self.continuation == self.continuation[token]) & ~self.banned.to(cos.device)
            allowed[token] = False
            cos = cos.masked_fill(~allowed.to(cos.device), float("-inf"))
            self._cache[token] = cos.topk(self.k).indices.tolist()
        return self._cache[token]


@torch.no_grad()
def _true_probs(victim: nn.Module, rows: list[list[int]], label: int) -> tuple[torch.Tensor, torch.Tensor]:
    logits = victim(*pad_ids(rows, device=next(victim.parameters()).device)).float().cpu()
    return logits.softmax(-1)[:, label], logits.argmax(-1)


def attack_ids(victim: nn.Module, ids: list[int], label: int, similarity: Callable[[list[int]], float] | None,
               min_similarity: float, max_queries: int, seed: int,
               candidates: Callable[[int], list[int]] | None = None, tokenizer=None) -> dict:
    """Greedy substitution attack on one sentence (token ids with [CLS] and [SEP]) of true class ``label``.

    ``similarity`` scores a candidate's ids against the input (None: no constraint); ``candidates(token)`` gives
    the replacements to try (default: 20 nearest tokens in the victim's input embedding, which needs
    ``tokenizer``). Returns ``success``, ``queries`` (sentences the victim classified), ``adv_ids`` (the last
    sentence: the adversarial one if ``success``) and ``similarity`` of it.
    """
    ids = [int(i) for i in ids]
    if len(ids) < 3:
        raise ValueError("ids must be [CLS] w_1 ... w_n [SEP] with at least one word")
    if max_queries < 1:
        raise ValueError(f"max_queries must be >= 1, got {max_queries}")
    if candidates is None:
        if tokenizer is None:
            raise ValueError("the default candidates (embedding neighbours) need the tokenizer; pass tokenizer=...")
        from vitedu.text.gbda import banned_tokens

        weight = victim.get_input_embeddings().weight
        candidates = EmbeddingNeighbours(weight, tokenizer, banned=banned_tokens(tokenizer, weight.shape[0]))
    probs, preds = _true_probs(victim, [ids], label)
    queries = 1
    if int(preds[0]) != label:
        return {"success": True, "queries": queries, "adv_ids": ids, "similarity": 1.0}
    current, current_prob = list(ids), float(probs[0])
    positions = list(range(1, len(ids) - 1))
    budget = max_queries - queries
    if len(ids) > 3 and budget > 0:  # importance by deletion (a one-word sentence has nothing to delete)
        deleted = [ids[:i] + ids[i + 1:] for i in positions[:budget]]
        drop_probs, _ = _true_probs(victim, deleted, label)
        queries += len(deleted)
        g = torch.Generator().manual_seed(seed)
        tie_break = torch.rand(len(positions), generator=g).tolist()
        importance = {p: float(current_prob - drop_probs[j]) if j < len(deleted) else float("-inf")
                      for j, p in enumerate(positions)}
        positions.sort(key=lambda p: (-importance[p], tie_break[p - 1]))
    best_similarity = 1.0
    for position in positions:
        budget = max_queries - queries
        if budget <= 0:
            break
        options = [c for c in candidates(current[position]) if c != current[position]][:budget]
        if not options:
            continue
        trials = [current[:position] + [c] + current[position + 1:] for c in options]
        trial_probs, trial_preds = _true_probs(victim, trials, label)
        queries += len(trials)
        # the most damaging first; the (costly) similarity only until one passes the constraint
        for j in sorted(range(len(trials)), key=lambda j: float(trial_probs[j])):
            if int(trial_preds[j]) == label and float(trial_probs[j]) >= current_prob:
                break  # no allowed candidate can improve on the current sentence
            score = 1.0 if similarity is None else float(similarity(trials[j]))
            if score < min_similarity:
                continue
            if int(trial_preds[j]) != label:  # fooled: prefer the most similar of the fooling ones
                fooling = [k for k in range(len(trials)) if int(trial_preds[k]) != label]
                scored = [(score if k == j else (1.0 if similarity is None else float(similarity(trials[k]))), k)
                          for k in fooling]
                best, k = max((s, k) for s, k in scored if s >= min_similarity)
                return {"success": True, "queries": queries, "adv_ids": trials[k], "similarity": best}
            current, current_prob, best_similarity = trials[j], float(trial_probs[j]), score
            break
    return {"success": False, "queries": queries, "adv_ids": current, "similarity": best_similarity}


__all__ = ["EmbeddingNeighbours", "attack_ids"]
