"""AutoencoderModule through the real config tree: a short `experiment=digits/autoencoder` run (run contract,
discriminator switched on at disc_start, one Lightning step per iteration), the latent scale factor in the
checkpoint (computed or fixed by the user), exact resume with both optimizers, and clear config errors."""

import json

import pytest
import torch
from hydra.utils import instantiate

from beatgans.cli.train import train
from beatgans.lit.autoencoder_module import AutoencoderModule, load_autoencoder
from beatgans.nets import compute_scale_factor
from tests.conftest import compose

TINY_AE = [
    "experiment=digits/autoencoder",
    "data.batch_size=16",
    "task.discriminator.base_channels=8",
    "task.disc_start=2",
    "task.image_every_n_steps=0",
    "task.num_images=4",
    "task.scale_factor_batches=2",
    "trainer.accelerator=cpu",
    "trainer.max_steps=4",
    "~trainer.max_time",
    "trainer.enable_progress_bar=false",
    "trainer.check_val_every_n_epoch=1",
    "+trainer.limit_val_batches=1",
    "logger=none",
    "print_config=false",
    "callbacks.model_checkpoint.every_n_train_steps=2",
]


def cfg_for(out, *overrides):
    return compose("train", TINY_AE + list(overrides), output_dir=out)


def _ckpt(run, name="last.ckpt"):
    return torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=False)


def test_short_digits_run_writes_contract_and_scale_factor(tmp_path):
    run = tmp_path / "run"
    metrics = train(cfg_for(run, "trainer.val_check_interval=4"))
    ckpt = _ckpt(run)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["global_step"] == 4 == ckpt["global_step"]  # the D update does not count as a step
    assert len(ckpt["optimizer_states"]) == 2 and ckpt["optimizer_states"][1]["state"]  # D stepped after start
    assert saved["train/d_loss"] > 0 and saved["train/d_weight"] > 0 and saved["val/rec_loss"] > 0
    assert (run / "samples" / "final_recon.png").is_file()
    # the scale factor: 1 / std of the mean latents of the first 2 training batches in dataset order
    ae = load_autoencoder(run)
    assert float(ae.scale_factor) == pytest.approx(saved["scale_factor"]) == pytest.approx(metrics["scale_factor"])
    assert float(ckpt["state_dict"]["ae.scale_factor"]) == pytest.approx(saved["scale_factor"])
    dm = instantiate(cfg_for(run).data)
    dm.setup()
    loader = torch.utils.data.DataLoader(dm.train_dataloader().dataset, batch_size=16, shuffle=False)
    assert saved["scale_factor"] == pytest.approx(compute_scale_factor(ae, loader, 2), rel=1e-5)
    assert saved["scale_factor"] != 1.0
    z = ae.encode_latent(torch.zeros(2, 1, 16, 16))
    assert z.shape == (2, 3, 8, 8) and not z.requires_grad


def test_user_scale_factor_is_kept_in_the_checkpoint(tmp_path):
    run = tmp_path / "fixed"
    train(cfg_for(run, "task.scale_factor=0.18215", "task.discriminator=null", "trainer.max_steps=2"))
    assert float(_ckpt(run)["state_dict"]["ae.scale_factor"]) == pytest.approx(0.18215)
    assert float(load_autoencoder(run / "checkpoints" / "last.ckpt").scale_factor) == pytest.approx(0.18215)


def test_resume_from_a_checkpoint_is_bit_identical(tmp_path):
    """6 iterations straight == 4, resume from last.ckpt (on the every-2 grid, D already on), 2 more."""
    train(cfg_for(tmp_path / "straight", "trainer.max_steps=6"))
    train(cfg_for(tmp_path / "resumed", "trainer.max_steps=4"))
    train(cfg_for(tmp_path / "resumed", "trainer.max_steps=6", "ckpt_path=last"))
    a, b = _ckpt(tmp_path / "straight"), _ckpt(tmp_path / "resumed")
    assert a["global_step"] == b["global_step"] == 6
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    for sa, sb in zip(a["optimizer_states"], b["optimizer_states"]):
        for pa, pb in zip(sa["state"].values(), sb["state"].values()):
            assert all(torch.equal(pa[key], pb[key]) for key in pa)


def test_bad_settings_fail_before_training(tmp_path):
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException, match="perceptual.vgg_weights=.*no such file"):
        train(cfg_for(tmp_path / "a", f"task.perceptual.vgg_weights={tmp_path}/no.pth",
                      f"task.perceptual.lpips_weights={tmp_path}/no2.pth"))
    with pytest.raises(ValueError, match="net.resolution=32 but the data is 16px"):
        train(cfg_for(tmp_path / "b", "net.resolution=32"))
    with pytest.raises(ValueError, match="rec_loss must be 'l1' or 'l2'"):
        AutoencoderModule(ae=instantiate(cfg_for(tmp_path / "c").net), optimizer=torch.optim.Adam, rec_loss="l3")
    assert not (tmp_path / "b" / "checkpoints").exists()
