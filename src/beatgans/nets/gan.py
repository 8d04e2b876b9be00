"""GAN generators and timestep-conditioned discriminators for Diffusion-GAN (16-64 px images).

Two families, the baselines of Diffusion-GAN's Table 8:

* DCGAN: transposed-conv generator with BatchNorm, strided-conv discriminator (spectral norm optional).
* SNGAN: ResNet generator and ResNet discriminator with spectral norm (Miyato et al., 2018).

Every discriminator is called as ``D(x, t, y=None) -> logits (B,)`` where ``t`` is the diffusion
step of its input (int64, 0 = clean). As in the reference Diffusion-GAN code, ``t`` goes through a
small mapping network into a projection head (``out = w.h + <h, cmap> / sqrt(dim)``); with a class
label the label embedding joins ``t`` in the mapping input. Generators are ``G(z, y=None) -> x`` in
[-1, 1] (tanh) and expose ``z_dim``; labels enter the generator as an embedding concatenated to z.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of ``t (B,)`` -> ``(B, dim)`` float32 (cos half, sin half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def _maybe_sn(module: nn.Module, enabled: bool) -> nn.Module:
    return spectral_norm(module) if enabled else module


class ConditionMapping(nn.Module):
    """Maps the diffusion step ``t`` (and a class label) to the projection vector ``cmap``.

    ``t (B,)`` int64 -> sinusoidal features -> 2-layer MLP (hidden ``min(cmap_dim, 256)``) -> ``(B, cmap_dim)``.
    """

    def __init__(self, cmap_dim: int, num_classes: int | None = None, embed_dim: int = 64,
                 max_hidden: int = 256) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.label_embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        in_dim = embed_dim * (2 if num_classes else 1)
        hidden = min(cmap_dim, max_hidden)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, cmap_dim))

    def forward(self, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = timestep_features(t, self.embed_dim)
        if self.label_embed is not None:
            if y is None:
                raise ValueError("class-conditional discriminator called without labels y")
            h = torch.cat([h, self.label_embed(y)], dim=1)
        return self.mlp(h)


class ProjectionHead(nn.Module):
    """``logit = w.h + <h, cmap(t, y)> / sqrt(dim)`` for features ``h (B, dim)``."""

    def __init__(self, dim: int, num_classes: int | None = None, sn: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.linear = _maybe_sn(nn.Linear(dim, 1), sn)
        self.mapping = ConditionMapping(dim, num_classes)

    def forward(self, h: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        cmap = self.mapping(t, y)
        return self.linear(h).squeeze(1) + (h * cmap).sum(dim=1) / math.sqrt(self.dim)


def _num_ups(image_size: int) -> int:
    n = int(round(math.log2(image_size / 4)))
    if image_size not in (16, 32, 64) or 4 * 2**n != image_size:
        raise ValueError(f"GAN nets support image_size 16, 32 or 64, got {image_size}")
    return n


class _LabelledGenerator(nn.Module):
    """Shared z (+ label embedding) handling for the generators."""

    def __init__(self, z_dim: int, num_classes: int | None) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.num_classes = num_classes
        self.label_embed = nn.Embedding(num_classes, z_dim) if num_classes else None

    def _input(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if self.label_embed is None:
            return z
        if y is None:
            raise ValueError("class-conditional generator called without labels y")
        return torch.cat([z, self.label_embed(y)], dim=1)

    @property
    def in_dim(self) -> int:
        return self.z_dim * (2 if self.label_embed is not None else 1)


class DCGANGenerator(_LabelledGenerator):
    """DCGAN generator: ``z (B, z_dim)`` -> ``(B, channels, S, S)`` in [-1, 1]."""

    def __init__(self, image_size: int = 32, channels: int = 3, z_dim: int = 128, base: int = 64,
                 num_classes: int | None = None) -> None:
        super().__init__(z_dim, num_classes)
        n = _num_ups(image_size)
        width = base * 2**n
        self.fc = nn.Linear(self.in_dim, 4 * 4 * width)
        layers: list[nn.Module] = [nn.BatchNorm2d(width), nn.ReLU()]
        for _ in range(n):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1), nn.BatchNorm2d(width // 2), nn.ReLU()]
            width //= 2
        layers += [nn.Conv2d(width, channels, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(self._input(z, y))
        return self.net(h.view(h.shape[0], -1, 4, 4))


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator ``D(x (B, C, S, S), t (B,), y=None) -> (B,)`` logits."""

    def __init__(self, image_size: int = 32, channels: int = 3, base: int = 64,
                 num_classes: int | None = None, spectral: bool = False) -> None:
        super().__init__()
        n = _num_ups(image_size)
        layers: list[nn.Module] = [_maybe_sn(nn.Conv2d(channels, base, 3, 1, 1), spectral), nn.LeakyReLU(0.1)]
        width = base
        for _ in range(n):
            layers += [
                _maybe_sn(nn.Conv2d(width, width * 2, 4, 2, 1), spectral), nn.LeakyReLU(0.1),
                _maybe_sn(nn.Conv2d(width * 2, width * 2, 3, 1, 1), spectral), nn.LeakyReLU(0.1),
            ]
            width *= 2
        self.net = nn.Sequential(*layers)
        self.head = ProjectionHead(width * 16, num_classes, sn=spectral)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.net(x).flatten(1), t, y)


class _GenBlock(nn.Module):
    """Pre-activation residual up-block: BN, ReLU, 2x nearest up, conv3x3, BN, ReLU, conv3x3."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Upsample(scale_factor=2),
            nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1),
        )
        self.skip = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.skip(x)


class _DisBlock(nn.Module):
    """Spectral-normed residual down-block (the first one skips the leading ReLU, as in SNGAN)."""

    def __init__(self, cin: int, cout: int, down: bool, first: bool, sn: bool = True) -> None:
        super().__init__()
        main: list[nn.Module] = [] if first else [nn.ReLU()]
        main += [_maybe_sn(nn.Conv2d(cin, cout, 3, 1, 1), sn), nn.ReLU(), _maybe_sn(nn.Conv2d(cout, cout, 3, 1, 1), sn)]
        if down:
            main.append(nn.AvgPool2d(2))
        self.main = nn.Sequential(*main)
        skip: list[nn.Module] = []
        if first:  # pool before the 1x1 conv, as in SNGAN's optimized first block
            skip = ([nn.AvgPool2d(2), _maybe_sn(nn.Conv2d(cin, cout, 1), sn)] if down
                    else [_maybe_sn(nn.Conv2d(cin, cout, 1), sn)])
        elif cin != cout or down:
            skip = [_maybe_sn(nn.Conv2d(cin, cout, 1), sn)] + ([nn.AvgPool2d(2)] if down else [])
        self.skip = nn.Sequential(*skip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.skip(x)


class SNGANGenerator(_LabelledGenerator):
    """ResNet generator of SNGAN: ``z (B, z_dim)`` -> ``(B, channels, S, S)`` in [-1, 1]."""

    def __init__(self, image_size: int = 32, channels: int = 3, z_dim: int = 128, base: int = 256,
                 num_classes: int | None = None) -> None:
        super().__init__(z_dim, num_classes)
        n = _num_ups(image_size)
        self.base = base
        self.fc = nn.Linear(self.in_dim, 4 * 4 * base)
        self.blocks = nn.Sequential(*[_GenBlock(base, base) for _ in range(n)])
        self.out = nn.Sequential(nn.BatchNorm2d(base), nn.ReLU(), nn.Conv2d(base, channels, 3, 1, 1), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(self._input(z, y)).view(z.shape[0], self.base, 4, 4)
        return self.out(self.blocks(h))


class SNGANDiscriminator(nn.Module):
    """ResNet discriminator of SNGAN with spectral norm: ``D(x, t, y=None) -> (B,)`` logits.

    Down-samples to 8x8 with residual blocks, adds two non-down-sampling blocks, then ReLU and a
    global sum pool feed the projection head.
    """

    def __init__(self, image_size: int = 32, channels: int = 3, base: int = 128,
                 num_classes: int | None = None, spectral: bool = True) -> None:
        super().__init__()
        n_down = _num_ups(image_size) - 1  # 16 -> 8: 1 down, 32 -> 8: 2, 64 -> 8: 3
        blocks = [_DisBlock(channels, base, down=True, first=True, sn=spectral)]
        blocks += [_DisBlock(base, base, down=True, first=False, sn=spectral) for _ in range(n_down - 1)]
        blocks += [_DisBlock(base, base, down=False, first=False, sn=spectral) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.head = ProjectionHead(base, num_classes, sn=spectral)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.relu(self.blocks(x)).sum(dim=(2, 3))
        return self.head(h, t, y)
