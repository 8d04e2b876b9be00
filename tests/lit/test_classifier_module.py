"""NoisyClassifierModule: trains on x_t = q_sample(x0, t) with t uniform (or clean inputs), logs loss and
top-1 / top-5 accuracy overall and per timestep quartile, anneals the learning rate."""

import lightning as L
import pytest
import torch
from torch import nn

from beatgans.diffusion import create_diffusion
from beatgans.lit.classifier_module import NoisyClassifierModule
from beatgans.nets import EncoderClassifier


class Recorder(nn.Module):
    """A classifier that records what it is fed and predicts class 0 for t < T/2, else class 1."""

    def __init__(self, num_classes=10, half=50):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_classes))
        self.half = half
        self.seen = []

    def forward(self, x, t):
        self.seen.append((x.detach().clone(), t.clone()))
        logits = torch.full((x.shape[0], len(self.bias)), -5.0) + self.bias
        logits[:, :2] = 0.0  # classes 0 and 1 are always the top two
        logits[torch.arange(len(t)), (t >= self.half).long()] = 5.0
        return logits


def _module(net, noised=True, T=100, **kw):
    opt = lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.05)  # noqa: E731
    return NoisyClassifierModule(net, create_diffusion("linear", T), opt, num_classes=10, noised=noised, **kw)


def _logged(module, batch):
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, float(value))
    loss = module._step(batch, "train")
    return loss, logged


def test_noised_inputs_and_logged_accuracy_keys():
    torch.manual_seed(0)
    net = Recorder()
    module = _module(net)
    x0 = torch.rand(64, 1, 8, 8) * 2 - 1
    # Labels the Recorder gets right exactly when t >= 50 (it predicts 1 there, 0 below).
    y = torch.ones(64, dtype=torch.long)
    loss, logged = _logged(module, (x0, y))
    x_in, t = net.seen[-1]
    assert t.min() >= 0 and t.max() < 100 and len(t.unique()) > 10, "t is uniform over the T steps"
    expect = module.diffusion.q_sample(x0, t, (x_in - module.diffusion.coef("sqrt_alphas_cumprod", t, x0) * x0)
                                       / module.diffusion.coef("sqrt_one_minus_alphas_cumprod", t, x0))
    assert torch.allclose(x_in, expect, atol=1e-5) and not torch.allclose(x_in, x0)
    for key in ["train/loss", "train/acc@1", "train/acc@5"] + [f"train/acc@1_q{q}" for q in range(4)]:
        assert key in logged, key
    # Quartiles 0, 1 (t < 50) are always wrong, 2, 3 always right; top-1 overall = share of t >= 50.
    assert logged["train/acc@1_q0"] == logged["train/acc@1_q1"] == 0.0
    assert logged["train/acc@1_q2"] == logged["train/acc@1_q3"] == 1.0
    assert logged["train/acc@1"] == pytest.approx(float((t >= 50).float().mean()))
    assert logged["train/acc@5"] == 1.0  # class 1 is always among the top 5
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_clean_inputs_when_not_noised():
    net = Recorder()
    module = _module(net, noised=False)
    x0 = torch.rand(8, 1, 8, 8) * 2 - 1
    _, logged = _logged(module, (x0, torch.zeros(8, dtype=torch.long)))
    x_in, t = net.seen[-1]
    assert torch.equal(x_in, x0) and t.eq(0).all()
    assert logged["train/acc@1"] == 1.0 and logged["train/acc@1_q0"] == 1.0 and "train/acc@1_q3" not in logged


def test_respaced_process_feeds_original_timesteps():
    net = Recorder(half=500)
    opt = lambda p: torch.optim.AdamW(p, lr=1e-3)  # noqa: E731
    module = NoisyClassifierModule(net, create_diffusion("linear", 1000, spacing="10"), opt, num_classes=10)
    _logged(module, (torch.zeros(32, 1, 8, 8), torch.zeros(32, dtype=torch.long)))
    _, t = net.seen[-1]
    assert set(t.tolist()) <= set(module.diffusion.timestep_map.tolist()) and t.max() > 10


def test_fit_lowers_loss_and_anneals_lr(tmp_path):
    torch.manual_seed(0)
    net = EncoderClassifier(image_size=8, in_channels=1, model_channels=32, num_classes=10, num_res_blocks=1,
                            attention_resolutions=[], channel_mult=[1, 1], num_head_channels=32)
    module = _module(net, noised=False, anneal_lr=True)
    module.optimizer_factory = lambda p: torch.optim.AdamW(p, lr=3e-3, weight_decay=0.05)
    x = torch.rand(32, 1, 8, 8) * 2 - 1
    y = torch.arange(32) % 10
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    before = torch.nn.functional.cross_entropy(net(x, torch.zeros(32, dtype=torch.long)), y).item()
    trainer = L.Trainer(max_steps=50, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(module, loader)
    after = torch.nn.functional.cross_entropy(net(x, torch.zeros(32, dtype=torch.long)), y).item()
    assert after < 0.2 * before
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert {"train/loss", "train/acc@1", "train/acc@5", "train/acc@1_q0"} <= set(trainer.callback_metrics)
