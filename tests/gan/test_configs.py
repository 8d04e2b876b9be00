"""The Diffusion-GAN experiment configs compose, and their task builds the intended objects."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from beatgans.gan import AdaptiveDiffusion
from beatgans.lit.diffusion_gan import DiffusionGANModule

CONF = str(Path(__file__).resolve().parents[2] / "conf")
EXPERIMENTS = ["toy/diffusion_gan_25gaussians", "toy/gan_25gaussians", "toy/diffusion_gan_25gaussians_target02",
               "digits/diffusion_gan", "digits/gan", "cifar10/diffusion_gan_dcgan", "cifar10/gan_dcgan",
               "cifar10/diffusion_gan_sngan", "cifar10/gan_sngan"]


def _compose(name: str, *overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=[f"experiment={name}", *overrides])


def test_experiments_compose_with_matching_baselines():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        for name in EXPERIMENTS:
            cfg = compose("train", overrides=[f"experiment={name}"])
            assert cfg.task._target_.endswith("DiffusionGANModule"), name
            assert cfg.task.diffusion.noise_enabled == (not name.split("/")[1].startswith("gan")), name


@pytest.mark.parametrize("name", ["toy/diffusion_gan_25gaussians", "digits/gan"])
def test_task_instantiates(name):
    cfg = _compose(name, "net.generator.base=8" if name.startswith("digits") else "net.generator.hidden=8")
    module = instantiate(cfg.task)
    assert isinstance(module, DiffusionGANModule) and isinstance(module.diffusion, AdaptiveDiffusion)
    assert module.diffusion.noise_enabled == name.startswith("toy")
    if name.startswith("toy"):
        assert module.eval_modes.shape == (25, 2)
        dm = instantiate(cfg.data)
        assert dm.num_classes is None
