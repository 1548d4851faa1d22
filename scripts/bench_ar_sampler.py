"""Milliseconds per sample of the autoregressive family's two image samplers (``model.sampler``): ``crop``
(the whole network on each sub-pixel's receptive field) and ``cached`` (activations kept between
evaluations), on untrained gated PixelCNNs: the default model at the digits size (1x8x8) and the model of
``configs/experiment/autoregressive_cifar10.yaml`` at 3x32x32. Both make the same C*H*W evaluations; the
table says what they cost and whether both drew the same images from the same seed.

    python scripts/bench_ar_sampler.py [--batch 1] [--threads 1] [--repeats 5] [--max-seconds 10]

Each sampler draws ``--batch`` images ``--repeats`` times from seed 0 (fewer once its calls have taken
``--max-seconds``, one at least: the crop sampler at CIFAR size takes about 20 s per image on one CPU
thread) and the median is reported.

``--agreement-seeds N`` adds how often the two samplers' images differ: they compute the parameters in
another float summation order (equal to about 1e-6), so a draw within that rounding of a level's boundary
can differ, and the rest of its image with it. Measured on 3x8x8 images of the default model with its
weights tripled (sharper, input-dependent distributions than at initialization), ``--agreement-batch``
images from each of seeds 0..N-1, for each ``pixel_output``.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from genbench.config import validate  # noqa: E402
from genbench.evaluation.device import device_name  # noqa: E402
from genbench.evaluation.speed import synchronize  # noqa: E402
from genbench.models.autoregressive import Autoregressive  # noqa: E402

SAMPLERS = ("crop", "cached")


def model_options(*overrides: str) -> dict:
    """The model options a run composed with ``overrides`` would train with (checked as a run's are)."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return validate(compose(config_name="train", overrides=["model=autoregressive", *overrides]))[
            "model"].to_dict()


def sizes() -> dict[str, tuple[tuple[int, int, int], dict]]:
    """Image shape and model options of each benchmarked size."""
    return {"digits": ((1, 8, 8), model_options("dataset=digits")),
            "cifar10": ((3, 32, 32), model_options("experiment=autoregressive_cifar10"))}


def time_sampler(model: Autoregressive, batch: int, repeats: int,
                 max_seconds: float) -> tuple[list[float], torch.Tensor]:
    """Seconds of each timed ``sample(batch)`` call, each from seed 0, and the images they drew."""
    seconds: list[float] = []
    while len(seconds) < repeats and sum(seconds) < max_seconds:
        torch.manual_seed(0)
        synchronize(model.device)
        start = time.perf_counter()
        images = model.sample(batch)
        synchronize(model.device)
        seconds.append(time.perf_counter() - start)
    return seconds, images


def agreement(seeds: int, batch: int, device: torch.device) -> None:
    """Print, per pixel output, the images and sub-pixels where the two samplers drew differently."""
    print("\n| pixel output | images (3x8x8, seeds x batch) | images that differ | sub-pixels that differ |")
    print("| --- | --- | --- | --- |")
    options = model_options()
    for pixel_output in ("categorical", "logistic_mixture"):
        torch.manual_seed(0)
        model = Autoregressive((3, 8, 8), **{**options, "pixel_output": pixel_output}).eval().to(device)
        with torch.no_grad():
            for weight in model.net.parameters():
                weight.mul_(3)
        images = subpixels = 0
        for seed in range(seeds):
            drawn = {}
            for sampler in SAMPLERS:
                model.hp.sampler = sampler
                torch.manual_seed(seed)
                drawn[sampler] = model.sample(batch)
            differ = drawn["crop"] != drawn["cached"]
            images += int(differ.flatten(1).any(1).sum())
            subpixels += int(differ.sum())
        print(f"| {pixel_output} | {seeds * batch:,} ({seeds} x {batch}) | {images} "
              f"| {subpixels} of {differ.numel() * seeds:,} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1, help="images per sample() call")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per sampler and size, at most")
    parser.add_argument("--max-seconds", type=float, default=10.0,
                        help="no further call once a sampler's calls have taken this long")
    parser.add_argument("--sizes", nargs="+", choices=["digits", "cifar10"], default=["digits", "cifar10"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--agreement-seeds", type=int, default=0,
                        help="seeds of the samplers' agreement table (0: no table)")
    parser.add_argument("--agreement-batch", type=int, default=256, help="images per seed of that table")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"machine: {device_name(torch.device('cpu'))}, {torch.get_num_threads()} torch thread(s), "
          f"device {device_name(device)} ({device}), "
          f"torch {torch.__version__}, batch {args.batch}, untrained models\n")
    print("| size | model (channels, layers, kernel, head) | NFE | sampler | timed calls "
          "| ms/sample (median) | speed-up | same images |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.sizes:
        shape, options = sizes()[name]
        torch.manual_seed(0)
        model = Autoregressive(shape, **options).eval().to(device)
        hp = model.hp
        label = f"{hp.channels}, {hp.layers}, {hp.kernel_size}, {hp.head_channels}"
        results = {}
        for sampler in SAMPLERS:
            model.hp.sampler = sampler
            results[sampler] = time_sampler(model, args.batch, args.repeats, args.max_seconds)
        same = "yes" if torch.equal(results["crop"][1], results["cached"][1]) else "no"
        crop_ms = 1000 * statistics.median(results["crop"][0]) / args.batch
        for sampler in SAMPLERS:
            seconds = results[sampler][0]
            ms = 1000 * statistics.median(seconds) / args.batch
            print(f"| {name} {'x'.join(map(str, shape))} | {label} | {model.nfe()} | {sampler} "
                  f"| {len(seconds)} | {ms:,.1f} | {crop_ms / ms:.1f}x | {same} |")
    if args.agreement_seeds:
        agreement(args.agreement_seeds, args.agreement_batch, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
