"""The first stage of latent diffusion: a KL-regularised convolutional autoencoder (Rombach et al. 2022,
Sec. 3.1 and App. G), the "AutoencoderKL" family whose f = 8 member is Stable Diffusion's VAE.

    x (B, C, H, W) in [-1, 1] --encoder--> moments (B, 2c, H/f, W/f) --> DiagonalGaussian(mean, logvar)
    z (B, c, H/f, W/f) --decoder--> reconstruction (B, C, H, W), roughly in [-1, 1] (not clamped)

Encoder: conv_in, one level per entry of ``channel_mult`` (``num_res_blocks`` ResNet blocks of
GroupNorm-SiLU-conv, optional self-attention after each block at ``attn_resolutions``, a stride-2
downsample on all but the last level), a mid-block (ResNet, self-attention, ResNet), GroupNorm-SiLU-conv
to 2c channels, then a 1x1 ``quant_conv``. The decoder mirrors it with ``num_res_blocks + 1`` blocks per
level and nearest-neighbour x2 upsampling followed by a 3x3 conv, after a 1x1 ``post_quant_conv``.
f = 2 ** (len(channel_mult) - 1). Norms are 32-group GroupNorm with eps 1e-6; attention is one head.

Latent diffusion works on ``encode_latent(x) = z * scale_factor`` (scale_factor ~ 1 / std of the latents,
`compute_scale_factor`) and maps back with ``decode_latent``. Pure torch: no Lightning, no Hydra.
The module layout converts from diffusers' ``AutoencoderKL`` state dict (`beatgans.nets.convert_diffusers`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from beatgans.nets.layers import GROUPS, GroupNorm32

NORM_EPS = 1e-6  # LDM's and diffusers' VAE norms use 1e-6, not GroupNorm's default 1e-5
LOGVAR_RANGE = (-30.0, 20.0)  # LDM clamps the posterior log-variance to this range


class DiagonalGaussian:
    """The posterior q(z | x) = N(mean, diag(exp(logvar))) over latents (B, c, h, w).

    Built from encoder ``moments`` (B, 2c, h, w): the first c channels are the mean, the last c the
    log-variance, clamped to [-30, 20] so ``exp`` stays finite. Attributes ``mean, logvar, std, var``
    are (B, c, h, w) in the moments' dtype.
    """

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(*LOGVAR_RANGE)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def mode(self) -> torch.Tensor:
        """The deterministic latent: the mean, (B, c, h, w)."""
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A reparameterised draw ``mean + std * eps`` (differentiable in mean and logvar), (B, c, h, w)."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def kl(self) -> torch.Tensor:
        """KL(q(z | x) || N(0, I)) summed over latent dimensions: (B,) in nats.

        ``0.5 * sum(mean^2 + var - 1 - logvar)`` (the closed form between diagonal Gaussians).
        """
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar).flatten(1).sum(1)

    def nll(self, z: torch.Tensor) -> torch.Tensor:
        """Negative log-density of latents ``z`` (B, c, h, w) under the posterior, summed: (B,) in nats."""
        return 0.5 * (math.log(2 * math.pi) + self.logvar + (z - self.mean).pow(2) / self.var).flatten(1).sum(1)


class ResnetBlock(nn.Module):
    """``skip(x) + conv2(dropout(SiLU(norm2(conv1(SiLU(norm1(x)))))))``; skip is a 1x1 conv when widths differ.

    (B, in_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = GroupNorm32(in_channels, eps=NORM_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = GroupNorm32(out_channels, eps=NORM_EPS)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual: (B, C, H, W) -> (B, C, H, W).

    q, k, v and the output projection are linear maps of the channels (1x1 convolutions in effect),
    scores scaled by 1 / sqrt(C).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = GroupNorm32(channels, eps=NORM_EPS)
        self.q = nn.Linear(channels, channels)
        self.k = nn.Linear(channels, channels)
        self.v = nn.Linear(channels, channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        out = F.scaled_dot_product_attention(self.q(tokens), self.k(tokens), self.v(tokens))
        return x + self.proj(out).transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding one pixel on the right and bottom only: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution of the encoder or decoder: ResNet blocks (each optionally followed by attention), then
    an optional resampler (``resample``: Downsample, Upsample or None)."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, attention: bool, dropout: float,
                 resample: type[nn.Module] | None):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels, dropout) for i in range(num_blocks))
        self.attns = nn.ModuleList(SelfAttention(out_channels) for _ in range(num_blocks) if attention)
        self.resample = resample(out_channels) if resample is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x)
            if len(self.attns):
                x = self.attns[i](x)
        return self.resample(x) if self.resample is not None else x


class MidBlock(nn.Module):
    """ResNet block, self-attention, ResNet block at the lowest resolution (width unchanged)."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.block1 = ResnetBlock(channels, channels, dropout)
        self.attn = SelfAttention(channels)
        self.block2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.attn(self.block1(x)))


class Encoder(nn.Module):
    """(B, in_channels, H, W) -> moments (B, 2 * latent_channels, H/f, W/f) (before ``quant_conv``)."""

    def __init__(self, in_channels: int, base_channels: int, channel_mult: Sequence[int], num_res_blocks: int,
                 latent_channels: int, attn_resolutions: Sequence[int], resolution: int, dropout: float):
        super().__init__()
        widths = [base_channels * m for m in channel_mult]
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        levels, ch, res = [], base_channels, resolution
        for i, width in enumerate(widths):
            last = i == len(widths) - 1
            levels.append(Level(ch, width, num_res_blocks, res in attn_resolutions, dropout,
                                None if last else Downsample))
            ch, res = width, res if last else res // 2
        self.levels = nn.ModuleList(levels)
        self.mid = MidBlock(ch, dropout)
        self.norm_out = GroupNorm32(ch, eps=NORM_EPS)
        self.conv_out = nn.Conv2d(ch, 2 * latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.levels:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """(B, latent_channels, H/f, W/f) -> (B, out_channels, H, W) (after ``post_quant_conv``).

    ``levels[0]`` runs at the lowest resolution (widest), ``levels[-1]`` at full resolution.
    """

    def __init__(self, out_channels: int, base_channels: int, channel_mult: Sequence[int], num_res_blocks: int,
                 latent_channels: int, attn_resolutions: Sequence[int], resolution: int, dropout: float):
        super().__init__()
        widths = [base_channels * m for m in reversed(channel_mult)]
        res = resolution // 2 ** (len(widths) - 1)
        self.conv_in = nn.Conv2d(latent_channels, widths[0], 3, padding=1)
        self.mid = MidBlock(widths[0], dropout)
        levels, ch = [], widths[0]
        for i, width in enumerate(widths):
            last = i == len(widths) - 1
            levels.append(Level(ch, width, num_res_blocks + 1, res in attn_resolutions, dropout,
                                None if last else Upsample))
            ch, res = width, res if last else res * 2
        self.levels = nn.ModuleList(levels)
        self.norm_out = GroupNorm32(ch, eps=NORM_EPS)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in self.levels:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    """KL-regularised autoencoder (LDM's AutoencoderKL; Stable Diffusion's VAE at f = 8).

    Args:
        in_channels, out_channels: image channels (1 for digits, 3 for RGB).
        base_channels: width of the first level; every width ``base_channels * m`` must be a multiple of 32
            (32-group GroupNorm).
        channel_mult: width multiplier per level; f = 2 ** (len(channel_mult) - 1).
        num_res_blocks: ResNet blocks per encoder level (the decoder has one more per level).
        latent_channels: c, the channels of z.
        attn_resolutions: feature-map sizes (pixels) whose levels get self-attention after each block
            (LDM's KL presets use none; the mid-block always has attention).
        resolution: the training image size H = W; must be divisible by f.
        dropout: inside the ResNet blocks.
        scale_factor: multiplies latents in `encode_latent` (a buffer, saved in the state dict);
            1 / std of the latents (`compute_scale_factor`) or a published value (0.18215 for SD's VAE).
    """

    def __init__(self, in_channels: int, out_channels: int, base_channels: int, channel_mult: Sequence[int],
                 num_res_blocks: int, latent_channels: int, attn_resolutions: Sequence[int] = (),
                 resolution: int = 256, dropout: float = 0.0, scale_factor: float = 1.0):
        super().__init__()
        channel_mult = [int(m) for m in channel_mult]
        attn_resolutions = [int(r) for r in attn_resolutions]
        _check_args(base_channels, channel_mult, num_res_blocks, latent_channels, resolution)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.latent_channels = latent_channels
        self.downsample_factor = 2 ** (len(channel_mult) - 1)
        self.resolution = resolution
        shared = {"base_channels": base_channels, "channel_mult": channel_mult, "num_res_blocks": num_res_blocks,
                  "latent_channels": latent_channels, "attn_resolutions": attn_resolutions,
                  "resolution": resolution, "dropout": dropout}
        self.encoder = Encoder(in_channels, **shared)
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)
        self.decoder = Decoder(out_channels, **shared)
        self.register_buffer("scale_factor", torch.tensor(float(scale_factor)))

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """x: (B, in_channels, H, W) in [-1, 1] -> the posterior over z (B, c, H/f, W/f)."""
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, c, H/f, W/f) (unscaled) -> reconstruction (B, out_channels, H, W), ~[-1, 1], not clamped."""
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: torch.Tensor, sample_posterior: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Reconstruct ``x`` through a sampled (or, with ``sample_posterior=False``, the mean) latent.

        Returns ``(reconstruction (B, out_channels, H, W), posterior)``.
        """
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z), posterior

    def encode_latent(self, x: torch.Tensor, sample: bool = False,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """The diffusion-space latent ``z * scale_factor`` (posterior mean unless ``sample``): (B, c, H/f, W/f)."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return z * self.scale_factor.to(z.dtype)

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of `encode_latent`'s scaling, then decode: (B, c, H/f, W/f) -> (B, out_channels, H, W)."""
        return self.decode(z / self.scale_factor.to(z.dtype))

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's output conv weight, where LDM's adaptive GAN weight compares gradient norms."""
        return self.decoder.conv_out.weight


def _check_args(base_channels: int, channel_mult: list[int], num_res_blocks: int, latent_channels: int,
                resolution: int) -> None:
    if not channel_mult or min(channel_mult) < 1:
        raise ValueError(f"channel_mult must be a non-empty list of positive multipliers, got {channel_mult}.")
    bad = [base_channels * m for m in channel_mult if (base_channels * m) % GROUPS]
    if bad:
        raise ValueError(f"autoencoder widths {bad} are not multiples of {GROUPS} (GroupNorm groups); "
                         f"set base_channels to a multiple of {GROUPS}.")
    if num_res_blocks < 1 or latent_channels < 1:
        raise ValueError("num_res_blocks and latent_channels must be at least 1.")
    f = 2 ** (len(channel_mult) - 1)
    if resolution % f:
        raise ValueError(f"resolution {resolution} is not divisible by the downsampling factor f = {f} "
                         f"(len(channel_mult) = {len(channel_mult)}); change one of them.")


@torch.no_grad()
def compute_scale_factor(ae: AutoencoderKL, batches: Iterable, num_batches: int = 4, sample: bool = False,
                         generator: torch.Generator | None = None) -> float:
    """``1 / std`` of the latents of the first ``num_batches`` batches (LDM's "rescale by std").

    Args:
        ae: the (trained) autoencoder; evaluated in eval mode, its mode restored afterwards.
        batches: an iterable of images (B, C, H, W) in [-1, 1] or of ``(images, labels)`` tuples.
        num_batches: how many batches to read (all of them if fewer).
        sample: use posterior samples instead of the mean (LDM's first-stage encoding samples; the mean is
            what `encode_latent` feeds the diffusion by default).
    Returns:
        The scale factor, a Python float (the std over every latent element, unbiased).
    """
    was_training = ae.training
    ae.eval()
    device = ae.scale_factor.device
    latents = []
    try:
        for i, batch in enumerate(batches):
            if i >= num_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            posterior = ae.encode(x.to(device))
            latents.append((posterior.sample(generator) if sample else posterior.mode()).float().flatten())
    finally:
        ae.train(was_training)
    if not latents:
        raise ValueError("compute_scale_factor got no batches; pass a non-empty dataloader.")
    std = torch.cat(latents).std().item()
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"the latents' std is {std}; cannot compute a scale factor (is the encoder collapsed?).")
    return 1.0 / std


__all__ = ["AutoencoderKL", "DiagonalGaussian", "compute_scale_factor"]
