"""Output directories nobody shares: a unique run id in the default names, and a Hydra callback that
claims a run (or sweep) directory before Hydra writes anything into it.

Hydra saves `.hydra/config.yaml` and `overrides.yaml` into the output directory before the job starts,
so a second `beatgans-sample hydra.run.dir=<used dir>` would rewrite the metadata of the first run's
samples. `OutputDirGuard.on_run_start` runs earlier: it refuses a directory that is not writable, and,
for tasks that must start fresh (sample, evaluate, nll), one that already holds anything; it then claims
the directory by creating `.hydra/` exclusively, so two processes racing for one path cannot both win.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from beatgans.utils.errors import UserError

# One id per process: the default run / sweep directory is `<timestamp>_<RUN_ID>`, so two launches in the
# same second still get different directories. Cached here, not by OmegaConf, so every resolution agrees.
RUN_ID = secrets.token_hex(3)


# Entry points whose results belong to a training run (`run=<dir>`): by default they write beside it.
RESULT_TASKS = ("sample", "nll")


def output_root(kind: str, task: str, run: Any, log_dir: str) -> str:
    """The folder that holds a launch's `<time>_<id>` directory (`kind`: "runs" or "multiruns").

    Sampling and bits/dim of a training run (`run=<dir>`) land next to that run, in
    `<run>/results/<task>` (multiruns: `<run>/results/<task>/multiruns`), where `beatgans-report <run>`
    finds them; everything else goes to `<log_dir>/<task>/<kind>`. In a multirun over several `run=`
    values the sweep's own files stay under `log_dir` and each job lands beside its run.
    """
    if task in RESULT_TASKS and run not in (None, "", "None", "null"):
        root = Path(str(run)) / "results" / task
        return str(root if kind == "runs" else root / "multiruns")
    return f"{log_dir}/{task}/{kind}"


def register_resolvers() -> None:
    """`${beatgans_run_id:}` -> this process's run id (see `RUN_ID`);
    `${beatgans_output_root:<kind>,<task>,<run>,<log_dir>}` -> `output_root(...)`."""
    if not OmegaConf.has_resolver("beatgans_run_id"):
        OmegaConf.register_new_resolver("beatgans_run_id", lambda: RUN_ID)
    if not OmegaConf.has_resolver("beatgans_output_root"):
        OmegaConf.register_new_resolver("beatgans_output_root", output_root)


def check_writable(path: str | os.PathLike, what: str = "output directory") -> None:
    """Refuse, in one sentence naming `path`, a directory (or the nearest existing parent) we cannot write.

    Probes by creating a temporary file, so it is right for read-only mounts and for root as well.
    """
    path = Path(path).absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"The {what} {path} cannot be created: {probe} is a file; choose another path.")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise UserError(f"The {what} {path} is not writable ({err.strerror or err} at {probe}); choose a "
                        "writable location (e.g. hydra.run.dir=<dir>).") from None


def claim_fresh_dir(path: str | os.PathLike, marker: str = ".hydra", what: str = "output directory") -> Path:
    """Create `path` (or accept it empty) and claim it by creating `path/marker` exclusively.

    Raises `UserError` when `path` already holds files (an earlier run's samples or metrics) or another
    process claimed it first. Returns the directory.
    """
    path = Path(path).absolute()
    check_writable(path, what)
    path.mkdir(parents=True, exist_ok=True)
    existing = sorted(p.name for p in path.iterdir())
    if existing:
        raise UserError(f"The {what} {path} is not empty (it holds {', '.join(existing[:4])}"
                        f"{', ...' if len(existing) > 4 else ''}); refusing to write over an earlier run: "
                        "choose a new directory or leave hydra.run.dir / hydra.sweep.dir at their defaults.")
    try:
        if marker.endswith(".yaml"):
            with open(path / marker, "x"):
                pass
        else:
            (path / marker).mkdir()
    except FileExistsError:
        raise UserError(f"Another run claimed the {what} {path} at the same moment; choose a new "
                        "directory.") from None
    return path


def check_checkpoint_dir(run_dir: str | os.PathLike) -> None:
    """An existing `<run>/checkpoints` must be writable, or training would fail at its first save."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    if ckpt_dir.exists():
        check_writable(ckpt_dir, "checkpoint directory")


def _launch_key() -> str:
    # What all ranks of one torchrun launch share (and concurrent launches on a host do not: the port).
    env = os.environ
    return f"{env.get('MASTER_ADDR', '')}:{env.get('MASTER_PORT', '')}:{env.get('TORCHELASTIC_RUN_ID', '')}"


def _wait_for_claim(path: Path, marker: str, timeout_s: float = 120.0) -> None:
    """Ranks > 0 of a torchrun launch: wait until rank 0 has claimed `path` for this launch."""
    import time

    claim = path / (".claim" if marker.endswith(".yaml") else f"{marker}/claim")
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if claim.is_file() and claim.read_text() == _launch_key():
            return
        time.sleep(0.05)
    raise UserError(f"Rank 0 did not claim the output directory {path} within {timeout_s:.0f} s (it is probably "
                    "in use by another run); choose a new directory.")


class OutputDirGuard(Callback):
    """Hydra callback (configured in conf/hydra/default.yaml): checks, and for `fresh_tasks` claims, the
    run or sweep directory before Hydra writes into it. Bad directories end the launch with one line.
    Under torchrun rank 0 claims the directory and the other ranks wait for its claim."""

    def __init__(self, fresh_tasks: Iterable[str] = ("sample", "evaluate", "nll")):
        self.fresh_tasks = set(fresh_tasks)

    def _guard(self, config: DictConfig, key: str, marker: str) -> None:
        from beatgans.cli.errors import fail

        try:
            path = Path(str(OmegaConf.select(config, key))).absolute()
            if config.get("task_name") not in self.fresh_tasks:
                check_writable(path)
                check_checkpoint_dir(path)
            elif int(os.environ.get("RANK", 0)) > 0:
                _wait_for_claim(path, marker)
            else:
                claim_fresh_dir(path, marker, "sweep directory" if "sweep" in key else "output directory")
                claim = path / (".claim" if marker.endswith(".yaml") else f"{marker}/claim")
                claim.write_text(_launch_key())
        except UserError as err:
            fail(str(err))

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._guard(config, "hydra.run.dir", ".hydra")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._guard(config, "hydra.sweep.dir", "multirun.yaml")


register_resolvers()
