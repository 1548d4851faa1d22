"""Where the host's time goes in one training step through genbench: Lightning's loop, genbench's callbacks
and the model, from a cProfile of a whole run at a CIFAR-10 config on synthetic data (on the CPU unless
``--gpu``). Where CUDA graphs hide a step's kernel launches, this host work is what is left to hide.

    python scripts/bench_host_step.py --family vae --steps 1000 --batch 4

Prints, per training step, the cumulative and own milliseconds of every Lightning and genbench function
called at least once a step (cProfile's overhead included: compare rows, not absolute times).
"""

import argparse
import cProfile
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

WATCHED = ("pytorch_lightning", "lightning_fabric", "genbench")


def per_step_rows(stats: pstats.Stats, steps: int) -> list[tuple[float, float, int, str]]:
    """(cumulative ms, own ms, calls, where) per training step of every watched function called at least
    ``steps`` times, by cumulative time."""
    rows = []
    for (file, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if calls >= steps and any(part in file for part in WATCHED):
            where = f"{Path(file).parent.name}/{Path(file).name}:{line} {name}"
            rows.append((cumulative / steps * 1e3, own / steps * 1e3, calls, where))
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
    rows = per_step_rows(pstats.Stats(profile), args.steps)
    print(f"{args.family}, batch {args.batch}, {args.steps} steps, {torch.get_num_threads()} torch threads; "
          "ms per step:")
    for cumulative, own, calls, where in rows[:args.top]:
        print(f"{cumulative:8.3f} cumulative {own:7.3f} own {calls:8d} calls  {where}")
    return rows


if __name__ == "__main__":
    main()
