"""The real-data floor: held-out real data scored by the same code, against the same reference, at the
same sample size as the model's samples where the held-out data allow, so every quality metric has beside
it the value that perfect samples would get (``real_<metric>``). Finite samples keep distances above 0
and precision below 1: a model is judged by its ratio to this floor, not by the raw number.

- 2D sets: fresh draws from the true distribution (a stream of their own, independent of the splits), as
  many as the model's samples, scored by :func:`~genbench.evaluation.toy.toy_metrics` against the same test
  points;
- image sets: the images of a split the reference does not use (test; val when the reference is the test
  split), at most as many as the generated ones, scored with every extractor against the same reference
  features. Where the split holds fewer images than there are samples (digits' 359 test images against
  10,000 samples), the samples are also scored on their first that many (``at_real_n_<metric>``): the
  value the floor is compared with. A Fréchet distance's bias falls with the sample size, so a floor of
  359 images is no floor for 10,000 samples: a perfect model would read better than real data.

Each also writes ``real_samples.png``, the held-out data drawn as the model's ``samples.png`` is.
"""

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from genbench.data.base import SPLIT_PARTS, SPLITS, GenerativeDataModule
from genbench.data.toy import ToyDistribution
from genbench.evaluation.plots import save_samples_png
from genbench.evaluation.quality import QualitySettings, feature_metrics, too_few_points
from genbench.evaluation.reference import reference_features, reference_images
from genbench.evaluation.toy import toy_metrics
from genbench.results import AT_REAL_N_PREFIX, REAL_SAMPLES_PNG
from genbench.results import REAL_PREFIX as PREFIX


def _prefixed(metrics: dict[str, float]) -> dict[str, float]:
    return {PREFIX + name: value for name, value in metrics.items()}


def fresh_draws(distribution: ToyDistribution, n: int, seed: int) -> Tensor:
    """``n`` points of the true distribution from a stream of their own, apart from the splits' streams."""
    state = np.random.SeedSequence([seed, 0x7EA1]).generate_state(2, dtype=np.uint32)
    return distribution.sample(n, torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1])))[0]


def real_toy_metrics(distribution: ToyDistribution, test: Tensor, n: int, mode_samples: int,
                     mode_min_count: int, seed: int, out_dir: Path) -> dict[str, float]:
    """``real_*`` toy metrics of ``n`` fresh draws (``mode_samples`` for the mode counts)."""
    drawn = fresh_draws(distribution, max(n, mode_samples), seed)
    real = drawn[:n]
    save_samples_png(real, test, out_dir / REAL_SAMPLES_PNG, f"held-out real data: {len(real)} points")
    return _prefixed(toy_metrics(real, test[:n], distribution, drawn[:mode_samples], mode_min_count))


def held_out_split(dm: GenerativeDataModule, reference_split: str) -> str | None:
    """The first split, test before val before train, that is no part of the reference and holds images."""
    order = sorted(SPLITS, key=lambda s: ("test", "val", "train").index(s))
    used = SPLIT_PARTS[reference_split]
    return next((s for s in order if s not in used and len(dm.split_tensor(s))), None)


def held_out_sample(dm: GenerativeDataModule, reference_split: str, n: int) -> tuple[str, Tensor]:
    """A floor's images at a sample size of ``n``: the evaluation stage's fixed subset of ``n`` images of a
    split the reference does not use, and that split. ValueError saying how many the split holds where it
    holds fewer (a floor of fewer images is no floor for ``n`` samples)."""
    split = held_out_split(dm, reference_split)
    held_out = dm.split_tensor(split) if split else None
    if held_out is None or len(held_out) < n:
        raise ValueError(f"{dm.name} holds {'no' if held_out is None else len(held_out)} held-out images")
    return split, reference_images(held_out, n)


def real_image_metrics(dm: GenerativeDataModule, extractors: list[tuple], reals: dict[str, tuple],
                       fakes: dict[str, tuple], reference_split: str, settings: QualitySettings,
                       cache_dir: Path | None, feature_batch: int, plot_images: int,
                       out_dir: Path) -> tuple[dict[str, float], dict[str, str], dict]:
    """``real_*`` feature metrics of up to as many held-out images as samples (``fakes``: name ->
    (features, logits)) with each extractor, against the same reference features ``reals`` (name ->
    (features, logits, provenance)); ``at_real_n_*`` of the samples where the held-out images are fewer;
    the metrics too few held-out images cannot give, with why; and their provenance."""
    split = held_out_split(dm, reference_split)
    if split is None:
        return {}, {}, {}
    n = max(len(features) for features, _ in fakes.values())
    images = reference_images(dm.split_tensor(split), n)
    save_samples_png(images[:plot_images], images, out_dir / REAL_SAMPLES_PNG,
                     f"held-out real data ({split} split)")
    metrics: dict[str, float] = {}
    too_few: dict[str, str] = {}
    for extractor, num_classes in extractors:
        reference = reals[extractor.name][:2]
        sizes = (f"the reference ({reference_split} split) holds {len(reference[0])} images, the floor "
                 f"{len(images)} of the {split} split")
        skipped = too_few_points(extractor.name, len(reference[0]), len(images), settings.manifold_k, sizes)
        prefixes = [PREFIX] + ([AT_REAL_N_PREFIX] if len(images) < n else [])
        too_few.update({prefix + name: why for name, why in skipped.items() for prefix in prefixes})
        held_out = reference_features(extractor, images, dataset=dm.name, split=split, cache_dir=cache_dir,
                                      batch_size=feature_batch)
        metrics.update(_prefixed(feature_metrics(extractor.name, reference, held_out[:2], settings,
                                                 num_classes)))
        if len(images) < n:
            features, logits = fakes[extractor.name]
            first = (features[: len(images)], logits[: len(images)])
            matched = feature_metrics(extractor.name, reference, first, settings, num_classes)
            metrics.update({AT_REAL_N_PREFIX + name: value for name, value in matched.items()})
    n_reference = min(len(features) for features, _, _ in reals.values())
    return metrics, too_few, {"split": split, "n_real_held_out": len(images), "n_generated": n,
                     "reference_split": reference_split, **settings.applied(n_reference, len(images))}
