"""Which whole rows and columns of the grid do the finished runs leave empty? A census of modes.py's output.

Reads every ``results/<tag>/modes_<arm>_seed<s>.json`` (written by ``modes.py``) and, per run and
generator, names the grid lines (rows y = const, columns x = const) on which no mode reaches the
coverage threshold, plus the uncovered modes that lie on no such line; then, per arm, how many
empty lines lie at each distance from the grid's centre. Writes ``results/<tag>/lines.md`` and
prints it.

    PYTHONPATH=src .venv/bin/python experiments/diffusion_gan_toy/lines.py --tag ct400k
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from beatgans.gan import MIN_COUNT  # the coverage threshold of loop.py's metrics and modes.py

HERE = Path(__file__).resolve().parent


def _empty(counts, modes, min_count: int) -> tuple[list[tuple[str, float]], list[tuple[float, float]]]:
    """``empty_lines`` before formatting: ([("row y", y) or ("column x", x) of each empty line], stray)."""
    counts, modes = torch.as_tensor(counts), torch.as_tensor(modes, dtype=torch.float64)
    covered = counts >= min_count
    lines, on_line = [], torch.zeros_like(covered)
    for axis, label in ((1, "row y"), (0, "column x")):
        for v in torch.unique(modes[:, axis]).tolist():
            line = torch.isclose(modes[:, axis], torch.tensor(v, dtype=torch.float64))
            if not covered[line].any():
                lines.append((label, v))
                on_line |= line
    stray = [(round(float(x), 2), round(float(y), 2)) for x, y in modes[~covered & ~on_line]]
    return lines, stray


def empty_lines(counts, modes, min_count: int = MIN_COUNT) -> tuple[list[str], list[tuple[float, float]]]:
    """Grid lines with no covered mode, and the uncovered modes off those lines.

    counts: (M,) samples per mode; modes: (M, 2) centres on a square grid. Returns
    (["row y = -0.71", "column x = +0.00", ...], [(x, y) of each uncovered mode on no empty line]).
    """
    lines, stray = _empty(counts, modes, min_count)
    return [f"{label} = {v:+.2f}" for label, v in lines], stray


def _runs(dest: Path) -> list[tuple[str, str, dict]]:
    """(arm, seed, modes.py result) for every ``modes_<arm>_seed<s>.json`` in ``dest``, sorted by file name."""
    out = []
    for path in sorted(dest.glob("modes_*_seed*.json")):
        m = re.fullmatch(r"modes_(.+)_seed(\d+)\.json", path.name)
        out.append((m.group(1), m.group(2), json.loads(path.read_text())))
    if not out:
        raise SystemExit(f"no modes_*.json in {dest}: run modes.py on the finished runs first.")
    return out


def census(dest: Path, min_count: int = MIN_COUNT) -> str:
    """Markdown table over the modes_*.json files in ``dest``: arm, seed, then per generator the
    covered count, the empty lines and the stray uncovered modes."""
    rows = []
    for arm, seed, res in _runs(dest):
        cells = []
        for name in ("G", "EMA G"):
            lines, stray = empty_lines(res[name], res["modes"], min_count)
            n = sum(c >= min_count for c in res[name])
            cells += [str(n), ", ".join(lines) or "-", " ".join(f"({x:+.2f}, {y:+.2f})" for x, y in stray) or "-"]
        rows.append(f"| {arm} | {seed} | " + " | ".join(cells) + " |")
    head = ("| arm | seed | modes (G) | empty lines (G) | other uncovered (G) "
            "| modes (EMA G) | empty lines (EMA G) | other uncovered (EMA G) |\n|" + "---|" * 8)
    return "\n".join([head, *rows]) + "\n"


def by_distance(dest: Path, min_count: int = MIN_COUNT) -> str:
    """Markdown table: per arm and generator, the runs, those with an empty line, and the empty lines
    counted by their distance from the grid's centre (|x| of a column, |y| of a row; 0 exists only
    on odd grids). Answers "which lines stay empty: the border, the centre, or anywhere?"."""
    tally: dict[tuple[str, str], list] = {}
    for arm, _, res in _runs(dest):
        for name in ("G", "EMA G"):
            lines, _ = _empty(res[name], res["modes"], min_count)
            t = tally.setdefault((arm, name), [0, 0, {}])
            t[0] += 1
            t[1] += bool(lines)
            for _, v in lines:
                d = f"{abs(v):.2f}"
                t[2][d] = t[2].get(d, 0) + 1
    head = ("| arm | generator | runs | runs with an empty line | empty lines by distance from the centre |\n|"
            + "---|" * 5)
    rows = [f"| {arm} | {name} | {n} | {stuck} | "
            + (", ".join(f"{d}: {k}" for d, k in sorted(c.items())) or "-") + " |"
            for (arm, name), (n, stuck, c) in tally.items()]
    return "\n".join([head, *rows]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tag", default="ct400k")
    args = ap.parse_args()
    dest = HERE / "results" / args.tag
    table = census(dest) + "\n" + by_distance(dest)
    (dest / "lines.md").write_text(table)
    print(table, end="")


if __name__ == "__main__":
    main()
