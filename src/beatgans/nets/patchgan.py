"""The patch discriminator of LDM's autoencoder training (pix2pix's "NLayerDiscriminator" layout) and the
loss pieces around it: hinge loss for D and LDM's adaptive generator weight.

Pure torch: no Lightning, no Hydra.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """A PatchGAN: (B, in_channels, H, W) in [-1, 1] -> real/fake logits per patch (B, 1, h, w).

    ``num_layers`` stride-2 4x4 convolutions (widths ``base_channels * min(2**n, 8)``; BatchNorm and
    LeakyReLU(0.2) after all but the first), one stride-1 4x4 conv with BatchNorm, then a stride-1 4x4 conv
    to one channel. Conv weights start from N(0, 0.02), BatchNorm scales from N(1, 0.02) (pix2pix's init).
    The input must be at least ``2 ** (num_layers + 2)`` pixels wide (16 px for ``num_layers=2``).
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}.")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = base_channels
        for n in range(1, num_layers + 1):
            out = base_channels * min(2 ** n, 8)
            stride = 2 if n < num_layers else 1
            layers += [nn.Conv2d(width, out, 4, stride, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        self.num_layers = num_layers
        self.min_size = 2 ** (num_layers + 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(f"PatchDiscriminator with num_layers={self.num_layers} needs images of at least "
                             f"{self.min_size} px, got {tuple(x.shape[-2:])}; lower num_layers.")
        return self.main(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``0.5 * (mean(relu(1 - D(x))) + mean(relu(1 + D(x_rec))))``, a scalar."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_gan_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                        disc_weight: float = 1.0, max_weight: float = 1e4) -> torch.Tensor:
    """LDM's balance of the GAN term: ``disc_weight * |grad rec| / (|grad g| + 1e-4)``, clamped to
    [0, max_weight] before the ``disc_weight`` factor, gradients taken at ``last_layer`` (the decoder's
    output conv weight). Both losses keep their graphs. Returns a detached scalar.
    """
    (rec_grad,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (g_grad,) = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    weight = rec_grad.norm() / (g_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach() * disc_weight


__all__ = ["PatchDiscriminator", "adaptive_gan_weight", "hinge_d_loss"]
