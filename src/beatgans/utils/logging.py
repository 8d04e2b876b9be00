"""Rank-aware logging: library code logs through `get_logger`; only rank 0 speaks by default."""

from __future__ import annotations

import logging
import os


def rank() -> int:
    """Global rank of this process from the usual launcher variables (0 when not distributed)."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if key in os.environ:
            try:
                return int(os.environ[key])
            except ValueError:
                pass
    return 0


class _RankZeroFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D401
        return rank() == 0 or record.levelno >= logging.WARNING


def get_logger(name: str) -> logging.Logger:
    """A logger whose INFO/DEBUG records are emitted on rank 0 only (warnings on every rank)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _RankZeroFilter) for f in logger.filters):
        logger.addFilter(_RankZeroFilter())
    return logger
