"""Diffusion-GAN's adaptive diffusion: instance noise with an adaptively chosen maximum step T.

Implements "Diffusion-GAN: Training GANs with Diffusion" (Wang et al., 2022) the way the authors'
reference code does it (docs/formulas.md, "Diffusion-GAN"):

* For the current maximum step ``T`` the schedule is ``beta = linspace(beta_start, beta_end, T)``
  and ``abar = [1, cumprod(1 - beta)]`` (length ``T + 1``), so ``t = 0`` is the clean input.
* Every discriminator input is noised as ``y = sqrt(abar_t) x + sqrt(1 - abar_t) * sigma * eps``
  (paper eq. 2 with the reference code's noise scale ``sigma``); the op is differentiable so the
  generator receives gradients through it.
* ``t`` is drawn per sample from a 64-slot list with ``num_clean`` zero slots and the remaining slots
  drawn from ``1..T`` ("uniform" or "priority").
* The controller accumulates ``sign(D(real))`` over all real passes since its last update and,
  every ``interval`` iterations, moves ``p`` by ``sign(r_d - target) * batch * interval /
  (ada_kimg * 1000)``, clipped to [0, 1]; then ``T = t_min + round(p * (t_max - t_min))``.
* The slot list is redrawn at every controller update, whether or not ``T`` changed: the reference
  training loop calls ``update_T()`` every ``interval`` iterations and ``update_T`` always draws a new
  list. So the slots keep changing while ``p`` sits at a clip (0 or 1) or ``T`` rounds to the same
  value. ``t_list_redraw="on_T_change"`` keeps a list until ``T`` changes instead (what this class did
  before following the reference; not the reference's behaviour).

Pure torch: no Lightning. ``r_d`` is averaged across ranks with ``torch.distributed`` when a
process group is initialised.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

T_DISTS = ("uniform", "priority", "priority_paper")
T_LIST_REDRAWS = ("every_update", "on_T_change")


class AdaptiveDiffusion:
    """Stateful instance-noise augmentation for a GAN discriminator.

    Args:
        beta_start, beta_end: ends of the linear beta schedule rebuilt for every T.
        t_min, t_max: bounds of the adaptive maximum step T (reference defaults 10 and 1000; the
            paper uses t_max 500 with uniform sampling).
        sigma: noise scale (0.05 for pixels in [-1, 1]).
        t_dist: ``"priority"`` (reference code: weights proportional to ``t - 1``, so ``t = 1`` is
            never drawn), ``"priority_paper"`` (weights proportional to ``t``) or ``"uniform"``.
        num_slots, num_clean: size of the timestep list and how many of its slots are ``t = 0``.
        target: the r_d value the controller aims for.
        ada_kimg: thousands of images for p to travel from 0 to 1.
        interval: controller update interval in iterations.
        p: initial p in [0, 1].
        noise_enabled: ``False`` gives the plain-GAN baseline: inputs pass unchanged with ``t = 0``
            and p / T never move (r_d is still measured for logging).
        seed: seed of the private generator used for the timestep list and the per-sample slots.
        t_list_redraw: ``"every_update"`` (reference code: a new slot list at every controller update)
            or ``"on_T_change"`` (a new list only when the update changes ``T``).
    """

    def __init__(
        self,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        t_min: int = 10,
        t_max: int = 1000,
        sigma: float = 0.05,
        t_dist: str = "priority",
        num_slots: int = 64,
        num_clean: int = 32,
        target: float = 0.6,
        ada_kimg: float = 100.0,
        interval: int = 4,
        p: float = 0.0,
        noise_enabled: bool = True,
        seed: int = 0,
        t_list_redraw: str = "every_update",
    ) -> None:
        if t_dist not in T_DISTS:
            raise ValueError(f"t_dist must be one of {T_DISTS}, got {t_dist!r}")
        if t_list_redraw not in T_LIST_REDRAWS:
            raise ValueError(f"t_list_redraw must be one of {T_LIST_REDRAWS}, got {t_list_redraw!r}")
        if not 1 <= t_min <= t_max:
            raise ValueError(f"need 1 <= t_min <= t_max, got t_min={t_min}, t_max={t_max}")
        if not 0 <= num_clean <= num_slots:
            raise ValueError(f"need 0 <= num_clean <= num_slots, got {num_clean}, {num_slots}")
        if t_dist == "priority" and t_min < 2:
            # weights t - 1 vanish everywhere when T = 1
            raise ValueError("t_dist='priority' needs t_min >= 2")
        self.beta_start = float(beta_start)
        self.beta_end = float(beta_end)
        self.t_min = int(t_min)
        self.t_max = int(t_max)
        self.sigma = float(sigma)
        self.t_dist = t_dist
        self.num_slots = int(num_slots)
        self.num_clean = int(num_clean)
        self.target = float(target)
        self.ada_kimg = float(ada_kimg)
        self.interval = int(interval)
        self.noise_enabled = bool(noise_enabled)
        self.t_list_redraw = t_list_redraw
        self.p = float(min(max(p, 0.0), 1.0))
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.num_steps = 0  # iterations seen by step()
        self.sign_sum: float | torch.Tensor = 0.0  # sum of sign(D(real)) since the last update
        self.sign_count = 0  # number of real logits in sign_sum
        self.last_r_d = float("nan")
        self.T = self._T_from_p(self.p)
        self._build(self.T)

    # ------------------------------------------------------------------ schedule and list
    def _T_from_p(self, p: float) -> int:
        T = self.t_min + round(p * (self.t_max - self.t_min))
        return int(min(max(T, self.t_min), self.t_max))

    def _build(self, T: int) -> None:
        """Rebuild abar for ``T`` steps and redraw the timestep list."""
        self._set_schedule(T)
        self.t_list = self._draw_t_list(T)

    def _set_schedule(self, T: int) -> None:
        betas = torch.linspace(self.beta_start, self.beta_end, T, dtype=torch.float64)
        # leading 1: t = 0 is the clean input; abar has T + 1 entries (float64, cast at use)
        self.alphas_cumprod = torch.cat(
            [torch.ones(1, dtype=torch.float64), torch.cumprod(1.0 - betas, dim=0)]
        )

    def _draw_t_list(self, T: int) -> torch.Tensor:
        num_noisy = self.num_slots - self.num_clean
        values = torch.arange(1, T + 1, dtype=torch.float64)
        if self.t_dist == "uniform":
            weights = torch.ones_like(values)
        elif self.t_dist == "priority":
            weights = values - 1.0  # reference code: np.arange(T) over values 1..T
        else:
            weights = values
        idx = torch.multinomial(weights, num_noisy, replacement=True, generator=self.generator)
        noisy = values[idx].long()
        # the reference code puts the noisy slots first; order is irrelevant as slots are drawn
        return torch.cat([noisy, torch.zeros(self.num_clean, dtype=torch.long)])

    # ------------------------------------------------------------------ noising
    def sample_t(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Per-sample timesteps ``(B,)`` int64 in ``0..T`` drawn from the slot list."""
        if not self.noise_enabled:
            return torch.zeros(batch_size, dtype=torch.long, device=device)
        idx = torch.randint(0, self.num_slots, (batch_size,), generator=self.generator)
        return self.t_list[idx].to(device)

    def q_sample(
        self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``sqrt(abar_t) x + sqrt(1 - abar_t) sigma eps`` for ``x: (B, ...)``, ``t: (B,)`` in 0..T.

        Differentiable in ``x``. ``noise`` defaults to ``torch.randn_like(x)`` (global RNG).
        """
        if noise is None:
            noise = torch.randn_like(x)
        abar = self.alphas_cumprod.to(device=x.device)[t].to(x.dtype)
        shape = (-1,) + (1,) * (x.dim() - 1)
        a = abar.sqrt().view(shape)
        s = (1.0 - abar).clamp_min(0.0).sqrt().view(shape) * self.sigma
        return a * x + s * noise

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise a discriminator input: ``x (B, ...)`` -> ``(y same shape, t (B,) int64)``.

        With ``noise_enabled=False`` returns ``x`` itself and ``t = 0``.
        """
        t = self.sample_t(x.shape[0], x.device)
        if not self.noise_enabled:
            return x, t
        return self.q_sample(x, t), t

    # ------------------------------------------------------------------ controller
    @torch.no_grad()
    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Record ``sign(D(real))`` of one real pass (logits, any shape)."""
        signs = torch.sign(real_logits.detach().float())
        # kept as a (device) tensor: no host sync per pass, only when the controller updates
        self.sign_sum = self.sign_sum + signs.sum()
        self.sign_count += signs.numel()

    def _reduced_r_d(self) -> float:
        """Mean sign over everything accumulated since the last update, across all ranks."""
        stats = torch.tensor([float(self.sign_sum), float(self.sign_count)], dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            backend = dist.get_backend()
            device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else "cpu"
            stats = stats.to(device)
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
            stats = stats.cpu()
        if stats[1] <= 0:
            return float("nan")
        return float(stats[0] / stats[1])

    def step(self, batch_size: int) -> bool:
        """Count one training iteration; every ``interval`` iterations update p and T.

        Args:
            batch_size: images per iteration over ALL ranks (the reference code's global batch).
        Returns:
            True when an update happened (T may or may not have changed). With noise enabled an
            update draws a new slot list (``t_list_redraw="every_update"``) or does so only when T
            changed (``"on_T_change"``); no update happens while nothing was accumulated.
        """
        self.num_steps += 1
        if self.num_steps % self.interval != 0:
            return False
        r_d = self._reduced_r_d()
        self.sign_sum, self.sign_count = 0.0, 0
        if math.isnan(r_d):
            return False
        self.last_r_d = r_d
        if not self.noise_enabled:
            return True
        adjust = math.copysign(1.0, r_d - self.target) if r_d != self.target else 0.0
        adjust *= batch_size * self.interval / (self.ada_kimg * 1000.0)
        self.p = min(max(self.p + adjust, 0.0), 1.0)
        new_T = self._T_from_p(self.p)
        if new_T != self.T or self.t_list_redraw == "every_update":
            self.T = new_T
            self._build(new_T)
        return True

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        return {
            "p": self.p,
            "T": self.T,
            "t_list": self.t_list.clone(),
            "num_steps": self.num_steps,
            "sign_sum": float(self.sign_sum),
            "sign_count": self.sign_count,
            "last_r_d": self.last_r_d,
            "generator": self.generator.get_state(),
            "noise_enabled": self.noise_enabled,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p = float(state["p"])
        self.T = int(state["T"])
        self.noise_enabled = bool(state.get("noise_enabled", self.noise_enabled))
        self._set_schedule(self.T)
        self.t_list = state["t_list"].clone().long().cpu()
        self.num_steps = int(state["num_steps"])
        self.sign_sum = float(state["sign_sum"])
        self.sign_count = int(state["sign_count"])
        self.last_r_d = float(state["last_r_d"])
        self.generator.set_state(state["generator"].cpu())

    def __getstate__(self) -> dict[str, Any]:
        # A torch.Generator does not survive torch.multiprocessing's file-descriptor sharing (ddp_spawn
        # pickles the module to its ranks: "unable to resize file"), so it travels as plain bytes.
        state = dict(self.__dict__)
        state["generator"] = bytes(self.generator.get_state().numpy())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        generator = torch.Generator()
        generator.set_state(torch.frombuffer(bytearray(state["generator"]), dtype=torch.uint8))
        state["generator"] = generator
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"AdaptiveDiffusion(p={self.p:.4f}, T={self.T}, t_range=[{self.t_min}, {self.t_max}], "
            f"sigma={self.sigma}, t_dist={self.t_dist!r}, t_list_redraw={self.t_list_redraw!r}, "
            f"noise_enabled={self.noise_enabled})"
        )
