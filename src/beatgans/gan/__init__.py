"""Diffusion-GAN pieces (pure torch): the adaptive diffusion and toy-distribution metrics."""

from beatgans.gan.adaptive import AdaptiveDiffusion
from beatgans.gan.toy_metrics import MIN_COUNT, generator_forces, mode_counts, mode_coverage

__all__ = ["MIN_COUNT", "AdaptiveDiffusion", "generator_forces", "mode_counts", "mode_coverage"]
