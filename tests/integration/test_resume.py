"""Exact resume from any stop: a run stopped at any step (on or off the checkpoint grid, by max_steps) and
resumed equals the uninterrupted run bit for bit (weights, EMA, optimizer, RNG-driven state), for the
diffusion, classifier and Diffusion-GAN tasks."""

from __future__ import annotations

import warnings

import pytest
import torch

from beatgans.cli.train import train
from tests.conftest import TINY_TRAIN, compose

CLASSIFIER = ["experiment=digits/classifier", "data.image_size=8", "data.batch_size=16", "net.model_channels=32",
              "net.channel_mult=[1,1]", "net.attention_resolutions=[4]", "net.num_head_channels=32",
              "diffusion.num_timesteps=50", "logger=none", "print_config=false", "trainer.enable_progress_bar=false",
              "callbacks.sample_grid.on_train_end=false", "trainer.check_val_every_n_epoch=null",
              "task.random_crop_pad=1", "data.random_flip=true", "task.anneal_lr=false"]
# 256 points / batch 32 = 8 batches per epoch: the GAN runs cross epoch boundaries.
GAN = ["experiment=toy/diffusion_gan_25gaussians", "data.num_points=256", "data.batch_size=32", "task.plot_every=0",
       "task.eval_modes=null", "task.diffusion.ada_kimg=1", "task.log_every=1", "logger=none",
       "trainer.enable_progress_bar=false", "print_config=false", "net.generator.hidden=16",
       "net.discriminator.hidden=16"]
DIFFUSION = TINY_TRAIN + ["task.ema_rates=[0.9]", "callbacks.sample_grid.on_train_end=false", "data.random_flip=true"]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same_state(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in a["state_dict"].items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, b["state_dict"][k]), k
        else:
            assert repr(v) == repr(b["state_dict"][k]), k
    for oa, ob in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        assert oa["param_groups"] == ob["param_groups"]
        for i, state in oa["state"].items():
            for k, v in state.items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(ob["state"][i][k])), (i, k)


@pytest.mark.parametrize("base, every, stops, total", [
    (DIFFUSION, 1000, [4], 7),            # the end-of-training last.ckpt (max_steps off the grid)
    (CLASSIFIER, 2, [3], 6),              # off the grid; random crop, flips and t from the global RNG
    (GAN, 4, [6, 14], 22),                # two stops, crossing epochs (8 iterations = 16 steps per epoch)
], ids=["diffusion", "classifier", "diffusion_gan"])
def test_resume_from_any_stop_is_bit_identical(tmp_path, base, every, stops, total):
    common = base + [f"callbacks.model_checkpoint.every_n_train_steps={every}"]
    train(compose("train", common + [f"trainer.max_steps={total}"], output_dir=tmp_path / "straight"))
    for i, stop in enumerate(stops + [total]):
        resume = ["ckpt_path=last"] if i else []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(compose("train", common + [f"trainer.max_steps={stop}", *resume], output_dir=tmp_path / "split"))
        assert not [w for w in caught if "not resumable" in str(w.message)]
    assert_same_state(load(tmp_path / "straight" / "checkpoints" / "last.ckpt"),
                      load(tmp_path / "split" / "checkpoints" / "last.ckpt"))
