"""Diffusion-GAN pieces (pure torch): the adaptive diffusion and toy-distribution metrics."""

from beatgans.gan.adaptive import AdaptiveDiffusion
from beatgans.gan.toy_metrics import mode_coverage

__all__ = ["AdaptiveDiffusion", "mode_coverage"]
