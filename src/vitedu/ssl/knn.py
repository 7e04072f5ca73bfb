"""Weighted k-NN evaluation of frozen features (DINO, Caron et al. 2021, section 4.1; eval_knn.py knn_classifier).

The features of the training images are a memory bank. A test image votes with its k nearest training features
(cosine similarity of L2-normalised features); neighbour i, of class c_i and similarity s_i, adds exp(s_i / T) to
class c_i's score, and the class with the highest score wins. The paper uses k = 20 and T = 0.07. No training, no
hyper-parameter to tune beyond k and T: a quick, cheap read-out of how well the feature space groups the classes.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dino import MultiCropWrapper, backbone_features


def check_features(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                   test_labels: torch.Tensor | None = None) -> None:
    """The shared input check of the k-NN and the linear probe: 2-D features of one dimension, one integer class
    index per feature (``test_labels`` only where the caller has them), at least one training feature. Raises
    ValueError saying what to fix; returns None."""
    if train_features.ndim != 2 or test_features.ndim != 2:
        raise ValueError(f"features must be 2-D (N, D), got train {tuple(train_features.shape)} and test "
                         f"{tuple(test_features.shape)}: flatten them, e.g. features.flatten(1).")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"train and test features must have the same dimension, got {train_features.shape[1]} and "
                         f"{test_features.shape[1]}: extract both with the same model.")
    labelled = [("train", train_features, train_labels)]
    if test_labels is not None:
        labelled.append(("test", test_features, test_labels))
    for name, features, labels in labelled:
        if labels.ndim != 1 or len(labels) != len(features):
            raise ValueError(f"{name}_labels must have shape ({len(features)},), one class index per "
                             f"{'training' if name == 'train' else 'test'} feature, got {tuple(labels.shape)}.")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"{name}_labels must be integer class indices, got dtype {labels.dtype}: "
                             "use labels.long().")
    if len(train_features) == 0:
        raise ValueError("there are no training features: the k-NN memory bank (or the probe's training set) is "
                         "empty.")


@torch.no_grad()
def knn_scores(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor, k: int = 20,
               temperature: float = 0.07, num_classes: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """Class scores of the weighted k-NN vote: score[n, c] = sum over the k training features most cosine-similar to
    test feature n with label c of exp(similarity / temperature) (eval_knn.py knn_classifier). Features are L2-
    normalised here (a no-op if they already are). Test features are processed ``batch_size`` at a time, on the
    device of ``train_features``. Returns a float tensor (N_test, num_classes); ``num_classes`` defaults to
    max(train_labels) + 1."""
    train_labels = torch.as_tensor(train_labels)
    check_features(train_features, train_labels, test_features)
    if not 1 <= k <= len(train_features):
        raise ValueError(f"k={k} must lie in [1, {len(train_features)}] (the number of training features): lower k "
                         "or use more training images.")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (the paper uses 0.07), got {temperature}.")
    max_label = int(train_labels.max())
    num_classes = max_label + 1 if num_classes is None else num_classes
    if int(train_labels.min()) < 0 or max_label >= num_classes:
        raise ValueError(f"train_labels must lie in [0, num_classes={num_classes}), got [{int(train_labels.min())}, "
                         f"{max_label}]: pass the data set's number of classes.")
    device = train_features.device
    bank = F.normalize(train_features.float(), dim=1)
    labels = train_labels.to(device)
    scores = []
    for start in range(0, len(test_features), batch_size):
        queries = F.normalize(test_features[start:start + batch_size].to(device).float(), dim=1)
        similarity, indices = (queries @ bank.T).topk(k, dim=1, largest=True, sorted=True)
        weights = (similarity / temperature).exp()  # official: distances.div_(T).exp_()
        votes = torch.zeros(len(queries), num_classes, device=device)
        scores.append(votes.scatter_add_(1, labels[indices], weights))
    return torch.cat(scores) if scores else torch.zeros(0, num_classes, device=device)


def knn_classify(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor, k: int = 20,
                 temperature: float = 0.07, num_classes: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """Weighted k-NN predictions (see ``knn_scores``): the class with the highest vote for each test feature.
    Returns a long tensor (N_test,)."""
    return knn_scores(train_features, train_labels, test_features, k, temperature, num_classes, batch_size).argmax(1)


def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, k: int = 20, temperature: float = 0.07, num_classes: int | None = None,
                 batch_size: int = 256) -> float:
    """Top-1 accuracy of the weighted k-NN classifier (eval_knn.py reports it in %, this returns a fraction in
    [0, 1])."""
    test_labels = torch.as_tensor(test_labels)
    if test_labels.shape != (len(test_features),):
        raise ValueError(f"test_labels must have shape ({len(test_features)},), one per test feature, got "
                         f"{tuple(test_labels.shape)}.")
    predictions = knn_classify(train_features, train_labels, test_features, k, temperature, num_classes, batch_size)
    return (predictions.cpu() == test_labels.cpu()).float().mean().item()


@torch.no_grad()
def extract_features(model: nn.Module, loader: Iterable, device: str | torch.device = "cpu",
                     normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features (the class token after the final norm for a vitedu ViT; ``model.backbone``'s for a
    ``MultiCropWrapper``) of every ``(images, labels)`` batch of ``loader``, in eval mode and without gradients; the
    model's train/eval mode is restored afterwards. ``normalize`` L2-normalises them, as the k-NN evaluation wants
    (the official linear probe uses raw features). Returns ``(features (N, D) float32, labels (N,) long)`` on the
    CPU."""
    backbone = model.backbone if isinstance(model, MultiCropWrapper) else model
    was_training = backbone.training
    backbone.eval()
    features, labels = [], []
    try:
        for images, targets in loader:
            feats = backbone_features(backbone, images.to(device)).float()
            features.append(F.normalize(feats, dim=1) if normalize else feats)
            labels.append(torch.as_tensor(targets))
    finally:
        backbone.train(was_training)
    if not features:
        raise ValueError("the loader yielded no batches: check that the data set is not empty.")
    return torch.cat(features).cpu(), torch.cat(labels).long().cpu()
