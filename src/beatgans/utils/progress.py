"""Progress over a known amount of work: a tqdm bar on a terminal, plain log lines otherwise (SLURM logs,
pipes), so a batch job's log shows how far it got without carriage-return noise."""

from __future__ import annotations

import sys
import time

from beatgans.utils.logging import get_logger

log = get_logger(__name__)


class Progress:
    """`with Progress(total, "sampling", unit="img") as p: p.update(n)`.

    On a terminal (stderr is a TTY) draws a tqdm bar; otherwise logs `desc: done/total (pct) elapsed, ETA`
    at most every `every_s` seconds and at the end. `enabled=False` is silent.
    """

    def __init__(self, total: int, desc: str, unit: str = "it", every_s: float = 10.0, enabled: bool = True,
                 tty: bool | None = None):
        self.total, self.desc, self.unit, self.every_s = int(total), desc, unit, every_s
        self.done, self.enabled = 0, enabled
        self.tty = sys.stderr.isatty() if tty is None else tty
        self._bar = None
        self._start = self._last = time.monotonic()

    def __enter__(self) -> Progress:
        if self.enabled and self.tty:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, dynamic_ncols=True)
        return self

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            log.info("%s", self.line(now - self._start))

    def line(self, elapsed: float) -> str:
        """`desc: 32/100 img (32%), 12s elapsed, ETA 25s`."""
        pct = 100.0 * self.done / max(self.total, 1)
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        eta_txt = f", ETA {eta:.0f}s" if self.done < self.total and self.done else ""
        return f"{self.desc}: {self.done}/{self.total} {self.unit} ({pct:.0f}%), {elapsed:.0f}s elapsed{eta_txt}"

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
