"""The text transformers of the GBDA chapter: masked attention, the soft-input contract, causality, padding,
training, checkpoints and resume, and the cached pretrained models."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from vitedu.models.convert import load_checked
from vitedu.models.layers import Attention
from vitedu.text import data, models
from vitedu.text.hub import load_tokenizer
from vitedu.text.models import CausalLM, TextClassifier, TextModelConfig, TrainConfig
from vitedu.train import checkpoint

TINY = dict(dim=32, depth=2, num_heads=2, max_length=24, embedding_init="random")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def batch(tokenizer):
    return data.encode(tokenizer, ["what a lovely flight, thank you", "worst airline ever", "ok"])


def make(cls, seed=0, **overrides):
    torch.manual_seed(seed)
    return cls(**{**TINY, **overrides}).eval()


# ------------------------------------------------------------------------------------------- attention with a mask

def reference_attention(attn: Attention, x: torch.Tensor, mask=None) -> torch.Tensor:
    B, T, D = x.shape
    q, k, v = attn.qkv(x).reshape(B, T, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-2, -1) / attn.head_dim ** 0.5
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D))


def test_attention_without_mask_is_unchanged_for_image_models(randomise):
    torch.manual_seed(0)
    attn = randomise(Attention(16, num_heads=4))
    x = torch.randn(2, 5, 16)
    expected = reference_attention(attn, x)
    torch.testing.assert_close(attn(x), expected)
    out, weights = attn(x, return_attention=True)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 5))
    # and a ViT built from it still agrees with timm's (the models use Attention with mask=None)
    timm = pytest.importorskip("timm")
    from vitedu.models.convert import from_timm

    reference = randomise(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=5))
    ours = from_timm(reference.eval(), "vit_tiny_patch16_224", img_size=32, num_classes=5).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(images), reference(images), atol=1e-4, rtol=1e-4)


def test_attention_mask_hides_keys_in_both_paths(randomise):
    torch.manual_seed(0)
    attn = randomise(Attention(16, num_heads=4))
    x = torch.randn(2, 6, 16)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)[:, None, None, :]
    fused = attn(x, mask=mask)
    explicit, weights = attn(x, return_attention=True, mask=mask)
    torch.testing.assert_close(fused, reference_attention(attn, x, mask))
    torch.testing.assert_close(explicit, fused)
    assert weights[0, :, :, 4:].abs().max() == 0
    changed = x.clone()
    changed[0, 4:] = 100.0  # what the hidden keys hold cannot matter to the visible positions
    torch.testing.assert_close(attn(changed, mask=mask)[0, :4], fused[0, :4])
    assert not torch.allclose(attn(changed)[0, :4], attn(x)[0, :4])  # without the mask it does
    with pytest.raises(ValueError, match="boolean"):
        attn(x, mask=mask.long())


# ---------------------------------------------------------------------------------------------- the model contract

@pytest.mark.parametrize("cls", [TextClassifier, CausalLM])
def test_one_hot_soft_input_gives_the_logits_of_the_ids(cls, batch, randomise):
    model = randomise(make(cls))
    ids, mask = batch
    weight = model.get_input_embeddings().weight
    assert weight.shape == (models.VOCAB_SIZE, TINY["dim"])
    probs = F.one_hot(ids, models.VOCAB_SIZE).float()
    with torch.no_grad():
        from_ids = model(input_ids=ids, attention_mask=mask)
        from_probs = model(inputs_embeds=probs @ weight, attention_mask=mask)
    expected_shape = (3, len(data.LABELS)) if cls is TextClassifier else (3, ids.shape[1], models.VOCAB_SIZE)
    assert from_ids.shape == expected_shape
    torch.testing.assert_close(from_probs, from_ids)
    # the soft input carries gradients back to the token distribution, which is what GBDA optimises
    probs.requires_grad_(True)
    model(inputs_embeds=probs @ weight, attention_mask=mask).sum().backward()
    assert probs.grad.abs().sum() > 0


def test_causal_lm_position_t_ignores_later_tokens(randomise):
    lm = randomise(make(CausalLM))
    ids = torch.randint(1000, 2000, (2, 10))
    changed = ids.clone()
    changed[:, 6:] = torch.randint(2000, 3000, (2, 4))
    with torch.no_grad():
        a, b = lm(ids), lm(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_padding_does_not_change_the_real_tokens_results(tokenizer, randomise):
    text = "worst airline ever"
    alone = data.encode(tokenizer, [text])
    padded_ids, padded_mask = data.encode(tokenizer, [text, "a much longer tweet about a very delayed flight"])
    width = alone[0].shape[1]
    assert padded_ids.shape[1] > width and padded_mask[0, width:].eq(0).all()
    classifier, lm = randomise(make(TextClassifier)), randomise(make(CausalLM))
    with torch.no_grad():
        torch.testing.assert_close(classifier(padded_ids[:1], padded_mask[:1]), classifier(*alone))
        torch.testing.assert_close(lm(padded_ids[:1], padded_mask[:1])[:, :width], lm(*alone))
        # without the mask the padding does leak in: the test can tell
        assert not torch.allclose(classifier(padded_ids[:1]), classifier(*alone))


def test_token_nll_in_chunks_equals_the_full_softmax(randomise, monkeypatch):
    monkeypatch.setattr(models, "HEAD_CHUNK", 7)  # 2 x 23 tokens with padding: several chunks, a ragged last one
    lm = randomise(make(CausalLM))
    ids = torch.randint(1000, 3000, (2, 23))
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    nll = lm.token_nll(ids, mask)
    logits = lm(ids, mask)[:, :-1]
    keep = mask[:, 1:].bool()
    expected = F.cross_entropy(logits[keep], ids[:, 1:][keep], reduction="none")
    assert nll.shape == (22 + 14,)
    torch.testing.assert_close(nll, expected)
    grad, = torch.autograd.grad(nll.mean(), lm.token_embed.weight)
    expected_grad, = torch.autograd.grad(expected.mean(), lm.token_embed.weight)
    torch.testing.assert_close(grad, expected_grad)


def test_input_errors_are_clear():
    model = make(TextClassifier)
    ids = torch.ones(1, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="exactly one of input_ids"):
        model(ids, inputs_embeds=torch.zeros(1, 5, TINY["dim"]))
    with pytest.raises(ValueError, match="exactly one of input_ids"):
        model()
    with pytest.raises(ValueError, match="exceed max_length=24"):
        model(torch.ones(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match=r"inputs_embeds must be \[B, T, 32\]"):
        model(inputs_embeds=torch.zeros(1, 5, 31))
    with pytest.raises(ValueError, match="integer tensor"):
        model(torch.ones(5, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids must lie"):
        model(torch.full((1, 3), models.VOCAB_SIZE))
    with pytest.raises(ValueError, match="attention_mask must be"):
        model(ids, torch.ones(1, 4))
    with pytest.raises(ValueError, match="pad on the right"):
        model(ids, torch.tensor([[0, 1, 1, 1, 1]]))
    with pytest.raises(ValueError, match="unknown settings"):
        TextClassifier(width=3)
    assert model.max_length == 24


def test_minilm_pca_init_is_a_projection_of_the_reference_embeddings():
    weight = models.minilm_pca_embeddings(16)
    assert weight.shape == (models.VOCAB_SIZE, 16)
    assert weight.norm(dim=1).mean().item() == pytest.approx(1.0, rel=1e-4)
    variance = weight.var(0)
    assert (variance[:-1] >= variance[1:] - 1e-6).all()  # principal directions, largest first
    model = TextClassifier(dim=16, num_heads=2, depth=1)
    torch.testing.assert_close(model.get_input_embeddings().weight, weight)
    with pytest.raises(ValueError, match="dim <= 384"):
        models.minilm_pca_embeddings(512)


# -------------------------------------------------------------------------------------- training and checkpoints

@pytest.fixture(scope="module")
def rows_and_labels(tokenizer):
    split = data.load_split()
    return models._token_lists(tokenizer, split.train_texts[:96], TINY["max_length"]), split.train_labels[:96]


@pytest.mark.parametrize("cls", [TextClassifier, CausalLM])
def test_a_few_steps_lower_the_loss(cls, rows_and_labels):
    rows, labels = rows_and_labels
    model = make(cls)
    ids, mask = data.pad_ids(rows[:32])
    target = torch.tensor(labels[:32])

    def loss():
        with torch.no_grad():
            out = model.token_nll(ids, mask).mean() if cls is CausalLM else F.cross_entropy(model(ids, mask), target)
        return out.item()

    before = loss()
    history = models.train_text_model(model, rows[:32], None if cls is CausalLM else labels[:32],
                                      TrainConfig(epochs=6, batch_size=16, lr=3e-3, warmup=0.1), progress=False)
    assert history["steps"] == 12 and len(history["loss"]) == 12
    after = loss()
    assert after < (before - 0.5 if cls is CausalLM else 0.8 * before), (before, after)  # LM: from ln(30522)=10.3


@pytest.mark.parametrize("cls", [TextClassifier, CausalLM])
def test_weights_round_trip_through_safetensors(cls, tmp_path, batch, randomise):
    model = randomise(make(cls))
    path = checkpoint.save_weights(model, tmp_path / "model.safetensors")
    other = load_checked(make(cls, seed=1), load_file(str(path)))
    with torch.no_grad():
        torch.testing.assert_close(other(*batch), model(*batch))
    with pytest.raises(ValueError, match="does not fit"):
        load_checked(make(cls, dim=16), load_file(str(path)))


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, rows_and_labels, monkeypatch):
    rows, labels = rows_and_labels
    config = TrainConfig(epochs=2, batch_size=16, lr=3e-3, save_every=5)  # 12 steps, checkpoints at 5 and 10

    def run(folder):
        model = make(TextClassifier, dropout=0.1)  # dropout: the RNG state must come back too
        history = models.train_text_model(model, rows, labels, config, folder, progress=False)
        return model, history

    straight, straight_history = run(tmp_path / "straight")
    real_save = checkpoint.save

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed")
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert checkpoint.latest(tmp_path / "resumed").name == "step-000000005"
    resumed, resumed_history = run(tmp_path / "resumed")
    assert resumed_history["loss"] == straight_history["loss"]
    with pytest.raises(ValueError, match="written by another run"):  # other settings must not resume it
        models.train_text_model(make(TextClassifier), rows, labels, TrainConfig(epochs=3, save_every=5),
                                tmp_path / "resumed", progress=False)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_epoch_batches_are_reproducible_and_cover_every_text_once():
    lengths = [5, 9, 3, 7, 11, 2, 8, 6, 4, 10] * 7
    batches = models.epoch_batches(lengths, 8, seed=0, epoch=0)
    assert batches == models.epoch_batches(lengths, 8, seed=0, epoch=0)
    assert batches != models.epoch_batches(lengths, 8, seed=0, epoch=1)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))


# ------------------------------------------------------------------------------------------- the pretrained models

def test_pretrained_smoke_models_follow_the_contract_and_load_from_cache(tmp_path, monkeypatch, batch):
    monkeypatch.setenv("VITEDU_CACHE", str(tmp_path))
    first = models.pretrained_models("smoke", progress=False)
    for key in ("victim", "victim2", "lm", "victim_accuracy", "victim2_accuracy", "lm_perplexity",
                "victim_config", "victim2_config", "lm_config"):
        assert key in first, key
    assert isinstance(first["victim"], TextClassifier) and isinstance(first["victim2"], TextClassifier)
    assert isinstance(first["lm"], CausalLM)
    assert not (first["victim"].training or first["victim2"].training or first["lm"].training)
    assert first["victim_config"].model != first["victim2_config"].model  # a different shape ...
    assert first["victim_config"].train.seed != first["victim2_config"].train.seed  # ... and seed
    for key in ("victim_accuracy", "victim2_accuracy"):
        assert 0.2 < first[key] < 1.0
    assert 1.0 < first["lm_perplexity"] < models.VOCAB_SIZE  # better than uniform over the vocabulary
    # the smoke budget stays a few seconds of training by its size (wall time is for benchmarks, not tests)
    assert all(info["train_texts"] <= 300 and info["steps"] <= 20 for info in first["info"].values()), first["info"]
    infos = sorted((tmp_path / "text_models" / "smoke").glob("*/info.json"))
    assert len(infos) == 3 and all(json.loads(p.read_text())["train_texts"] > 0 for p in infos)
    assert not list((tmp_path / "text_models" / "smoke").glob("*/checkpoints"))  # finished runs leave no checkpoints

    def no_training(*args, **kwargs):
        raise AssertionError("the second call must load from the cache, not train")

    monkeypatch.setattr(models, "train_text_model", no_training)
    second = models.pretrained_models("smoke", progress=False)
    assert second["victim_accuracy"] == first["victim_accuracy"]
    with torch.no_grad():
        for key in ("victim", "victim2", "lm"):
            torch.testing.assert_close(second[key](*batch), first[key](*batch))
    with pytest.raises(ValueError, match="not 'full'"):
        models.pretrained_models("full")
    with pytest.raises(ValueError, match="unknown budget"):
        models.pretrained_models("tiny")
