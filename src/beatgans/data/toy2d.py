"""2-D toy distributions with exact ground truth: the 25-Gaussians grid, a swiss roll and rings."""

from __future__ import annotations

import math

import torch


def gaussian_grid_modes(spacing: float = 2.0, grid: int = 5) -> torch.Tensor:
    """Centres of the `grid x grid` mixture: (grid*grid, 2) float32, e.g. {-4,-2,0,2,4}^2 for the defaults."""
    half = (grid - 1) / 2
    axis = (torch.arange(grid, dtype=torch.float32) - half) * spacing
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def sample_gaussian_grid(n: int, std: float = 0.05, spacing: float = 2.0, grid: int = 5,
                         generator: torch.Generator | None = None,
                         balanced: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw `n` points from the equal-weight Gaussian grid. Returns points (n, 2) float32 and mode ids (n,) int64.

    ``balanced``: exactly ``n / grid**2`` points per mode (modes cycled in order; ``n`` must be a
    multiple of ``grid**2``) instead of i.i.d. mode draws; only the offsets are random then.
    """
    modes = gaussian_grid_modes(spacing, grid)
    if balanced:
        if n % len(modes):
            raise ValueError(f"balanced sampling needs n to be a multiple of {len(modes)} "
                             f"(equal points per mode), got {n}")
        ids = torch.arange(len(modes)).repeat(n // len(modes))
    else:
        ids = torch.randint(len(modes), (n,), generator=generator)
    pts = modes[ids] + std * torch.randn(n, 2, generator=generator)
    return pts, ids


def sample_swiss_roll(n: int, noise: float = 0.05, generator: torch.Generator | None = None) -> torch.Tensor:
    """Swiss roll in the plane, scaled to roughly [-2, 2]^2: (n, 2) float32."""
    u = torch.rand(n, generator=generator)
    theta = 1.5 * math.pi * (1 + 2 * u)
    pts = torch.stack([theta * torch.cos(theta), theta * torch.sin(theta)], dim=1) / 7.5
    return pts + noise * torch.randn(n, 2, generator=generator)


def sample_rings(n: int, radii: tuple[float, ...] = (1.0, 2.0, 3.0), noise: float = 0.05,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Concentric rings of equal mass: (n, 2) float32."""
    r = torch.tensor(radii)[torch.randint(len(radii), (n,), generator=generator)]
    phi = 2 * math.pi * torch.rand(n, generator=generator)
    pts = torch.stack([r * torch.cos(phi), r * torch.sin(phi)], dim=1)
    return pts + noise * torch.randn(n, 2, generator=generator)


def make_toy2d(name: str, n: int, seed: int = 0, **kwargs) -> torch.Tensor:
    """A fixed data set of `n` points of distribution `name` ("gaussian_grid", "swiss_roll", "rings")."""
    gen = torch.Generator().manual_seed(seed)
    if name in ("gaussian_grid", "25gaussians"):
        return sample_gaussian_grid(n, generator=gen, **kwargs)[0]
    if name == "swiss_roll":
        return sample_swiss_roll(n, generator=gen, **kwargs)
    if name == "rings":
        return sample_rings(n, generator=gen, **kwargs)
    raise ValueError(f"toy2d: unknown distribution {name!r}; choose gaussian_grid, swiss_roll or rings.")
