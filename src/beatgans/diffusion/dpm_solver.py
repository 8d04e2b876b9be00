"""Fast ODE samplers on the discrete process: DPM-Solver++ 2M / 3M (Lu et al. 2022) and Heun's 2nd-order
step (Karras et al. 2022, "EDM").

Each solver is one plain loop over a *denoiser* ``denoise(x_t, t) -> x0`` and a decreasing grid of integer
steps ``t_0 > t_1 > ... > t_{N-1}`` of the process; the model is evaluated at those steps only, so the net
always sees original timesteps (as with respacing). The noise level of step t is the process's own
``alpha_t = sqrt(abar_t)``, ``sigma_t = sqrt(1 - abar_t)``, ``lambda_t = log(alpha_t / sigma_t)`` (float64
tables), so a grid point is exactly a timestep the net was trained on. After the last grid point
(``t = 0`` of the process) the samplers output the data prediction there: the final step goes to
sigma = 0 and is first order, as DDIM's last step.

The denoiser is where the model's parameterisation (eps / x0 / v), learned variances (mean channels
only), x0 clipping and classifier guidance (through the guided eps, as DDIM) enter: see
:func:`make_denoiser`. Classifier-free guidance is a model wrapper and needs nothing here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from .gaussian import GaussianDiffusion, Model
from .guidance import condition_score
from .samplers import PerSampleNoise, _start
from .schedules import space_timesteps

__all__ = [
    "SKIPS",
    "dpm_solver_sample",
    "dpmpp_2m",
    "dpmpp_3m",
    "heun",
    "heun_sample",
    "make_denoiser",
    "solver_timesteps",
]

log = logging.getLogger(__name__)

SKIPS = ("time_uniform", "logsnr")
Denoiser = Callable[[Tensor, int], Tensor]
# diffusers' DPMSolverMultistepScheduler lowers the order of the last steps below this many steps.
LOWER_ORDER_FINAL_BELOW = 15


def solver_timesteps(diffusion: GaussianDiffusion, steps: int, skip: str = "time_uniform") -> list[int]:
    """The decreasing steps of `diffusion` where a solver evaluates the model: from T-1 down to 0.

    Args:
        steps: N >= 2 grid points (DPM-Solver++ makes one network evaluation per point).
        skip: ``"time_uniform"``: N evenly spaced steps of 0..T-1, rounded (``space_timesteps(T, str(N))``, the
            IDDPM respacing with one section); ``"logsnr"``: N values evenly spaced in lambda = log(alpha / sigma)
            between lambda(T-1) and lambda(0), each mapped to a continuous step by linear interpolation of
            lambda between neighbouring integer steps and rounded to the nearest integer (half to even). Points
            that round to the same step are merged, so near N = T the grid can hold fewer than N steps.

    Returns:
        list of int steps of `diffusion`, strictly decreasing, first T-1 and last 0.
    """
    T = diffusion.num_timesteps
    if not 2 <= int(steps) <= T:
        raise ValueError(f"a solver needs between 2 and T={T} steps, got steps={steps}.")
    if skip == "time_uniform":
        grid = space_timesteps(T, str(int(steps)))
    elif skip == "logsnr":
        abar = diffusion.alphas_cumprod
        lam = 0.5 * (np.log(abar) - np.log1p(-abar))  # decreasing in t
        targets = np.linspace(lam[-1], lam[0], int(steps))
        continuous = np.interp(targets, lam[::-1], np.arange(T, dtype=np.float64)[::-1])
        grid = sorted({int(t) for t in np.round(continuous)})
        if len(grid) < steps:
            log.info("logsnr grid: %d of %d steps are distinct after rounding to integer timesteps", len(grid), steps)
    else:
        raise ValueError(f"skip must be one of {SKIPS}, got {skip!r}.")
    return sorted(grid, reverse=True)


def make_denoiser(diffusion: GaussianDiffusion, model: Model, *, model_kwargs: dict | None = None,
                  cond_fn: Callable[..., Tensor] | None = None, clip_denoised: bool = True,
                  denoised_fn: Callable[[Tensor], Tensor] | None = None) -> Denoiser:
    """``denoise(x_t (B, C, ...), t: int step of diffusion) -> x0 prediction (B, C, ...)``, one network call.

    The x0 prediction is the one DDIM uses: ``p_mean_variance``'s (eps / x0 / v output, mean channels of a
    learned-variance net, ``denoised_fn``, clamped to [-1, 1] when `clip_denoised`), then with `cond_fn` the
    guided ``eps_hat = eps - sqrt(1 - abar_t) * cond_fn(x_t, t_original)`` turned back into x0 (ADM
    algorithm 2, unclipped as in DDIM).
    """

    def denoise(x: Tensor, step: int) -> Tensor:
        t = torch.full((x.shape[0],), int(step), device=x.device, dtype=torch.long)
        out = diffusion.p_mean_variance(model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn,
                                        model_kwargs=model_kwargs)
        if cond_fn is not None:
            out = condition_score(diffusion, cond_fn, out, x, t, model_kwargs)
        return out["pred_xstart"]

    return denoise


def _levels(diffusion: GaussianDiffusion, grid: Sequence[int]) -> tuple[list[float], list[float]]:
    # (alpha, sigma) at the grid steps as Python floats (float64): scalars that never touch the device.
    abar = diffusion.alphas_cumprod[list(grid)]
    return np.sqrt(abar).tolist(), np.sqrt(1.0 - abar).tolist()


def _lambdas(alpha: Sequence[float], sigma: Sequence[float]) -> list[float]:
    return [math.log(a) - math.log(s) for a, s in zip(alpha, sigma)]


def _progress(items: Iterable, progress: bool, desc: str) -> Iterable:
    if not progress:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: sampling works without a bar
        return items
    return tqdm(items, desc=desc)


def dpmpp_2m(denoise: Denoiser, x: Tensor, grid: Sequence[int], alpha: Sequence[float], sigma: Sequence[float], *,
             progress: bool = False) -> Tensor:
    """DPM-Solver++(2M) from x at grid[0] (DPM-Solver++ algorithm 2); one denoiser call per grid point.

    With h_k = lambda_{k+1} - lambda_k and r = h_{k-1} / h_k, each step is
    ``x <- (sigma_{k+1} / sigma_k) x + alpha_{k+1} (1 - e^{-h_k}) D`` with
    ``D = (1 + 1/(2r)) x0_k - 1/(2r) x0_{k-1}`` (``D = x0_k`` on the first step: DDIM). Returns the data
    prediction at the last grid point (the step to sigma = 0).
    """
    lam = _lambdas(alpha, sigma)
    x0_prev = h_prev = None
    for k in _progress(range(len(grid)), progress, "DPM-Solver++ 2M"):
        x0 = denoise(x, grid[k])
        if k == len(grid) - 1:
            return x0
        h = lam[k + 1] - lam[k]
        if x0_prev is None:
            d = x0
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        x = (sigma[k + 1] / sigma[k]) * x - alpha[k + 1] * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


def dpmpp_3m(denoise: Denoiser, x: Tensor, grid: Sequence[int], alpha: Sequence[float], sigma: Sequence[float], *,
             lower_order_final: bool = True, reference: bool = False, progress: bool = False) -> Tensor:
    """DPM-Solver++(3M): the multistep third-order update in data-prediction form.

    With phi_1 = 1 - e^{-h}, r0 = h_{k-1} / h, r1 = h_{k-2} / h, ``D1_0 = (x0_k - x0_{k-1}) / r0``,
    ``D1_1 = (x0_{k-1} - x0_{k-2}) / r1``, ``D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1)`` (~ h x0') and
    ``D2 = (D1_0 - D1_1) / (r0 + r1)`` (~ h^2 x0'' / 2)::

        x <- (sigma_{k+1} / sigma_k) x + alpha_{k+1} [phi_1 x0_k + (1 - phi_1 / h) D1 + c2 D2]

    where c2 = 1 - 2 (h - phi_1) / h^2 integrates the x0'' term of the Taylor expansion exactly. With
    ``reference=True``, c2 = 1/2 - (h - phi_1) / h^2, the coefficient of the DPM-Solver authors' code (also in
    diffusers and k-diffusion): half the Taylor term, which leaves an O(h^3) local error, so that update
    converges at second order (tests/diffusion/test_dpm_solver.py measures both). The first two steps are
    first and second order (2M's update); with `lower_order_final` and fewer than 15 grid points the step into
    the last grid point is second order too (as diffusers).
    """
    lam = _lambdas(alpha, sigma)
    n = len(grid)
    x0s: list[Tensor] = []
    hs: list[float] = []
    for k in _progress(range(n), progress, "DPM-Solver++ 3M"):
        x0 = denoise(x, grid[k])
        if k == n - 1:
            return x0
        h = lam[k + 1] - lam[k]
        order = min(3, k + 1)
        if lower_order_final and n < LOWER_ORDER_FINAL_BELOW and k == n - 2:
            order = min(order, 2)
        phi_1 = -math.expm1(-h)
        update = phi_1 * x0
        if order >= 2:
            r0 = hs[-1] / h
            d1_0 = (x0 - x0s[-1]) / r0
            if order == 2:
                update = update + 0.5 * phi_1 * d1_0
            else:
                r1 = hs[-2] / h
                d1_1 = (x0s[-1] - x0s[-2]) / r1
                d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                c2 = 0.5 - (h - phi_1) / h**2 if reference else 1 - 2 * (h - phi_1) / h**2
                update = update + (1 - phi_1 / h) * d1 + c2 * d2
        x = (sigma[k + 1] / sigma[k]) * x + alpha[k + 1] * update
        x0s, hs = (x0s + [x0])[-2:], (hs + [h])[-2:]
    return x


def heun(denoise: Denoiser, x: Tensor, grid: Sequence[int], alpha: Sequence[float], sigma: Sequence[float], *,
         progress: bool = False) -> Tensor:
    """Heun's 2nd-order step (EDM algorithm 1, deterministic) on the probability-flow ODE of the process.

    In EDM's variables y = x / alpha and s = sigma / alpha (= e^{-lambda}) the ODE is dy/ds = (y - x0(y)) / s.
    Each step is an Euler step to s_{k+1} corrected by the slope there; the last grid point outputs x0, so
    N grid points cost 2N - 1 denoiser calls.
    """
    s = [sg / a for a, sg in zip(alpha, sigma)]
    y = x / alpha[0]
    for k in _progress(range(len(grid)), progress, "Heun"):
        x0 = denoise(alpha[k] * y, grid[k])
        if k == len(grid) - 1:
            return x0
        slope = (y - x0) / s[k]
        y_euler = y + (s[k + 1] - s[k]) * slope
        slope_next = (y_euler - denoise(alpha[k + 1] * y_euler, grid[k + 1])) / s[k + 1]
        y = y + (s[k + 1] - s[k]) * 0.5 * (slope + slope_next)
    return alpha[-1] * y


@torch.no_grad()
def dpm_solver_sample(diffusion: GaussianDiffusion, model: Model, shape: Sequence[int], *, steps: int = 20,
                      order: int = 2, skip: str = "time_uniform", noise: PerSampleNoise | None,
                      model_kwargs: dict | None = None, cond_fn: Callable[..., Tensor] | None = None,
                      clip_denoised: bool = True, denoised_fn: Callable[[Tensor], Tensor] | None = None,
                      lower_order_final: bool = True, reference_3m: bool = False, progress: bool = False) -> Tensor:
    """DPM-Solver++ (order 2 or 3, multistep) over `steps` grid points of `diffusion`: `steps` network calls.

    Args:
        diffusion: the process the net was trained on (not respaced: the grid picks its steps).
        shape: (B, C, H, W); noise: per-sample generators (one draw: x_T); model_kwargs, cond_fn,
            clip_denoised, denoised_fn: as :func:`ddim_sample`.
        skip: "time_uniform" | "logsnr" (see :func:`solver_timesteps`).
        lower_order_final, reference_3m: see :func:`dpmpp_3m` (order 3 only).

    Returns:
        (B, C, H, W) float samples, approximately in [-1, 1].
    """
    if order not in (2, 3):
        raise ValueError(f"DPM-Solver++ order must be 2 or 3, got {order}.")
    grid = solver_timesteps(diffusion, steps, skip)
    alpha, sigma = _levels(diffusion, grid)
    denoise = make_denoiser(diffusion, model, model_kwargs=model_kwargs, cond_fn=cond_fn,
                            clip_denoised=clip_denoised, denoised_fn=denoised_fn)
    x, _ = _start(noise, shape, model)
    if order == 2:
        return dpmpp_2m(denoise, x, grid, alpha, sigma, progress=progress)
    return dpmpp_3m(denoise, x, grid, alpha, sigma, lower_order_final=lower_order_final, reference=reference_3m,
                    progress=progress)


@torch.no_grad()
def heun_sample(diffusion: GaussianDiffusion, model: Model, shape: Sequence[int], *, steps: int = 10,
                skip: str = "time_uniform", noise: PerSampleNoise | None, model_kwargs: dict | None = None,
                cond_fn: Callable[..., Tensor] | None = None, clip_denoised: bool = True,
                denoised_fn: Callable[[Tensor], Tensor] | None = None, progress: bool = False) -> Tensor:
    """Heun's 2nd-order ODE sampler over `steps` grid points (2 * steps - 1 network calls); arguments as
    :func:`dpm_solver_sample`."""
    grid = solver_timesteps(diffusion, steps, skip)
    alpha, sigma = _levels(diffusion, grid)
    denoise = make_denoiser(diffusion, model, model_kwargs=model_kwargs, cond_fn=cond_fn,
                            clip_denoised=clip_denoised, denoised_fn=denoised_fn)
    x, _ = _start(noise, shape, model)
    return heun(denoise, x, grid, alpha, sigma, progress=progress)
