"""Two gloo processes with uneven shards give the single-process numbers; the reference is not double counted."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from beatgans.metrics import RandomExtractor, compute_reference_stats, evaluate_samples, shard_bounds

METRICS = ["fid", "sfid", "is", "pr", "kid"]
KW = dict(is_split_size=10, kid_subsets=4, kid_subset_size=15, batch_size=6)


def _data():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    gen = rng.integers(30, 220, (33, 8, 8, 3), dtype=np.uint8)  # 33 = 17 + 16: uneven shards
    return ref, gen


def _worker(rank: int, world: int, port: int, queue) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        ref_imgs, gen = _data()
        extractor = RandomExtractor()
        ref = compute_reference_stats(ref_imgs, extractor, {"dataset": "toy"})
        start, end = shard_bounds(len(gen), rank, world)
        out = evaluate_samples(gen[start:end], ref, METRICS, extractor, **KW)
        queue.put((rank, end - start, out))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_equals_single_process():
    ref_imgs, gen = _data()
    extractor = RandomExtractor()
    single = evaluate_samples(gen, compute_reference_stats(ref_imgs, extractor, {"dataset": "toy"}), METRICS,
                              extractor, **KW)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(n for _, n, _ in results) == [16, 17]
    for _, _, out in results:
        assert out["num_samples"] == 33
        for key, value in single.items():
            # Float64 sums in a different order: equal to round-off; set-based metrics exactly equal.
            assert out[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        assert (out["precision"], out["recall"], out["is"]) == (single["precision"], single["recall"], single["is"])
