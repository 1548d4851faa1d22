"""How close flow matching's likelihood ODE comes to its converged value with each grid of RK4 steps, on a
trained checkpoint's test split:

    python scripts/bench_likelihood_grid.py ckpt_path=<run>/checkpoints/last.ckpt model=flow_matching \\
        dataset=digits [--grids 32:1 16:3 24:3 32:3] [--reference 256:3] [--examples 359] [--seed 0]

A grid ``STEPS:POWER`` is ``model.likelihood_steps`` and ``model.likelihood_step_power``: the steps end at
t = 1 - (i / STEPS) ** POWER (1: evenly spaced). Every grid scores the same examples from the same seed,
so the same dequantization noise and Hutchinson probes: the differences from the reference grid are the
solver's error alone. The table gives the mean (bits/dim on images, nats on vectors), its difference from
the reference with that difference's standard error over examples, and the median and largest difference
per example.
"""

import argparse
import logging
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from genbench.data.pixels import bits_per_dim  # noqa: E402
from genbench.errors import ConfigError  # noqa: E402
from genbench.evaluation.device import device_name  # noqa: E402
from genbench.evaluation.likelihood import seeded_log_likelihoods  # noqa: E402
from genbench.models.flow_matching import FlowMatching  # noqa: E402
from genbench.trained_run import load_trained, run_script  # noqa: E402

DEFAULT_GRIDS = ("32:1", "16:3", "24:3", "32:3")


def parse_grid(text: str) -> tuple[int, float]:
    """``STEPS:POWER`` -> (steps, power), checked as the model's options are."""
    steps, _, power = text.partition(":")
    try:
        grid = int(steps), float(power or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: want STEPS:POWER, e.g. 32:3") from None
    if grid[0] < 1 or grid[1] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: steps and power must be >= 1")
    return grid


def scores(model: FlowMatching, x: Tensor, grid: tuple[int, float], seed: int, batch: int) -> Tensor:
    """Per-example negative log-likelihood of ``x`` (bits/dim on images, nats on vectors) on ``grid``,
    from ``seed``; the model's own grid is restored afterwards."""
    kept = model.hp
    model.hp = replace(kept, likelihood_steps=grid[0], likelihood_step_power=grid[1])
    try:
        nll = -seeded_log_likelihoods(model, x.split(batch), seed)
    finally:
        model.hp = kept
    return bits_per_dim(nll, model.data_dim) if model.is_image else nll


def table(rows: list[dict], unit: str, reference: str) -> str:
    lines = [f"| grid (steps:power) | network calls | mean {unit} | minus the reference's ({reference}) "
             "| its standard error | median, largest per example | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['grid']} | {r['calls']} | {r['mean']:.5f} | {r['diff']:+.5f} | {r['se']:.5f} "
              f"| {r['median']:.5f}, {r['max']:.4f} | {r['seconds']:.1f} |" for r in rows]
    return "\n".join(lines)


def compare(model: FlowMatching, x: Tensor, grids: list[tuple[int, float]], reference: tuple[int, float],
            seed: int = 0, batch: int = 256) -> list[dict]:
    """One row per grid, the reference last: its scores against the reference's, example by example."""
    if len(set(grids)) < len(grids) or reference in grids:
        raise ValueError(f"grids {grids} and reference {reference}: each grid once, the reference apart")
    results = {}
    for grid in [*grids, reference]:
        start = time.perf_counter()
        results[grid] = scores(model, x, grid, seed, batch), time.perf_counter() - start
    ref = results[reference][0]
    rows = []
    for grid, (value, seconds) in results.items():
        d = value - ref
        se = (d.std() / math.sqrt(len(d))).item() if len(d) > 1 else 0.0
        rows.append({"grid": f"{grid[0]}:{grid[1]:g}", "calls": 4 * grid[0], "mean": value.mean().item(),
                     "diff": d.mean().item(), "se": se, "median": d.abs().median().item(),
                     "max": d.abs().max().item(), "seconds": seconds})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="config overrides: ckpt_path=... model=... dataset=...")
    parser.add_argument("--grids", type=parse_grid, nargs="+", default=[parse_grid(g) for g in DEFAULT_GRIDS])
    parser.add_argument("--reference", type=parse_grid, default=parse_grid("256:3"),
                        help="the fine grid the others are compared with")
    parser.add_argument("--examples", type=int, help="the first N test examples (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the dequantization and the probes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    trained = load_trained(ROOT / "configs", args.overrides)
    if not isinstance(trained.model, FlowMatching):
        raise ConfigError(f"model={trained.model.family}: the likelihood grid is flow matching's "
                          "(model.likelihood_steps, model.likelihood_step_power); pass model=flow_matching")
    x = trained.dm.split_tensor("test")[: args.examples]
    print(f"{trained.model.family} on {trained.dm.name}, {len(x)} test examples, {trained.ckpt}; device "
          f"{device_name(trained.device)}, {torch.get_num_threads()} torch thread(s), seed {args.seed}\n")
    try:
        rows = compare(trained.model, x, args.grids, args.reference, args.seed)
    except ValueError as e:
        parser.error(str(e))
    unit = "bits/dim" if trained.model.is_image else "nats"
    print(table(rows, unit, f"{args.reference[0]}:{args.reference[1]:g}"))
    return 0


if __name__ == "__main__":
    run_script(main)
