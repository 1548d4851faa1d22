"""One evaluation stage for every family: likelihood, sampling speed, cost, sample quality (2D metrics
or feature-based image metrics) and a picture of samples.

Metrics that need a feature network nobody can provide here (no Inception weights offline, no trained
dataset classifier) are listed in ``unavailable`` with the reason, and the stage goes on: a finished
training run is never lost to a missing evaluation file.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from genbench.data.base import SPLIT_PARTS, GenerativeDataModule
from genbench.errors import FeatureExtractorUnavailable
from genbench.evaluation.feature_networks import FEATURE_NETWORKS
from genbench.evaluation.likelihood import test_likelihood
from genbench.evaluation.plots import save_samples_png
from genbench.evaluation.quality import (
    QualitySettings,
    class_rows,
    conditional_accuracy,
    feature_metrics,
    generate_images,
    metric_names,
    sample_features,
    too_few_points,
)
from genbench.evaluation.real import real_image_metrics, real_toy_metrics
from genbench.evaluation.reference import reference_features, reference_images
from genbench.evaluation.speed import sampling_speed
from genbench.evaluation.toy import DATA_SPACE_K, toy_metrics
from genbench.models.base import GenerativeModel
from genbench.progress import phase
from genbench.schema import Schema, key_error, param

log = logging.getLogger(__name__)


@dataclass
class EvalConfig(Schema):
    seed: int = param(0, ge=0)  # seeds the stochastic parts of evaluation (bounds, samples, KID subsets)
    device: str = "auto"  # auto: the device the model trained on (the trainer's root device); or cpu, cuda:1
    max_test_batches: int | None = param(None, ge=1)  # None: the whole test split
    likelihood_batch_size: int | None = param(None, ge=1)  # None: the data's batches on a CPU, 256 on a GPU
    # also the validation split's likelihood (val_nll_*; eval.max_test_batches of it), computed last: what a
    # hyperparameter search selects on
    val_likelihood: bool = False
    speed_batch_size: int = param(256, ge=1)
    speed_repeats: int = param(10, ge=1)
    speed_warmup: int = param(2, ge=0)
    speed_max_seconds: float | None = param(60.0, gt=0)  # timed calls (>= 3) and warm-ups (>= 1) stop there
    plot_samples_vector: int = param(2000, ge=DATA_SPACE_K + 1)  # 2D sets: samples.png's and the metrics'
    plot_samples_image: int = param(64, ge=1)
    mode_samples: int = param(2500, ge=1)  # 2D mixtures: samples PacGAN's mode coverage counts over
    mode_min_count: int = param(20, ge=1)  # 2D mixtures: samples a mode needs in modes_covered_thresholded
    # Image sample quality
    num_samples: int = param(10000, ge=2)  # generated images; 50000 (and train_full) to compare with papers
    num_real: int | None = param(None, ge=2)  # real reference images; None: the whole reference split
    reference_split: str = param("train", choices=list(SPLIT_PARTS))  # train_full: train and val
    sample_batch_size: int | None = param(None, ge=1)  # None: 500 on a CPU, 2000 on a GPU
    feature_batch_size: int | None = param(None, ge=1)  # None: 64 on a CPU, 500 on a GPU
    inception: bool = True  # FID/KID/IS with the standard Inception network
    inception_weights: str | None = None  # a local copy of torch-fidelity's weights file
    inception_download: bool = True
    feature_net: bool = True  # metrics with the dataset's own classifier (scripts/train_feature_net.py)
    feature_net_dir: str = "feature_nets"
    cache_dir: str | None = None  # reference features are cached here; None: no cache
    kid_subsets: int = param(100, ge=1)
    kid_subset_size: int = param(1000, ge=2)
    manifold_k: int = param(3, ge=1)
    manifold_samples: int = param(10000, ge=2)  # k-NN metrics: this many real and generated points at most
    score_splits: int = param(10, ge=1)
    conditional_samples: int = param(1000, ge=1)  # conditional models: samples per accuracy estimate

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("num_samples", "num_real", "manifold_samples"):  # each bounds the k-NN metrics' sets
            value = getattr(self, key)
            if value is not None and value <= self.manifold_k:
                raise key_error(key, f"bad config value {{key}}={value}: must be > eval.manifold_k="
                                     f"{self.manifold_k} (the k-NN metrics need k + 1 points of each set)")


@dataclass
class Evaluation:
    metrics: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)  # per metric group: how its numbers were made
    unavailable: dict = field(default_factory=dict)  # metric name -> why it has no value


def evaluate(model: GenerativeModel, dm: GenerativeDataModule, cfg: EvalConfig, out_dir: Path) -> Evaluation:
    """Measure ``model`` on ``dm`` and write ``samples.png`` into ``out_dir``."""
    torch.manual_seed(cfg.seed)
    model.eval()
    dm.setup("test")
    result = Evaluation()
    distribution = getattr(dm, "distribution", None)
    density = distribution.log_prob if distribution is not None and distribution.has_density else None
    has_likelihood = model.likelihood_kind != "none"
    likelihood_batch = batch_size_for(model.device, cfg.likelihood_batch_size, cpu=None, gpu=256)
    result.metrics.update(test_likelihood(model, dm.test_dataloader(), cfg.max_test_batches, density,
                                          likelihood_batch, "evaluation: likelihood of the test split"))
    result.provenance["likelihood"] = {"split": "test", "n_test": result.metrics.get("test_examples"),
                                       "batch_size": likelihood_batch or dm.hp.batch_size, "seed": cfg.seed}
    batch, repeats, warmup = cfg.speed_batch_size, cfg.speed_repeats, cfg.speed_warmup
    most = "" if cfg.speed_max_seconds is None else f" (fewer once they take {cfg.speed_max_seconds:g} s)"
    with phase(f"evaluation: timing sample({batch}), {warmup} warm-up + {repeats} timed calls{most}"):
        result.metrics.update(sampling_speed(model, batch, repeats, warmup, cfg.speed_max_seconds))
    result.metrics["nfe"] = model.nfe()
    result.metrics["num_parameters"] = model.num_parameters()
    test = dm.split_tensor("test")
    title, nrow = f"{model.family} on {dm.name}", None
    if dm.is_image:
        samples = _image_quality(model, dm, cfg, result, out_dir)[: cfg.plot_samples_image]
        if model.is_conditional:  # the picture says which class each sample was asked for
            samples, nrow = class_rows(model, dm.num_classes, cfg.plot_samples_image)
            title += f": row k holds samples asked for class k (0 to {dm.num_classes - 1})"
    else:
        mixture = distribution is not None and distribution.modes is not None
        n = max(cfg.plot_samples_vector, cfg.mode_samples if mixture else 0)
        torch.manual_seed(cfg.seed)  # the samples of the seed alone, whatever the timing and likelihood drew
        with torch.no_grad(), phase(f"evaluation: sampling {n} points"):
            drawn = model.sample(n)  # mixtures: one draw serves the other metrics and PacGAN's mode counts
        samples = drawn[: cfg.plot_samples_vector]
        if distribution is not None:
            result.metrics.update(toy_metrics(samples, test[: len(samples)], distribution,
                                              drawn[: cfg.mode_samples], cfg.mode_min_count))
            result.provenance["toy"] = {"n_samples": len(samples), "n_test": min(len(samples), len(test)),
                                        "mode_samples": cfg.mode_samples,
                                        "mode_min_count": cfg.mode_min_count, "mode_n_std": 3.0,
                                        "seed": cfg.seed}
            result.metrics.update(real_toy_metrics(distribution, test, len(samples), cfg.mode_samples,
                                                   cfg.mode_min_count, cfg.seed, out_dir))
            result.provenance["real_data"] = {"source": "fresh draws from the distribution",
                                              "n": len(samples), "mode_samples": cfg.mode_samples}
    if nrow is None:
        title += f": {len(samples)} samples"
    save_samples_png(samples, test, out_dir / "samples.png", title, nrow)
    if cfg.val_likelihood and has_likelihood:
        _val_likelihood(model, dm, cfg, likelihood_batch, result)
    return result


def needed_splits(cfg: EvalConfig, model: GenerativeModel,
                  dm: GenerativeDataModule) -> list[tuple[str, str, str]]:
    """The splits the evaluation reads that must hold examples, as
    :meth:`~genbench.data.base.GenerativeDataModule.require_examples` takes them: the test split, the image
    metrics' reference, and the validation split where ``eval.val_likelihood`` asks for its likelihood.
    (A reference of a few images costs the metrics it cannot give, not the run.)"""
    needs = [("test", "the evaluation scores the test split", "give it some (dataset.test_fraction on "
              "digits, dataset.n_test on 2D sets, dataset.test_slice on files) or set evaluate=false")]
    if dm.is_image:
        reference = f"eval.reference_split={cfg.reference_split} is the image metrics' reference"
        needs.append((cfg.reference_split, reference, "give it images or reference another split"))
    if cfg.val_likelihood and model.likelihood_kind != "none":
        needs.append(("val", "eval.val_likelihood=true", "give it some (dataset.val_fraction, or "
                      "dataset.n_val on 2D sets) or set eval.val_likelihood=false"))
    return needs


def _val_likelihood(model: GenerativeModel, dm: GenerativeDataModule, cfg: EvalConfig,
                    batch_size: int | None, result: Evaluation) -> None:
    """``val_nll_*`` and ``val_examples``: the likelihood of the validation split, which a hyperparameter
    search may select on (selecting on the test split's would bias the test numbers it then reports).
    Computed last, from the evaluation's seed, so every other number is the same with or without it."""
    torch.manual_seed(cfg.seed)
    scored = test_likelihood(model, dm.val_dataloader(), cfg.max_test_batches, None, batch_size,
                             "evaluation: likelihood of the validation split")
    scored.pop("likelihood_kind")
    examples = scored.pop("test_examples")
    result.metrics.update({f"val_{name}": value for name, value in scored.items()}, val_examples=examples)
    result.provenance["val_likelihood"] = {"split": "val", "n_val": examples,
                                           "batch_size": batch_size or dm.hp.batch_size, "seed": cfg.seed}


def _image_quality(model: GenerativeModel, dm: GenerativeDataModule, cfg: EvalConfig,
                   result: Evaluation, out_dir: Path) -> torch.Tensor:
    """Feature metrics of ``cfg.num_samples`` generated images with every extractor at hand; returns the
    images samples.png shows."""
    extractors = _extractors(model, dm, cfg, result.unavailable)
    sample_batch = batch_size_for(model.device, cfg.sample_batch_size, cpu=500, gpu=2000)
    feature_batch = batch_size_for(model.device, cfg.feature_batch_size, cpu=64, gpu=500)
    torch.manual_seed(cfg.seed)
    if not extractors:  # nothing to score: draw only the images samples.png shows
        return generate_images(model, cfg.plot_samples_image, sample_batch)
    real_images = reference_images(dm.split_tensor(cfg.reference_split), cfg.num_real)
    reals = {e.name: reference_features(e, real_images, dataset=dm.name, split=cfg.reference_split,
                                        cache_dir=Path(cfg.cache_dir) if cfg.cache_dir else None,
                                        batch_size=feature_batch) for e, _ in extractors}
    fakes, shown = sample_features(model, [e for e, _ in extractors], cfg.num_samples, sample_batch,
                                   feature_batch, keep=cfg.plot_samples_image)
    settings = QualitySettings(cfg.kid_subsets, cfg.kid_subset_size, cfg.manifold_k, cfg.manifold_samples,
                               cfg.score_splits, cfg.seed)
    n_fake, n_real = cfg.num_samples, len(real_images)
    for extractor, num_classes in extractors:
        real = reals[extractor.name]
        metrics = feature_metrics(extractor.name, real[:2], fakes[extractor.name], settings, num_classes)
        conditional = {}
        if num_classes is not None and model.is_conditional:
            conditional["conditional_samples"] = min(cfg.conditional_samples, cfg.num_samples)
            metrics[f"conditional_accuracy_{extractor.name}"] = conditional_accuracy(
                model, extractor, num_classes, conditional["conditional_samples"], sample_batch,
                feature_batch)
        result.provenance[extractor.name] = {
            "metrics": sorted(metrics), **extractor.provenance(), "reference": real[2],
            "n_generated": n_fake, "seed": cfg.seed, **settings.applied(n_real, n_fake),
            "sample_batch_size": sample_batch,
            "device": str(model.device), **conditional,
        }
        result.metrics.update(metrics)
        _mark_too_few(result.unavailable, too_few_points(
            extractor.name, n_real, n_fake, cfg.manifold_k, f"the reference ({cfg.reference_split} split) "
            f"holds {n_real} images: give that split more or reference another (eval.reference_split)"))
    real, too_few, result.provenance["real_data"] = real_image_metrics(
        dm, extractors, reals, fakes, cfg.reference_split, settings,
        Path(cfg.cache_dir) if cfg.cache_dir else None, feature_batch, cfg.plot_samples_image, out_dir)
    result.metrics.update(real)
    _mark_too_few(result.unavailable, too_few)
    return shown


def batch_size_for(device: torch.device, setting: int | None, *, cpu: int | None, gpu: int) -> int | None:
    """``setting``, or with ``None`` a size for the device: large batches keep a GPU busy, small ones keep
    a CPU's memory and latency low (``cpu=None``: the data loader's own)."""
    if setting is not None:
        return setting
    return gpu if device.type == "cuda" else cpu


def _extractors(model: GenerativeModel, dm: GenerativeDataModule, cfg: EvalConfig,
                unavailable: dict) -> list[tuple]:
    """(extractor, num_classes or None) for every feature network the config asks for, as far as they
    load (:data:`genbench.evaluation.feature_networks.FEATURE_NETWORKS`)."""
    out: list[tuple] = []
    for network in FEATURE_NETWORKS.values():
        if not network.wanted(cfg, dm):
            continue
        name = network.name(dm)
        try:
            out.append((network.load(cfg, dm, model.device), dm.num_classes if network.classifier else None))
        except FeatureExtractorUnavailable as e:
            _mark_unavailable(unavailable, name, network.classifier, e)
            if network.classifier and model.is_conditional:
                unavailable[f"conditional_accuracy_{name}"] = str(e)
    return out


def _mark_too_few(unavailable: dict, too_few: dict[str, str]) -> None:
    """Record the metrics that sets too small could not give (:func:`too_few_points`), one warning a
    reason."""
    unavailable.update(too_few)
    for why in dict.fromkeys(too_few.values()):
        log.warning("%s unavailable: %s", ", ".join(n for n, reason in too_few.items() if reason == why), why)


def _mark_unavailable(unavailable: dict, extractor: str, classifier: bool, reason: Exception) -> None:
    log.warning("%s metrics unavailable: %s", extractor, reason)
    unavailable.update(dict.fromkeys(metric_names(extractor, classifier), str(reason)))
