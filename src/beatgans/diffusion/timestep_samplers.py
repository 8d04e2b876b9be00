"""Training-time distributions over timesteps, with importance weights (IDDPM section 3.3).

``sample`` returns ``(t, weights)``; multiplying each sample's loss by its weight keeps the
objective an unbiased estimate of the uniform-t objective.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["UniformSampler", "LossSecondMomentResampler", "create_timestep_sampler"]


class UniformSampler:
    """t uniform over 0..T-1 (all weights 1)."""

    def __init__(self, num_timesteps: int) -> None:
        self.num_timesteps = int(num_timesteps)

    def weights(self) -> np.ndarray:
        """Unnormalised float64 probabilities (T,)."""
        return np.ones(self.num_timesteps, dtype=np.float64)

    def sample(self, batch_size: int, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``batch_size`` timesteps: (t (B,) int64, weights (B,) float32), on ``device``.

        ``generator`` is a CPU generator (the draw happens on the host, then moves to ``device``).
        """
        p = torch.from_numpy(self.weights() / self.weights().sum())
        t = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weights = (1.0 / (len(p) * p[t])).float()
        return t.to(device), weights.to(device)

    def update(self, t: Tensor | Sequence[int], losses: Tensor | Sequence[float]) -> None:
        """Record per-sample losses (no-op for non-adaptive samplers)."""


class LossSecondMomentResampler(UniformSampler):
    """p(t) proportional to sqrt(E[L_t^2]) over the last ``history`` losses of each t, mixed with
    ``uniform_prob`` of the uniform distribution. Uniform until every t has a full history.

    Under DDP, pass :meth:`update` the (t, loss) pairs of ALL ranks (e.g. gathered with
    ``LightningModule.all_gather``) so every rank keeps the same history and draws from the same
    distribution; this class does no communication itself.
    """

    def __init__(self, num_timesteps: int, history: int = 10, uniform_prob: float = 0.001) -> None:
        super().__init__(num_timesteps)
        self.history = int(history)
        self.uniform_prob = float(uniform_prob)
        self.loss_history = np.zeros((self.num_timesteps, self.history), dtype=np.float64)
        self.loss_counts = np.zeros(self.num_timesteps, dtype=np.int64)

    @property
    def warmed_up(self) -> bool:
        return bool((self.loss_counts == self.history).all())

    def weights(self) -> np.ndarray:
        if not self.warmed_up:
            return np.ones(self.num_timesteps, dtype=np.float64)
        w = np.sqrt(np.mean(self.loss_history**2, axis=-1))
        w = w / w.sum()
        return w * (1.0 - self.uniform_prob) + self.uniform_prob / len(w)

    def update(self, t: Tensor | Sequence[int], losses: Tensor | Sequence[float]) -> None:
        """Push per-sample losses into the per-t histories (oldest dropped when full).

        Args:
            t: (N,) timesteps; losses: (N,) per-sample losses (unweighted), from every rank.
        """
        t = torch.as_tensor(t).detach().long().reshape(-1).cpu()
        losses = torch.as_tensor(losses).detach().double().reshape(-1).cpu()
        for step, loss in zip(t.tolist(), losses.tolist()):
            n = self.loss_counts[step]
            if n == self.history:
                self.loss_history[step, :-1] = self.loss_history[step, 1:]
                self.loss_history[step, -1] = loss
            else:
                self.loss_history[step, n] = loss
                self.loss_counts[step] = n + 1

    def state_dict(self) -> dict:
        """Histories for checkpointing (resume restores the same distribution)."""
        return {"loss_history": self.loss_history.copy(), "loss_counts": self.loss_counts.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.loss_history = np.asarray(state["loss_history"], dtype=np.float64).copy()
        self.loss_counts = np.asarray(state["loss_counts"], dtype=np.int64).copy()


def create_timestep_sampler(name: str, num_timesteps: int, **kwargs) -> UniformSampler:
    """``"uniform"`` or ``"loss-second-moment"`` (also accepted: ``"loss_second_moment"``)."""
    if name == "uniform":
        return UniformSampler(num_timesteps)
    if name in ("loss-second-moment", "loss_second_moment"):
        return LossSecondMomentResampler(num_timesteps, **kwargs)
    raise ValueError(f"unknown timestep sampler {name!r}: expected 'uniform' or 'loss-second-moment'")
