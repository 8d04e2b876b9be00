"""Ancestral (DDPM) and DDIM samplers with per-sample seeded noise.

A sampler is a plain function of ``(diffusion, model, shape)``. Every sample draws its noise from
its own generator (``PerSampleNoise``), so sample ``i`` is the same whatever the batch it is in.
Steps run from ``T-1`` down to ``0`` of the given (possibly respaced) process; the network and a
``cond_fn`` receive the original timesteps. Coefficients stay on the device (cached tables), and a
step does no host synchronisation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .gaussian import GaussianDiffusion, Model
from .guidance import condition_mean, condition_score

__all__ = ["PerSampleNoise", "ddpm_step", "ddim_step", "ddpm_sample", "ddim_sample"]

log = logging.getLogger(__name__)

CondFn = Callable[..., Tensor]


class PerSampleNoise:
    """Standard-normal noise from one generator per sample.

    Args:
        seeds: one int seed per sample (the convention is ``seed + sample_index``).
        shape: per-sample shape, e.g. (C, H, W).
        device: where the generators live and the noise is drawn.
        dtype: floating dtype of the noise.

    Each ``randn()`` call returns (B, *shape): the first call is x_T, later calls the per-step
    noise. Row i depends only on ``seeds[i]`` and on how many calls came before.
    """

    def __init__(self, seeds: Sequence[int], shape: Sequence[int], device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise ValueError("PerSampleNoise needs at least one seed")
        self.shape = tuple(int(s) for s in shape)
        self.device = torch.device(device)
        self.dtype = dtype
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in self.seeds]

    @classmethod
    def for_indices(cls, seed: int, indices: Sequence[int], shape: Sequence[int], device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> "PerSampleNoise":
        """Noise for global sample indices ``indices`` under base seed ``seed`` (seeds ``seed + i``)."""
        return cls([seed + int(i) for i in indices], shape, device, dtype)

    def __len__(self) -> int:
        return len(self.seeds)

    def randn(self) -> Tensor:
        """Next draw: (B, *shape) float, N(0, I)."""
        return torch.stack([torch.randn(self.shape, generator=g, device=self.device, dtype=self.dtype)
                            for g in self.generators])


def _nonzero_mask(t: Tensor, x: Tensor) -> Tensor:
    # No noise is added on the last step (t = 0), which outputs the mean.
    return (t != 0).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def ddpm_step(diffusion: GaussianDiffusion, model: Model, x: Tensor, t: Tensor, *, z: Tensor | None = None,
              model_kwargs: dict | None = None, cond_fn: CondFn | None = None, clip_denoised: bool = True,
              denoised_fn: Callable[[Tensor], Tensor] | None = None) -> dict[str, Tensor]:
    """One ancestral step x_t -> x_{t-1}: ``mean + [t != 0] exp(0.5 log_var) z``.

    With ``cond_fn`` the mean moves by ``variance * cond_fn(x_t, t_original, **model_kwargs)``
    (classifier guidance, ADM algorithm 1).

    Args:
        x: (B, C, ...) x_t; t: (B,) int64 steps of ``diffusion``; z: N(0, I) like x (None: no noise).

    Returns:
        dict ``sample`` (B, C, ...) and ``pred_xstart``.
    """
    out = diffusion.p_mean_variance(model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn,
                                    model_kwargs=model_kwargs)
    mean = out["mean"]
    if cond_fn is not None:
        mean = condition_mean(diffusion, cond_fn, out, x, t, model_kwargs)
    sample = mean if z is None else mean + _nonzero_mask(t, x) * torch.exp(0.5 * out["log_variance"]) * z
    return {"sample": sample, "pred_xstart": out["pred_xstart"]}


def ddim_step(diffusion: GaussianDiffusion, model: Model, x: Tensor, t: Tensor, *, eta: float = 0.0,
              z: Tensor | None = None, model_kwargs: dict | None = None, cond_fn: CondFn | None = None,
              clip_denoised: bool = True, denoised_fn: Callable[[Tensor], Tensor] | None = None) -> dict[str, Tensor]:
    """One DDIM step (DDIM eq. 12) from step t to the previous kept step of ``diffusion``.

    eps is re-derived from the (clipped) x0 prediction;
    ``x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + [t != 0] sigma z`` with
    ``sigma = eta * sqrt((1 - abar_prev) / (1 - abar)) * sqrt(1 - abar / abar_prev)``. With ``cond_fn``
    eps is corrected by ``-sqrt(1 - abar) * grad`` first (ADM algorithm 2).

    Args:
        x: (B, C, ...) x_t; t: (B,) int64; eta: 0 deterministic, 1 DDPM-like; z: N(0, I) or None.

    Returns:
        dict ``sample`` (B, C, ...) and ``pred_xstart`` (B, C, ...): the x0 the step moved towards,
        i.e. the guided prediction when ``cond_fn`` is given (recomputed from the corrected eps, not
        clipped again), as guided-diffusion's ``ddim_sample`` returns it.
    """
    out = diffusion.p_mean_variance(model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn,
                                    model_kwargs=model_kwargs)
    guided = condition_score(diffusion, cond_fn, out, x, t, model_kwargs) if cond_fn is not None else out
    pred_x0 = guided["pred_xstart"]
    eps = diffusion.predict_eps_from_x0(x, t, pred_x0)
    sigma, direction = diffusion.ddim_coefs(eta, t, x)
    sample = diffusion.coef("sqrt_alphas_cumprod_prev", t, x) * pred_x0 + direction * eps
    if z is not None and eta != 0:
        sample = sample + _nonzero_mask(t, x) * sigma * z
    return {"sample": sample, "pred_xstart": pred_x0}


def _steps(diffusion: GaussianDiffusion, progress: bool, desc: str):
    steps = range(diffusion.num_timesteps - 1, -1, -1)
    if not progress:
        return steps
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: sampling works without a bar
        log.warning("tqdm is not installed; sampling without a progress bar")
        return steps
    return tqdm(steps, desc=desc)


def _start(noise: PerSampleNoise | None, shape: Sequence[int], model: Model) -> tuple[Tensor, Callable[[], Tensor]]:
    shape = tuple(shape)
    if noise is None:
        # Global RNG fallback: reproducible only for a fixed batch size.
        params = getattr(model, "parameters", None)
        device = next(params()).device if callable(params) else torch.device("cpu")
        x = torch.randn(shape, device=device)
        return x, lambda: torch.randn_like(x)
    if (len(noise), *noise.shape) != shape:
        raise ValueError(f"noise is for shape {(len(noise), *noise.shape)}, sampling asked for {shape}")
    return noise.randn(), noise.randn


@torch.no_grad()
def ddpm_sample(diffusion: GaussianDiffusion, model: Model, shape: Sequence[int], *, noise: PerSampleNoise | None,
                model_kwargs: dict | None = None, cond_fn: CondFn | None = None, clip_denoised: bool = True,
                denoised_fn: Callable[[Tensor], Tensor] | None = None, progress: bool = False) -> Tensor:
    """Ancestral sampling over every step of ``diffusion`` (respace it first for fewer steps).

    Args:
        shape: (B, C, H, W) (any (B, ...) works); noise: per-sample generators matching ``shape``
            (first draw x_T, then one draw per step t > 0).
        model_kwargs: e.g. ``{"y": (B,) int64}``; also passed to ``cond_fn``.

    Returns:
        (B, C, H, W) float samples, approximately in [-1, 1] (clamp before quantising).
    """
    x, draw = _start(noise, shape, model)
    for i in _steps(diffusion, progress, "DDPM"):
        t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
        z = draw() if i > 0 else None
        x = ddpm_step(diffusion, model, x, t, z=z, model_kwargs=model_kwargs, cond_fn=cond_fn,
                      clip_denoised=clip_denoised, denoised_fn=denoised_fn)["sample"]
    return x


@torch.no_grad()
def ddim_sample(diffusion: GaussianDiffusion, model: Model, shape: Sequence[int], *, eta: float = 0.0,
                noise: PerSampleNoise | None, model_kwargs: dict | None = None, cond_fn: CondFn | None = None,
                clip_denoised: bool = True, denoised_fn: Callable[[Tensor], Tensor] | None = None,
                progress: bool = False) -> Tensor:
    """DDIM sampling over every step of ``diffusion`` (e.g. ``diffusion.respace("ddim25")``).

    Noise draws: x_T first, then one per step t > 0 only when ``eta > 0``. Arguments and return
    as :func:`ddpm_sample`.
    """
    x, draw = _start(noise, shape, model)
    for i in _steps(diffusion, progress, "DDIM"):
        t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
        z = draw() if (i > 0 and eta != 0) else None
        x = ddim_step(diffusion, model, x, t, eta=eta, z=z, model_kwargs=model_kwargs, cond_fn=cond_fn,
                      clip_denoised=clip_denoised, denoised_fn=denoised_fn)["sample"]
    return x
