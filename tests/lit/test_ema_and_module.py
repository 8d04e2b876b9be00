import os
from functools import partial

import pytest
import torch
from torch import nn

from beatgans.diffusion import create_diffusion
from beatgans.diffusion.sampling import respaced
from beatgans.lit.callbacks import AtomicCheckpointIO
from beatgans.lit.diffusion_module import DiffusionModule, build_optimizer, warmup_lambda
from beatgans.nets import UNet
from beatgans.nets.ema import EMA, ema_state_dict_from_checkpoint


def test_ema_update_matches_closed_form():
    net = nn.Linear(3, 2)
    ema = EMA(net, rates=[0.9, 0.5])
    w0 = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)
    assert torch.allclose(ema.shadow(0).weight, 0.9 * w0 + 0.1 * (w0 + 1))
    assert torch.allclose(ema.shadow(1).weight, 0.5 * w0 + 0.5 * (w0 + 1))
    assert not any(p.requires_grad for p in ema.parameters())
    ema.train()
    assert not ema.shadow(0).training
    sd = {f"ema.{k}": v for k, v in ema.state_dict().items()}
    assert torch.equal(ema_state_dict_from_checkpoint(sd, 1)["weight"], ema.shadow(1).weight)
    with pytest.raises(KeyError, match="no EMA weights for index 2"):
        ema_state_dict_from_checkpoint(sd, 2)


def _tiny_module(**kw):
    net = UNet(image_size=8, in_channels=1, model_channels=32, num_res_blocks=1, attention_resolutions=[4],
               channel_mult=[1, 1], num_classes=10, null_class=True)
    return DiffusionModule(net, create_diffusion("linear", 50), partial(torch.optim.AdamW, lr=1e-3), **kw)


def test_label_dropout_uses_the_null_label():
    module = _tiny_module(num_classes=10, p_uncond=0.5)
    y = torch.arange(10).repeat(100)
    out = module._labels(y, drop=True, generator=torch.Generator().manual_seed(0))["y"]
    dropped = (out == 10).float().mean().item()
    assert 0.4 < dropped < 0.6 and torch.equal(out[out != 10], y[out != 10])
    assert torch.equal(module._labels(y, drop=False)["y"], y)
    with pytest.raises(ValueError, match="class-conditional"):
        _tiny_module(num_classes=None, p_uncond=0.1)


def test_sample_images_seeded_and_batch_independent():
    module = _tiny_module(num_classes=10)
    a = module.sample_images(4, seed=7, steps=5, labels=torch.tensor([1, 2, 3, 4]))
    b = module.sample_images(2, seed=9, steps=5, labels=torch.tensor([3, 4]))
    assert a.shape == (4, 1, 8, 8) and torch.allclose(a[2:], b, atol=1e-6)


def test_warmup_and_respacing_helpers():
    f = warmup_lambda(4)
    assert [f(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    d = create_diffusion("linear", 1000)
    assert respaced(d, "ddim", 25).timestep_map.tolist()[:3] == [0, 40, 80]
    assert respaced(d, "ddpm", 250).num_timesteps == 250
    assert respaced(d, "ddpm", None) is d
    opt = build_optimizer(partial(torch.optim.AdamW, lr=1e-3), nn.Linear(2, 2).parameters())
    assert not opt.defaults.get("fused")  # fused only when every parameter is on CUDA


def test_atomic_checkpoint_io_leaves_no_partial_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"a": torch.ones(2)}, tmp_path / "last.ckpt")
    assert torch.load(tmp_path / "last.ckpt")["a"].sum() == 2

    def boom(obj, path, *a, **k):  # a write that dies half-way
        open(path, "wb").write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError):
        io.save_checkpoint({"a": torch.zeros(2)}, tmp_path / "last.ckpt")
    monkeypatch.undo()
    assert torch.load(tmp_path / "last.ckpt")["a"].sum() == 2
    assert sorted(os.listdir(tmp_path)) == ["last.ckpt"]


def test_wandb_goes_offline_without_credentials(tmp_path, monkeypatch, caplog):
    from beatgans.cli.common import configure_wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    caplog.set_level("INFO")
    assert configure_wandb_mode(tmp_path) == "offline"
    assert os.environ["WANDB_MODE"] == "offline" and "wandb sync" in caplog.text
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert configure_wandb_mode(tmp_path) == "disabled"
