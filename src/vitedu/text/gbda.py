"""GBDA, the gradient-based distributional attack on text transformers (Guo, Sablayrolles, Jégou & Kiela 2021).

A text is discrete, so a gradient cannot move a token. GBDA instead optimises a *distribution* over sentences:
a matrix of logits ``theta`` [T, vocab], one categorical distribution per position, initialised so that the input
sentence is almost certain (``init_coeff`` on its tokens, 0 elsewhere). Each step draws Gumbel-softmax samples
(relaxed one-hots, differentiable in ``theta``), feeds them to the models as soft embeddings ``probs @ E``, and
descends on

    margin loss (kappa)  +  lambda_perp * soft cross-entropy under a causal LM  -  lambda_sim * BERTScore recall,

the first pushing the victim's true-class logit ``kappa`` below the best other class, the second keeping the
sentence fluent, the third keeping it close in meaning to the input. Then hard sentences are sampled from
``softmax(theta)`` and the victim is queried with them (decoded and re-tokenised, as a user would send them) until
one fools it.

Settings follow the official code, facebookresearch/text-adversarial-attack ``whitebox_attack.py``: Adam with lr 0.3,
100 iterations, 10 Gumbel samples per step, margin ("cw") loss with kappa 5, lambda_perp 1, BERTScore recall with
idf weights, up to 100 hard samples. Its default ``--initial_coeff`` is 15 and its default ``--lam_sim`` is 1; the
paper's experiments set lambda_sim per data set (we could not check its values offline), and we use 20, which keeps
BERTScore near 0.8 on the tweet victims. Two choices differ from that code, both to keep sampled sentences real
text: [CLS] and [SEP] are fixed one-hots rather than near-certain distributions, and special / ``[unused*]`` tokens
are never sampled.
"""

from __future__ import annotations

import difflib
import html
import math
import re
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from vitedu.text.data import LABELS, encode, label_id, pad_ids


@dataclass(frozen=True)
class GBDAConfig:
    """The attack's settings (defaults: the official code's, lambda_sim from the paper's experiments)."""

    steps: int = 100  # Adam iterations on theta
    lr: float = 0.3
    batch_size: int = 10  # Gumbel-softmax samples per iteration
    init_coeff: float = 15.0  # theta of the input's tokens at the start (others 0)
    kappa: float = 5.0  # margin of the margin loss
    lambda_sim: float = 20.0  # weight of BERTScore recall
    lambda_perp: float = 1.0  # weight of the LM's soft cross-entropy
    temperature: float = 1.0  # of the Gumbel-softmax
    samples: int = 100  # hard sentences drawn afterwards: the most victim queries
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "samples"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < (0 if name == "steps" else 1):
                raise ValueError(f"GBDAConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("lr", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"GBDAConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("kappa", "lambda_sim", "lambda_perp"):
            if getattr(self, name) < 0:
                raise ValueError(f"GBDAConfig.{name} must be >= 0, got {getattr(self, name)!r}")


# ----------------------------------------------------------------------------------------------- the three terms

def gumbel_noise(shape, generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard Gumbel noise -log(-log(U)), U ~ Uniform[0, 1) (in place: 5x faster than exponential_().log() on
    the [batch, T, 30522] tensors GBDA draws at every step)."""
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    return u.log_().neg_().log_().neg_()


def gumbel_softmax(logits: torch.Tensor, temperature: float = 1.0, hard: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """A sample of the Gumbel-softmax (concrete) relaxation of ``Categorical(softmax(logits))`` over the last axis:
    ``softmax((logits + g) / temperature)`` with g ~ Gumbel(0, 1). It is a distribution (non-negative, sums to 1),
    tends to the one-hot of ``argmax(logits + g)`` as the temperature falls, and is differentiable in ``logits``.
    ``hard``: that one-hot in the forward pass, the relaxed gradient in the backward pass (straight-through).
    ``generator`` makes the noise reproducible (torch's F.gumbel_softmax draws from the global RNG)."""
    if temperature <= 0:
        raise ValueError(f"the Gumbel-softmax temperature must be > 0, got {temperature}")
    gumbels = gumbel_noise(logits.shape, generator, logits.device, logits.dtype)
    soft = F.softmax((logits + gumbels) / temperature, dim=-1)
    if not hard:
        return soft
    one_hot = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return one_hot - soft.detach() + soft


def margin_loss(logits: torch.Tensor, label: int | torch.Tensor, kappa: float = 5.0) -> torch.Tensor:
    """Carlini-Wagner margin loss per row: ``max(z_label - max_{k != label} z_k + kappa, 0)``. It is zero exactly when
    the best other class leads the true class by at least ``kappa``. ``logits`` [B, C]; returns [B]."""
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"margin_loss needs logits [B, C] with C >= 2 classes, got {tuple(logits.shape)}")
    label = torch.as_tensor(label, device=logits.device).expand(logits.shape[0])
    true = logits.gather(1, label[:, None])[:, 0]
    others = logits.scatter(1, label[:, None], float("-inf")).amax(1)
    return (true - others + kappa).clamp_min(0)


def fluency_loss(lm_logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy of the token distributions under a causal LM that read them: position t's prediction
    against the distribution at t + 1, summed over the vocabulary and averaged over positions; [B]. For one-hot
    ``probs`` it is the LM's mean negative log-likelihood of the sentence (log-perplexity)."""
    log_p = F.log_softmax(lm_logits[:, :-1], dim=-1)
    return -(probs[:, 1:] * log_p).sum(-1).mean(-1)


@torch.no_grad()
def sentence_perplexity(lm: nn.Module, rows: list[list[int]]) -> list[float]:
    """exp(mean next-token NLL) of each token list (with [CLS] and [SEP]) under ``lm``: one number per sentence."""
    out = []
    for ids in rows:
        nll = lm.token_nll(torch.as_tensor(ids, device=_device(lm))[None])
        out.append(math.exp(nll.mean().item()))
    return out


# --------------------------------------------------------------------------------------------------- the attack

@dataclass
class GBDAResult:
    """One attacked sentence. ``queries``: hard sentences the victim classified until one fooled it (or
    ``samples`` if none did); the ``steps`` x ``batch_size`` white-box forward passes of the optimisation are not
    counted. ``bertscore`` is the F1 and ``bertscore_recall`` the recall (the attack's similarity term) of the
    adversarial sentence against the input; ``perplexity``: of the adversarial sentence under the LM."""

    text: str
    label: int
    ids: list[int]
    adv_text: str
    adv_ids: list[int]
    success: bool
    queries: int
    clean_pred: int
    adv_pred: int
    bertscore: float | None = None
    bertscore_recall: float | None = None
    perplexity: float | None = None
    clean_perplexity: float | None = None
    seconds: float = 0.0
    history: dict = field(default_factory=dict)
    theta: torch.Tensor | None = field(default=None, repr=False)  # the optimised logits [T, vocab]

    def summary(self) -> dict:
        """The JSON-friendly fields (no tensors, no history)."""
        out = asdict(self)
        out.pop("theta"), out.pop("history")
        return out


@torch.no_grad()
def predict_ids(model: nn.Module, rows: list[list[int]]) -> torch.Tensor:
    """Class predictions of a classifier for token lists (with [CLS] and [SEP]), as one right-padded batch."""
    return model(*pad_ids(rows, device=_device(model))).argmax(-1).cpu()


def banned_tokens(tokenizer, vocab_size: int | None = None) -> torch.Tensor:
    """Boolean [vocab]: the tokens a sampled sentence may not contain: special tokens and ``[unused*]``."""
    vocab_size = vocab_size or len(tokenizer)
    banned = torch.zeros(vocab_size, dtype=torch.bool)
    banned[[i for i in tokenizer.all_special_ids if i < vocab_size]] = True
    for token, index in tokenizer.get_vocab().items():
        if index < vocab_size and re.fullmatch(r"\[unused\d+\]", token):
            banned[index] = True
    return banned


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


class GBDA:
    """The attack against ``victim`` (a classifier taking ``input_ids`` or ``inputs_embeds``), with the fluency
    term from ``lm`` (a causal LM with the same vocabulary) and the similarity term from ``scorer`` (a
    :class:`~vitedu.text.bertscore.BERTScorer`). ``lm`` / ``scorer`` may be None when their lambda is 0."""

    def __init__(self, victim: nn.Module, lm: nn.Module | None = None, scorer: nn.Module | None = None,
                 tokenizer=None, config: GBDAConfig | None = None):
        self.config = config or GBDAConfig()
        if self.config.lambda_perp > 0 and lm is None:
            raise ValueError("lambda_perp > 0 needs a causal LM (lm=...); pass one or set lambda_perp=0")
        if self.config.lambda_sim > 0 and scorer is None:
            raise ValueError("lambda_sim > 0 needs a BERTScorer (scorer=...); pass one or set lambda_sim=0")
        if tokenizer is None:
            from vitedu.text.hub import load_tokenizer

            tokenizer = load_tokenizer()
        self.victim, self.lm, self.scorer, self.tokenizer = victim, lm, scorer, tokenizer
        self.vocab_size = victim.get_input_embeddings().num_embeddings
        for name, model in (("lm", lm), ("scorer", scorer)):
            if model is not None:
                embedding = model.get_input_embeddings() if name == "lm" else model.word_embeddings
                if embedding.num_embeddings != self.vocab_size:
                    raise ValueError(f"the {name} has {embedding.num_embeddings} tokens but the victim has "
                                     f"{self.vocab_size}: GBDA needs one shared vocabulary")
        limits = [victim.max_length] + [m.max_length for m in (lm, scorer) if m is not None]
        self.max_length = min(limits)
        self.banned = banned_tokens(tokenizer, self.vocab_size)

    # -- input checks
    def encode(self, text: str | list[int]) -> list[int]:
        """Token ids with [CLS] and [SEP] of a text (or checked ids); clear errors for empty or too long input."""
        if isinstance(text, str):
            if not text.strip():
                raise ValueError("GBDA got an empty text; give a sentence with at least one token")
            ids, _ = encode(self.tokenizer, [text], max_length=self.max_length, truncate=False)
            return ids[0].tolist()
        ids = [int(i) for i in text]
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        if len(ids) < 3 or ids[0] != cls or ids[-1] != sep:
            raise ValueError("token ids must be [CLS] w_1 ... w_n [SEP] with n >= 1 (as encode() gives); got "
                             f"{ids[:5]}{'...' if len(ids) > 5 else ''}")
        if len(ids) > self.max_length:
            raise ValueError(f"{len(ids)} tokens exceed the models' limit of {self.max_length}; shorten the text")
        if min(ids) < 0 or max(ids) >= self.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size})")
        return ids

    def _label(self, label, logits: torch.Tensor) -> int:
        # an index is checked against the victim's own classes (a hub victim may have 4, e.g. AG News)
        plain_index = isinstance(label, int) and not isinstance(label, bool) and label >= 0
        index = label if plain_index else label_id(label)
        if index >= logits.shape[-1]:
            raise ValueError(f"label {label!r} is out of range: the victim has {logits.shape[-1]} classes")
        return index

    # -- the pieces
    def _full(self, inner: torch.Tensor, ids: list[int]) -> torch.Tensor:
        """[CLS] + the inner distributions [B, T-2, V] + [SEP] as one-hots: [B, T, V]."""
        ends = F.one_hot(torch.tensor([ids[0], ids[-1]], device=inner.device), self.vocab_size).to(inner.dtype)
        ends = ends[None].expand(inner.shape[0], -1, -1)
        return torch.cat([ends[:, :1], inner, ends[:, 1:]], dim=1)

    def init_theta(self, ids: list[int]) -> torch.Tensor:
        inner = torch.tensor(ids[1:-1])
        theta = torch.zeros(len(inner), self.vocab_size)
        theta[torch.arange(len(inner)), inner] = self.config.init_coeff
        return theta.to(_device(self.victim))

    def _ban_mask(self, ids: list[int], device) -> torch.Tensor:
        banned = self.banned.clone()
        banned[torch.tensor(ids)] = False  # a token of the input may stay (e.g. [UNK])
        return torch.zeros(self.vocab_size, device=device).masked_fill(banned.to(device), float("-inf"))

    def losses(self, probs: torch.Tensor, label: int, reference) -> dict[str, torch.Tensor]:
        """The three terms (batch means) for token distributions ``probs`` [B, T, V]."""
        cfg = self.config
        embeds = probs @ self.victim.get_input_embeddings().weight
        out = {"margin": margin_loss(self.victim(inputs_embeds=embeds), label, cfg.kappa).mean()}
        if cfg.lambda_perp > 0:
            lm_logits = self.lm(inputs_embeds=probs @ self.lm.get_input_embeddings().weight)
            out["fluency"] = fluency_loss(lm_logits, probs).mean()
        if cfg.lambda_sim > 0:
            out["similarity"] = self.scorer(reference, probs=probs).recall.mean()
        out["total"] = (out["margin"] + cfg.lambda_perp * out.get("fluency", 0.0)
                        - cfg.lambda_sim * out.get("similarity", 0.0))
        return out

    def optimise(self, ids: list[int], label: int, generator: torch.Generator,
                 progress: bool = False) -> tuple[torch.Tensor, dict]:
        """Adam on theta for ``steps`` iterations; returns theta (ban mask applied) and the loss history."""
        cfg = self.config
        device = _device(self.victim)
        theta = self.init_theta(ids).requires_grad_(True)
        ban = self._ban_mask(ids, device)
        reference = self.scorer.reference(torch.tensor(ids, device=device)) if cfg.lambda_sim > 0 else None
        optimizer = torch.optim.Adam([theta], lr=cfg.lr)
        history: dict[str, list[float]] = {}
        for _ in tqdm(range(cfg.steps), desc="GBDA", disable=not progress, leave=False):
            logits = (theta + ban)[None].expand(cfg.batch_size, -1, -1)
            probs = self._full(gumbel_softmax(logits, cfg.temperature, generator=generator), ids)
            terms = self.losses(probs, label, reference)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            for name, value in terms.items():
                history.setdefault(name, []).append(float(value.detach()) if torch.is_tensor(value) else float(value))
        return (theta.detach() + ban), history

    def sample(self, theta: torch.Tensor, ids: list[int], n: int, generator: torch.Generator) -> list[list[int]]:
        """``n`` hard sentences from softmax(theta) (Gumbel-max), decoded and re-tokenised as a reader would send
        them (so '##' pieces merge back into words), truncated to the models' limit."""
        noise = gumbel_noise((n, *theta.shape), generator, theta.device)
        inner = (theta[None] + noise).argmax(-1).tolist()
        texts = [self.tokenizer.decode(row) for row in inner]
        rows = self.tokenizer(texts, add_special_tokens=True)["input_ids"]
        return [r if len(r) <= self.max_length else r[:self.max_length - 1] + [r[-1]] for r in rows]

    @staticmethod
    def predict(model: nn.Module, rows: list[list[int]]) -> torch.Tensor:
        """Class predictions of ``model`` for token lists (see :func:`predict_ids`)."""
        return predict_ids(model, rows)

    def attack(self, text: str | list[int], label, progress: bool = False, keep_theta: bool = False) -> GBDAResult:
        """Attack one sentence with its true ``label`` (a name of ``LABELS`` or an index); deterministic for
        ``config.seed``."""
        start = time.perf_counter()
        ids = self.encode(text)
        clean_logits = self._clean_logits(ids)
        label = self._label(label, clean_logits)
        generator = torch.Generator(device=_device(self.victim)).manual_seed(self.config.seed)
        with torch.enable_grad():
            theta, history = self.optimise(ids, label, generator, progress)
        rows = self.sample(theta, ids, self.config.samples, generator)
        preds = self.predict(self.victim, rows)
        fooled = (preds != label).nonzero()
        index = int(fooled[0, 0]) if len(fooled) else len(rows) - 1
        adv = rows[index]
        result = GBDAResult(text=self.tokenizer.decode(ids[1:-1]) if not isinstance(text, str) else text,
                            label=label, ids=ids, adv_text=self.tokenizer.decode(adv[1:-1]), adv_ids=adv,
                            success=bool(len(fooled)), queries=index + 1, clean_pred=int(clean_logits.argmax()),
                            adv_pred=int(preds[index]), history=history, theta=theta.cpu() if keep_theta else None)
        if self.scorer is not None:
            score = self.scorer.score_ids(ids, [adv])
            result.bertscore, result.bertscore_recall = float(score.f1[0]), float(score.recall[0])
        if self.lm is not None:
            result.clean_perplexity, result.perplexity = sentence_perplexity(self.lm, [ids, adv])
        result.seconds = time.perf_counter() - start
        return result

    @torch.no_grad()
    def _clean_logits(self, ids: list[int]) -> torch.Tensor:
        return self.victim(torch.tensor([ids], device=_device(self.victim)))[0]


# ------------------------------------------------------------------------------------------------ showing changes

def changed_tokens(tokenizer, ids: list[int], adv_ids: list[int]) -> list[tuple[str, str]]:
    """The edits from ``ids`` to ``adv_ids`` as (original piece, new piece) pairs, aligned with difflib ('' for an
    insertion or a deletion); [CLS] / [SEP] excluded."""
    return [(old, new) for changed, old, new in _segments(tokenizer, ids, adv_ids) if changed]


def _segments(tokenizer, ids: list[int], adv_ids: list[int]) -> list[tuple[bool, str, str]]:
    """(changed, original text, adversarial text) runs from a difflib alignment of the two token lists."""
    a, b = tokenizer.convert_ids_to_tokens(ids[1:-1]), tokenizer.convert_ids_to_tokens(adv_ids[1:-1])
    return [(op != "equal", tokenizer.convert_tokens_to_string(a[i1:i2]), tokenizer.convert_tokens_to_string(b[j1:j2]))
            for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()]


def highlight(tokenizer, ids: list[int], adv_ids: list[int]) -> str:
    """The adversarial sentence as plain text with each change shown as ``[old -> new]``."""
    return " ".join(f"[{old or '+'} -> {new or '-'}]" if changed else new
                    for changed, old, new in _segments(tokenizer, ids, adv_ids))


def highlight_html(tokenizer, ids: list[int], adv_ids: list[int]) -> str:
    """The adversarial sentence as HTML: changed tokens in ``<mark>`` with the original as a tooltip (title)."""
    def mark(old, new):
        shown = html.escape(new) if new else "<s>" + html.escape(old) + "</s>"
        return f'<mark title="was: {html.escape(old) or "(nothing)"}">{shown}</mark>'

    return " ".join(mark(old, new) if changed else html.escape(new)
                    for changed, old, new in _segments(tokenizer, ids, adv_ids))


# ------------------------------------------------------------------------------- hub victims (scaling up, Colab)

class HubClassifier(nn.Module):
    """A Hugging Face sequence classifier (e.g. ``BertForSequenceClassification``) behind the interface GBDA uses:
    ``forward(input_ids | inputs_embeds, attention_mask) -> logits``, ``get_input_embeddings()``, ``max_length``.
    ``transformers`` models already take ``inputs_embeds`` as *word* embeddings (positions are added inside), so a
    one-hot ``probs @ E`` gives exactly the logits of the ids. The model must use the victims' vocabulary (BERT
    uncased WordPiece, 30,522 tokens) for GBDA to share it with the LM and the BERTScore encoder."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if not hasattr(model, "get_input_embeddings") or not hasattr(model, "config"):
            raise TypeError(f"HubClassifier wraps a transformers model, got {type(model).__name__}")
        self.model = model.eval()
        self.max_length = int(getattr(model.config, "max_position_embeddings", 512))
        self.num_classes = int(model.config.num_labels)

    @classmethod
    def from_pretrained(cls, name: str, device="cpu") -> "HubClassifier":
        """Load ``name`` (a hub id such as ``textattack/bert-base-uncased-ag-news``, or a local folder) frozen."""
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(name)
        return cls(model.requires_grad_(False)).to(device)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None) -> torch.Tensor:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("HubClassifier takes exactly one of input_ids [B, T] or inputs_embeds [B, T, dim]")
        length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if length > self.max_length:
            raise ValueError(f"{length} tokens exceed the hub model's {self.max_length} positions; truncate the text")
        return self.model(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds).logits


__all__ = ["GBDA", "GBDAConfig", "GBDAResult", "HubClassifier", "LABELS", "banned_tokens", "changed_tokens",
           "fluency_loss", "gumbel_noise", "gumbel_softmax", "highlight", "highlight_html", "margin_loss", "predict_ids",
           "sentence_perplexity"]
