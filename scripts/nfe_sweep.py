"""Quality against NFE of a trained checkpoint, evaluation only:

    python scripts/nfe_sweep.py ckpt_path=<run>/checkpoints/last.ckpt model=diffusion dataset=moons \\
        [--nfe 5 10 20 50 100] [--samplers ddim dpmpp_2m] [--samples 2000] [--seed 0] [--out DIR]

The overrides compose the same configs as train.py (``model=`` and ``dataset=`` of the training run); every
sampler of the family (or those named) runs at each NFE budget on the same starting noise, and
``nfe_curve.json`` / ``nfe_curve.csv`` go to the checkpoint's run directory (or ``--out``). See
:mod:`genbench.evaluation.nfe_curve` for the metrics.
"""

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig

from genbench.data.base import GenerativeDataModule
from genbench.errors import ConfigError, FeatureExtractorUnavailable
from genbench.evaluation.feature_net import feature_net_path, load_feature_net
from genbench.evaluation.frechet import MIN_SAMPLES
from genbench.evaluation.nfe_curve import (
    DEFAULT_BUDGETS,
    Quality,
    feature_quality,
    pixel_features,
    sweep,
    vector_quality,
)
from genbench.evaluation.real import held_out_sample
from genbench.evaluation.reference import reference_images
from genbench.nfe_record import Curve, markdown_table, write_curve
from genbench.trained_run import load_trained, run_script

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
log = logging.getLogger("nfe_sweep")


def image_quality(cfg: DictConfig, dm: GenerativeDataModule, device: torch.device) -> tuple[Quality, str]:
    """fd_<dataset>_cnn against the reference split when the dataset's classifier is trained, else the
    Fréchet distance in pixel space."""
    real = reference_images(dm.split_tensor(cfg.eval.reference_split), cfg.eval.num_real)
    if len(real) < MIN_SAMPLES:
        raise ConfigError(f"eval.reference_split={cfg.eval.reference_split} holds {len(real)} images and a "
                          f"Fréchet distance needs {MIN_SAMPLES}: give it more or reference another split")
    try:
        net = load_feature_net(feature_net_path(cfg.eval.feature_net_dir, dm.name), device)
    except FeatureExtractorUnavailable as e:
        log.warning("%s; scoring with fd_data_space (pixels) instead", e)
        return feature_quality(pixel_features, pixel_features(real), "fd_data_space"), "fd_data_space"
    name = f"fd_{net.name}"
    return feature_quality(lambda x: net.extract(x, 64)[0], net.extract(real, 64)[0], name), name


def image_floor(quality: Quality, dm: GenerativeDataModule, reference_split: str, samples: int) -> dict:
    """The metrics of as many held-out real images as samples (a Fréchet distance's bias depends on the
    sample size); none where the held-out split holds fewer."""
    try:
        _, images = held_out_sample(dm, reference_split, samples)
    except ValueError as e:
        log.warning("no real-data floor: %s, fewer than --samples %d", e, samples)
        return {}
    return quality(images)


def at_least(least: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``least`` (--nfe 0 wrote an empty table and exited 0)."""
    def integer(text: str) -> int:
        value = int(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is below {least}")
        return value
    return integer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="config overrides: ckpt_path=... model=... dataset=...")
    parser.add_argument("--nfe", type=at_least(1), nargs="+", default=list(DEFAULT_BUDGETS),
                        help="NFE budgets")
    parser.add_argument("--samplers", nargs="+", help="samplers to sweep (default: all of the family's)")
    parser.add_argument("--samples", type=at_least(2), default=2000, help="samples per point")
    parser.add_argument("--seed", type=int, default=0, help="seeds the starting noise, the same for all")
    parser.add_argument("--out", type=Path, help="where to write (default: the checkpoint's run directory)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    # the sampler and its steps are the sweep's: the config's (100 steps) refused a checkpoint of T < 100
    trained = load_trained(CONFIG_DIR, args.overrides, own=frozenset({"sampler", "sampling_steps"}))
    cfg, dm, model, ckpt = trained.cfg, trained.dm, trained.model, trained.ckpt
    if dm.is_image:
        quality, metric = image_quality(cfg, dm, trained.device)
        floor = image_floor(quality, dm, cfg.eval.reference_split, args.samples)
    else:
        test = dm.split_tensor("test")
        quality, metric = vector_quality(test), "w2_test"
        floor = quality(dm.split_tensor("train")[: args.samples])
    points = sweep(model, quality, budgets=args.nfe, samplers=args.samplers, n=args.samples, seed=args.seed)
    curve = Curve(model.family, dm.name, metric, args.samples, args.seed, floor, points, str(ckpt))
    out = args.out or ckpt.parent.parent
    try:
        written = write_curve(curve, out)
    except OSError as e:
        raise ConfigError(f"cannot write the curve into {out}: {e}; give another --out") from None
    for path in written:
        print(path)
    print(markdown_table(curve))
    return 0


if __name__ == "__main__":
    run_script(main)
