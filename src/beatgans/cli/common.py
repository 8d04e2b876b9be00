"""What every entry point shares: where the configs live, config printing, loggers/callbacks, wandb mode."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as _HydraCallback
from omegaconf import DictConfig, OmegaConf

from beatgans.utils.logging import get_logger

log = get_logger(__name__)


# The config tree ships inside the package (beatgans/conf, package data in the wheel), so every entry point
# composes from an installed wheel as well as from a checkout; users stack their own directories on top with
# Hydra's --config-dir or hydra.searchpath (docs/install.md).
PACKAGE_CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
PACKAGE_CONFIG_PATH = "pkg://beatgans.conf"


def config_dir() -> str:
    """Absolute filesystem path of the primary config tree: $BEATGANS_CONFIG_DIR when set (it replaces ours),
    else the installed package's `beatgans/conf/` (for Hydra's compose API and for tests)."""
    env = os.environ.get("BEATGANS_CONFIG_DIR")
    if env:
        return str(Path(env).resolve())
    return str(PACKAGE_CONFIG_DIR)


def config_path() -> str:
    """What every `hydra.main` searches first: $BEATGANS_CONFIG_DIR when set, else the package path
    `pkg://beatgans.conf`, which Hydra resolves through importlib wherever beatgans is installed."""
    env = os.environ.get("BEATGANS_CONFIG_DIR")
    return str(Path(env).resolve()) if env else PACKAGE_CONFIG_PATH


CONFIG_DIR = config_dir()
CONFIG_PATH = config_path()


def print_config_tree(cfg: DictConfig, resolve: bool = True) -> None:
    """Print the composed config as a rich tree (call on rank 0)."""
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    for key, value in cfg.items():
        branch = tree.add(str(key), style="bold")
        text = OmegaConf.to_yaml(value, resolve=resolve) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)


def wandb_has_credentials() -> bool:
    """True when an API key is set in WANDB_API_KEY or in ~/.netrc (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def configure_wandb_mode(save_dir: str | os.PathLike) -> str:
    """Respect WANDB_MODE; without credentials switch wandb to offline and say how to upload later."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode
    if not wandb_has_credentials():
        os.environ["WANDB_MODE"] = "offline"
        log.info("wandb: no credentials found, logging offline under %s/wandb; upload later with "
                 "`wandb sync %s/wandb/offline-run-*`.", save_dir, save_dir)
        return "offline"
    return "online"


def instantiate_list(node: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` child of a config node (loggers, callbacks)."""
    from hydra.utils import instantiate

    if not node:
        return []
    return [instantiate(v) for v in node.values() if isinstance(v, DictConfig) and "_target_" in v]


def finish_wandb(exit_code: int = 0) -> None:
    """Close the wandb run if one is open (each multirun job must get, and finish, its own run); a non-zero
    `exit_code` marks it failed."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def record_launch(cfg: DictConfig, folder: str | os.PathLike, changes: list[str] = ()) -> Path:
    """Write this launch's resolved `config.yaml`, its command-line `overrides.yaml` and Hydra's `hydra.yaml`
    (when run under Hydra) into `folder` (`<run>/.hydra`, or `<run>/.hydra/resume-<k>` for a resume), plus
    `applied_changes.yaml` listing the settings a `resume_overrides=apply` resume changed."""
    from hydra.core.hydra_config import HydraConfig

    from beatgans.utils.io import atomic_write

    folder = Path(folder)
    save_resolved_config(cfg, folder, name="config.yaml")
    files = {}
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        files["overrides.yaml"] = OmegaConf.to_yaml(OmegaConf.create(list(hydra_cfg.overrides.task)))
        files["hydra.yaml"] = OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg}))
    if changes:
        files["applied_changes.yaml"] = OmegaConf.to_yaml(OmegaConf.create(list(changes)))
    for name, text in files.items():
        atomic_write(folder / name, lambda tmp, text=text: Path(tmp).write_text(text))
    return folder


def save_resolved_config(cfg: DictConfig, run_dir: str | os.PathLike, name: str | None = None) -> Path:
    """Write the fully resolved config (what the run really used) to `<run>/.hydra/config.yaml`, or to
    `<run_dir>/<name>` when `name` is given."""
    from beatgans.utils.io import atomic_write

    path = Path(run_dir) / name if name else Path(run_dir) / ".hydra" / "config.yaml"
    text = OmegaConf.to_yaml(cfg, resolve=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path



class SweepSummary(_HydraCallback):
    """Hydra callback: after each multirun job, record its status (and, if it failed, why) in
    `<sweep dir>/sweep_summary.json` and log the failures so far; at the end, log the tally.

    Hydra stops a sweep's bookkeeping at the first failed job (no `on_multirun_end`), so the file is rewritten
    after every job and is complete whenever the sweep stops.
    """

    FILE = "sweep_summary.json"

    def __init__(self) -> None:
        self.jobs: list[dict] = []

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        from beatgans.utils.io import write_json

        if config.hydra.mode != RunMode.MULTIRUN:
            return
        failed = job_return.status == JobStatus.FAILED
        error = job_return._return_value if failed else None
        self.jobs.append({"job": int(config.hydra.job.num), "overrides": list(job_return.overrides or []),
                          "run_dir": str(config.hydra.runtime.output_dir),
                          "status": "failed" if failed else "completed",
                          "error": f"{type(error).__name__}: {error}" if failed else None})
        path = Path(config.hydra.sweep.dir) / self.FILE
        write_json(path, {"jobs": self.jobs, "failed": [j["job"] for j in self.jobs if j["status"] == "failed"]})
        bad = [j for j in self.jobs if j["status"] == "failed"]
        if failed:
            log.error("Sweep job %d (%s) failed: %s", self.jobs[-1]["job"], " ".join(self.jobs[-1]["overrides"]),
                      self.jobs[-1]["error"])
        if bad:
            log.error("Sweep: %d of %d jobs so far failed (%s); details in %s", len(bad), len(self.jobs),
                      ", ".join(f"job {j['job']}: {j['error']}" for j in bad), path)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not any(j["status"] == "failed" for j in self.jobs):
            log.info("Sweep: all %d jobs completed; summary in %s", len(self.jobs),
                     Path(config.hydra.sweep.dir) / self.FILE)
