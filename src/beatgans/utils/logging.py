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
    def filter(self, record: logging.LogRecord) -> bool:
        return rank() == 0 or record.levelno >= logging.WARNING


def get_logger(name: str) -> logging.Logger:
    """A logger whose INFO/DEBUG records are emitted on rank 0 only (warnings on every rank)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _RankZeroFilter) for f in logger.filters):
        logger.addFilter(_RankZeroFilter())
    return logger


class _DropMessages(logging.Filter):
    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


def quiet_lightning() -> None:
    """Make Lightning's console output readable, hiding only known noise by precise filters.

    - Lightning gives its loggers a console handler of their own when it is imported before logging is
      configured, and they also propagate to the root handler Hydra installs: every line printed twice. With a
      root handler present, Lightning's own console handlers are removed so each line is printed once.
    - The "Tip: ... litlogger / litmodels" advertisements printed by every Trainer are dropped.
    - The `isinstance(treespec, LeafSpec)` deprecation warning raised inside Lightning's own pytree helper
      (not our code) on every run is ignored.
    """
    import warnings

    root = logging.getLogger()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        lg = logging.getLogger(name)
        if root.handlers:
            for handler in [h for h in lg.handlers if type(h) is logging.StreamHandler]:
                lg.removeHandler(handler)
            lg.propagate = True
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropMessages) for f in tips.filters):
        tips.addFilter(_DropMessages("💡 Tip: For seamless cloud"))
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            module=r"lightning\.pytorch\.utilities\._pytree")
