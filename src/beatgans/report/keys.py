"""One name per metric across every entry point (docs/metrics.md), and the aliases the report still reads.

Today the same number reaches `metrics.json` under different keys depending on who wrote it: the training
callback's final evaluation writes `final/fid`, its periodic evaluation logs `metrics/fid` into the history,
`beatgans-sample` / `beatgans-eval` write `fid`, `beatgans-nll` writes `nll/total_bpd`, and training's
validation writes `val/bpd`. The report maps all of them onto the canonical key before it aggregates, so
one table column holds one quantity whichever entry point produced it.
"""

from __future__ import annotations

from typing import Any, Mapping

# Sample-quality metrics: the numbers of one set of generated samples (beatgans.metrics.evaluate_samples).
SAMPLE_METRICS = ("fid", "sfid", "is", "is_std", "precision", "recall", "kid", "kid_std", "target_accuracy")

# canonical key -> keys that mean the same quantity, in priority order (the first present one wins, after
# the canonical key itself). `bpd` prefers beatgans-nll's full-split number over training's estimate on
# the first `val_bpd_batches` validation batches.
ALIASES: dict[str, tuple[str, ...]] = {
    **{name: (f"final/{name}", f"metrics/{name}") for name in SAMPLE_METRICS},
    "bpd": ("nll/total_bpd", "val/bpd"),
    "prior_bpd": ("nll/prior_bpd",),
    "decoder_bpd": ("nll/decoder_bpd",),
    "nll_images": ("nll/num_images",),
}

_TO_CANONICAL = {alias: name for name, aliases in ALIASES.items() for alias in aliases}


def canonical_key(key: str) -> str:
    """The canonical name of a metric key (`final/fid` -> `fid`); unknown keys are returned unchanged."""
    return _TO_CANONICAL.get(key, key)


def canonical_metrics(raw: Mapping[str, Any]) -> dict[str, float]:
    """Numeric entries of a `metrics.json` (or one history row) under their canonical keys.

    Non-numeric values (paths, nested dicts, strings, booleans) are dropped: they are not metrics. Where
    several aliases of one canonical key are present, the canonical key wins, then the aliases in the
    order `ALIASES` lists them.
    """
    numeric = {k: float(v) for k, v in raw.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out: dict[str, float] = {}
    for key, value in numeric.items():
        name = canonical_key(key)
        if name == key:
            out[key] = value
    for name, aliases in ALIASES.items():
        if name in out:
            continue
        for alias in aliases:
            if alias in numeric:
                out[name] = numeric[alias]
                break
    return out
