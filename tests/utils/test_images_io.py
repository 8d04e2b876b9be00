import json

import numpy as np
import torch

from beatgans.utils.images import make_grid_uint8, save_grid_png, to_uint8
from beatgans.utils.io import save_samples_npz, update_json


def test_to_uint8_quantises_like_adm():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 1.5]).view(1, 1, 1, 6)
    out = to_uint8(x).flatten().tolist()
    # ((x + 1) * 127.5).clamp(0, 255) truncated: 0, 0.1275 -> 0, 127.5 -> 127, 191.25 -> 191, 255, clamp 255
    assert out == [0, 0, 127, 191, 255, 255]
    assert to_uint8(torch.zeros(2, 3, 4, 5)).shape == (2, 4, 5, 3)


def test_grid_layout_and_png(tmp_path):
    imgs = np.stack([np.full((2, 2, 1), i * 10, np.uint8) for i in range(6)])
    grid = make_grid_uint8(imgs, nrow=3, pad=1)
    assert grid.shape == (2 * 3 + 1, 3 * 3 + 1, 1)
    assert grid[1, 1, 0] == 0 and grid[1, 4, 0] == 10 and grid[4, 1, 0] == 30 and grid[0, 0, 0] == 128
    path = save_grid_png(tmp_path / "g.png", imgs, nrow=3, scale=2)
    from PIL import Image

    assert Image.open(path).size == (20, 14)


def test_npz_is_adm_format_and_json_merges(tmp_path):
    imgs = np.zeros((3, 4, 4, 3), np.uint8)
    save_samples_npz(tmp_path / "s.npz", imgs, np.array([1, 2, 3]))
    data = np.load(tmp_path / "s.npz")
    assert data["arr_0"].shape == (3, 4, 4, 3) and data["arr_1"].tolist() == [1, 2, 3]
    update_json(tmp_path / "m.json", {"a": torch.tensor(1.5)})
    update_json(tmp_path / "m.json", {"b": np.float32(2.0)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1.5, "b": 2.0}
