"""One sentence and a non-zero exit for bad input, at every entry point.

    @hydra.main(...)
    @exit_on_user_error
    def main(cfg): ...

A `UserError` (or one wrapped by `hydra.utils.instantiate`, which re-raises constructor errors as
`InstantiationException`) is logged as a single line and the process exits with `EXIT_USER_ERROR`.
Any other exception is a bug and propagates with its traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from beatgans.utils.errors import UserError

EXIT_USER_ERROR = 2
F = TypeVar("F", bound=Callable)
log = logging.getLogger("beatgans")


def find_user_error(exc: BaseException | None) -> UserError | None:
    """The `UserError` behind `exc`: itself, or the first one along its __cause__ / __context__ chain."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def fail(message: str) -> None:
    """Print `message` as one line on stderr, record it in the job's log file, exit with `EXIT_USER_ERROR`."""
    print(f"Error: {message}", file=sys.stderr, flush=True)
    # File handlers only: Hydra's console handler writes to stdout, which would repeat the line on a terminal.
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers + log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    raise SystemExit(EXIT_USER_ERROR)


def in_multirun() -> bool:
    """True inside a Hydra multirun job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def exit_on_user_error(fn: F) -> F:
    """Decorate an entry point: a `UserError` becomes one line and exit code 2, other errors propagate.

    Inside a multirun the line is printed and the error is re-raised instead, so Hydra marks the job failed, the
    sweep summary lists it, the other jobs still run, and the sweep exits non-zero at the end."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            err = find_user_error(exc)
            if err is None:
                raise
            message = " ".join(str(err).split()) or type(err).__name__
            if in_multirun():
                print(f"Error: {message}", file=sys.stderr, flush=True)
                raise
            fail(message)

    return wrapper  # type: ignore[return-value]
