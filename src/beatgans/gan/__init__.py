"""Diffusion-GAN pieces (pure torch): the adaptive diffusion, the non-saturating loss and toy-distribution
metrics."""

from beatgans.gan.adaptive import AdaptiveDiffusion
from beatgans.gan.losses import discriminator_loss, generator_loss, nonsaturating_loss
from beatgans.gan.toy_metrics import MIN_COUNT, discriminator_field, generator_forces, mode_counts, mode_coverage

__all__ = ["MIN_COUNT", "AdaptiveDiffusion", "discriminator_field", "discriminator_loss", "generator_forces",
           "generator_loss", "mode_counts", "mode_coverage", "nonsaturating_loss"]
