"""Image sample quality and diversity on the features of one extractor, the same for every family.

For an extractor called ``<name>`` (``inception`` or a dataset classifier such as ``digits_cnn``):
- ``fid_inception`` / ``fd_<name>``: Fréchet distance of Gaussians fitted to real and generated features
  (only the Inception one is called FID);
- ``kid_<name>`` and ``kid_<name>_std``: kernel inception distance (unbiased polynomial MMD^2 over subsets);
- ``precision_/recall_/density_/coverage_<name>``: k-NN manifold metrics on the same features;
- ``is_inception`` (Inception Score on the 1008-way logits) or ``classifier_score_<name>`` (the same
  statistic with the dataset classifier), each with ``_std`` over splits;
- classifiers only: ``class_coverage_<name>``, ``class_entropy_<name>``, ``class_max_share_<name>`` from
  the predicted classes of the samples, and for a conditional model ``conditional_accuracy_<name>``.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from genbench.evaluation.frechet import MIN_SAMPLES, feature_statistics, frechet_distance
from genbench.evaluation.manifold import manifold_metrics
from genbench.evaluation.scores import class_coverage, inception_score, kernel_inception_distance
from genbench.progress import progress


@dataclass(frozen=True)
class QualitySettings:
    kid_subsets: int
    kid_subset_size: int
    manifold_k: int
    manifold_samples: int
    score_splits: int
    seed: int

    def applied(self, n_real: int, n_fake: int) -> dict[str, int]:
        """The settings as the metrics use them on sets of these sizes (a small run shrinks them), for the
        metrics and for their provenance alike."""
        return {"kid_subsets": self.kid_subsets, "kid_subset_size": min(self.kid_subset_size, n_real, n_fake),
                "manifold_k": self.manifold_k, "manifold_points": min(self.manifold_samples, n_real, n_fake),
                "score_splits": min(self.score_splits, n_fake)}


def metric_names(extractor: str, classifier: bool) -> list[str]:
    """Every metric :func:`feature_metrics` writes for ``extractor``: also what 'unavailable' lists."""
    fd = "fid_inception" if extractor == "inception" else f"fd_{extractor}"
    score = "is_inception" if extractor == "inception" else f"classifier_score_{extractor}"
    names = [fd, f"kid_{extractor}", f"kid_{extractor}_std", score, f"{score}_std"]
    names += [f"{m}_{extractor}" for m in ("precision", "recall", "density", "coverage")]
    if classifier:
        names += [f"{m}_{extractor}" for m in ("class_coverage", "class_entropy", "class_max_share")]
    return names


def too_few_points(extractor: str, n_real: int, n_fake: int, k: int, context: str = "") -> dict[str, str]:
    """The metrics of ``extractor`` that sets of ``n_real`` real and ``n_fake`` generated images cannot
    give, each with why (and ``context``, where given: which split is small): a covariance and the unbiased
    KID need 2 of each, the k-NN metrics k + 1. The config bounds the sample counts; a split of a few
    images (a tiny ``dataset.test_fraction``) can still be the reference or the held-out floor, and it
    costs these metrics, not the run."""
    fd, kid, kid_std, _, _, *manifold_names = metric_names(extractor, False)
    sizes = f"the sets hold {n_real} and {n_fake}" + (f"; {context}" if context else "")
    out = {}
    if min(n_real, n_fake) < MIN_SAMPLES:  # the unbiased KID leaves out the diagonal: 2 as well
        out.update(dict.fromkeys([fd, kid, kid_std], f"a covariance and the unbiased KID need {MIN_SAMPLES} "
                                                     f"images of each set, {sizes}"))
    if min(n_real, n_fake) <= k:
        out.update(dict.fromkeys(manifold_names, f"the k-NN metrics with eval.manifold_k={k} need {k + 1} "
                                                 f"images of each set, {sizes}"))
    return out


def feature_metrics(extractor: str, real: tuple[Tensor, Tensor], fake: tuple[Tensor, Tensor],
                    settings: QualitySettings, num_classes: int | None = None) -> dict[str, float]:
    """The metrics of one extractor from (features, logits) of real and generated images: all but those
    :func:`too_few_points` names for the sets' sizes."""
    (real_f, _), (fake_f, fake_logits) = real, fake
    applied = settings.applied(len(real_f), len(fake_f))
    skipped = too_few_points(extractor, len(real_f), len(fake_f), settings.manifold_k)
    fd, kid, kid_std, score, score_std, *manifold_names = metric_names(extractor, False)
    generator = torch.Generator().manual_seed(settings.seed)
    out = {}
    if fd not in skipped:
        out[fd] = frechet_distance(*feature_statistics(real_f), *feature_statistics(fake_f))
        out[kid], out[kid_std] = kernel_inception_distance(
            real_f, fake_f, subsets=settings.kid_subsets, subset_size=applied["kid_subset_size"],
            generator=generator)
    out[score], out[score_std] = inception_score(fake_logits, splits=applied["score_splits"])
    if manifold_names[0] not in skipped:
        n = applied["manifold_points"]  # equal sizes: k-NN radii shrink with N
        manifold = manifold_metrics(_subset(real_f, n, generator), _subset(fake_f, n, generator),
                                    k=settings.manifold_k)
        out.update({name: manifold[name.rsplit(f"_{extractor}", 1)[0]] for name in manifold_names})
    if num_classes is not None:
        coverage = class_coverage(fake_logits, num_classes)
        out.update({f"{key}_{extractor}": value for key, value in coverage.items()})
    return out


def _subset(x: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """At most ``n`` rows of ``x`` at random (k-NN metrics cost O(N^2))."""
    if len(x) <= n:
        return x
    return x[torch.randperm(len(x), generator=generator)[:n]]


@torch.no_grad()
def conditional_accuracy(model, classifier, num_classes: int, n: int, batch_size: int,
                         feature_batch_size: int) -> float:
    """Share of samples generated for label y (labels cycling through all classes) that the dataset
    ``classifier`` (its ``extract`` gives features and logits) assigns to y: how well a conditional model
    obeys its labels. The images stay on the model's device, as for the other feature metrics."""
    labels = torch.arange(n) % num_classes
    hits = 0
    for chunk in progress(labels.split(batch_size), f"conditional sampling of {n} images",
                          total=-(-n // batch_size)):
        images = model.sample(len(chunk), labels=chunk.to(model.device))
        hits += (classifier.extract(images, feature_batch_size)[1].argmax(1) == chunk).sum().item()
    return hits / n


@torch.no_grad()
def class_rows(model, num_classes: int, n: int) -> tuple[Tensor, int]:
    """About ``n`` samples of a conditional model, class k filling row k of the grid; and the row length."""
    per_class = max(1, n // num_classes)
    labels = torch.arange(num_classes).repeat_interleave(per_class).to(model.device)
    return model.sample(len(labels), labels=labels).cpu(), per_class


@torch.no_grad()
def generate_images(model, n: int, batch_size: int) -> Tensor:
    """``n`` samples of ``model`` in data space (uint8 images), drawn in batches, on the CPU."""
    starts = range(0, n, batch_size)
    batches = progress(starts, f"sampling {n} images", total=len(starts))
    return torch.cat([model.sample(min(batch_size, n - start)).cpu() for start in batches])


@torch.no_grad()
def sample_features(model, extractors: list, n: int, batch_size: int, feature_batch_size: int,
                    keep: int) -> tuple[dict[str, tuple[Tensor, Tensor]], Tensor]:
    """Features and logits of ``n`` samples for each extractor, streamed: each batch of samples goes
    through every extractor on the model's device and is dropped, so 50,000 images never sit in memory at
    once (only their features do). Returns ``{name: (features, logits)}`` and the first ``keep`` images."""
    parts: dict[str, tuple[list[Tensor], list[Tensor]]] = {e.name: ([], []) for e in extractors}
    shown: list[Tensor] = []
    kept = 0
    starts = range(0, n, batch_size)
    for start in progress(starts, f"sampling {n} images and their features", total=len(starts)):
        images = model.sample(min(batch_size, n - start))
        if kept < keep:
            shown.append(images[: keep - kept].cpu())
            kept += len(shown[-1])
        for extractor in extractors:
            features, logits = extractor.extract(images, feature_batch_size)
            parts[extractor.name][0].append(features)
            parts[extractor.name][1].append(logits)
    out = {name: (torch.cat(f), torch.cat(lg)) for name, (f, lg) in parts.items()}
    return out, torch.cat(shown)
