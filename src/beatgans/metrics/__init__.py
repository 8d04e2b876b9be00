"""Evaluation: feature extractors, torchmetrics metrics (FID, sFID, IS, precision/recall, KID) and
cached reference statistics. Pure torch / numpy / scipy / torchmetrics: no Lightning, no Hydra."""

from beatgans.metrics.digits import DigitsCNN, digits_classifier, load_digits_cnn
from beatgans.metrics.evaluate import evaluate_samples, load_samples, shard_bounds
from beatgans.metrics.extractors import (
    DigitsExtractor,
    FeatureExtractor,
    InceptionExtractor,
    RandomExtractor,
    build_extractor,
    quantize_uint8,
)
from beatgans.metrics.feature_metrics import FrechetDistance, InceptionScore, KernelDistance, PrecisionRecall
from beatgans.metrics.reference import ReferenceStats, compute_reference_stats, extract_features

__all__ = [
    "DigitsCNN", "digits_classifier", "load_digits_cnn", "evaluate_samples", "load_samples", "shard_bounds",
    "DigitsExtractor", "FeatureExtractor", "InceptionExtractor", "RandomExtractor", "build_extractor",
    "quantize_uint8", "FrechetDistance", "InceptionScore", "KernelDistance", "PrecisionRecall",
    "ReferenceStats", "compute_reference_stats", "extract_features",
]
