"""MLP generator and t-conditioned discriminator for 2-D toy distributions (Diffusion-GAN's toy).

Both are MLPs with two hidden layers of 128 units and LeakyReLU, as in the Diffusion-GAN paper's
25-Gaussians experiment; the discriminator receives the diffusion step ``t`` through the same
mapping network + projection head as the image discriminators.
"""

from __future__ import annotations

import torch
from torch import nn

from beatgans.nets.gan import ProjectionHead


def _mlp(in_dim: int, hidden: int, depth: int, slope: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(in_dim if i == 0 else hidden, hidden), nn.LeakyReLU(slope)]
    return nn.Sequential(*layers)


class ToyGenerator(nn.Module):
    """``z (B, z_dim)`` -> points ``(B, data_dim)`` (unbounded float)."""

    def __init__(self, z_dim: int = 2, data_dim: int = 2, hidden: int = 128, depth: int = 2,
                 slope: float = 0.2) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.body = _mlp(z_dim, hidden, depth, slope)
        self.out = nn.Linear(hidden, data_dim)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(self.body(z))


class ToyDiscriminator(nn.Module):
    """``D(x (B, data_dim), t (B,) int64, y=None) -> logits (B,)``."""

    def __init__(self, data_dim: int = 2, hidden: int = 128, depth: int = 2, slope: float = 0.2) -> None:
        super().__init__()
        self.body = _mlp(data_dim, hidden, depth, slope)
        self.head = ProjectionHead(hidden)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.body(x), t, None)
