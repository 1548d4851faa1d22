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

from genbench.config import Schema, param
from genbench.data.base import GenerativeDataModule
from genbench.errors import FeatureExtractorUnavailable
from genbench.evaluation.feature_net import feature_net_path, load_feature_net
from genbench.evaluation.inception import InceptionFeatures, find_weights
from genbench.evaluation.likelihood import test_likelihood
from genbench.evaluation.plots import save_samples_png
from genbench.evaluation.quality import (
    QualitySettings,
    conditional_accuracy,
    feature_metrics,
    generate_images,
    metric_names,
)
from genbench.evaluation.reference import reference_features, reference_images
from genbench.evaluation.speed import sampling_speed
from genbench.evaluation.toy import toy_metrics
from genbench.models.base import GenerativeModel

log = logging.getLogger(__name__)


@dataclass
class EvalConfig(Schema):
    seed: int = param(0, ge=0)  # seeds the stochastic parts of evaluation (bounds, samples, KID subsets)
    max_test_batches: int | None = param(None, ge=1)  # None: the whole test split
    speed_batch_size: int = param(256, ge=1)
    speed_repeats: int = param(10, ge=1)
    speed_warmup: int = param(2, ge=0)
    plot_samples_vector: int = param(2000, ge=2)  # 2D sets: samples for samples.png and the 2D metrics
    plot_samples_image: int = param(64, ge=1)
    mode_samples: int = param(2500, ge=1)  # 2D mixtures: samples PacGAN's mode coverage counts over
    mode_min_count: int = param(20, ge=1)  # 2D mixtures: samples a mode needs in modes_covered_thresholded
    # Image sample quality
    num_samples: int = param(10000, ge=2)  # generated images; 50000 for numbers comparable with papers
    num_real: int | None = param(None, ge=2)  # real reference images; None: the whole reference split
    reference_split: str = param("train", choices=["train", "val", "test"])
    sample_batch_size: int = param(500, ge=1)
    feature_batch_size: int = param(64, ge=1)
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
    result.metrics.update(test_likelihood(model, dm.test_dataloader(), cfg.max_test_batches, density))
    result.provenance["likelihood"] = {"split": "test", "n_test": result.metrics.get("test_examples"),
                                       "seed": cfg.seed}
    result.metrics.update(sampling_speed(model, cfg.speed_batch_size, cfg.speed_repeats, cfg.speed_warmup))
    result.metrics["nfe"] = model.nfe()
    result.metrics["num_parameters"] = model.num_parameters()
    test = dm.split_tensor("test")
    if dm.is_image:
        samples = _image_quality(model, dm, cfg, result)[: cfg.plot_samples_image]
    else:
        mixture = distribution is not None and distribution.modes is not None
        with torch.no_grad():  # mixtures: one draw serves the other metrics and PacGAN's mode counts
            drawn = model.sample(max(cfg.plot_samples_vector, cfg.mode_samples if mixture else 0))
        samples = drawn[: cfg.plot_samples_vector]
        if distribution is not None:
            result.metrics.update(toy_metrics(samples, test[: len(samples)], distribution,
                                              drawn[: cfg.mode_samples], cfg.mode_min_count))
            result.provenance["toy"] = {"n_samples": len(samples), "n_test": min(len(samples), len(test)),
                                        "mode_samples": cfg.mode_samples,
                                        "mode_min_count": cfg.mode_min_count, "mode_n_std": 3.0,
                                        "seed": cfg.seed}
    title = f"{model.family} on {dm.name}: {len(samples)} samples"
    save_samples_png(samples, test, out_dir / "samples.png", title)
    return result


def _image_quality(model: GenerativeModel, dm: GenerativeDataModule, cfg: EvalConfig,
                   result: Evaluation) -> torch.Tensor:
    """Feature metrics of ``cfg.num_samples`` generated images with every extractor at hand; returns the
    generated images (only as many as samples.png shows when no extractor loads)."""
    extractors = _extractors(model, dm, cfg, result.unavailable)
    torch.manual_seed(cfg.seed)
    if not extractors:  # nothing to score: draw only the images samples.png shows
        return generate_images(model, cfg.plot_samples_image, cfg.sample_batch_size)
    fake_images = generate_images(model, cfg.num_samples, cfg.sample_batch_size)
    real_images = reference_images(dm.split_tensor(cfg.reference_split), cfg.num_real)
    settings = QualitySettings(cfg.kid_subsets, cfg.kid_subset_size, cfg.manifold_k, cfg.manifold_samples,
                               cfg.score_splits, cfg.seed)
    for extractor, num_classes in extractors:
        real = reference_features(extractor, real_images, dataset=dm.name, split=cfg.reference_split,
                                  cache_dir=Path(cfg.cache_dir) if cfg.cache_dir else None,
                                  batch_size=cfg.feature_batch_size)
        fake = extractor.extract(fake_images, cfg.feature_batch_size)
        metrics = feature_metrics(extractor.name, real[:2], fake, settings, num_classes)
        conditional = {}
        if num_classes is not None and model.is_conditional:
            conditional["conditional_samples"] = min(cfg.conditional_samples, cfg.num_samples)
            metrics[f"conditional_accuracy_{extractor.name}"] = conditional_accuracy(
                model, extractor, num_classes, conditional["conditional_samples"], cfg.sample_batch_size)
        result.provenance[extractor.name] = {
            "metrics": sorted(metrics), **extractor.provenance(), "reference": real[2],
            "n_generated": len(fake_images), "seed": cfg.seed, "kid_subsets": cfg.kid_subsets,
            "kid_subset_size": min(cfg.kid_subset_size, len(real_images), len(fake_images)),
            "manifold_k": cfg.manifold_k,
            "manifold_points": min(cfg.manifold_samples, len(real_images), len(fake_images)),
            "score_splits": min(cfg.score_splits, len(fake_images)), **conditional,
        }
        result.metrics.update(metrics)
    return fake_images


def _extractors(model: GenerativeModel, dm: GenerativeDataModule, cfg: EvalConfig,
                unavailable: dict) -> list[tuple]:
    """(extractor, num_classes or None) for Inception and the dataset classifier, as far as they load."""
    out: list[tuple] = []
    if cfg.inception:
        try:
            out.append((InceptionFeatures(find_weights(cfg.inception_weights, cfg.inception_download),
                                          model.device), None))
        except FeatureExtractorUnavailable as e:
            _mark_unavailable(unavailable, "inception", False, e)
    if cfg.feature_net and dm.num_classes:
        name = f"{dm.name}_cnn"
        try:
            net = load_feature_net(feature_net_path(cfg.feature_net_dir, dm.name), model.device)
            out.append((net, dm.num_classes))
        except FeatureExtractorUnavailable as e:
            _mark_unavailable(unavailable, name, True, e)
            if model.is_conditional:
                unavailable[f"conditional_accuracy_{name}"] = str(e)
    return out


def _mark_unavailable(unavailable: dict, extractor: str, classifier: bool, reason: Exception) -> None:
    log.warning("%s metrics unavailable: %s", extractor, reason)
    unavailable.update(dict.fromkeys(metric_names(extractor, classifier), str(reason)))
