"""Benchmark: precision/recall (k = 3) on CPU, ours (row-blocked) vs torch-fidelity's PRC, same features.

ADM's setting is 50k generated against 10k reference 2048-d Inception features. Each method runs in a
fresh child process, so its peak resident memory (ru_maxrss growth during the computation) is its own.

    OMP_NUM_THREADS=1 python benchmarks/precision_recall.py                     # 50k x 10k x 2048
    python benchmarks/precision_recall.py --num-gen 5000 --num-ref 1000 --tf-modes part full
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time


def make_features(num_gen: int, num_ref: int, dim: int, seed: int = 0):
    """Non-negative Gaussian-magnitude features (like post-ReLU pool3), the generated set slightly shifted."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(num_ref, dim, generator=g).abs()
    gen = torch.randn(num_gen, dim, generator=g).abs() * 1.05 + 0.02
    return gen, ref


def _run(method: str, args: dict, queue) -> None:
    import torch
    from torch_fidelity.metric_prc import prc_features_to_metric

    from beatgans.metrics.feature_metrics import PrecisionRecall

    gen, ref = make_features(args["num_gen"], args["num_ref"], args["dim"])
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu_start = time.perf_counter(), time.process_time()
    if method == "ours":
        metric = PrecisionRecall(k=3, block_size=args["block_size"])
        metric.set_reference(ref)
        metric.update(gen)
        out = {k: float(v) for k, v in metric.compute().items()}
    else:
        res = prc_features_to_metric(gen, ref, prc_neighborhood=3, prc_batch_size=args["block_size"],
                                     save_cpu_ram=method == "torch-fidelity-part", verbose=False)
        out = {"precision": res["precision"], "recall": res["recall"]}
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    after_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Wall time suffers on a shared machine; process CPU time is the fairer comparison there.
    queue.put({"method": method, "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
               "peak_extra_mib": round((after_kb - before_kb) / 1024, 1),
               "peak_rss_mib": round(after_kb / 1024, 1), "threads": torch.get_num_threads(), **out})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-gen", type=int, default=50000)
    parser.add_argument("--num-ref", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--block-size", type=int, default=10000)
    parser.add_argument("--tf-modes", nargs="*", default=["part"], choices=["part", "full"],
                        help="torch-fidelity variants: part (save_cpu_ram) and/or full (N x N matrices in RAM)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = vars(parser.parse_args())
    methods = ["ours"] + [f"torch-fidelity-{m}" for m in args["tf_modes"]]
    ctx = mp.get_context("spawn")
    results = []
    for method in methods:
        queue = ctx.Queue()
        proc = ctx.Process(target=_run, args=(method, args, queue))
        proc.start()
        results.append(queue.get())
        proc.join()
        print(json.dumps(results[-1]), flush=True)
    report = {"setting": {k: args[k] for k in ("num_gen", "num_ref", "dim", "block_size")}, "results": results}
    if args["out"]:
        with open(args["out"], "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
