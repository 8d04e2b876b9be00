"""The non-saturating GAN loss (Goodfellow et al. 2014, Section 3; the form StyleGAN2 and Diffusion-GAN use).

One function for every place that needs it: the generator step, the discriminator step and the
generator-force analysis all call :func:`nonsaturating_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nonsaturating_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Per-sample logistic loss of discriminator ``logits`` (B,) float against the label ``real``.

    ``real=True``: ``softplus(-D) = -log sigmoid(D)`` (D's loss on reals; G's non-saturating loss on fakes).
    ``real=False``: ``softplus(D) = -log(1 - sigmoid(D))`` (D's loss on fakes). Returns (B,) >= 0.
    """
    return F.softplus(-logits if real else logits)


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """G's non-saturating loss: mean of ``softplus(-D(fake))`` over the batch; scalar."""
    return nonsaturating_loss(fake_logits, real=True).mean()


def discriminator_loss(fake_logits: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """D's loss ``mean softplus(D(fake)) + mean softplus(-D(real))``; scalar (without R1)."""
    return nonsaturating_loss(fake_logits, real=False).mean() + nonsaturating_loss(real_logits, real=True).mean()
