"""Classifier guidance with real training: on 8 px digits, a small unconditional diffusion model and a small
noisy classifier (same linear process, T = 100) are trained through `beatgans-train`'s presets; samples
guided toward fixed target classes at s = 0, 1 and 10 are judged by the separately trained clean digits
CNN (beatgans.metrics.digits). Target accuracy must rise with s and be well above chance (10 %) at s = 10.

Seeded and sized small: measured 35 s of CPU time (one thread; 128 s wall on a heavily shared 2-core
machine), with target accuracy 0.13 / 0.24 / 0.74 at s = 0 / 1 / 10.
"""

from pathlib import Path

import pytest

from beatgans.cli.sample import generate
from beatgans.cli.train import train
from beatgans.metrics.digits import target_accuracy
from tests.conftest import compose

COMMON = ["data.image_size=8", "data.batch_size=32", "diffusion.num_timesteps=100", "trainer.accelerator=cpu",
          "trainer.devices=1", "trainer.enable_progress_bar=false", "logger=none", "print_config=false",
          "trainer.check_val_every_n_epoch=1000", "callbacks.model_checkpoint.every_n_train_steps=0",
          "callbacks.sample_grid.every_n_steps=0", "callbacks.sample_grid.on_train_end=false",
          "net.model_channels=32", "net.channel_mult=[1,1]", "net.attention_resolutions=[]", "seed=0"]
SCALES = (0, 1, 10)


@pytest.fixture(scope="module")
def guided_accuracy(tmp_path_factory) -> dict[float, float]:
    root: Path = tmp_path_factory.mktemp("guidance_behaviour")
    train(compose("train", ["experiment=digits/ddpm_uncond", *COMMON, "net.resblock_updown=false",
                            "trainer.max_steps=250", "task.warmup_steps=20", "task.ema_rates=[0.99]",
                            "task.optimizer.lr=2e-3"], output_dir=root / "ddpm"))
    # No random-crop augmentation: at 8 px a one-pixel shift is a large part of a digit.
    train(compose("train", ["experiment=digits/classifier", *COMMON, "trainer.max_steps=300",
                            "task.optimizer.lr=2e-3", "task.random_crop_pad=0"], output_dir=root / "clf"))
    acc = {}
    for s in SCALES:
        cfg = compose("sample", [f"run={root / 'ddpm'}", "sampler=ddpm", "sampler.steps=25", "num_samples=100",
                                 "batch_size=100", "classes=[0,1,2,3,4,5,6,7,8,9]", "guidance=classifier",
                                 f"guidance.classifier_run={root / 'clf'}", f"guidance.scale={s}"],
                      output_dir=root / f"s{s}")
        images, labels, _ = generate(cfg)
        acc[s] = target_accuracy(images, labels)
    return acc


def test_target_accuracy_rises_with_guidance_scale(guided_accuracy):
    a = guided_accuracy
    print("target accuracy by guidance scale:", a)  # shown with pytest -s / -rP
    assert a[0] < a[1] < a[10], a
    assert a[0] <= 0.3, f"an unconditional model without guidance should be near chance: {a}"
    assert a[10] >= 0.4 and a[10] - a[0] >= 0.25, f"s = 10 should be well above chance (0.1): {a}"
