"""BERTScore (Zhang et al. 2020) over the MiniLM-L6 reference encoder, differentiable in the candidate.

BERTScore compares two sentences token by token in a pretrained encoder's contextual space: every reference token
is matched to its most similar candidate token (cosine), and the matches are averaged with idf weights, so rare,
meaningful words count more than "the" (recall R); precision P matches the other way and F1 combines them.

GBDA needs the score as a loss, so the candidate may also be given as a *distribution over tokens* per position
([B, T, vocab], e.g. Gumbel-softmax samples): the encoder then reads the expected word embedding ``probs @ E``.
MiniLM's vocabulary is the victims' vocabulary (30,522 uncased WordPieces), so the same probabilities go straight in.
A one-hot distribution gives exactly the score of the token ids.

The formulas follow the reference implementation, ``bert_score.utils.greedy_cos_idf`` (tested numerically against
it when ``bert_score`` is installed): [CLS] and [SEP] get idf weight 0, weights are normalised per sentence, and
idf(w) = log((M + 1) / (df(w) + 1)) over M training texts (unseen tokens get log(M + 1)).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


def idf_weights(tokenizer, texts: list[str], vocab_size: int | None = None) -> torch.Tensor:
    """Inverse document frequency of every token id over ``texts``, as ``bert_score.utils.get_idf_dict``:
    log((M + 1) / (df + 1)), a token counted once per text; special tokens ([CLS], [SEP], [PAD]) get 0."""
    texts = list(texts)
    if not texts:
        raise ValueError("idf_weights needs at least one text (e.g. the training texts of load_split())")
    vocab_size = vocab_size or len(tokenizer)
    counts: Counter = Counter()
    for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]:
        counts.update(set(ids))
    m = len(texts)
    idf = torch.full((vocab_size,), math.log(m + 1))
    for token, df in counts.items():
        idf[token] = math.log((m + 1) / (df + 1))
    idf[_special_ids(tokenizer)] = 0.0
    return idf


def _special_ids(tokenizer) -> list[int]:
    return [i for i in (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id) if i is not None]


@dataclass
class Score:
    """Per-sentence precision, recall and F1 (tensors [B])."""

    precision: torch.Tensor
    recall: torch.Tensor
    f1: torch.Tensor


class BERTScorer(nn.Module):
    """BERTScore with idf weights against one reference sentence at a time, in the final layer of ``encoder``.

    ``encoder``: a ``transformers`` BERT model (default: :func:`vitedu.text.hub.load_reference_encoder`, MiniLM-L6),
    frozen. ``idf``: a [vocab] tensor from :func:`idf_weights` (None: uniform weights, specials still 0).
    """

    def __init__(self, encoder: nn.Module | None = None, idf: torch.Tensor | None = None, tokenizer=None):
        super().__init__()
        if encoder is None:
            from vitedu.text.hub import load_reference_encoder

            encoder = load_reference_encoder()
        if tokenizer is None:
            from vitedu.text.hub import load_tokenizer

            tokenizer = load_tokenizer()
        self.encoder = encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        vocab = self.word_embeddings.num_embeddings
        if idf is None:
            idf = torch.ones(vocab)
            idf[_special_ids(tokenizer)] = 0.0
        if idf.shape != (vocab,):
            raise ValueError(f"idf must hold one weight per token of the encoder's vocabulary ({vocab}), got shape "
                             f"{tuple(idf.shape)}; build it with idf_weights(tokenizer, train_texts)")
        self.register_buffer("idf", idf.float().clone())

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.encoder.get_input_embeddings()

    @property
    def max_length(self) -> int:
        return self.encoder.config.max_position_embeddings

    def embed(self, ids: torch.Tensor | None = None, probs: torch.Tensor | None = None,
              mask: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-norm final-layer states [B, T, d] of token ids [B, T] or of token distributions [B, T, vocab]."""
        if (ids is None) == (probs is None):
            raise ValueError("give exactly one of ids [B, T] or probs [B, T, vocab]")
        if probs is not None:
            vocab = self.word_embeddings.num_embeddings
            if probs.ndim != 3 or probs.shape[-1] != vocab:
                raise ValueError(f"probs must be [B, T, {vocab}] distributions over the vocabulary, got "
                                 f"{tuple(probs.shape)}")
            length = probs.shape[1]
            inputs = {"inputs_embeds": probs @ self.word_embeddings.weight}
        else:
            if ids.ndim != 2:
                raise ValueError(f"ids must be [B, T], got shape {tuple(ids.shape)}; for one text use ids[None]")
            length = ids.shape[1]
            inputs = {"input_ids": ids}
        if length > self.max_length:
            raise ValueError(f"{length} tokens exceed the reference encoder's {self.max_length} positions")
        states = self.encoder(**inputs, attention_mask=mask).last_hidden_state
        return F.normalize(states, dim=-1)

    @torch.no_grad()
    def reference(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's unit states [1, T, d] and its normalised idf weights [1, T], computed once per attack."""
        ids = _as_batch(ids)
        if ids.shape[0] != 1:
            raise ValueError("BERTScorer compares candidates with one reference sentence; pass its ids [T] or [1, T]")
        weights = self.idf.to(ids.device)[ids]
        if weights.sum() <= 0:
            raise ValueError("the reference sentence has no weighted token (only [CLS]/[SEP]/[PAD]); is it empty?")
        return self.embed(ids), weights / weights.sum()

    def forward(self, reference: tuple[torch.Tensor, torch.Tensor], ids: torch.Tensor | None = None,
                probs: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> Score:
        """Score candidates (ids [B, T'] with optional mask, or probs [B, T', vocab]) against ``reference`` (the
        output of :meth:`reference`). Differentiable in ``probs``."""
        ref, ref_weights = reference
        cand = self.embed(ids=None if ids is None else _as_batch(ids), probs=probs, mask=mask)
        batch, length = cand.shape[:2]
        real = (torch.ones(batch, length, device=cand.device) if mask is None else mask.to(cand.dtype))
        if probs is not None:  # a soft token's idf weight is its expected idf
            cand_idf = probs @ self.idf.to(probs.dtype)
        else:
            cand_idf = self.idf.to(cand.device)[_as_batch(ids)]
        cand_idf = cand_idf * real
        sim = cand @ ref[0].T  # [B, T', T]
        # padded candidate positions never match (a cosine is >= -1, so -2 loses every max)
        recall_sim = sim.masked_fill(~real.bool()[:, :, None], -2.0).amax(dim=1)  # [B, T]
        precision_sim = sim.amax(dim=2)  # [B, T']
        recall = (recall_sim * ref_weights).sum(1)
        precision = (precision_sim * cand_idf).sum(1) / cand_idf.sum(1).clamp_min(1e-12)
        f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
        return Score(precision, recall, f1)

    @torch.no_grad()
    def score_ids(self, reference_ids: list[int] | torch.Tensor, candidate_ids: list[list[int]]) -> Score:
        """BERTScore of several candidate token lists against one reference token list (no gradients)."""
        device = self.idf.device
        reference = self.reference(torch.as_tensor(reference_ids, device=device))
        width = max(len(c) for c in candidate_ids)
        ids = torch.zeros(len(candidate_ids), width, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for i, c in enumerate(candidate_ids):
            ids[i, :len(c)] = torch.as_tensor(c)
            mask[i, :len(c)] = 1
        return self(reference, ids=ids, mask=mask)

    def score_texts(self, reference: str, candidates: list[str]) -> Score:
        """BERTScore of candidate strings against a reference string."""
        rows = self.tokenizer([reference, *candidates], add_special_tokens=True)["input_ids"]
        return self.score_ids(rows[0], rows[1:])


def _as_batch(ids: torch.Tensor) -> torch.Tensor:
    ids = torch.as_tensor(ids)
    return ids[None] if ids.ndim == 1 else ids
