"""Mixed precision: bf16 training keeps fp32 state, the fp16 loss scaler skips overflowing steps (and the EMA
with them), GroupNorm stays in fp32 under autocast, and bf16 DDIM sampling stays within a stated distance
of fp32."""

from __future__ import annotations

import math
from collections import Counter

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins.precision import MixedPrecision
from torch.utils._python_dispatch import TorchDispatchMode

from beatgans.cli.train import train
from beatgans.diffusion import create_diffusion
from beatgans.lit.diffusion_module import sample_with
from beatgans.nets import UNet
from beatgans.nets.runtime import AutocastNet, autocast_dtype, with_autocast
from tests.conftest import TINY_TRAIN, compose


def _tiny_unet() -> UNet:
    torch.manual_seed(0)
    net = UNet(16, 1, 32, 1, [8], channel_mult=[1, 2], num_classes=10, num_head_channels=32).eval()
    torch.nn.init.normal_(net.out_conv.weight, std=0.05)  # ADM zero-initialises it: make eps depend on x
    return net


def test_bf16_training_keeps_fp32_optimizer_and_ema_state(tmp_path):
    cfg = compose("train", TINY_TRAIN + ["trainer.precision=bf16-mixed", "trainer.max_steps=3",
                                         "callbacks.sample_grid.on_train_end=false"], output_dir=tmp_path)
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"]) and metrics["global_step"] == 3
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    states = ckpt["optimizer_states"][0]["state"]
    assert states and {v.dtype for s in states.values() for v in s.values()} == {torch.float32}
    ema = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("ema.")}
    assert ema and {v.dtype for v in ema.values() if v.is_floating_point()} == {torch.float32}
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


class _ScaleLog(L.Callback):
    """Records the loss scale, the net weights and the EMA weights after every optimizer step."""

    def __init__(self):
        self.scales, self.params, self.ema = [], [], []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.scales.append(trainer.precision_plugin.scaler.get_scale())
        self.params.append(torch.cat([p.detach().flatten() for p in pl_module.net.parameters()]).clone())
        self.ema.append(torch.cat([p.flatten() for p in pl_module.ema.shadow(0).parameters()]).clone())


def test_fp16_loss_scaler_skips_overflow_and_grows_without_cuda(tmp_path):
    """ADM trains in fp16 with dynamic loss scaling: an inf gradient skips the optimizer step (weights and EMA
    unchanged) and halves the scale; `growth_interval` good steps double it. Lightning's MixedPrecision plugin
    with a CPU GradScaler runs the same code path as on CUDA."""
    cfg = compose("train", TINY_TRAIN + ["trainer.max_steps=6", "task.ema_rates=[0.5]"], output_dir=tmp_path)
    module = instantiate(cfg.task)
    datamodule = instantiate(cfg.data)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    record = _ScaleLog()
    weight = module.net.out_conv.weight
    weight.register_hook(lambda g: g * math.inf if module.global_step == 2 else g)  # an fp16 overflow at step 2
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=6, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[record], plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    trainer.fit(module, datamodule=datamodule)
    # steps 0, 1 good -> x2 after the second; step 2 inf -> /2; steps 3, 4 good -> x2; step 5 good
    assert record.scales == [2.0**10, 2.0**11, 2.0**10, 2.0**10, 2.0**11, 2.0**11]
    assert torch.equal(record.params[2], record.params[1]), "the overflowing step must not change the weights"
    assert torch.equal(record.ema[2], record.ema[1]), "nor the EMA (ADM updates it only when a step is taken)"
    for a, b in ((record.params[1], record.params[0]), (record.params[3], record.params[2])):
        assert not torch.equal(a, b)
    assert not torch.equal(record.ema[3], record.ema[2])
    assert all(torch.isfinite(p).all() for p in record.params + record.ema)


class _DtypeRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if "group_norm" in name or "convolution" in name:
            self.seen[(name.split(".")[1], args[0].dtype)] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_groupnorm_runs_in_fp32_under_autocast(dtype):
    net = _tiny_unet()
    x, t, y = torch.randn(2, 1, 16, 16), torch.tensor([1, 500]), torch.tensor([1, 2])
    with _DtypeRecorder() as rec, torch.autocast("cpu", dtype=dtype):
        out = net(x, t, y)
    assert out.dtype == dtype
    # every convolution in the low dtype, every GroupNorm kernel (21 in this net) in float32
    assert rec.seen == Counter({("convolution", dtype): 25, ("native_group_norm", torch.float32): 21})


def test_bf16_ddim_sampling_within_stated_tolerance_of_fp32():
    """DDIM-25 samples of a tiny net with the net under bf16 autocast vs fp32 (sampler arithmetic in fp32).

    bf16 keeps 8 significant bits (relative rounding 2^-9 ~ 0.2 %); through ~20 layers and 25 steps the
    measured mean |diff| is ~1e-3 on [-1, 1] (0.13 of a uint8 level) and the max ~0.23 (a handful of pixels
    where DDIM amplifies an early difference). We assert mean < 1/255 / 2 (half a uint8 level) and
    max < 0.35, and that under 10 % of uint8 pixels change.
    """
    net = _tiny_unet()
    diffusion = create_diffusion("linear", 1000)
    kw = {"seed": 0, "sampler": "ddim", "steps": 25, "num_classes": 10}
    ref = sample_with(net, diffusion, 16, (1, 16, 16), **kw)
    low = sample_with(net, diffusion, 16, (1, 16, 16), model_wrapper=lambda n: with_autocast(n, "bf16"), **kw)
    diff = (ref - low).abs()
    assert 0 < diff.mean().item() < 0.5 / 255 and diff.max().item() < 0.35
    q = lambda v: ((v.clamp(-1, 1) + 1) * 127.5).to(torch.uint8)
    assert (q(ref) != q(low)).float().mean().item() < 0.10


def test_autocast_helpers():
    net = _tiny_unet()
    assert with_autocast(net, "fp32") is net and autocast_dtype("bf16") is torch.bfloat16
    wrapped = with_autocast(net, "bf16")
    assert isinstance(wrapped, AutocastNet) and wrapped.image_size == 16 and wrapped.num_classes == 10
    out = wrapped(torch.randn(1, 1, 16, 16), torch.tensor([3]), y=torch.tensor([1]))
    assert out.dtype == torch.float32
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype("fp8")
