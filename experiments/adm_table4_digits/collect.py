"""Gather the sweep runs of run.sh into results.json and results.md (measured numbers only).

    python experiments/adm_table4_digits/collect.py outputs/adm_table4_digits --out experiments/adm_table4_digits
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = ["target_accuracy", "fid", "is", "precision", "recall"]


def collect(root: Path) -> dict:
    """{"rows": [...], "classifier": train metrics, "models": train metrics} from a run.sh output folder."""
    rows = []
    for model in ("uncond", "cond"):
        for job in sorted((root / f"sample_{model}").glob("*/metrics.json")):
            m = json.loads(job.read_text())
            rows.append({"model": "unconditional" if model == "uncond" else "conditional",
                         "scale": m["guidance"]["scale"], "sampler": m["sampler"], "steps": m["steps"],
                         "num_samples": m["num_samples"], "run_dir": str(job.parent),
                         **{k: m.get(k) for k in COLUMNS}})
    rows.sort(key=lambda r: (r["model"] != "unconditional", r["scale"]))
    train = {name: json.loads((root / name / "metrics.json").read_text())
             for name in ("uncond", "cond", "classifier") if (root / name / "metrics.json").is_file()}
    return {"rows": rows, "training": train}


def real_baseline(root: Path, num: int, seed: int = 0) -> dict:
    """The same metrics for `num` real digits (a seeded subset, ADM-quantised) at the samples' resolution,
    with their true labels as targets: what a perfect model would score with this many samples. The
    reference statistics include these images, so it is a slightly optimistic floor."""
    import numpy as np
    import torch

    from beatgans.data.digits import load_digits
    from beatgans.metrics.digits import target_accuracy
    from beatgans.metrics.evaluate import evaluate_samples

    size = json.loads((root / "sample_uncond" / "0" / "metrics.json").read_text())
    size = int(np.load(size["samples_npz"])["arr_0"].shape[1])
    images, labels = load_digits(size)
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:num]
    u8 = ((images[idx] + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = evaluate_samples(u8, None, metrics=["fid", "is", "precision", "recall"], extractor="digits")
    out["target_accuracy"] = target_accuracy(u8, labels[idx].numpy())
    return {"model": f"real digits ({num})", "scale": None, **{k: out.get(k) for k in COLUMNS}}


def to_markdown(results: dict) -> str:
    def fmt(v):
        return "-" if v is None else f"{v:.3f}"

    lines = ["| model | guidance | target acc. | FID | IS | precision | recall |", "|---|---|---|---|---|---|---|"]
    for r in results["rows"] + ([results["real"]] if results.get("real") else []):
        g = "-" if r["scale"] is None else "none (s = 0)" if r["scale"] == 0 else f"s = {r['scale']:g}"
        lines.append(f"| {r['model']} | {g} | " + " | ".join(fmt(r[k]) for k in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("root", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    results = collect(args.root)
    if results["rows"]:
        results["real"] = real_baseline(args.root, results["rows"][0]["num_samples"])
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results_table.md").write_text(to_markdown(results))
    print(to_markdown(results))


if __name__ == "__main__":
    main()
