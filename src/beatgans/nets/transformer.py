"""Cross-attention conditioning: the spatial transformer of latent diffusion (Rombach et al. 2022, Sec. 3.3).

A `SpatialTransformer` turns a feature map into H*W tokens, runs `TransformerBlock`s over them
(self-attention, cross-attention to a context sequence, GEGLU feed-forward, each pre-LayerNorm and
residual) and maps back; its output projection starts at zero, so a freshly built block is the
identity and a UNet gains conditioning without changing what it computes at initialisation.

Context sequences come with a key mask ``context_mask: (B, S) bool`` (True = a real token): padded
tokens are never attended to, so padding a prompt further does not change the output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from beatgans.nets.layers import ContextBlock, GroupNorm32, resolve_heads


def key_padding_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, S) bool "keep" mask -> SDPA's boolean mask (B, 1, 1, S).

    A row with no real token (which no encoder produces) would make the softmax 0/0; such rows
    attend to every position instead, with no host synchronisation.
    """
    if mask is None:
        return None
    mask = mask.bool()
    mask = mask | ~mask.any(dim=-1, keepdim=True)
    return mask[:, None, None, :]


class CrossAttention(nn.Module):
    """Multi-head attention with queries from ``x`` and keys/values from ``context`` (``x`` itself when None).

    Args:
        query_dim: width D of the query tokens; context_dim: width of the context tokens (D when None).
        heads, head_dim: the inner width is ``heads * head_dim``.
    Shapes: ``forward(x (B, L, D), context (B, S, D_c) | None, mask (B, S) bool | None) -> (B, L, D)``.
    """

    def __init__(self, query_dim: int, context_dim: int | None = None, heads: int = 4, head_dim: int = 32):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.Linear(inner, query_dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context.to(x.dtype)
        b, length, _ = x.shape
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        q, k, v = (z.view(b, z.shape[1], self.heads, -1).transpose(1, 2) for z in (q, k, v))  # (B, h, ·, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_padding_mask(mask))
        return self.to_out(out.transpose(1, 2).reshape(b, length, -1))


class GEGLU(nn.Module):
    """``a * GELU(gate)`` with ``[a, gate] = Linear(x)`` (Shazeer 2020): (B, L, dim_in) -> (B, L, dim_out)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Sequential):
    """GEGLU to ``mult * dim``, dropout, linear back to ``dim``: (B, L, dim) -> (B, L, dim)."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__(GEGLU(dim, mult * dim), nn.Dropout(dropout), nn.Linear(mult * dim, dim))


class TransformerBlock(nn.Module):
    """Pre-LN block: ``x + SelfAttn(LN x)``, ``+ CrossAttn(LN x, context)``, ``+ FF(LN x)``.

    Shapes: ``forward(x (B, L, D), context (B, S, context_dim), mask (B, S) bool | None) -> (B, L, D)``.
    """

    def __init__(self, dim: int, context_dim: int, heads: int, head_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = CrossAttention(dim, None, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, context_dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout=dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x))
        x = x + self.cross_attn(self.norm2(x), context, mask)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(ContextBlock):
    """GroupNorm, 1x1 projection in, ``depth`` transformer blocks over the H*W tokens, zero-initialised
    1x1 projection out, plus the input (LDM Sec. 3.3; docs/formulas.md "Networks").

    The 1x1 projections are linear layers on (B, H*W, C) tokens, which is the same map as a 1x1 conv.

    Args:
        channels: C of the feature map; context_dim: width of the context tokens.
        num_heads / num_head_channels: heads, or a fixed width per head when ``num_head_channels > 0``.
    Shapes: ``forward(x (B, C, H, W), context (B, S, context_dim), context_mask (B, S) bool | None)
    -> (B, C, H, W)``.
    """

    def __init__(self, channels: int, context_dim: int, num_heads: int = 1, num_head_channels: int = -1,
                 depth: int = 1, dropout: float = 0.0, use_checkpoint: bool = False):
        super().__init__()
        num_heads = resolve_heads(channels, num_heads, num_head_channels)
        self.use_checkpoint = use_checkpoint
        self.norm = GroupNorm32(channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.blocks = nn.ModuleList(
            TransformerBlock(channels, context_dim, num_heads, channels // num_heads, dropout) for _ in range(depth))
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, context, context_mask, use_reentrant=False)
        return self._forward(x, context, context_mask)

    def _forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None) -> torch.Tensor:
        b, c, *spatial = x.shape
        h = self.proj_in(self.norm(x).reshape(b, c, -1).transpose(1, 2))  # (B, H*W, C)
        for block in self.blocks:
            h = block(h, context, context_mask)
        h = self.proj_out(h).transpose(1, 2).reshape(b, c, *spatial)
        return x + h


__all__ = ["GEGLU", "CrossAttention", "FeedForward", "SpatialTransformer", "TransformerBlock", "key_padding_mask"]
