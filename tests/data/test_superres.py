"""Super-resolution training pairs: ADM's area downsampling, consistent flips, grid inputs, refusals."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from beatgans.data.datamodules import DigitsDataModule
from beatgans.data.superres import (
    SuperResDataset,
    area_downsample,
    check_low_res_size,
    low_res_examples,
)


def test_area_downsampling_is_the_block_average():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4) / 31 - 1
    low = area_downsample(x, 2)
    blocks = x.reshape(2, 1, 2, 2, 2, 2).mean(dim=(3, 5))
    assert torch.allclose(low, blocks, atol=1e-7)
    assert torch.equal(low, F.interpolate(x, size=(2, 2), mode="area"))
    assert torch.equal(area_downsample(x[0], 2), low[0])  # per example == batched (ADM does it per batch)


def test_digits_pairs_share_the_image_and_flip():
    torch.manual_seed(0)
    dm = DigitsDataModule(image_size=16, batch_size=8, low_res_size=8, random_flip=True, seed=3)
    x, y, low = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 16, 16) and low.shape == (8, 1, 8, 8) and y.dtype == torch.int64
    assert torch.equal(low, F.interpolate(x, size=(8, 8), mode="area"))  # the flipped image's own downsample
    assert low.min() >= -1 and low.max() <= 1
    xv, yv, lowv = next(iter(dm.val_dataloader()))
    assert torch.equal(lowv, area_downsample(xv, 8))
    plain = DigitsDataModule(image_size=16, batch_size=8, seed=3)
    assert len(next(iter(plain.train_dataloader()))) == 2  # without low_res_size batches stay (x, y)


def test_low_res_examples_follow_the_requested_labels():
    x = torch.linspace(-1, 1, 6)[:, None, None, None].expand(6, 1, 4, 4).clone()
    y = torch.tensor([0, 1, 0, 2, 1, 0])
    data = SuperResDataset(TensorDataset(x, y), 2)
    got = low_res_examples(data, 5, labels=[0, 0, 1, 0, 0])
    want = area_downsample(x[[0, 2, 1, 5, 0]], 2)  # class 0 cycles through its examples 0, 2, 5
    assert torch.equal(got, want)
    assert torch.equal(low_res_examples(data, 7), area_downsample(x[[0, 1, 2, 3, 4, 5, 0]], 2))
    with pytest.raises(ValueError, match=r"class\(es\) \[7\]"):
        low_res_examples(data, 2, labels=[0, 7])


def test_bad_low_res_size_is_one_sentence():
    with pytest.raises(ValueError, match="must divide data.image_size=16"):
        check_low_res_size(6, 16)
    with pytest.raises(ValueError, match="must divide"):
        check_low_res_size(16, 16)
    with pytest.raises(ValueError, match="must divide"):
        DigitsDataModule(image_size=16, low_res_size=5).setup()
