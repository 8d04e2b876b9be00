"""Every finished 25-Gaussians run of one protocol on one page: modes covered per seed, per setting.

Reads every ``runs/*/metrics.json``, keeps the runs of one protocol (by default the co-author
group's, run with ``--tag ct*``: batch 100, z_dim 50, 2,000 fixed points, 5x5 grid), groups them by
setting (arm, D's learning rate relative to G's, width, G's initial output gain, and the training
history: ``400k`` from scratch, ``400k+400k`` for a run continued with ``--init-from``, whose Adam
states restart) and counts a seed once when a rerun repeats it. Writes ``results/summary.md`` (one
row per setting: modes covered by the EMA G per seed, the means, how many seeds cover every mode)
and ``results/summary.png`` (the same per seed, one row per setting), and prints the table.

    PYTHONPATH=src .venv/bin/python experiments/diffusion_gan_toy/summary.py
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import ARMS, RESULTS, RUNS, _num_modes  # noqa: E402

log = logging.getLogger("summary")

# the co-author group's protocol ("Third protocol" in the README): run.py's --batch 100 --z-dim 50
# --dataset-size 2000 --scale 2.828 with Adam lr 2e-4, betas (0.9, 0.999)
CT_PROTOCOL = {"batch": 100, "z_dim": 50, "dataset_size": 2000, "lr": 2e-4, "betas": [0.9, 0.999]}


@dataclass
class Run:
    """One finished run: its directory name, arm, seed, metrics.json and training history."""

    name: str
    arm: str
    seed: int
    metrics: dict
    history: list["Run"] = field(default_factory=list)  # the runs it continued, oldest first, then itself
    repeats: list[str] = field(default_factory=list)  # names of identical reruns, counted as this run


def parse_name(name: str) -> tuple[str, int] | None:
    """(arm, seed) of a run directory ``<tag>_<arm>_seed<s>`` (or the early ``<arm>_seed<s>``); None
    when the name holds no known arm. The longest matching arm wins (``..._sigma0.2`` over ``...``)."""
    m = re.fullmatch(r"(.+)_seed(\d+)", name)
    if m is None:
        return None
    head = m.group(1)
    arms = [a for a in ARMS if head == a or head.endswith("_" + a)]
    return (max(arms, key=len), int(m.group(2))) if arms else None


def load_runs(runs: Path = RUNS) -> dict[str, Run]:
    """Every run under ``runs`` with a finished metrics.json (final coverage recorded), by name, each
    with its history of stretches followed back through ``init_from``."""
    out = {}
    for path in sorted(runs.glob("*/metrics.json")):
        parsed = parse_name(path.parent.name)
        metrics = json.loads(path.read_text())
        if parsed is None or "ema_modes_covered" not in metrics:
            continue
        out[path.parent.name] = Run(path.parent.name, *parsed, metrics)
    for run in out.values():
        run.history = _history(run, out)
    return out


def _history(run: Run, runs: dict[str, Run]) -> list[Run]:
    """The stretches of ``run``'s training, oldest first, ending with ``run`` (``init_from`` names the
    run it continued; only its directory name is used, so the records survive a move of the checkout)."""
    chain, cur = [run], run
    while src := cur.metrics.get("init_from"):
        parent = Path(src).name
        if parent not in runs or runs[parent] in chain:
            raise ValueError(f"{run.name}: continued from {parent}, whose metrics.json is missing or loops back")
        cur = runs[parent]
        chain.append(cur)
    return chain[::-1]


def in_protocol(metrics: dict, protocol: dict, grid: int) -> bool:
    """Whether a run's recorded settings match ``protocol`` (every key equal) and its grid is ``grid``."""
    return metrics.get("grid", 5) == grid and all(metrics.get(k) == v for k, v in protocol.items())


def stretch(run: Run) -> tuple:
    """What one stretch of training depends on besides the seed: (arm, lr_d / lr, width, G output
    gain, iterations)."""
    m = run.metrics
    ratio = round((m.get("lr_d") or m["lr"]) / m["lr"], 4)
    return run.arm, ratio, m.get("hidden", 128), m.get("g_out_gain", 1.0), int(m["iterations"])


def setting(run: Run) -> tuple:
    """A run's setting: the stretches of its history, oldest first (a continuation restarts the Adam
    states, so 400k+400k is not the same setting as 800k from scratch)."""
    return tuple(stretch(r) for r in run.history)


def _kilo(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def _describe(st: tuple) -> str:
    arm, ratio, hidden, gain, _ = st
    parts = ["plain GAN" if arm == "gan" else arm]
    if ratio != 1:
        parts.append(f"D lr x{ratio:g}")
    if hidden != 128:
        parts.append(f"width {hidden}")
    if gain != 1:
        parts.append(f"G out gain {gain:g}")
    return ", ".join(parts)


def label(key: tuple) -> str:
    """A setting's row label, e.g. ``diffusion_gan_uniformT500_noclean_sigma0.2, D lr x0.25, 400k+400k``
    (stretches that change the setting are listed one by one: ``A, 400k, then B, 100k``)."""
    if len({st[:4] for st in key}) == 1:
        return f"{_describe(key[0])}, {'+'.join(_kilo(st[4]) for st in key)}"
    return ", then ".join(f"{_describe(st)}, {_kilo(st[4])}" for st in key)


def _arm(key: tuple) -> str:
    """The arm of a setting's last stretch (the one its numbers were measured on)."""
    return key[-1][0]


def group(runs: dict[str, Run], protocol: dict, grid: int) -> dict[tuple, dict[int, Run]]:
    """Runs of the protocol by setting, then seed. A seed met twice in one setting is a rerun: kept
    once when its final coverage repeats the first run's, a ValueError when it does not (the toy loop
    is deterministic on CPU, so a difference means the settings differ in a way not recorded)."""
    out: dict[tuple, dict[int, Run]] = {}
    for run in runs.values():
        if not in_protocol(run.metrics, protocol, grid):
            continue
        seeds = out.setdefault(setting(run), {})
        first = seeds.setdefault(run.seed, run)
        if first is not run:
            keys = ("modes_covered", "ema_modes_covered", "hq_share", "ema_hq_share")
            if any(first.metrics[k] != run.metrics[k] for k in keys):
                raise ValueError(f"{run.name} and {first.name}: same setting and seed, different results")
            if run.name not in first.repeats:
                first.repeats.append(run.name)
            log.info("%s repeats %s (identical coverage): counted once", run.name, first.name)
    return dict(sorted(out.items(), key=lambda kv: (sum(st[4] for st in kv[0]), _arm(kv[0]) != "gan", kv[0])))


def _tag(name: str, run: Run) -> str:
    """The ``--tag`` of a run directory named ``<tag>_<arm>_seed<s>`` ("-" for the untagged early runs)."""
    return name[: -len(f"{run.arm}_seed{run.seed}")].rstrip("_") or "-"


def table(groups: dict[tuple, dict[int, Run]]) -> str:
    """The markdown table: one row per setting."""
    lines = ["| setting | seeds | modes covered, EMA G (per seed) | mean (EMA G) | mean (G) "
             "| all modes (EMA G) | HQ share (EMA G) | runs |",
             "|---|---|---|---|---|---|---|---|"]
    for key, seeds in groups.items():
        rs = [seeds[s] for s in sorted(seeds)]
        n = _num_modes(rs[0].metrics)
        ema = [r.metrics["ema_modes_covered"] for r in rs]
        raw = [r.metrics["modes_covered"] for r in rs]
        hq = sum(r.metrics["ema_hq_share"] for r in rs) / len(rs)
        tags = sorted({_tag(name, r) for r in rs for name in (r.name, *r.repeats)})
        lines.append(f"| {label(key)} | {', '.join(map(str, sorted(seeds)))} | {', '.join(f'{v:.0f}' for v in ema)} "
                     f"| {sum(ema) / len(ema):.1f}/{n} | {sum(raw) / len(raw):.1f}/{n} "
                     f"| {sum(v == n for v in ema)} of {len(ema)} | {hq:.3f} | {', '.join(tags)} |")
    return "\n".join(lines)


def plot(groups: dict[tuple, dict[int, Run]], path: Path) -> None:
    """Modes covered by the EMA G per seed (dots) and their mean (bar), one row per setting."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = list(groups)
    fig = Figure(figsize=(12, 0.3 * len(keys) + 1.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    n = 25
    for i, key in enumerate(keys):
        rs = [groups[key][s] for s in sorted(groups[key])]
        n = _num_modes(rs[0].metrics)
        ema = [r.metrics["ema_modes_covered"] for r in rs]
        color = "tab:red" if _arm(key) == "gan" else "tab:blue"
        y = len(keys) - 1 - i
        jitter = [(j - (len(ema) - 1) / 2) * 0.08 for j in range(len(ema))]
        ax.scatter(ema, [y + d for d in jitter], s=14, color=color, alpha=0.7, zorder=3)
        mean = sum(ema) / len(ema)
        ax.plot([mean, mean], [y - 0.35, y + 0.35], color="black", lw=1.5, zorder=4)
    ax.axvline(n, color="gray", ls=":", lw=1)
    ax.set_yticks(range(len(keys)))
    # the plot's labels name the diffusion arms "DGAN_..." to leave room for the data
    ax.set_yticklabels([label(k).replace("diffusion_gan", "DGAN").replace(", then ", " -> ") for k in reversed(keys)],
                       fontsize=7)
    ax.set_xlim(0, n + 1)
    ax.set_xlabel(f"modes covered of {n} by the EMA G")
    ax.set_title("25 Gaussians, co-author group's protocol (summary.py)\ndots: seeds, bar: mean; red: plain GAN, "
                 "blue: Diffusion-GAN (DGAN_<arm>)", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", type=int, default=5, help="modes per axis of the runs to summarise")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where summary.md and summary.png go")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    groups = group(load_runs(), CT_PROTOCOL, args.grid)
    if not groups:
        raise SystemExit("no finished run of the ct protocol under runs/: train some with run.py --tag ct... first.")
    text = table(groups)
    stem = "summary" if args.grid == 5 else f"summary_grid{args.grid}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.md").write_text(
        "Every finished run of the co-author group's protocol (`summary.py`; rows by setting, seeds counted "
        "once)\n\n" + text + "\n")
    plot(groups, args.out / f"{stem}.png")
    log.info("%s\n\nwrote %s.md and %s.png in %s", text, stem, stem, args.out)


if __name__ == "__main__":
    main()
