"""Building blocks of the ADM UNet and its encoder classifier (Dhariwal & Nichol 2021, Sec. 3).

Every block maps feature maps ``(B, C, H, W)`` (float32, or bf16/fp16 under autocast) to feature
maps; blocks that take the timestep(+class) embedding ``emb: (B, E)`` derive from `EmbedBlock`.

Each composite block carries ``OPENAI_NAMES``: how its direct children are called in OpenAI's
guided-diffusion / improved-diffusion state dicts. `beatgans.nets.convert` reads these tables so
our names can stay readable while released checkpoints still load.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

GROUPS = 32
_RESCALE = 1.0 / math.sqrt(2.0)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, docs/formulas.md "Networks".

    Args:
        t: (B,) timesteps (int64 indices or floats).
        dim: embedding width; an odd width gets one zero column.
    Returns:
        (B, dim) float32, ``[cos(t * f_k), sin(t * f_k)]`` with ``f_k = exp(-ln(P) k / half)``.
    """
    half = dim // 2
    # Same float32 operation order as the reference so released checkpoints reproduce to 1e-6:
    # at t ~ 1000 one ulp of a frequency already moves cos() by ~1e-4.
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def dropout(x: torch.Tensor, p: float, inplace: bool = False) -> torch.Tensor:
    """Inverted dropout (training mode): zero each element with probability ``p``, scale the rest by 1/(1-p).

    Same distribution as `F.dropout`, but a uniform draw + compare is about twice as fast on CPU
    as the Bernoulli sampler `F.dropout` uses (measured on the benchmark's shapes). ``inplace``
    multiplies ``x`` itself (legal when no backward needs ``x``'s values).
    """
    mask = torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))  # in place: 0 or 1/(1-p), x's dtype
    return x.mul_(mask) if inplace else x * mask


def _residual(skip: torch.Tensor, h: torch.Tensor, rescale: bool) -> torch.Tensor:
    """``skip + h`` (times 1/sqrt(2) with ``rescale``), accumulated into ``h``, a fresh block output whose
    producer (a conv, a linear layer) does not need it for backward. A new tensor is made instead when
    the dtypes or layouts differ (autocast; attention's NHWC-strided view in an NCHW net), so type
    promotion and the result's memory format are those of ``skip + h``."""
    same = h.dtype == torch.promote_types(h.dtype, skip.dtype) and h.stride() == skip.stride()
    out = h.add_(skip) if same else skip + h
    return out.mul_(_RESCALE) if rescale else out


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32, C) computed in float32 whatever the autocast dtype; returns the input dtype.

    Half-precision statistics over large groups lose accuracy (ADM runs its norms in fp32). On
    float32 input the casts are no-ops, so no copy is made.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__(GROUPS, channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x, self.weight, self.bias)

    def normalize_per_sample(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Group-normalise ``x`` (B, C, *) with a per-sample affine ``weight``, ``bias`` (B, C)."""
        b, c = x.shape[:2]
        if _is_channels_last(x):
            # keep channels_last: normalise, then the per-sample affine as one broadcast addcmul
            out = _group_norm(x, self.num_groups, None, None, self.eps)
            return torch.addcmul(bias[:, :, None, None].to(out.dtype), out, weight[:, :, None, None].to(out.dtype))
        # One sample of B*C channels and B*G groups: each group still lies within one sample.
        flat = x.reshape(1, b * c, *x.shape[2:])
        out = _group_norm(flat, self.num_groups * b, weight.reshape(-1), bias.reshape(-1), self.eps)
        return out.view(x.shape)

    def normalize(self, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
        """Group-normalise ``x`` in fp32 with an optional per-channel affine; output has x's dtype."""
        return _group_norm(x, self.num_groups, weight, bias, self.eps)


def _group_norm(x: torch.Tensor, groups: int, weight, bias, eps: float) -> torch.Tensor:
    """F.group_norm in float32 (outside autocast), returned in x's dtype; no copies for fp32 input."""
    if x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type):
        return F.group_norm(x, groups, weight, bias, eps)
    with torch.autocast(x.device.type, enabled=False):
        w = None if weight is None else weight.float()
        b = None if bias is None else bias.float()
        return F.group_norm(x.float(), groups, w, b, eps).to(x.dtype)


class EmbedBlock(nn.Module):
    """A block whose forward takes ``(x, emb)``."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class ContextBlock(nn.Module):
    """A block whose forward takes ``(x, context, context_mask)`` (cross-attention, `nets.transformer`)."""

    def forward(  # pragma: no cover
        self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise NotImplementedError


class EmbedSequential(nn.Sequential):
    """A sequence of layers; `EmbedBlock`s also receive the embedding, `ContextBlock`s the context."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None = None,  # type: ignore[override]
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, EmbedBlock):
                x = layer(x, emb)
            elif isinstance(layer, ContextBlock):
                x = layer(x, context, context_mask)
            else:
                x = layer(x)
        return x


class Downsample(nn.Module):
    """Halve H and W: strided 3x3 conv (``use_conv``) or 2x2 average pooling."""

    OPENAI_NAMES = {"conv": "op"}

    def __init__(self, channels: int, use_conv: bool = True, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        self.conv = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1) if use_conv else None
        if not use_conv and out_channels != channels:
            raise ValueError("average-pool downsampling cannot change the channel count")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) if self.conv is not None else F.avg_pool2d(x, 2)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling: (B, C, H, W) -> (B, C, 2H, 2W)."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def upsample2x_conv3x3(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(upsample2x(x))`` for a 3x3, padding-1 ``conv``, computed at the input resolution.

    Each output pixel (2i + a, 2j + b) sees only a 2x2 window of input pixels, whose kernel taps
    are sums of the 3x3 taps (rows: a = 0 -> [w0, w1 + w2] on rows i-1, i; a = 1 -> [w0 + w1, w2] on
    rows i, i+1; columns alike). One 2x2 convolution producing the four phases does 16 instead of
    36 multiply-adds per input pixel; the result equals the direct form up to float rounding.

    Args: x (B, C_in, H, W). Returns (B, C_out, 2H, 2W).
    """
    w = conv.weight  # (O, I, 3, 3)
    rows = (torch.stack([w[:, :, 0], w[:, :, 1] + w[:, :, 2]], 2),
            torch.stack([w[:, :, 0] + w[:, :, 1], w[:, :, 2]], 2))
    kernels = [
        torch.stack([r[..., 0], r[..., 1] + r[..., 2]], -1) if b == 0
        else torch.stack([r[..., 0] + r[..., 1], r[..., 2]], -1)
        for r in rows for b in (0, 1)
    ]  # phases (a, b) in order 00, 01, 10, 11; each (O, I, 2, 2)
    out_ch = w.shape[0]
    bias = conv.bias.repeat(4) if conv.bias is not None else None
    phases = F.conv2d(F.pad(x, (1, 1, 1, 1)), torch.cat(kernels, 0), bias)  # (B, 4 O, H + 1, W + 1)
    b, _, h, wd = x.shape
    phases = phases.view(b, 2, 2, out_ch, h + 1, wd + 1)
    # output row 2i + a uses phase a at padded position i + a (likewise columns)
    rows_out = [torch.stack([phases[:, a, c, :, a:a + h, c:c + wd] for c in (0, 1)], dim=-1) for a in (0, 1)]
    out = torch.stack(rows_out, dim=3).reshape(b, out_ch, 2 * h, 2 * wd)  # (B, O, H, 2, W, 2) -> (B, O, 2H, 2W)
    return out.contiguous(memory_format=torch.channels_last) if _is_channels_last(x) else out


def _is_channels_last(x: torch.Tensor) -> bool:
    """True for a 4-D tensor laid out NHWC (and not also NCHW-contiguous, as C = 1 or H = W = 1 would be)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class Upsample(nn.Module):
    """Double H and W by nearest-neighbour interpolation, then an optional 3x3 conv."""

    def __init__(self, channels: int, use_conv: bool = True, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        self.conv = nn.Conv2d(channels, out_channels, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample2x_conv3x3(x, self.conv) if self.conv is not None else upsample2x(x)


class ResBlock(EmbedBlock):
    """ADM residual block (ADM Sec. 3; docs/formulas.md "Networks").

    ``GN - SiLU - [resample] - conv3x3``; the embedding adds ``shift`` or, with AdaGN
    (``use_scale_shift_norm``), modulates ``GN(h) * (1 + scale) + shift``; then
    ``SiLU - dropout - conv3x3`` (zero-initialised, so the block starts as its skip path).
    With ``up``/``down`` (BigGAN blocks) the resampling happens after the first norm + SiLU and
    on the skip path.

    Args:
        x: (B, C_in, H, W); emb: (B, emb_channels).
    Returns:
        (B, C_out, H', W') with H' = 2H (up), H/2 (down) or H.
    """

    OPENAI_NAMES = {
        "norm1": "in_layers.0",
        "conv1": "in_layers.2",
        "emb_proj": "emb_layers.1",
        "norm2": "out_layers.0",
        "conv2": "out_layers.3",
        "skip": "skip_connection",
    }

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float = 0.0,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = True,
        up: bool = False,
        down: bool = False,
        use_checkpoint: bool = False,
        residual_rescale: bool = False,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint
        self.residual_rescale = residual_rescale
        self.dropout = dropout
        self.up = up
        self.resample: nn.Module | None = Downsample(channels, use_conv=False) if down else None
        self.norm1 = GroupNorm32(channels)
        self.conv1 = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_channels, (2 if use_scale_shift_norm else 1) * out_channels)
        self.norm2 = GroupNorm32(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(x))
        if self.up:  # BigGAN up block: resample h (fused into conv1) and the skip path
            h, x = upsample2x_conv3x3(h, self.conv1), upsample2x(x)
        elif self.resample is not None:
            h, x = self.conv1(self.resample(h)), self.resample(x)
        else:
            h = self.conv1(h)
        e = self.emb_proj(F.silu(emb))
        if self.use_scale_shift_norm:
            # AdaGN with the GroupNorm affine folded into a per-sample affine:
            # (x_hat * w + b) * (1 + s) + sh == x_hat * (w (1 + s)) + (b (1 + s) + sh), applied by
            # the GroupNorm kernel itself on the batch viewed as one sample of B * C channels
            # (groups never straddle samples, so the statistics are unchanged).
            scale, shift = e.chunk(2, dim=1)
            scale = scale + 1.0
            h = self.norm2.normalize_per_sample(h, self.norm2.weight * scale,
                                                torch.addcmul(shift, self.norm2.bias, scale))
        else:
            e = e.to(h.dtype)[:, :, None, None]
            h = self.norm2(h + e)
        h = F.silu(h)
        if self.dropout > 0 and self.training:
            h = dropout(h, self.dropout, inplace=True)  # SiLU's backward needs its input, not this output
        return _residual(self.skip(x), self.conv2(h), self.residual_rescale)


def resolve_heads(channels: int, num_heads: int, num_head_channels: int) -> int:
    """The number of attention heads: `channels // num_head_channels` when that is set (> 0), else `num_heads`;
    either must divide `channels` (ValueError otherwise)."""
    if num_head_channels > 0:
        if channels % num_head_channels:
            raise ValueError(f"channels {channels} not divisible by num_head_channels {num_head_channels}")
        num_heads = channels // num_head_channels
    if channels % num_heads:
        raise ValueError(f"channels {channels} not divisible by num_heads {num_heads}")
    return num_heads


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all H*W positions with a residual connection.

    ``qkv`` is a per-position linear map to 3C channels laid out ``(heads, 3, d)`` (legacy order,
    the released 128/256/512 checkpoints) or ``(3, heads, d)`` (``new_order``, the ImageNet-64 one).
    Scaling q and k by ``d^-1/4`` each, as ADM does, equals SDPA's ``1/sqrt(d)`` on the product;
    SDPA accumulates the softmax in fp32. The output projection is zero-initialised. The
    projections are linear layers on (B, L, C) tokens (their checkpoints store them as 1x1 convs)
    so q, k and v reach SDPA with unit-stride head dims, which lets it pick the fused kernel.

    Args:
        x: (B, C, H, W). Returns (B, C, H, W).
    """

    OPENAI_NAMES = {"proj": "proj_out"}
    OPENAI_CONV1X1 = {"qkv": 1, "proj": 1}  # child -> spatial dims of their 1x1 conv

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        new_order: bool = False,
        use_checkpoint: bool = False,
        residual_rescale: bool = False,
    ):
        super().__init__()
        num_heads = resolve_heads(channels, num_heads, num_head_channels)
        self.num_heads = num_heads
        self.new_order = new_order
        self.use_checkpoint = use_checkpoint
        self.residual_rescale = residual_rescale
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        tokens = self.norm(x).reshape(b, c, -1).transpose(1, 2)  # (B, L, C); free for channels_last
        h = self.proj(multihead_attention(self.qkv(tokens), self.num_heads, self.new_order))
        return _residual(x, h.transpose(1, 2).reshape(b, c, *spatial), self.residual_rescale)


def multihead_attention(
    qkv: torch.Tensor, num_heads: int, new_order: bool, query_len: int | None = None
) -> torch.Tensor:
    """Softmax attention on packed per-token projections.

    Args:
        qkv: (B, L, 3 * heads * d); channel layout ``(3, heads, d)`` if ``new_order`` else ``(heads, 3, d)``.
        query_len: attend only for the first ``query_len`` positions (all when None).
    Returns:
        (B, L_q, heads * d), same dtype as qkv.
    """
    b, length, width = qkv.shape
    d = width // (3 * num_heads)
    if new_order:
        qkv = qkv.view(b, length, 3, num_heads, d).permute(2, 0, 3, 1, 4)
    else:
        qkv = qkv.view(b, length, num_heads, 3, d).permute(3, 0, 2, 1, 4)
    q, k, v = qkv.unbind(0)  # each (B, heads, L, d), a view with unit stride on d
    if query_len is not None:
        q = q[:, :, :query_len]
    a = F.scaled_dot_product_attention(q, k, v)
    return a.transpose(1, 2).reshape(b, -1, num_heads * d)
