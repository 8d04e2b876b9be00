"""data.global_batch_size under two gloo CPU processes with gradient accumulation takes the same optimizer
step, from the same images, as one process loading the whole batch at once."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from beatgans.data.batching import apply_batch_split, check_batch_split
from tests.conftest import compose


class LinearProbe(L.LightningModule):
    """A deterministic loss (mean cross-entropy of a linear map of the pixels): its gradient is a plain
    average over the images, so any split of one batch must give the same step. Each rank saves the
    images it trained on."""

    def __init__(self, out_dir: str):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(16 * 16, 10)
        self.out_dir = out_dir
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.append(x.detach().flatten(1).clone())
        return F.cross_entropy(self.linear(x.flatten(1)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)

    def on_train_end(self):
        torch.save(torch.cat(self.seen), f"{self.out_dir}/seen_rank{self.global_rank}.pt")


def _fit(tmp_path, name, overrides):
    out = tmp_path / name
    out.mkdir()
    cfg = compose("train", ["experiment=digits/ddpm", "data.batch_size=null", "data.global_batch_size=16",
                            "data.random_flip=false", *overrides], output_dir=out)
    split = apply_batch_split(cfg)
    module = LinearProbe(str(out))
    trainer = L.Trainer(accelerator="cpu", devices=cfg.trainer.devices, strategy=cfg.trainer.strategy, max_steps=1,
                        accumulate_grad_batches=cfg.trainer.accumulate_grad_batches, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(out))
    check_batch_split(split, trainer, module)
    trainer.fit(module, datamodule=instantiate(cfg.data))
    seen = torch.cat([torch.load(p) for p in sorted(out.glob("seen_rank*.pt"))])
    return split, module.linear.weight.detach().clone(), seen


def _rows(x):
    return sorted(map(tuple, x.tolist()))


def test_two_gloo_processes_with_accumulation_equal_one_process(tmp_path):
    one, w_one, seen_one = _fit(tmp_path, "one", ["trainer=cpu", "trainer.devices=1"])
    two, w_two, seen_two = _fit(tmp_path, "two", ["trainer=ddp_cpu", "data.micro_batch_size=4"])
    assert (one.per_process, one.accumulate, one.world_size) == (16, 1, 1)
    assert (two.per_process, two.accumulate, two.world_size) == (4, 2, 2)
    # the effective batch: 2 processes x 2 passes x 4 images = the same 16 images as the single process
    assert seen_one.shape[0] == seen_two.shape[0] == 16 and _rows(seen_one) == _rows(seen_two)
    w0 = LinearProbe(str(tmp_path)).linear.weight.detach()
    assert float((w_one - w0).abs().max()) > 1e-3  # the step moved the weights
    assert torch.allclose(w_two, w_one, atol=1e-6, rtol=0)  # and both runs took the same step
