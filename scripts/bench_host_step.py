"""Where the host's time goes in one training step through genbench: Lightning's loop, genbench's callbacks
and the model, from a cProfile of a whole run at a CIFAR-10 config on synthetic data (on the CPU unless
``--gpu``). Where CUDA graphs hide a step's kernel launches, this host work is what is left to hide.

    python scripts/bench_host_step.py --family vae --steps 1000 --batch 4

Prints, per training batch, the cumulative and own milliseconds of every Lightning, genbench and torch
data-loading function called at least once a batch (cProfile's overhead included: compare rows, not absolute
times; on a GPU a function's time includes its waits for the device). A batch is one call of the family's
``training_step``: a GAN's batch makes one or two optimizer steps (``--steps`` counts those, as
``trainer.max_steps`` does).

``--runtime-batches N`` then trains the same run again, without cProfile (whose cost per Python call would
make any step host-bound), and records N of its batches (from batch ``--steps``/10 on) with torch's
profiler: their wall time, and what cProfile cannot name: per batch, the CUDA runtime's calls on a GPU (a
``cudaHostAlloc`` or ``cudaStreamSynchronize`` in every step is a wait a hand loop may not have; the hand
loop's own list: ``scripts/bench_gpu.py --profile-steps``) and torch's operators.
"""

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

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


class ProfiledBatches(pl.Callback):
    """torch's profiler over ``batches`` training batches from batch ``start`` (counted from 0), and their
    wall time."""

    def __init__(self, start: int, batches: int) -> None:
        self.start, self.batches, self.seen, self.profile, self.active = start, batches, 0, None, False
        self.started, self.seconds = 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.seen == self.start:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if pl_module.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)  # the runtime's calls are host events
            self.profile = torch.profiler.profile(activities=activities)
            self.profile.__enter__()
            self.active, self.started = True, time.perf_counter()
        elif self.seen == self.start + self.batches:
            self._stop()
        self.seen += 1

    def on_train_end(self, trainer, pl_module) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.active:
            self.seconds = time.perf_counter() - self.started
            self.profile.__exit__(None, None, None)
            self.active = False

    @property
    def recorded(self) -> int:
        """Batches inside the window (fewer where training ended in it)."""
        return max(0, min(self.seen - self.start, self.batches))


def main(argv: list[str] | None = None) -> list[tuple[float, float, int, str]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="vae")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps (1000)")
    parser.add_argument("--batch", type=int, default=4, help="small: the host's work shows (4)")
    parser.add_argument("--top", type=int, default=40, help="rows printed (40)")
    parser.add_argument("--gpu", action="store_true", help="train on the GPU")
    parser.add_argument("--runtime-batches", type=int, default=0,
                        help="then a run without cProfile, this many of its batches under torch's profiler: "
                             "wall time, CUDA runtime calls, operators")
    parser.add_argument("override", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = bench_gpu.write_cifar(Path(tmp) / "data", 200, 64)

        def config(out: Path) -> DictConfig:
            overrides = [*bench_gpu.training_overrides(args.family, data, out, "gpu" if args.gpu else "cpu"),
                         "evaluate=false", f"dataset.batch_size={args.batch}",
                         f"trainer.max_steps={args.steps}", *args.override]
            with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
                return compose(config_name="train", overrides=overrides)

        profile = cProfile.Profile()
        profile.enable()
        run(config(Path(tmp) / "cprofile"), Path(tmp) / "cprofile")
        profile.disable()
        stats = pstats.Stats(profile)
        rows = per_batch_rows(stats)
        print(f"{args.family}, batch {args.batch}, {args.steps} optimizer steps in {training_batches(stats)} "
              f"batches, {torch.get_num_threads()} torch threads; ms per batch:")
        for cumulative, own, calls, where in rows[:args.top]:
            print(f"{cumulative:8.3f} cumulative {own:7.3f} own {calls:8d} calls  {where}", flush=True)
        if args.runtime_batches:  # printed as it ends: a time limit that cuts this run keeps the rows above
            window = ProfiledBatches(start=max(1, args.steps // 10), batches=args.runtime_batches)
            run(config(Path(tmp) / "window"), Path(tmp) / "window", callbacks=[window])
            print_window(window, args.top)
    return rows


def print_window(window: ProfiledBatches, top: int) -> None:
    if window.profile is None or not window.recorded:
        return
    print(f"torch's profiler over {window.recorded} batches of a run without cProfile, "
          f"{window.seconds / window.recorded * 1e3:.3f} ms a batch (the profiler's cost included); "
          "host ms and calls per batch:")
    for ms, calls, name in bench_gpu.host_rows(window.profile, window.recorded)[:top]:
        print(f"{ms:8.3f} ms {calls:8.2f} calls  {name}")


if __name__ == "__main__":
    main()
