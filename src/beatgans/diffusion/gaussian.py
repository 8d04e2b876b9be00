"""Gaussian diffusion process (DDPM; Improved DDPM variances and losses; ADM conventions).

A timestep ``t`` is an int64 index in ``0..T-1`` of *this* process; ``t = 0`` is the last
denoising step. A respaced process keeps a ``timestep_map`` and always feeds the network the
timesteps of the original process; with ``rescale_timesteps`` (improved-diffusion's published
checkpoints) those become the float ``t_original * 1000 / T_original``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .schedules import get_named_beta_schedule, respaced_betas, space_timesteps

__all__ = ["GaussianDiffusion", "create_diffusion", "MEAN_TYPES", "VAR_TYPES", "LOSS_TYPES"]

MEAN_TYPES = ("eps", "x0", "v")
VAR_TYPES = ("fixed_small", "fixed_large", "learned_range")
# "rescaled_kl" (vb * T) is what ADM's `use_kl=True` trains; "kl" is the plain per-step bound.
LOSS_TYPES = ("mse", "hybrid", "kl", "rescaled_kl")

Model = Callable[..., Tensor]


class GaussianDiffusion:
    """Forward process, model parameterisations, losses and the variational bound.

    Args:
        betas: float (T,) in (0, 1]; stored as float64.
        mean_type: what the network predicts: ``"eps"`` (noise), ``"x0"`` or ``"v"``
            (``sqrt(abar) eps - sqrt(1 - abar) x0``).
        var_type: ``"fixed_small"`` (posterior variance), ``"fixed_large"`` (betas) or
            ``"learned_range"`` (IDDPM: the net's second half of channels interpolates the log
            variance between the two).
        loss_type: ``"mse"``, ``"hybrid"`` (mse + vb * T / 1000, needs learned_range), ``"kl"`` or
            ``"rescaled_kl"`` (kl * T).
        timestep_map: original timestep of each step of this process (identity when None).
        base_num_timesteps: T of the original process (``max(timestep_map) + 1`` when None).
        rescale_timesteps: feed the network ``t_original * 1000 / base_num_timesteps`` as float32
            instead of the int64 ``t_original`` (improved-diffusion's default, used by its published
            T = 4000 checkpoints; identical inputs when T = 1000). Only the denoiser sees it: a
            ``cond_fn`` keeps the integer original timesteps its classifier was trained on.

    Attributes: the float64 numpy tables ``betas, alphas_cumprod, alphas_cumprod_prev,
    alphas_cumprod_next, sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod,
    log_one_minus_alphas_cumprod, sqrt_recip_alphas_cumprod, sqrt_recipm1_alphas_cumprod,
    posterior_variance, posterior_log_variance_clipped, posterior_mean_coef1,
    posterior_mean_coef2, log_betas, fixed_large_variance, fixed_large_log_variance``.
    """

    def __init__(
        self,
        betas: np.ndarray | Sequence[float],
        mean_type: str = "eps",
        var_type: str = "fixed_small",
        loss_type: str = "mse",
        timestep_map: Sequence[int] | Tensor | None = None,
        base_num_timesteps: int | None = None,
        rescale_timesteps: bool = False,
    ) -> None:
        for value, allowed, what in ((mean_type, MEAN_TYPES, "mean_type"), (var_type, VAR_TYPES, "var_type"),
                                     (loss_type, LOSS_TYPES, "loss_type")):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}: expected one of {allowed}")
        if loss_type == "hybrid" and var_type != "learned_range":
            raise ValueError("loss_type='hybrid' trains the variance, so it needs var_type='learned_range'")
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("betas must be a 1-D array with every entry in (0, 1]")
        self.mean_type, self.var_type, self.loss_type = mean_type, var_type, loss_type
        self.num_timesteps = int(betas.shape[0])
        self._build_tables(betas)

        if timestep_map is None:
            timestep_map = range(self.num_timesteps)
        self.timestep_map = torch.as_tensor(list(map(int, timestep_map)), dtype=torch.long)
        if self.timestep_map.shape != (self.num_timesteps,):
            raise ValueError(f"timestep_map must have {self.num_timesteps} entries, "
                             f"got {tuple(self.timestep_map.shape)}")
        self.base_num_timesteps = int(base_num_timesteps or int(self.timestep_map.max()) + 1)
        self.rescale_timesteps = bool(rescale_timesteps)
        self._identity_map = bool(torch.equal(self.timestep_map, torch.arange(self.num_timesteps)))
        # Device copies of the tables, made once per device so sampling loops never copy from host.
        self._device_tables: dict[tuple, Tensor] = {}

    def _build_tables(self, betas: np.ndarray) -> None:
        T = self.num_timesteps
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(self.alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_alphas_cumprod_prev = np.sqrt(self.alphas_cumprod_prev)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        # Posterior q(x_{t-1} | x_t, x0) (DDPM eq. 6-7).
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The posterior variance is 0 at t = 0, so its log is taken with the t = 1 value there.
        first = self.posterior_variance[1] if T > 1 else self.posterior_variance[0]
        self.posterior_log_variance_clipped = np.log(np.append(first, self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * np.sqrt(self.alphas) / (1.0 - self.alphas_cumprod)
        )
        self.log_betas = np.log(betas)
        # fixed_large starts with the posterior variance for a better decoder likelihood (DDPM).
        self.fixed_large_variance = np.append(first, betas[1:])
        self.fixed_large_log_variance = np.log(self.fixed_large_variance)
        # DDIM's sigma at eta = 1 (DDIM eq. 16); the sampler scales it by eta.
        self.ddim_sigma_eta1 = np.sqrt((1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)) * np.sqrt(
            1.0 - self.alphas_cumprod / self.alphas_cumprod_prev)

    # ------------------------------------------------------------------ helpers
    @property
    def learned_sigma(self) -> bool:
        """True when the network outputs 2C channels (mean part, then the variance part ``v``)."""
        return self.var_type == "learned_range"

    def coef(self, name: str, t: Tensor, x: Tensor) -> Tensor:
        """Gather table ``name`` at ``t`` (B,) as a (B, 1, ...) tensor broadcastable against ``x``.

        The table is copied to ``t``'s device once and cached there in float64; the gathered values
        are cast to float64 when ``x`` is float64 and to float32 otherwise (half inputs get float32
        coefficients, as the reference does).
        """
        return self._gather(name, lambda: getattr(self, name), t, x)

    def ddim_coefs(self, eta: float, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """DDIM's ``sigma`` and ``sqrt(1 - abar_prev - sigma^2)`` at ``t``, each (B, 1, ...).

        Both are tabulated in float64 per eta: the second is the square root of a difference that
        nearly cancels at small t, which float32 arithmetic would get wrong by ~1e-4.
        """
        sigma = lambda: eta * self.ddim_sigma_eta1  # noqa: E731
        direction = lambda: np.sqrt(np.clip(1.0 - self.alphas_cumprod_prev - sigma() ** 2, 0.0, None))  # noqa: E731
        return (self._gather(("ddim_sigma", float(eta)), sigma, t, x),
                self._gather(("ddim_direction", float(eta)), direction, t, x))

    def _gather(self, key, make_table: Callable[[], np.ndarray], t: Tensor, x: Tensor) -> Tensor:
        table = self._device_tables.get((key, t.device))
        if table is None:
            values = torch.from_numpy(np.ascontiguousarray(make_table(), dtype=np.float64))
            # MPS has no float64; everywhere else the table stays in double until it is used.
            table = values.to(t.device, torch.float32 if t.device.type == "mps" else torch.float64)
            self._device_tables[(key, t.device)] = table
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        return table[t].to(dtype).reshape(-1, *([1] * (x.ndim - 1)))

    def original_timesteps(self, t: Tensor) -> Tensor:
        """Map timesteps of this process (B,) int64 to those of the original process (B,) int64.

        Classifiers (``cond_fn``) see these; the denoiser sees :meth:`model_timesteps`.
        """
        if self._identity_map:
            return t
        key = ("__timestep_map__", t.device)
        table = self._device_tables.get(key)
        if table is None:
            table = self._device_tables[key] = self.timestep_map.to(t.device)
        return table[t]

    def model_timesteps(self, t: Tensor) -> Tensor:
        """What the network receives for steps ``t`` (B,) int64 of this process.

        The original timesteps (B,) int64; with ``rescale_timesteps`` the float32
        ``t_original * (1000 / base_num_timesteps)``, the same float32 product improved-diffusion forms.
        """
        t = self.original_timesteps(t)
        return t.float() * (1000.0 / self.base_num_timesteps) if self.rescale_timesteps else t

    def respace(
        self, spacing: str | Sequence[int] | None = None, *, use_timesteps: Sequence[int] | None = None
    ) -> "GaussianDiffusion":
        """A process over a subset of this one's steps, with the same ``abar`` at the kept steps.

        Args:
            spacing: as :func:`space_timesteps` (``"250"``, ``"90,60,60,20,20"``, ``"ddim25"``).
            use_timesteps: alternatively, the explicit increasing steps (of this process) to keep.
        """
        if (spacing is None) == (use_timesteps is None):
            raise ValueError("give exactly one of spacing or use_timesteps")
        steps = (
            space_timesteps(self.num_timesteps, spacing) if use_timesteps is None else [int(s) for s in use_timesteps]
        )
        betas = respaced_betas(self.alphas_cumprod, steps)
        return GaussianDiffusion(betas, self.mean_type, self.var_type, self.loss_type,
                                 timestep_map=self.timestep_map[steps].tolist(),
                                 base_num_timesteps=self.base_num_timesteps,
                                 rescale_timesteps=self.rescale_timesteps)

    # ------------------------------------------------------------------ forward process
    def q_mean_variance(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q(x_t | x0): mean (B, ...), variance and log variance (B, 1, ...)."""
        return (self.coef("sqrt_alphas_cumprod", t, x0) * x0, self.coef("sqrt_one_minus_alphas_cumprod", t, x0) ** 2,
                self.coef("log_one_minus_alphas_cumprod", t, x0))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """Sample x_t ~ q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I).

        Args:
            x0: (B, ...) clean data (images in [-1, 1]); t: (B,) int64; noise: N(0, I) like x0.
        """
        if noise is None:
            noise = torch.randn_like(x0)
        return self.coef("sqrt_alphas_cumprod", t, x0) * x0 + self.coef("sqrt_one_minus_alphas_cumprod", t, x0) * noise

    def q_posterior_mean_variance(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q(x_{t-1} | x_t, x0): mean (B, ...), variance and clipped log variance (B, ...)."""
        mean = self.coef("posterior_mean_coef1", t, x_t) * x0 + self.coef("posterior_mean_coef2", t, x_t) * x_t
        var = self.coef("posterior_variance", t, x_t).expand_as(x_t)
        log_var = self.coef("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        return mean, var, log_var

    # ------------------------------------------------------------------ parameterisations
    def predict_x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x0 = sqrt(1 / abar) x_t - sqrt(1 / abar - 1) eps."""
        return (self.coef("sqrt_recip_alphas_cumprod", t, x_t) * x_t
                - self.coef("sqrt_recipm1_alphas_cumprod", t, x_t) * eps)

    def predict_eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """eps = (sqrt(1 / abar) x_t - x0) / sqrt(1 / abar - 1)."""
        return ((self.coef("sqrt_recip_alphas_cumprod", t, x_t) * x_t - x0)
                / self.coef("sqrt_recipm1_alphas_cumprod", t, x_t))

    def predict_x0_from_v(self, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """x0 = sqrt(abar) x_t - sqrt(1 - abar) v."""
        return self.coef("sqrt_alphas_cumprod", t, x_t) * x_t - self.coef("sqrt_one_minus_alphas_cumprod", t, x_t) * v

    def v_target(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """v = sqrt(abar) eps - sqrt(1 - abar) x0 (the v-prediction target)."""
        return self.coef("sqrt_alphas_cumprod", t, x0) * noise - self.coef("sqrt_one_minus_alphas_cumprod", t, x0) * x0

    def model_output(self, model: Model, x: Tensor, t: Tensor, model_kwargs: dict | None = None) -> Tensor:
        """Call ``model(x, model_timesteps(t), **model_kwargs)``; half-precision outputs come back as float32."""
        out = model(x, self.model_timesteps(t), **(model_kwargs or {}))
        return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out

    def p_mean_variance(self, model: Model, x: Tensor, t: Tensor, clip_denoised: bool = True,
                        denoised_fn: Callable[[Tensor], Tensor] | None = None, model_kwargs: dict | None = None,
                        model_output: Tensor | None = None) -> dict[str, Tensor]:
        """The model's reverse step p(x_{t-1} | x_t).

        Args:
            model: network ``(x, t_original, **model_kwargs) -> (B, C or 2C, ...)``.
            x: (B, C, ...) x_t; t: (B,) int64 steps of this process.
            clip_denoised: clamp the x0 prediction to [-1, 1] (after ``denoised_fn``).
            model_output: a precomputed network output (the model is then not called).

        Returns:
            dict with ``mean``, ``variance``, ``log_variance`` (B, C, ...), ``pred_xstart`` (processed
            x0), ``eps`` (the noise consistent with ``pred_xstart``) and ``model_output`` (raw).
        """
        if model_output is None:
            model_output = self.model_output(model, x, t, model_kwargs)
        C = x.shape[1]
        if self.learned_sigma:
            if model_output.shape[1] != 2 * C:
                raise ValueError(f"learned_range needs {2 * C} output channels, the model gave {model_output.shape[1]}")
            mean_out, v = model_output[:, :C], model_output[:, C:]
            # IDDPM eq. 15: v in [-1, 1] spans [posterior log variance, log beta].
            frac = (v + 1) / 2
            log_var = (frac * self.coef("log_betas", t, x)
                       + (1 - frac) * self.coef("posterior_log_variance_clipped", t, x))
            var = torch.exp(log_var)
        else:
            if model_output.shape[1] != C:
                raise ValueError(f"{self.var_type} needs {C} output channels, the model gave {model_output.shape[1]}")
            mean_out = model_output
            var_name, log_name = {"fixed_small": ("posterior_variance", "posterior_log_variance_clipped"),
                                  "fixed_large": ("fixed_large_variance", "fixed_large_log_variance")}[self.var_type]
            var = self.coef(var_name, t, x).expand_as(x)
            log_var = self.coef(log_name, t, x).expand_as(x)

        if self.mean_type == "eps":
            pred_x0 = self.predict_x0_from_eps(x, t, mean_out)
        elif self.mean_type == "x0":
            pred_x0 = mean_out
        else:
            pred_x0 = self.predict_x0_from_v(x, t, mean_out)
        if denoised_fn is not None:
            pred_x0 = denoised_fn(pred_x0)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_x0, x, t)
        return {"mean": mean, "variance": var, "log_variance": log_var, "pred_xstart": pred_x0,
                "eps": self.predict_eps_from_x0(x, t, pred_x0), "model_output": model_output}

    # ------------------------------------------------------------------ losses
    def vb_terms_bpd(self, model: Model, x0: Tensor, x_t: Tensor, t: Tensor, clip_denoised: bool = True,
                     model_kwargs: dict | None = None, model_output: Tensor | None = None) -> dict[str, Tensor]:
        """One term of the variational bound, in bits per dimension.

        KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) for t > 0; the discretised Gaussian decoder NLL
        of x0 at t = 0. Returns dict ``output`` (B,) and ``pred_xstart`` (B, C, ...).
        """
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x0, x_t, t)
        out = self.p_mean_variance(model, x_t, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs,
                                   model_output=model_output)
        kl = mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / math.log(2.0)
        nll = -mean_flat(discretized_gaussian_log_likelihood(
            x0, means=out["mean"], log_scales=0.5 * out["log_variance"])) / math.log(2.0)
        return {"output": torch.where(t == 0, nll, kl), "pred_xstart": out["pred_xstart"]}

    def training_losses(self, model: Model, x0: Tensor, t: Tensor, model_kwargs: dict | None = None,
                        noise: Tensor | None = None) -> dict[str, Tensor]:
        """Per-sample training losses at timesteps ``t``.

        Args:
            x0: (B, C, ...) clean data in [-1, 1]; t: (B,) int64 steps of this process;
            noise: the eps used for x_t (drawn with ``torch.randn_like`` when None).

        Returns:
            dict of (B,) tensors: ``loss``; ``mse`` for mse/hybrid; ``vb`` (bits/dim) for hybrid,
            kl and for mse with learned_range. With learned_range the vb term sees the mean output
            detached so only the variance learns from it (IDDPM section 3.1); ``hybrid`` scales it by
            T / 1000 (T of this process), plain ``mse`` adds it unscaled as the reference does.
        """
        if noise is None:
            noise = torch.randn_like(x0)
        x_t = self.q_sample(x0, t, noise=noise)
        if self.loss_type in ("kl", "rescaled_kl"):
            vb = self.vb_terms_bpd(model, x0, x_t, t, clip_denoised=False, model_kwargs=model_kwargs)["output"]
            loss = vb * self.num_timesteps if self.loss_type == "rescaled_kl" else vb
            return {"loss": loss, "vb": vb}

        out = self.model_output(model, x_t, t, model_kwargs)
        C = x0.shape[1]
        terms: dict[str, Tensor] = {}
        mean_out = out[:, :C] if self.learned_sigma else out
        if self.learned_sigma:
            frozen = torch.cat([mean_out.detach(), out[:, C:]], dim=1)
            vb = self.vb_terms_bpd(None, x0, x_t, t, clip_denoised=False, model_output=frozen)["output"]
            terms["vb"] = vb * (self.num_timesteps / 1000.0) if self.loss_type == "hybrid" else vb
        if self.mean_type == "eps":
            target = noise
        elif self.mean_type == "x0":
            target = x0
        else:
            target = self.v_target(x0, t, noise)
        if mean_out.shape != target.shape:
            raise ValueError(f"model output {tuple(mean_out.shape)} does not match the data {tuple(target.shape)}")
        terms["mse"] = mean_flat((target - mean_out) ** 2)
        terms["loss"] = terms["mse"] + terms["vb"] if "vb" in terms else terms["mse"]
        return terms

    def calc_bpd_loop(self, model: Model, x0: Tensor, clip_denoised: bool = True, model_kwargs: dict | None = None,
                      noise=None, progress: bool = False) -> dict[str, Tensor]:
        """Whole variational bound in bits/dim; see :func:`beatgans.diffusion.nll.calc_bpd_loop`."""
        from .nll import calc_bpd_loop

        return calc_bpd_loop(self, model, x0, clip_denoised=clip_denoised, model_kwargs=model_kwargs,
                             noise=noise, progress=progress)

    def __repr__(self) -> str:
        return (f"GaussianDiffusion(T={self.num_timesteps}, base_T={self.base_num_timesteps}, "
                f"mean_type={self.mean_type!r}, "
                f"var_type={self.var_type!r}, loss_type={self.loss_type!r}, "
                f"rescale_timesteps={self.rescale_timesteps})")


def create_diffusion(schedule: str = "linear", num_timesteps: int = 1000, mean_type: str = "eps",
                     var_type: str = "fixed_small", loss_type: str = "mse",
                     spacing: str | Sequence[int] | None = None,
                     rescale_timesteps: bool = False) -> GaussianDiffusion:
    """Build a (possibly respaced) :class:`GaussianDiffusion` from a named schedule.

    ``spacing`` (e.g. ``"250"``, ``"ddim25"``) respaces the T-step process; training normally
    uses ``spacing=None`` and samplers a respaced copy (``diffusion.respace("ddim25")``).
    ``rescale_timesteps``: see :class:`GaussianDiffusion` (true for improved-diffusion checkpoints).
    """
    diffusion = GaussianDiffusion(get_named_beta_schedule(schedule, num_timesteps), mean_type, var_type, loss_type,
                                  rescale_timesteps=rescale_timesteps)
    return diffusion.respace(spacing) if spacing is not None else diffusion
