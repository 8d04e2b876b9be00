"""Classifier guidance (ADM, Dhariwal & Nichol 2021) and classifier-free guidance (Ho & Salimans 2022).

A ``cond_fn(x_t, t_original, **model_kwargs) -> Tensor like x_t`` returns the *scaled* gradient
``s * grad_x log p(y | x_t)``. The samplers apply it through :func:`condition_mean` (DDPM) or
:func:`condition_score` (DDIM).

``t_original`` is always the int64 timestep of the original process, the one the noisy classifier is
trained on, even when the diffusion feeds its denoiser rescaled float timesteps
(``rescale_timesteps``). guided-diffusion hands its cond_fn the rescaled value while its classifier
training uses the integer one; no published classifier pairs with a rescaled model, so the two agree
on every released checkpoint and only differ where the reference would be inconsistent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from .gaussian import GaussianDiffusion

__all__ = ["classifier_cond_fn", "condition_mean", "condition_score", "ClassifierFreeGuidance", "IgnoreLabels"]

CondFn = Callable[..., Tensor]


def classifier_cond_fn(classifier: Callable[[Tensor, Tensor], Tensor], scale: float, label_key: str = "y") -> CondFn:
    """Guidance gradient of a noisy classifier: ``scale * grad_x log softmax(classifier(x_t, t))[y]``.

    Args:
        classifier: ``(x_t (B, C, H, W), t (B,) original timesteps) -> logits (B, K)``.
        scale: guidance scale s (0 disables the pull but still evaluates the classifier).
        label_key: the ``model_kwargs`` entry holding the target labels (B,) int64.

    Returns:
        ``cond_fn(x, t, **model_kwargs) -> (B, C, H, W)`` in x's dtype. The gradient is taken even
        when the sampler runs under ``torch.no_grad``.
    """

    def cond_fn(x: Tensor, t: Tensor, **model_kwargs) -> Tensor:
        y = model_kwargs.get(label_key)
        if y is None:
            raise ValueError(f"classifier guidance needs target labels in model_kwargs[{label_key!r}]")
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            logits = classifier(x_in, t)
            # Half-precision logits are upcast so the softmax is taken in at least float32.
            log_probs = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
            picked = log_probs.gather(1, y.long().reshape(-1, 1)).sum()
            grad = torch.autograd.grad(picked, x_in)[0]
        return (grad * scale).to(x.dtype)

    return cond_fn


def condition_mean(diffusion: "GaussianDiffusion", cond_fn: CondFn, out: dict[str, Tensor], x: Tensor, t: Tensor,
                   model_kwargs: dict | None = None) -> Tensor:
    """Guided DDPM mean ``mean + variance * cond_fn(x_t, t_original)`` (ADM algorithm 1).

    Args:
        out: :meth:`GaussianDiffusion.p_mean_variance` at (x, t); x: (B, C, ...) x_t; t: (B,) steps
            of ``diffusion`` (the cond_fn sees the original timesteps).

    Returns:
        (B, C, ...) float mean (the model's own variance is used, learned or fixed).
    """
    grad = cond_fn(x, diffusion.original_timesteps(t), **(model_kwargs or {}))
    mean = out["mean"]
    compute = torch.promote_types(mean.dtype, torch.float32)
    return mean.to(compute) + out["variance"].to(compute) * grad.to(compute)


def condition_score(diffusion: "GaussianDiffusion", cond_fn: CondFn, out: dict[str, Tensor], x: Tensor, t: Tensor,
                    model_kwargs: dict | None = None) -> dict[str, Tensor]:
    """Guided score for DDIM: ``eps_hat = eps - sqrt(1 - abar_t) * cond_fn(x_t, t_original)``
    (ADM algorithm 2), then x0 and the posterior mean recomputed from ``eps_hat`` (no clipping).

    Returns:
        a copy of ``out`` with ``eps``, ``pred_xstart`` and ``mean`` replaced.
    """
    grad = cond_fn(x, diffusion.original_timesteps(t), **(model_kwargs or {}))
    eps = diffusion.predict_eps_from_x0(x, t, out["pred_xstart"])
    eps = eps - diffusion.coef("sqrt_one_minus_alphas_cumprod", t, x) * grad
    guided = dict(out)
    guided["eps"] = eps
    guided["pred_xstart"] = diffusion.predict_x0_from_eps(x, t, eps)
    guided["mean"], _, _ = diffusion.q_posterior_mean_variance(guided["pred_xstart"], x, t)
    return guided


def _duplicate(value, batch: int):
    # Per-sample tensors travel with both halves of the doubled batch; everything else as is.
    if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == batch:
        return torch.cat([value, value])
    return value


class ClassifierFreeGuidance(nn.Module):
    """A model wrapper that mixes conditional and unconditional predictions (CFG).

    ``out = out_uncond + scale * (out_cond - out_uncond)``: scale 1 is the conditional model, 0 the
    unconditional one. Both halves come from ONE forward pass over the doubled batch, the second
    half with every label replaced by ``null_label`` (= num_classes by convention). With learned
    variances (2C output channels) only the first C channels are mixed and the variance channels
    are the conditional ones. Mixing the raw output is exact for eps, x0 and v prediction alike,
    since each is an affine function of the others given x_t.

    A context-conditioned model (cross-attention, latent diffusion) gets ``null_context`` instead:
    the unconditional half sees that context (the encoded null token or empty prompt).

    Args:
        model: ``(x, t, y=(B,) int64, **kw) -> (B, C or 2C, ...)``, trained with label dropout.
        scale: guidance weight w.
        null_label: the label id of the unconditional class (None for a context-conditioned model).
        channels: data channels C; inferred from x when None.
        null_context: ``(context (1, S, D), mask (1, S) bool)`` of the null condition, for models called
            with ``context=`` / ``context_mask=`` instead of labels.
    """

    def __init__(self, model: nn.Module, scale: float, null_label: int | None = None, channels: int | None = None,
                 null_context: tuple[Tensor, Tensor] | None = None) -> None:
        super().__init__()
        self.model = model
        self.scale = float(scale)
        self.null_label = None if null_label is None else int(null_label)
        self.channels = channels
        self.null_context = null_context

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, **kwargs) -> Tensor:
        B = x.shape[0]
        C = self.channels or x.shape[1]
        if self.null_context is not None:
            context, mask = self.null_context
            kwargs["context"] = torch.cat([kwargs["context"], context.expand(B, *context.shape[1:])])
            kwargs["context_mask"] = torch.cat([kwargs["context_mask"], mask.expand(B, *mask.shape[1:])])
        elif y is None:
            raise ValueError("classifier-free guidance needs class labels y (B,) int64")
        y_both = None if y is None else torch.cat([y, torch.full_like(y, self.null_label)])
        kwargs = {k: _duplicate(v, B) for k, v in kwargs.items()}
        if y_both is not None:
            kwargs["y"] = y_both
        out = self.model(torch.cat([x, x]), torch.cat([t, t]), **kwargs)
        cond, uncond = out[:B], out[B:]
        mixed = uncond[:, :C] + self.scale * (cond[:, :C] - uncond[:, :C])
        if out.shape[1] == C:
            return mixed
        return torch.cat([mixed, cond[:, C:]], dim=1)


class IgnoreLabels(nn.Module):
    """Call an unconditional model while ``model_kwargs`` carry labels meant for a classifier."""

    def __init__(self, model: nn.Module, drop: tuple[str, ...] = ("y",)) -> None:
        super().__init__()
        self.model = model
        self.drop = drop

    def forward(self, x: Tensor, t: Tensor, **kwargs) -> Tensor:
        return self.model(x, t, **{k: v for k, v in kwargs.items() if k not in self.drop})
