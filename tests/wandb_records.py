"""Read what an offline wandb run wrote (test helper): the run record and the history rows of a `run-<id>.wandb`.

The file is wandb's `:W&B` header followed by LevelDB-log framed protobuf `Record`s (32 KiB blocks, 7-byte chunk
headers: crc32, length, type 1 full / 2 first / 3 middle / 4 last). wandb >= 0.2x no longer ships a Python reader.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

_BLOCK = 32768
_HEADER = 7


def _chunks(data: bytes):
    pos, pending = _HEADER, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        chunk, pos = data[pos : pos + length], pos + length
        if kind == 0:
            break
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def read_run(path: str | Path) -> tuple[dict, list[dict]]:
    """({run_id, project, job_type}, [history row {key: value}]) of one offline `.wandb` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb run file"
    run, rows = {}, []
    for chunk in _chunks(data):
        record = pb.Record()
        record.ParseFromString(chunk)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = {"run_id": record.run.run_id, "project": record.run.project, "job_type": record.run.job_type}
        elif kind == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return run, rows
