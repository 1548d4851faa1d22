"""Where the host's time goes in one training step through genbench: Lightning's loop, genbench's callbacks
and the model, from a cProfile of a whole run at a CIFAR-10 config on synthetic data (on the CPU unless
``--gpu``). Where CUDA graphs hide a step's kernel launches, this host work is what is left to hide.

    python scripts/bench_host_step.py --family vae --steps 1000 --batch 4

Prints, per training batch, the cumulative and own milliseconds of every Lightning, genbench and torch
data-loading function called at least once a batch (cProfile's overhead included: compare rows, not absolute
times; on a GPU a function's time includes its waits for the device). A batch is one call of the family's
``training_step``: a GAN's batch makes one or two optimizer steps (``--steps`` counts those, as
``trainer.max_steps`` does).
"""

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_gpu  # noqa: E402

from genbench.train import run  # noqa: E402

# torch's data loading too: pinning a batch in page-locked memory happens there, in the main process
WATCHED = ("pytorch_lightning", "lightning_fabric", "genbench", os.path.join("torch", "utils", "data"))


def training_batches(stats: pstats.Stats) -> int:
    """How many times a genbench family's ``training_step`` ran: the batches trained on."""
    return sum(calls for (file, _, name), (_, calls, *_) in stats.stats.items()  # type: ignore[attr-defined]
               if name == "training_step" and f"genbench{os.sep}models" in file)


def per_batch_rows(stats: pstats.Stats) -> list[tuple[float, float, int, str]]:
    """(cumulative ms, own ms, calls, where) per training batch of every watched function called at least
    once a batch, by cumulative time."""
    batches = training_batches(stats)
    rows = []
    for (file, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if calls >= batches and any(part in file for part in WATCHED):
            where = f"{Path(file).parent.name}/{Path(file).name}:{line} {name}"
            rows.append((cumulative / batches * 1e3, own / batches * 1e3, calls, where))
    return sorted(rows, reverse=True)


def main(argv: list[str] | None = None) -> list[tuple[float, float, int, str]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="vae")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps (1000)")
    parser.add_argument("--batch", type=int, default=4, help="small: the host's work shows (4)")
    parser.add_argument("--top", type=int, default=40, help="rows printed (40)")
    parser.add_argument("--gpu", action="store_true", help="train on the GPU")
    parser.add_argument("override", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        data = bench_gpu.write_cifar(out / "data", 200, 64)
        overrides = [*bench_gpu.training_overrides(args.family, data, out, "gpu" if args.gpu else "cpu"),
                     "evaluate=false", f"dataset.batch_size={args.batch}", f"trainer.max_steps={args.steps}",
                     *args.override]
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
        profile = cProfile.Profile()
        profile.enable()
        run(cfg, out)
        profile.disable()
    stats = pstats.Stats(profile)
    rows = per_batch_rows(stats)
    print(f"{args.family}, batch {args.batch}, {args.steps} optimizer steps in {training_batches(stats)} "
          f"batches, {torch.get_num_threads()} torch threads; ms per batch:")
    for cumulative, own, calls, where in rows[:args.top]:
        print(f"{cumulative:8.3f} cumulative {own:7.3f} own {calls:8d} calls  {where}")
    return rows


if __name__ == "__main__":
    main()
