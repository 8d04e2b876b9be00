"""The first stage of latent diffusion: what maps images to the latents the diffusion model works on.

Latent diffusion trains the usual diffusion model on ``z = scale * E(x)`` of a frozen autoencoder
and decodes its samples with ``D(z / scale)`` (Rombach et al. 2022). The diffusion module only needs
this duck-typed interface, which any first stage (the KL autoencoder, the identity) provides:

    encode_latent(x (B, C, H, W) float in [-1, 1], sample: bool = False, generator=None)
        -> z (B, latent_channels, H / f, W / f), already multiplied by the scale factor
    decode_latent(z) -> x (B, C, H, W) float, ~[-1, 1]
    latent_channels: int; downsample_factor: int (f)
    clip_denoised: bool (optional, default False): whether samplers may clip predicted latents to
        [-1, 1]; true only when the latents are images themselves.

The module is frozen: no parameter requires a gradient and it stays in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn

REQUIRED = ("encode_latent", "decode_latent", "latent_channels", "downsample_factor")


class IdentityFirstStage(nn.Module):
    """``z = x`` (f = 1, scale 1): latent diffusion that is pixel diffusion, for tests and as a reference.

    Args:
        latent_channels: C of the images (= the latent channels).
        latent_size: H = W of the images (= the latent size); recorded so a config can size the net from
            ``first_stage.latent_size`` whatever the first stage (see `conf/first_stage/`).
    """

    downsample_factor = 1
    clip_denoised = True  # the "latents" are images in [-1, 1]: clip as pixel-space sampling does

    def __init__(self, latent_channels: int = 1, latent_size: int | None = None):
        super().__init__()
        self.latent_channels = int(latent_channels)
        self.latent_size = None if latent_size is None else int(latent_size)
        self.scale_factor = 1.0

    def encode_latent(self, x: torch.Tensor, sample: bool = False,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        return x

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        return z


def check_first_stage(module: nn.Module) -> nn.Module:
    """Refuse, with one sentence, an object that lacks the first-stage interface; freeze it and return it."""
    missing = [name for name in REQUIRED if not hasattr(module, name)]
    if missing:
        raise TypeError(f"{type(module).__name__} cannot be a latent-diffusion first stage: it lacks "
                        f"{', '.join(missing)} (see beatgans.nets.first_stage).")
    module.requires_grad_(False)
    return module.eval()


__all__ = ["IdentityFirstStage", "check_first_stage"]
