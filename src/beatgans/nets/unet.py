"""The ADM UNet (Dhariwal & Nichol 2021, Sec. 3 and Tables 1-3; Nichol & Dhariwal 2021 for learned sigma).

Layout: ``stem`` conv -> ``encoder`` (per level: ``num_res_blocks`` x [ResBlock, Attention?], then a
downsampler except at the last level) -> ``middle`` (Res - Attn - Res) -> ``decoder`` (per level,
deepest first: ``num_res_blocks + 1`` x [ResBlock on concat(h, skip), Attention?], an upsampler
closing every level but the top) -> ``out_norm`` - SiLU - ``out_conv`` (zero-initialised).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from beatgans.nets.layers import (
    GROUPS,
    AttentionBlock,
    Downsample,
    EmbedSequential,
    GroupNorm32,
    ResBlock,
    Upsample,
    timestep_embedding,
)
from beatgans.nets.transformer import SpatialTransformer
from beatgans.utils.errors import UserError

# ADM's channel multipliers per resolution (guided-diffusion's defaults); 32 follows DDPM/IDDPM CIFAR-10.
ADM_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
    32: (1, 2, 2, 2),
}


def default_channel_mult(image_size: int) -> tuple[float, ...]:
    """ADM's channel multipliers for ``image_size``; other sizes must pass ``channel_mult`` explicitly."""
    if image_size not in ADM_CHANNEL_MULT:
        raise ValueError(
            f"no default channel_mult for image_size={image_size} (known: {sorted(ADM_CHANNEL_MULT)}); "
            "pass channel_mult explicitly"
        )
    return ADM_CHANNEL_MULT[image_size]


def check_layout(image_size: int, model_channels: int, channel_mult: Sequence[float],
                 attention_resolutions: Sequence[int]) -> None:
    """Refuse, in one sentence (`UserError`), a layout that would fail deep inside torch or silently differ.

    Level i works at ``image_size / 2**i`` pixels with ``int(channel_mult[i] * model_channels)`` channels;
    every width must be a multiple of the GroupNorm groups (32), every attention resolution must be one
    of the level resolutions (otherwise no block gets attention), and the image must halve evenly.
    """
    levels = len(channel_mult)
    if image_size % 2 ** (levels - 1):
        raise UserError(f"net.image_size={image_size} cannot be halved {levels - 1} times for "
                        f"{levels} levels (channel_mult={list(channel_mult)}); use fewer levels or a size divisible "
                        f"by {2 ** (levels - 1)}.")
    resolutions = [image_size // 2**i for i in range(levels)]
    widths = [int(m * model_channels) for m in channel_mult]
    bad_widths = [w for w in widths if w <= 0 or w % GROUPS]
    if bad_widths:
        raise UserError(f"net.model_channels={model_channels} with channel_mult={list(channel_mult)} gives level "
                        f"widths {widths}, but every width must be a positive multiple of {GROUPS} (the GroupNorm "
                        f"groups); choose model_channels and channel_mult so that each product is.")
    unknown = [int(r) for r in attention_resolutions if int(r) not in resolutions]
    if unknown:
        raise UserError(f"net.attention_resolutions={[int(r) for r in attention_resolutions]}: {unknown} match no "
                        f"feature-map resolution of this {image_size}px net, whose levels work at {resolutions} px; "
                        "pick from those (they are resolutions in pixels, not downsampling factors).")


def build_encoder(
    *,
    image_size: int,
    in_channels: int,
    model_channels: int,
    num_res_blocks: int,
    attention_resolutions: Sequence[int],
    channel_mult: Sequence[float],
    res_kwargs: dict,
    attn_kwargs: dict,
    resblock_updown: bool,
    attention: Callable[[int], nn.Module] | None = None,
) -> tuple[nn.Conv2d, nn.ModuleList, EmbedSequential, list[int], int]:
    """The encoder half and middle block shared by `UNet` and `EncoderClassifier`.

    ``attention(channels)`` builds the block placed at the attention resolutions and in the middle
    (default: ADM's `AttentionBlock` with ``attn_kwargs``).

    Returns:
        (stem, encoder, middle, skip_channels, final_resolution): ``skip_channels[i]`` is the
        channel count of the i-th saved activation (stem first), in encoder order.
    """
    check_layout(image_size, model_channels, channel_mult, attention_resolutions)
    attention_resolutions = set(int(r) for r in attention_resolutions)
    attention = attention or (lambda channels: AttentionBlock(channels, **attn_kwargs))
    ch = int(channel_mult[0] * model_channels)
    stem = nn.Conv2d(in_channels, ch, 3, padding=1)
    encoder = nn.ModuleList()
    skip_channels = [ch]
    res = image_size
    for level, mult in enumerate(channel_mult):
        out_ch = int(mult * model_channels)
        for _ in range(num_res_blocks):
            layers: list[nn.Module] = [ResBlock(ch, out_channels=out_ch, **res_kwargs)]
            ch = out_ch
            if res in attention_resolutions:
                layers.append(attention(ch))
            encoder.append(EmbedSequential(*layers))
            skip_channels.append(ch)
        if level != len(channel_mult) - 1:
            down = ResBlock(ch, down=True, **res_kwargs) if resblock_updown else Downsample(ch, use_conv=True)
            encoder.append(EmbedSequential(down))
            skip_channels.append(ch)
            res //= 2
    middle = EmbedSequential(
        ResBlock(ch, **res_kwargs),
        attention(ch),
        ResBlock(ch, **res_kwargs),
    )
    return stem, encoder, middle, skip_channels, res


class UNet(nn.Module):
    """ADM UNet predicting eps (and the variance interpolation ``v`` when ``learn_sigma``).

    Args:
        image_size: H = W of the inputs (used to place attention and pick the default multipliers).
        in_channels: C of the images.
        model_channels: base width; level i has ``channel_mult[i] * model_channels`` channels.
        num_res_blocks: residual blocks per level in the encoder (the decoder has one more).
        attention_resolutions: feature-map RESOLUTIONS in pixels that get self-attention
            (e.g. ``[32, 16, 8]``); guided-diffusion's constructor takes downsample factors instead.
        dropout: dropout rate inside the residual blocks.
        channel_mult: per-level width multipliers; None -> ADM's default for ``image_size``.
        num_classes: class-conditional when set (labels ``0..num_classes-1``).
        null_class: add one more embedding row, label ``num_classes``, for classifier-free guidance.
        learn_sigma: output ``2 * in_channels`` channels (eps, v) unless ``out_channels`` is given.
        use_checkpoint: gradient checkpointing per residual / attention block.
        num_heads / num_head_channels: attention heads, or a fixed width per head when
            ``num_head_channels > 0`` (takes precedence); ``num_heads_upsample`` overrides
            ``num_heads`` in the decoder (-1: same).
        use_scale_shift_norm: AdaGN (True) or an additive embedding (False), ADM Table 3.
        resblock_updown: BigGAN residual blocks for up/downsampling instead of conv resamplers.
        use_new_attention_order: qkv channel layout (3, heads, d) instead of (heads, 3, d).
        residual_rescale: multiply every residual sum by 1/sqrt(2) (ADM Table 1 ablation).
        context_dim: cross-attention conditioning (latent diffusion): every self-attention block, at the
            attention resolutions and in the middle, is REPLACED by a `SpatialTransformer` (which
            does its own self-attention, then attends to the context) over context tokens of this
            width. None (default) builds exactly the ADM layout.
        transformer_depth: transformer blocks per `SpatialTransformer`.

    Shapes: ``forward(x (B, in_channels, H, W) float, t (B,) int64, y (B,) int64 | None,
    context (B, S, context_dim) | None, context_mask (B, S) bool | None) -> (B, out_channels, H, W)``.
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] | None = None,
        num_classes: int | None = None,
        null_class: bool = False,
        learn_sigma: bool = False,
        out_channels: int | None = None,
        use_checkpoint: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        residual_rescale: bool = False,
        context_dim: int | None = None,
        transformer_depth: int = 1,
    ):
        super().__init__()
        channel_mult = tuple(channel_mult) if channel_mult is not None else default_channel_mult(image_size)
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels or (2 * in_channels if learn_sigma else in_channels)
        self.num_classes = num_classes
        self.null_class = null_class
        self.learn_sigma = learn_sigma
        self.context_dim = context_dim
        emb_ch = 4 * model_channels

        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        self.class_embed = (
            nn.Embedding(num_classes + int(null_class), emb_ch) if num_classes is not None else None
        )
        res_kwargs = dict(
            emb_channels=emb_ch,
            dropout=dropout,
            use_scale_shift_norm=use_scale_shift_norm,
            use_checkpoint=use_checkpoint,
            residual_rescale=residual_rescale,
        )
        attn_kwargs = dict(
            num_heads=num_heads,
            num_head_channels=num_head_channels,
            new_order=use_new_attention_order,
            use_checkpoint=use_checkpoint,
            residual_rescale=residual_rescale,
        )
        self.stem, self.encoder, self.middle, skip_channels, res = build_encoder(
            image_size=image_size,
            in_channels=in_channels,
            model_channels=model_channels,
            num_res_blocks=num_res_blocks,
            attention_resolutions=attention_resolutions,
            channel_mult=channel_mult,
            res_kwargs=res_kwargs,
            attn_kwargs=attn_kwargs,
            resblock_updown=resblock_updown,
            attention=self._attention_factory(attn_kwargs, transformer_depth),
        )
        up_attn_kwargs = dict(attn_kwargs, num_heads=num_heads if num_heads_upsample == -1 else num_heads_upsample)
        up_attention = self._attention_factory(up_attn_kwargs, transformer_depth)
        attention_resolutions = set(int(r) for r in attention_resolutions)
        ch = skip_channels[-1]
        self.decoder = nn.ModuleList()
        for level in reversed(range(len(channel_mult))):
            out_ch = int(channel_mult[level] * model_channels)
            for i in range(num_res_blocks + 1):
                layers: list[nn.Module] = [ResBlock(ch + skip_channels.pop(), out_channels=out_ch, **res_kwargs)]
                ch = out_ch
                if res in attention_resolutions:
                    layers.append(up_attention(ch))
                if level > 0 and i == num_res_blocks:
                    layers.append(ResBlock(ch, up=True, **res_kwargs) if resblock_updown else Upsample(ch))
                    res *= 2
                self.decoder.append(EmbedSequential(*layers))
        self.out_norm = GroupNorm32(ch)
        self.out_conv = nn.Conv2d(ch, self.out_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def _attention_factory(self, attn_kwargs: dict, depth: int) -> Callable[[int], nn.Module]:
        """Builds the attention-resolution blocks: ADM self-attention, or a spatial transformer with a context."""
        if self.context_dim is None:
            return lambda ch: AttentionBlock(ch, **attn_kwargs)
        return lambda ch: SpatialTransformer(ch, self.context_dim, attn_kwargs["num_heads"],
                                             attn_kwargs["num_head_channels"], depth=depth,
                                             use_checkpoint=attn_kwargs["use_checkpoint"])

    def embed(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """(B, 4 * model_channels) embedding of timesteps ``t`` (B,) plus class labels ``y`` (B,)."""
        emb = self.time_embed(timestep_embedding(t, self.model_channels))
        if self.class_embed is not None:
            if y is None:
                raise ValueError("this UNet is class-conditional: pass y (B,) int64 labels")
            emb = emb + self.class_embed(y)
        elif y is not None:
            raise ValueError("this UNet is unconditional (num_classes=None) but labels y were passed")
        return emb

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, H, W) float in [-1, 1]-ish; t: (B,) timesteps; y: (B,) int64 labels or None;
        context: (B, S, context_dim) tokens, context_mask: (B, S) bool (True = real token), with ``context_dim``.

        Returns (B, out_channels, H, W) in x's dtype (or the autocast dtype).
        """
        if (context is None) != (self.context_dim is None):
            raise ValueError("this UNet " + ("needs a context (B, S, context_dim)" if context is None else
                                              "has no context_dim but a context was passed"))
        emb = self.embed(t, y)
        h = self.stem(x)
        skips = [h]
        for block in self.encoder:
            h = block(h, emb, context, context_mask)
            skips.append(h)
        h = self.middle(h, emb, context, context_mask)
        for block in self.decoder:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context, context_mask)
        return self.out_conv(F.silu(self.out_norm(h)))


class SuperResUNet(UNet):
    """ADM's upsampling UNet (ADM Sec. 4 / Table 5, "ADM-U"): a `UNet` whose stem also sees the low-res image.

    The low-resolution image is resized to x_t's size with bilinear interpolation (torch defaults:
    ``align_corners=False``, no antialiasing, as ADM) and concatenated AFTER x_t on the channel axis,
    so the stem has ``2 * in_channels`` inputs. Everything else (class conditioning, learned sigma,
    every ablation knob) is the plain `UNet`'s; OpenAI's ``SuperResModel`` checkpoints load with
    `beatgans.nets.load_openai_checkpoint`.

    Args:
        image_size, in_channels, ...: as `UNet`; ``in_channels`` counts the IMAGE channels (x_t and
            low_res each have that many), so samplers still draw (B, in_channels, H, W) noise.
        low_res_size: side of the low-resolution inputs it was trained on (64 for 64 -> 256); when set,
            other sizes are refused. None accepts any size.

    Shapes: ``forward(x (B, C, H, W), t (B,) int64, y (B,) int64 | None, low_res (B, C, h, w) in [-1, 1])
    -> (B, out_channels, H, W)``.
    """

    def __init__(self, image_size: int, in_channels: int, model_channels: int, num_res_blocks: int,
                 attention_resolutions: Sequence[int], *, low_res_size: int | None = None,
                 learn_sigma: bool = False, out_channels: int | None = None, **kwargs):
        out_channels = out_channels or (2 * in_channels if learn_sigma else in_channels)
        super().__init__(image_size, 2 * in_channels, model_channels, num_res_blocks, attention_resolutions,
                         learn_sigma=learn_sigma, out_channels=out_channels, **kwargs)
        self.in_channels = in_channels  # image channels; the stem takes x_t and the resized low_res
        self.low_res_size = low_res_size

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                low_res: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if low_res is None:
            raise ValueError("this UNet is an upsampler (SuperResUNet): pass low_res=(B, C, h, w) images in [-1, 1]")
        if low_res.shape[:2] != x.shape[:2] or low_res.ndim != 4:
            raise ValueError(f"low_res must be (B, C, h, w) = ({x.shape[0]}, {x.shape[1]}, h, w) like x, "
                             f"got {tuple(low_res.shape)}")
        if self.low_res_size is not None and low_res.shape[-2:] != (self.low_res_size, self.low_res_size):
            raise ValueError(f"this upsampler was built for {self.low_res_size}px low-res inputs, got "
                             f"{low_res.shape[-2]}x{low_res.shape[-1]}; resize them or set net.low_res_size")
        upsampled = F.interpolate(low_res.to(x.dtype), size=x.shape[-2:], mode="bilinear")
        return super().forward(torch.cat([x, upsampled], dim=1), t, y, **kwargs)
