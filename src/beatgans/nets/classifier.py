"""ADM's noisy classifier (Dhariwal & Nichol 2021, Sec. 4.1): the UNet encoder half plus the middle
block, conditioned on the timestep only (no class embedding), then a pooling head to logits.

Heads (``pool``): ``"attention"`` (CLIP-style attention pooling from a mean token, the default),
``"adaptive"`` (GN - SiLU - global average - zero-initialised linear), ``"spatial"`` and
``"spatial_v2"`` (an MLP over the spatial means of every encoder activation and the middle block).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from beatgans.nets.layers import GroupNorm32, multihead_attention, timestep_embedding
from beatgans.nets.unet import build_encoder, default_channel_mult

POOLS = ("attention", "adaptive", "spatial", "spatial_v2")


class AttentionPool(nn.Module):
    """Attention pooling: a mean token (plus learned positions) attends to all positions.

    Args: x (B, C, H, W) with H * W == ``num_positions``. Returns (B, out_dim).
    Channel layout of ``qkv`` is always (3, heads, d), as in ADM's released classifiers.
    """

    OPENAI_NAMES = {"qkv": "qkv_proj", "proj": "c_proj"}
    OPENAI_CONV1X1 = {"qkv": 1, "proj": 1}

    def __init__(self, num_positions: int, channels: int, num_heads: int, out_dim: int):
        super().__init__()
        self.num_heads = num_heads
        # (C, 1 + H*W): position 0 is the mean token.
        self.positional_embedding = nn.Parameter(torch.randn(channels, num_positions + 1) / channels**0.5)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        x = x.reshape(b, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1) + self.positional_embedding.to(x.dtype)
        # Only the mean token's output is used, so only its query is computed.
        pooled = multihead_attention(self.qkv(x.transpose(1, 2)), self.num_heads, new_order=True, query_len=1)
        return self.proj(pooled[:, 0])


class AdaptivePool(nn.Module):
    """Global average pooling then a zero-initialised linear map: (B, C, H, W) -> (B, out_dim)."""

    OPENAI_NAMES = {"proj": "3"}  # their head: out = [GN, SiLU, AdaptiveAvgPool, conv1x1, Flatten]
    OPENAI_CONV1X1 = {"proj": 2}

    def __init__(self, channels: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(channels, out_dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=(2, 3)))


class SpatialPool(nn.Module):
    """MLP on concatenated spatial means: (B, F) -> (B, out_dim). v2 uses GN(32) + SiLU instead of ReLU."""

    OPENAI_NAMES_V1 = {"fc1": "0", "fc2": "2"}
    OPENAI_NAMES_V2 = {"fc1": "0", "norm": "1", "fc2": "3"}

    def __init__(self, features: int, out_dim: int, v2: bool = False, hidden: int = 2048):
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.norm = GroupNorm32(hidden) if v2 else None
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        h = self.fc1(feats)
        h = F.silu(self.norm(h)) if self.norm is not None else F.relu(h)
        return self.fc2(h)


class EncoderClassifier(nn.Module):
    """Noisy-image classifier ``p(y | x_t, t)`` for classifier guidance.

    Args mirror `beatgans.nets.UNet` (attention_resolutions are RESOLUTIONS in pixels); defaults are
    ADM's released classifiers: 64 channels per head, AdaGN, BigGAN resampling, attention pooling.

    Shapes: ``forward(x (B, in_channels, H, W) float, t (B,) int64) -> logits (B, num_classes) float``.
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        num_classes: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] | None = None,
        use_checkpoint: bool = False,
        num_heads: int = 1,
        num_head_channels: int = 64,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = True,
        use_new_attention_order: bool = False,
        pool: str = "attention",
    ):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        channel_mult = tuple(channel_mult) if channel_mult is not None else default_channel_mult(image_size)
        self.image_size = image_size
        self.model_channels = model_channels
        self.num_classes = num_classes
        self.pool = pool
        emb_ch = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        self.stem, self.encoder, self.middle, skip_channels, res = build_encoder(
            image_size=image_size,
            in_channels=in_channels,
            model_channels=model_channels,
            num_res_blocks=num_res_blocks,
            attention_resolutions=attention_resolutions,
            channel_mult=channel_mult,
            res_kwargs=dict(
                emb_channels=emb_ch,
                dropout=dropout,
                use_scale_shift_norm=use_scale_shift_norm,
                use_checkpoint=use_checkpoint,
            ),
            attn_kwargs=dict(
                num_heads=num_heads,
                num_head_channels=num_head_channels,
                new_order=use_new_attention_order,
                use_checkpoint=use_checkpoint,
            ),
            resblock_updown=resblock_updown,
        )
        ch = skip_channels[-1]
        self.out_norm: GroupNorm32 | None = None
        if pool == "attention":
            heads = ch // num_head_channels if num_head_channels > 0 else num_heads
            self.out_norm = GroupNorm32(ch)
            self.head: nn.Module = AttentionPool(res * res, ch, heads, num_classes)
        elif pool == "adaptive":
            self.out_norm = GroupNorm32(ch)
            self.head = AdaptivePool(ch, num_classes)
        else:
            # Spatial means of the stem, every encoder block and the middle block.
            self.head = SpatialPool(sum(skip_channels) + ch, num_classes, v2=pool == "spatial_v2")

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) noisy images x_t; t: (B,) original timesteps. Returns logits (B, K)."""
        emb = self.time_embed(timestep_embedding(t, self.model_channels))
        h = self.stem(x)
        spatial = self.out_norm is None
        means = [h.mean(dim=(2, 3))] if spatial else []
        for block in self.encoder:
            h = block(h, emb)
            if spatial:
                means.append(h.mean(dim=(2, 3)))
        h = self.middle(h, emb)
        if spatial:
            means.append(h.mean(dim=(2, 3)))
            return self.head(torch.cat(means, dim=-1))
        return self.head(F.silu(self.out_norm(h)))
