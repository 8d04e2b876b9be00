"""Noise schedules and timestep respacing (DDPM, Improved DDPM, DDIM conventions).

Everything here is float64 numpy: schedule tables are computed once in double precision and only
cast to the working dtype where they are used (docs/formulas.md, "Gaussian diffusion").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "get_named_beta_schedule",
    "betas_from_alpha_bar",
    "space_timesteps",
    "respaced_betas",
]


def betas_from_alpha_bar(
    num_timesteps: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999
) -> np.ndarray:
    """Discretise a continuous cumulative-alpha curve into per-step betas.

    ``beta_i = min(1 - abar((i + 1) / T) / abar(i / T), max_beta)`` (IDDPM eq. 17); the cap keeps the
    last steps from becoming singular when ``abar`` reaches 0.

    Args:
        num_timesteps: T, the number of steps.
        alpha_bar: ``abar(s)`` for ``s`` in [0, 1], decreasing from ~1 to ~0.
        max_beta: upper clip of every beta.

    Returns:
        float64 array (T,) in (0, max_beta].
    """
    betas = np.empty(num_timesteps, dtype=np.float64)
    for i in range(num_timesteps):
        lo, hi = alpha_bar(i / num_timesteps), alpha_bar((i + 1) / num_timesteps)
        betas[i] = min(1.0 - hi / lo, max_beta)
    return betas


def _cosine_alpha_bar(s: float) -> float:
    # IDDPM's cosine schedule with offset 0.008 so that beta_0 is not vanishingly small.
    return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2


def get_named_beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
    """Named beta schedule.

    Args:
        name: ``"linear"`` (DDPM, rescaled by ``1000 / T`` so any T spans the same noise range;
            capped at 0.999 for T <= 20, where the reference formula reaches beta >= 1) or
            ``"cosine"`` (IDDPM).
        num_timesteps: T >= 1.

    Returns:
        float64 array (T,) of betas in (0, 1).
    """
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    if name == "linear":
        scale = 1000.0 / num_timesteps
        betas = np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
        if betas[-1] > 0.999:
            # T <= 20 would give beta >= 1 (abar = 0, infinite x0 coefficients, NaN samples). Cap as
            # the cosine schedule does; for T >= 21 the table is exactly the reference one.
            log.warning("linear schedule with T=%d has betas up to %.3g; capping them at 0.999",
                        num_timesteps, betas[-1])
            betas = np.minimum(betas, 0.999)
        return betas
    if name == "cosine":
        return betas_from_alpha_bar(num_timesteps, _cosine_alpha_bar)
    raise ValueError(f"unknown beta schedule {name!r}: expected 'linear' or 'cosine'")


def _ddim_stride_steps(num_timesteps: int, count: int) -> list[int]:
    # DDIM paper striding: the integer stride whose range(0, T, stride) has exactly `count` steps.
    for stride in range(1, num_timesteps):
        if len(range(0, num_timesteps, stride)) == count:
            return list(range(0, num_timesteps, stride))
    if count == num_timesteps:  # stride 1 is only reached by the loop when T > 1
        return list(range(num_timesteps))
    raise ValueError(f"'ddim{count}': no integer stride gives exactly {count} of {num_timesteps} steps")


def space_timesteps(num_timesteps: int, spacing: str | Sequence[int]) -> list[int]:
    """Timesteps of the original process that a respaced process keeps.

    Args:
        num_timesteps: T of the original process.
        spacing: ``"ddimN"`` (DDIM's uniform integer stride giving exactly N steps), or section
            counts as ``"250"`` / ``"90,60,60,20,20"`` / ``[90, 60, 60, 20, 20]``: 0..T-1 is split into
            as many equal sections as counts (the remainder goes one step each to the first
            sections) and each section keeps its count of evenly spaced, rounded steps, always
            including both of its ends when the count is > 1.

    Returns:
        Sorted list of distinct int timesteps in [0, T). T = 1000: ``"250"`` -> [0, 4, ..., 995, 999],
        ``"ddim25"`` -> [0, 40, ..., 960].
    """
    if isinstance(spacing, str):
        spacing = spacing.strip()
        if spacing.startswith("ddim"):
            return _ddim_stride_steps(num_timesteps, int(spacing[len("ddim"):]))
        counts = [int(part) for part in spacing.split(",")]
    else:
        counts = [int(c) for c in spacing]
    if not counts or any(c < 1 for c in counts):
        raise ValueError(f"section counts must be positive integers, got {counts}")
    base, remainder = divmod(num_timesteps, len(counts))
    steps: list[int] = []
    start = 0
    for k, count in enumerate(counts):
        size = base + (1 if k < remainder else 0)
        if count > size:
            raise ValueError(f"section {k} has {size} steps, cannot keep {count} of them")
        # Fractional stride so that the first and last step of the section are both kept.
        stride = (size - 1) / (count - 1) if count > 1 else 1.0
        # Python's round() (half to even) on the accumulated float position: the published
        # spacings (e.g. "250" at T = 1000) depend on exactly this rounding.
        pos = 0.0
        for _ in range(count):
            steps.append(start + round(pos))
            pos += stride
        start += size
    return sorted(set(steps))


def respaced_betas(alphas_cumprod: np.ndarray, use_timesteps: Sequence[int]) -> np.ndarray:
    """Betas of the process that visits only ``use_timesteps`` but keeps their ``abar`` values.

    ``beta'_i = 1 - abar[t_i] / abar[t_{i-1}]`` with ``abar[t_{-1}] = 1`` (IDDPM section 4).

    Args:
        alphas_cumprod: float64 (T,) cumulative products of the original process.
        use_timesteps: increasing distinct timesteps in [0, T).

    Returns:
        float64 array (len(use_timesteps),).
    """
    steps = np.asarray(list(use_timesteps), dtype=np.int64)
    if steps.ndim != 1 or steps.size == 0:
        raise ValueError("use_timesteps must be a non-empty 1-D sequence")
    if np.any(np.diff(steps) <= 0) or steps[0] < 0 or steps[-1] >= len(alphas_cumprod):
        raise ValueError(
            f"use_timesteps must be strictly increasing within [0, {len(alphas_cumprod)}), got {steps.tolist()}"
        )
    kept = np.asarray(alphas_cumprod, dtype=np.float64)[steps]
    prev = np.concatenate([[1.0], kept[:-1]])
    return 1.0 - kept / prev
