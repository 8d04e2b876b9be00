import numpy as np
import pytest
import torch
from PIL import Image

from beatgans.data import DataError, load_digits
from beatgans.data.datamodules import (
    DigitsDataModule,
    ImageFolderDataModule,
    TorchvisionDataModule,
    Toy2DDataModule,
)
from beatgans.data.image_folder import ImageFolderDataset, center_crop_adm
from beatgans.data.toy2d import gaussian_grid_modes, sample_gaussian_grid


def test_digits_range_shape_labels():
    x, y = load_digits(16)
    assert x.shape == (1797, 1, 16, 16) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert y.dtype == torch.int64 and set(y.tolist()) == set(range(10))
    x8, _ = load_digits(8)
    # 8x8 keeps sklearn's originals: intensities k/16 mapped to [-1, 1].
    assert torch.allclose((x8 + 1) / 2 * 16, ((x8 + 1) / 2 * 16).round(), atol=1e-5)


def test_digits_datamodule_split_and_batches():
    dm = DigitsDataModule(image_size=8, batch_size=32, val_fraction=0.1, seed=3)
    dm.setup()
    assert len(dm._train) + len(dm._val) == 1797 and len(dm._val) == 180
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 8, 8) and y.shape == (32,)
    assert dm.num_classes == 10 and dm.channels == 1


def test_digits_metadata_mismatch_is_clear():
    with pytest.raises(DataError, match="1 channel"):
        DigitsDataModule(channels=3)
    with pytest.raises(DataError, match="10 classes"):
        DigitsDataModule(num_classes=7)


def test_epoch_order_is_seeded_and_reshuffled():
    dm = DigitsDataModule(image_size=8, batch_size=64, seed=0)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)
    a = next(iter(loader))[1]
    loader.sampler.set_epoch(0)
    b = next(iter(loader))[1]
    loader.sampler.set_epoch(1)
    c = next(iter(loader))[1]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_gaussian_grid_modes_and_samples():
    modes = gaussian_grid_modes()
    assert modes.shape == (25, 2)
    assert sorted(set(modes[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    pts, ids = sample_gaussian_grid(5000, std=0.05, generator=torch.Generator().manual_seed(0))
    assert (pts - modes[ids]).norm(dim=1).max() < 0.05 * 6
    assert len(ids.unique()) == 25
    dm = Toy2DDataModule(batch_size=128, num_points=1000)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (128, 2)


def _write_images(root, names, size=(40, 30), mode="RGB"):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(
            np.random.RandomState(0).randint(0, 255, (size[1], size[0], 3), np.uint8)
        ).convert(mode).save(path)


def test_image_folder_labels_from_folders_and_prefix(tmp_path):
    _write_images(tmp_path / "a", ["cat/1.png", "cat/2.png", "dog/3.png"])
    ds = ImageFolderDataset(tmp_path / "a", image_size=16, labels="folder")
    x, y = ds[2]
    assert x.shape == (3, 16, 16) and -1 <= x.min() and x.max() <= 1 and int(y) == 1
    assert ds.classes == ["cat", "dog"]
    _write_images(tmp_path / "b", ["n01_1.png", "n02_1.png", "n01_2.jpg"])
    ds = ImageFolderDataset(tmp_path / "b", image_size=8, labels="prefix")
    assert ds.labels.tolist() == [0, 0, 1] and ds.classes == ["n01", "n02"]


def test_center_crop_matches_adm_geometry():
    img = Image.fromarray(np.zeros((100, 300, 3), np.uint8))
    out = center_crop_adm(img, 32)
    assert out.shape == (32, 32, 3)


def test_image_folder_errors_name_path_and_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderDataset(tmp_path / "missing", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="contains no images"):
        ImageFolderDataset(tmp_path / "empty", 8)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x_1.png").write_bytes(b"not an image")
    ds = ImageFolderDataset(tmp_path / "bad", 8, labels="prefix")
    with pytest.raises(DataError, match="Cannot read image .*x_1.png"):
        ds[0]
    _write_images(tmp_path / "loose", ["a.png"])
    with pytest.raises(DataError, match="labels are missing"):
        ImageFolderDataModule(root=str(tmp_path / "loose"), image_size=8, labels="folder", num_classes=2)


def test_torchvision_offline_missing_gives_one_clear_sentence(tmp_path):
    dm = TorchvisionDataModule(name="cifar10", root=str(tmp_path / "c10"), download=False)
    with pytest.raises(DataError, match="CIFAR10 is not available under .* supply it by placing"):
        dm.setup()


def test_toy2d_config_instantiates(tmp_path):
    from hydra.utils import instantiate

    from tests.conftest import compose

    dm = instantiate(compose("train", ["data=toy2d"], output_dir=tmp_path).data)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (256, 2) and (y == -1).all()
    with pytest.raises(DataError, match="2-D points"):
        Toy2DDataModule(image_size=16)
