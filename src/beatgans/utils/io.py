"""Atomic writes for everything the run-directory contract promises (metrics.json, npz, ckpt)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

# `<run>/wandb_run_id.txt`: the wandb run id of a training run (written by beatgans.lit.loggers, read by the
# entry points that attach later results to that run, beatgans.cli.attach).
WANDB_ID_FILE = "wandb_run_id.txt"

def atomic_write(path: str | os.PathLike, write: Callable[[str], None], overwrite: bool = True) -> Path:
    """Call `write(tmp_path)` then rename the temporary file onto `path` (same directory, so atomic).

    With `overwrite=False` the file is published by a hard link, which fails if `path` exists: a result
    is never replaced, even by a concurrent writer (`FileExistsError`, the temporary file removed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def write_json(path: str | os.PathLike, data: dict, overwrite: bool = True) -> Path:
    """Write `data` as indented JSON atomically (tensors / numpy scalars become numbers). The file is strict
    JSON: a NaN or infinity is written as null (Python's `NaN` token is not JSON)."""

    def _write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(_jsonable(data), f, indent=2, sort_keys=True)
            f.write("\n")

    return atomic_write(path, _write, overwrite)


def update_json(path: str | os.PathLike, data: dict) -> dict:
    """Merge `data` into the JSON object at `path` (created when missing) atomically; return the result."""
    path = Path(path)
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(_jsonable(data))
    write_json(path, current)
    return current


def save_samples_npz(path: str | os.PathLike, images_uint8_nhwc: np.ndarray, labels: np.ndarray | None,
                     overwrite: bool = True) -> Path:
    """ADM sample format: `arr_0` uint8 (N, H, W, C) and, when given, `arr_1` int64 labels (N,)."""

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            if labels is None:
                np.savez(f, images_uint8_nhwc)
            else:
                np.savez(f, images_uint8_nhwc, labels)

    return atomic_write(path, _write, overwrite)
