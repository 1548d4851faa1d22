"""Quality against training compute: a cheap evaluation at log-spaced steps, written to ``curves.csv``.

A single number at the end of a budget says little about a family: one that is still improving and one
that has flattened look alike. :class:`QualityCurve` scores the model at log-spaced optimizer steps
(``first_step``, then ``points_per_decade`` points per factor of ten, and the last step) with the cheap
metrics of the evaluation stage: on 2D sets :func:`~genbench.evaluation.toy.toy_metrics` (energy distance,
PacGAN's modes and high-quality fraction, precision/recall), on labelled images the dataset classifier's
Fréchet distance ``fd_<dataset>_cnn`` on ``image_samples`` samples. Each row also holds the compute spent
so far: examples seen, FLOPs (:class:`~genbench.evaluation.compute.TrainingFlops`) and seconds of training
(the curve's own evaluations excluded), and the curve metric's real-data floor at the curve's own sample
size (``real_<metric>``: fresh draws on 2D sets; held-out images where a split holds enough of them):
these distances' bias depends on the sample size, and on images the evaluation stage's floor is at
another (up to ``eval.num_samples``).

The evaluation draws from a forked random state with a fixed seed, so it never changes the training
run it observes, and every point of a curve uses the same random numbers (smoother curves).
"""

import csv
import io
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from genbench.errors import ConfigError, FeatureExtractorUnavailable
from genbench.evaluation.compute import training_flops
from genbench.evaluation.cost import ExampleCounter
from genbench.evaluation.distances import energy_distance
from genbench.evaluation.feature_net import feature_net_path, load_feature_net
from genbench.evaluation.frechet import MIN_SAMPLES, feature_statistics, frechet_distance
from genbench.evaluation.quality import sample_features
from genbench.evaluation.real import fresh_draws, held_out_sample
from genbench.evaluation.reference import reference_features, reference_images
from genbench.evaluation.toy import DATA_SPACE_K, toy_metrics
from genbench.files import write_text_atomically
from genbench.randomness import kept_rng
from genbench.results import CURVES_FILE, REAL_PREFIX

log = logging.getLogger(__name__)
Scorer = Callable[[pl.LightningModule], dict[str, float]]


def log_spaced_steps(first: int, last: int, per_decade: int) -> list[int]:
    """``first``, ``first * 10**(1/per_decade)``, ... (rounded, distinct) below ``last``, then ``last``."""
    steps: list[int] = []
    i = 0
    while (step := round(first * 10 ** (i / per_decade))) < last:
        if not steps or step > steps[-1]:
            steps.append(step)
        i += 1
    return [*steps, last]


class QualityCurve(pl.Callback):
    def __init__(self, out_dir: str, first_step: int = 25, points_per_decade: int = 4,
                 vector_samples: int = 2000, mode_samples: int = 2500, image_samples: int = 2000,
                 feature_net_dir: str = "feature_nets", cache_dir: str | None = None,
                 reference_split: str = "train", num_real: int | None = None, batch_size: int = 500,
                 seed: int = 0, eval_samples: int | None = None) -> None:
        least = {"first_step": 1, "points_per_decade": 0, "vector_samples": DATA_SPACE_K + 1,
                 "mode_samples": 1, "image_samples": 2}  # vector_samples: the k-NN metrics need k + 1 points
        given = {"first_step": first_step, "points_per_decade": points_per_decade, "vector_samples":
                 vector_samples, "mode_samples": mode_samples, "image_samples": image_samples}
        wrong = [f"callbacks.quality_curve.{key}={value} must be >= {least[key]}"
                 for key, value in given.items() if value < least[key]]
        if wrong:
            raise ConfigError(f"bad config value {'; '.join(wrong)}")
        self.path = Path(out_dir) / CURVES_FILE
        self.first_step, self.points_per_decade = first_step, points_per_decade
        self.vector_samples, self.mode_samples = vector_samples, mode_samples
        # a point never draws more images than the whole evaluation stage (eval.num_samples): a run made
        # cheap there spent 20 times its evaluation's sampling on 5 points of 2,000 diffusion samples
        self.image_samples = min(image_samples, eval_samples or image_samples)
        self.batch_size, self.seed = batch_size, seed
        self.feature_net_dir, self.cache_dir = feature_net_dir, cache_dir
        self.reference_split, self.num_real = reference_split, num_real
        self.rows: list[dict[str, Any]] = []
        self._targets: list[int] = []
        self._scorer: Scorer | None = None
        self._draws = 0  # samples per point, once the scorer is made
        self._points, self._seconds = 0, 0.0  # this process's evaluations and their wall-clock

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])  # a resumed run's curve goes on from its checkpoint's

    def time_spent_and_to_come(self) -> tuple[float, float, int]:
        """Seconds this process's points took so far, what the points still ahead would take at their mean,
        and how many points are ahead untimed (all of them before the first point, whose cost nothing
        foretells: a few seconds on 2D data, minutes on images): the training's ETA
        (:class:`genbench.progress.StepProgress`)."""
        if not self._points:
            return self._seconds, 0.0, len(self._targets)
        return self._seconds, self._seconds / self._points * len(self._targets), 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.rows and trainer.is_global_zero:  # the history up to the checkpoint, in this run's directory
            self._write()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The points still ahead, from the step training starts at (a resumed run's, once restored)."""
        if not self.points_per_decade or not trainer.is_global_zero:
            return
        last = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else 10**12
        self._targets = [s for s in log_spaced_steps(self.first_step, last, self.points_per_decade)
                         if s > trainer.global_step]
        # Building the scorer (a feature net's layers are initialised before its weights load) must not
        # draw from the training's random stream: the curve watches the training, it never changes it.
        with kept_rng(pl_module.device):
            self._scorer = self._make_scorer(trainer.datamodule, pl_module)
        if self._scorer is not None and self._targets:  # its cost, said before it is spent
            log.info("quality curve (curves.csv): %d samples at each of steps %s; "
                     "callbacks.quality_curve.points_per_decade=0 turns it off", self._draws,
                     ", ".join(map(str, self._targets)))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if self._scorer is not None and self._targets and trainer.global_step >= self._targets[0]:
            while self._targets and self._targets[0] <= trainer.global_step:  # a GAN steps by two
                self._targets.pop(0)
            self._evaluate(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._scorer is not None and (not self.rows or self.rows[-1]["step"] != trainer.global_step):
            self._evaluate(trainer, pl_module)  # the last point is where training stopped
        if self._points:  # the training's log line counts them in its wall clock, train_seconds does not
            log.info("quality curve: %d points in %.1f s, not in the record's train_seconds", self._points,
                     self._seconds)

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        start = time.perf_counter()
        was_training = pl_module.training
        pl_module.eval()
        with kept_rng(pl_module.device), torch.no_grad():
            torch.manual_seed(self.seed)
            values = self._scorer(pl_module)
        pl_module.train(was_training)
        counter = _find(trainer, ExampleCounter)
        examples = counter.examples if counter else None
        flops = training_flops(trainer, examples).get("train_flops") if examples else None
        row = {"step": trainer.global_step, "train_examples": examples, "train_flops": flops,
               "train_seconds": counter.seconds - (time.perf_counter() - start) if counter else None,
               **values}
        self.rows.append(row)
        self._write()
        for lg in trainer.loggers:
            lg.log_metrics({f"curve/{k}": v for k, v in values.items() if math.isfinite(v)},
                           step=trainer.global_step)
        spent = time.perf_counter() - start
        self._points, self._seconds = self._points + 1, self._seconds + spent
        if counter:  # the curve watches the training: its time is not the training's
            counter.not_training(spent)

    def _write(self) -> None:
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in self.rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.path, buffer.getvalue())

    def _make_scorer(self, dm: Any, model: pl.LightningModule) -> Scorer | None:
        """What to measure on this data: toy metrics on 2D sets, the classifier's FD on labelled images."""
        dm.setup("test")
        distribution = getattr(dm, "distribution", None)
        if not dm.is_image and distribution is not None:
            test = dm.split_tensor("test")[: self.vector_samples]
            n = max(self.vector_samples, self.mode_samples if distribution.modes is not None else 0)
            floor = {f"{REAL_PREFIX}energy_distance_test":
                     energy_distance(fresh_draws(distribution, len(test), self.seed), test)}

            def toy(model: pl.LightningModule) -> dict[str, float]:
                drawn = model.sample(n)
                return {**toy_metrics(drawn[: len(test)], test, distribution, drawn[: self.mode_samples]),
                        **floor}
            self._draws = n
            return toy
        if dm.is_image and dm.num_classes:
            return self._classifier_scorer(dm, model)
        log.info("no quality curve for %s: it needs a 2D set or labelled images", dm.name)
        return None

    def _classifier_scorer(self, dm: Any, model: pl.LightningModule) -> Scorer | None:
        real = reference_images(dm.split_tensor(self.reference_split), self.num_real)
        if len(real) < MIN_SAMPLES:  # in training, where it failed the run
            log.warning("no quality curve: its reference, the %s split, holds %d images and a Fréchet "
                        "distance needs %d", self.reference_split, len(real), MIN_SAMPLES)
            return None
        try:
            net = load_feature_net(feature_net_path(self.feature_net_dir, dm.name), model.device,
                                   dm.selection_args())
        except FeatureExtractorUnavailable as e:
            log.warning("no quality curve: %s", e)
            return None
        real_features = reference_features(net, real, dataset=dm.name, split=self.reference_split,
                                           cache_dir=Path(self.cache_dir) if self.cache_dir else None,
                                           batch_size=self.batch_size)[0]
        real_stats = feature_statistics(real_features)
        metric = f"fd_{net.name}"
        floor = self._image_floor(dm, net, real_stats)
        floor = {} if floor is None else {REAL_PREFIX + metric: floor}
        self._draws = self.image_samples

        def frechet(model: pl.LightningModule) -> dict[str, float]:
            fake = sample_features(model, [net], self.image_samples, self.batch_size, self.batch_size,
                                   keep=1)[0][net.name][0]
            return {metric: frechet_distance(*real_stats, *feature_statistics(fake)), **floor}
        return frechet

    def _image_floor(self, dm: Any, net: Any, real_stats: tuple) -> float | None:
        """The Fréchet distance of ``image_samples`` held-out images (the evaluation stage's fixed subset) to
        the reference; None where the held-out split holds fewer: no floor at the curve's sample size."""
        try:
            split, images = held_out_sample(dm, self.reference_split, self.image_samples)
        except ValueError as e:
            log.info("no real-data floor on the quality curve: %s, fewer than "
                     "callbacks.quality_curve.image_samples=%d", e, self.image_samples)
            return None
        features = reference_features(net, images, dataset=dm.name, split=split,
                                      cache_dir=Path(self.cache_dir) if self.cache_dir else None,
                                      batch_size=self.batch_size)[0]
        return frechet_distance(*real_stats, *feature_statistics(features))


def _find(trainer: pl.Trainer, kind: type) -> Any:
    return next((c for c in trainer.callbacks if isinstance(c, kind)), None)
