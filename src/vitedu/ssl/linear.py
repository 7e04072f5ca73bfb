"""Linear evaluation of frozen features (DINO, Caron et al. 2021, section 4.1; eval_linear.py).

One linear layer on top of features that do not change, trained with cross-entropy: how linearly separable the
classes are in the feature space. The official recipe: weights ~ N(0, 0.01), zero bias, no BatchNorm, SGD with
momentum 0.9 and no weight decay, learning rate 0.001 x batch / 256 annealed to 0 with a per-epoch cosine, 100 epochs.
The official run re-extracts features of augmented crops every step (random resized crop + flip); here the features
are computed once (no augmentation), which is what a CPU budget allows.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .knn import check_features


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, epochs: int = 100, lr: float = 0.001, weight_decay: float = 0.0,
                 batch_size: int = 256, num_classes: int | None = None, seed: int = 0,
                 scale_lr: bool = True) -> tuple[float, nn.Linear]:
    """Train a linear classifier on frozen features and test it (eval_linear.py LinearClassifier + train).

    SGD (momentum 0.9, ``weight_decay``) with lr = ``lr`` x batch_size / 256 when ``scale_lr`` (the official linear
    scaling rule; ``lr`` is then given for a batch of 256), annealed to 0 by a cosine over the epochs (stepped once per
    epoch, as torch's CosineAnnealingLR in the official code). The official default lr (0.001) is meant for ImageNet
    and 100 epochs, and its help says to tune it per checkpoint: on small data sets sweep it. Deterministic given
    ``seed`` (initialisation and shuffling use their own generator). Runs on the device of ``train_features``.
    Returns ``(top-1 test accuracy in [0, 1], the trained nn.Linear)``.
    """
    train_labels, test_labels = torch.as_tensor(train_labels), torch.as_tensor(test_labels)
    check_features(train_features, train_labels, test_features, test_labels)
    if len(train_features) == 0 or len(test_features) == 0:
        raise ValueError("linear_probe needs at least one train and one test feature.")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {epochs}, {batch_size} and {lr}.")
    max_label = int(max(train_labels.max(), test_labels.max()))
    num_classes = max_label + 1 if num_classes is None else num_classes
    if int(min(train_labels.min(), test_labels.min())) < 0 or max_label >= num_classes:
        raise ValueError(f"labels must lie in [0, num_classes={num_classes}): pass the data set's number of classes.")

    device = train_features.device
    generator = torch.Generator().manual_seed(seed)
    layer = nn.Linear(train_features.shape[1], num_classes)
    with torch.no_grad():
        layer.weight.normal_(0.0, 0.01, generator=generator)  # official LinearClassifier init
        layer.bias.zero_()
    layer.to(device)
    base_lr = lr * batch_size / 256 if scale_lr else lr  # official linear scaling rule
    optimizer = torch.optim.SGD(layer.parameters(), lr=base_lr, momentum=0.9, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, eta_min=0)
    x, y = train_features.detach().float(), train_labels.to(device).long()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(device)
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(layer(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
    with torch.no_grad():
        predictions = layer(test_features.detach().to(device).float()).argmax(1)
    accuracy = (predictions.cpu() == test_labels.cpu()).float().mean().item()
    return accuracy, layer
