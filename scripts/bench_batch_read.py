"""How the training loader reads a batch: one indexing of each split tensor (``data.base.Examples``, since
bf1d619) against torch's default, a tuple per example stacked again. Both give the same batches; this
times the loader alone and whole training runs.

    python scripts/bench_batch_read.py                                      # the loader: 2-D points, digits
    python scripts/bench_batch_read.py --runs vae:moons gan:gaussians8 --steps 2000 --repeats 3

A run's number is its ``train_seconds`` per optimizer step (no evaluation, logger or training callbacks).
The two reads alternate in one process, as the machine's speed drifts; medians over ``--repeats``, with the
host threads. Results: a table on stdout and ``bench_batch_read.json`` in ``--out``.
"""

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from genbench.data.base import Examples  # noqa: E402
from genbench.train import run  # noqa: E402

READS = ("per_example", "batched")


@contextlib.contextmanager
def read(how: str) -> Iterator[None]:
    """Loaders read ``batched`` (genbench's) or ``per_example`` (torch's default: without ``__getitems__``
    its fetcher indexes the dataset once per example and collates the tuples)."""
    batched = Examples.__getitems__
    if how == "per_example":
        Examples.__getitems__ = None  # type: ignore[assignment,method-assign]
    try:
        yield
    finally:
        Examples.__getitems__ = batched  # type: ignore[method-assign]


def config(overrides: list[str]) -> Any:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def loader_ms_per_batch(dataset: str, batches: int) -> dict[str, float]:
    """Milliseconds per batch of the training loader of ``dataset`` (outside a trainer: a shuffling loader
    over the same split), each read, the median of 5 passes of ``batches`` batches."""
    dm = instantiate(config([f"dataset={dataset}", "dataset.num_workers=0"]).dataset)
    dm.setup()
    out = {}
    for how in READS:
        with read(how):
            times = []
            for _ in range(5):
                loader, taken = iter(dm.train_dataloader()), 0
                start = time.perf_counter()
                while taken < batches:
                    try:
                        next(loader)
                        taken += 1
                    except StopIteration:
                        loader = iter(dm.train_dataloader())
                times.append((time.perf_counter() - start) / batches * 1e3)
        out[how] = statistics.median(times)
    return out


def run_ms_per_step(family: str, dataset: str, steps: int, repeats: int, out_dir: Path) -> dict[str, list]:
    """``train_seconds`` per optimizer step of ``repeats`` runs of each read, alternating."""
    times: dict[str, list[float]] = {how: [] for how in READS}
    for repeat in range(repeats):
        for how in READS if repeat % 2 == 0 else READS[::-1]:
            run_dir = out_dir / f"{family}_{dataset}_{how}_{repeat}"
            cfg = config([f"model={family}", f"dataset={dataset}", "logger=none", "callbacks=none",
                          "evaluate=false", f"trainer.max_steps={steps}", "trainer.enable_progress_bar=false",
                          "extras.print_config=false", f"paths.output_dir={run_dir}",
                          f"paths.root_dir={run_dir}"])
            with read(how):
                result = run(cfg, run_dir)
            times[how].append(result.metrics["train_seconds"] / result.metrics["train_steps"] * 1e3)
    return times


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="*", default=["gaussians8", "digits"], help="loaders to time")
    parser.add_argument("--batches", type=int, default=200, help="batches per timed pass of a loader")
    parser.add_argument("--runs", nargs="*", default=[], help="family:dataset training runs to time")
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each read")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_batch_read"))
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    for dataset in args.datasets:
        ms = loader_ms_per_batch(dataset, args.batches)
        rows.append({"what": f"loader {dataset}", "unit": "ms/batch", "threads": threads, **ms,
                     "ratio": ms["batched"] / ms["per_example"]})
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.runs:
            family, dataset = spec.split(":")
            times = run_ms_per_step(family, dataset, args.steps, args.repeats, Path(tmp))
            medians = {how: statistics.median(values) for how, values in times.items()}
            rows.append({"what": f"{family} on {dataset}, {args.steps} steps", "unit": "ms/step",
                         "threads": threads, **medians, "ratio": medians["batched"] / medians["per_example"],
                         "repeats": times})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_batch_read.json").write_text(json.dumps(rows, indent=1))
    print("| what | unit | per example | batched | batched / per example | threads |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['what']} | {row['unit']} | {row['per_example']:.2f} | {row['batched']:.2f} | "
              f"{row['ratio']:.2f} | {row['threads']} |")
    return rows


if __name__ == "__main__":
    main()
