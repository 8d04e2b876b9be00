"""What every entry point shares: where the configs live, config printing, loggers/callbacks, wandb mode."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from beatgans.utils.logging import get_logger

log = get_logger(__name__)


def config_dir() -> str:
    """Absolute path of the `conf/` tree: $BEATGANS_CONFIG_DIR, else the repository's `conf/`."""
    env = os.environ.get("BEATGANS_CONFIG_DIR")
    if env:
        return str(Path(env).resolve())
    return str(Path(__file__).resolve().parents[3] / "conf")


CONFIG_DIR = config_dir()


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


def finish_wandb() -> None:
    """Close the wandb run if one is open (each multirun job must get, and finish, its own run)."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def save_resolved_config(cfg: DictConfig, run_dir: str | os.PathLike) -> Path:
    """Overwrite `<run>/.hydra/config.yaml` with the fully resolved config (what the run really used)."""
    from beatgans.utils.io import atomic_write

    path = Path(run_dir) / ".hydra" / "config.yaml"
    text = OmegaConf.to_yaml(cfg, resolve=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path
