"""Under DDP every rank resumes its own RNG state from the loader's checkpoint state (two gloo processes)."""

from __future__ import annotations

import os

import torch
import torch.multiprocessing as mp


def _rank(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.utils.data import TensorDataset

    from beatgans.data.datamodules import ResumableDataLoader, ResumableSampler

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(100 + rank)  # ranks' streams differ, as random flips / latents do in training
    data = TensorDataset(torch.arange(16.0))
    loader = ResumableDataLoader(data, batch_size=2, sampler=ResumableSampler(data, num_replicas=world, rank=rank,
                                                                              shuffle=True, seed=0))
    it = iter(loader)
    next(it)
    state = loader.state_dict()  # every rank calls it, as Lightning's checkpoint dump does
    expected = torch.rand(3)  # what this rank draws next in the uninterrupted run
    torch.manual_seed(999)  # a fresh process would start from another state
    resumed = ResumableDataLoader(data, batch_size=2, sampler=ResumableSampler(data, num_replicas=world, rank=rank,
                                                                               shuffle=True, seed=0))
    resumed.load_state_dict(state)
    batch = next(iter(resumed))
    got = torch.rand(3)
    torch.save({"expected": expected, "got": got, "batch": batch[0], "n_states": len(state["rng_per_rank"])},
               os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_each_rank_resumes_its_own_random_stream(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["n_states"] == r1["n_states"] == 2
    for r in (r0, r1):
        assert torch.equal(r["got"], r["expected"])  # bit-identical continuation on each rank
    assert not torch.equal(r0["got"], r1["got"])  # and the ranks did not get rank 0's state
