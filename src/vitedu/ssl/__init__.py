"""Self-supervised learning: DINO's building blocks and the k-NN / linear evaluations of frozen features."""

from .dino import (
    BatchMultiCrop,
    DINOHead,
    DINOLoss,
    DINOObjective,
    GaussianBlur,
    MultiCropAugmentation,
    MultiCropWrapper,
    Solarization,
    backbone_features,
    build_dino,
    cancel_last_layer_gradients,
    entropy,
)
from .knn import extract_features, knn_accuracy, knn_classify, knn_scores
from .linear import linear_probe
from .settings import DINOSettings

__all__ = [
    "BatchMultiCrop", "DINOHead", "DINOSettings", "build_dino", "DINOLoss", "DINOObjective", "GaussianBlur", "MultiCropAugmentation", "MultiCropWrapper", "Solarization",
    "backbone_features", "cancel_last_layer_gradients", "entropy",
    "extract_features", "knn_accuracy", "knn_classify", "knn_scores", "linear_probe",
]
