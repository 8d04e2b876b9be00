"""Shared test set-up: offline, single-threaded, tiny configs composed through Hydra's API."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "src" / "beatgans" / "conf"  # the config tree ships inside the package

# A tiny class-conditional digits setting that trains in seconds on one CPU core.
TINY_TRAIN = [
    "data.image_size=8",
    "data.batch_size=16",
    "net.model_channels=32",
    "net.channel_mult=[1,1]",
    "net.num_res_blocks=1",
    "net.attention_resolutions=[4]",
    "net.num_head_channels=-1",
    "net.num_heads=1",
    "net.dropout=0.0",
    "diffusion.num_timesteps=50",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.max_steps=3",
    "trainer.enable_progress_bar=false",
    "trainer.check_val_every_n_epoch=1",
    "+trainer.limit_val_batches=1",
    "logger=none",
    "print_config=false",
    "callbacks.sample_grid.every_n_steps=0",
    "callbacks.sample_grid.per_class=1",
    "callbacks.sample_grid.steps=4",
    "callbacks.model_checkpoint.every_n_train_steps=1",
    "task.sample_steps=4",
]


def compose(config_name: str, overrides: list[str], output_dir: Path | None = None):
    """Compose a config from conf/ (no Hydra run); `paths.output_dir` is pointed at `output_dir`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    extra = [f"paths.output_dir={output_dir}", f"paths.work_dir={REPO}"] if output_dir is not None else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides) + extra)


def perturb_weights(net: torch.nn.Module, scale: float, seed: int = 0) -> torch.nn.Module:
    """Add seeded N(0, scale^2) noise to every parameter of `net` (in place; returned), so zero-initialised
    layers are non-zero and an output depends on every weight."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return net


def train_tiny_run(out: Path, steps: int = 2) -> Path:
    """Train the TINY_TRAIN setting for `steps` optimizer steps into `out` (no end-of-training grid) and return
    it: a finished run directory to sample from (module-scoped fixtures call this)."""
    from beatgans.cli.train import train

    train(compose("train", TINY_TRAIN + [f"trainer.max_steps={steps}", "callbacks.sample_grid.on_train_end=false"],
                  output_dir=out))
    return out


@pytest.fixture
def tiny_train_cfg(tmp_path):
    def make(*overrides: str, out: Path | None = None):
        return compose("train", TINY_TRAIN + list(overrides), output_dir=out or tmp_path / "run")

    return make
