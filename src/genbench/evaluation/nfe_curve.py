"""Sample quality against the number of network evaluations (NFE), for families with iterative samplers.

:func:`sweep` draws the same number of samples, from the same starting noise, with every sampler a family
offers (``GenerativeModel.samplers``) at each NFE budget: the step count is the largest whose NFE fits the
budget (Heun: 2 steps - 1, midpoint: 2 steps, ...), and the NFE the sampler reports is what is recorded.
Quality on 2D data: the energy distance and W2 (the exact optimal matching of equal-size samples,
:func:`~genbench.evaluation.distances.wasserstein2`) to as many test points; on images: the Fréchet
distance in the dataset classifier's features (``fd_<dataset>_cnn``) against the reference split, or, where
that net is not trained, between Gaussians fitted to the pixels (``fd_data_space``). Each curve also holds
the same metric between real data and the test or reference set (``floor``: what a perfect model scores
at that sample size; on images none where the held-out split holds fewer images than the samples).

The curve record, and what a report needs of it, are in :mod:`genbench.nfe_record`.
"""

import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from genbench.errors import ConfigError
from genbench.evaluation.distances import energy_distance, wasserstein2
from genbench.evaluation.frechet import feature_statistics, frechet_distance
from genbench.models.base import GenerativeModel
from genbench.nfe_record import CurvePoint

DEFAULT_BUDGETS = (5, 10, 20, 50, 100)
Quality = Callable[[Tensor], dict[str, float]]  # samples -> metrics (lower is better)


def steps_for_budget(model: GenerativeModel, sampler: str, budget: int) -> int | None:
    """The step count of ``sampler`` whose NFE is the largest within ``budget`` (the fewest steps among
    equals); None when even one step costs more. Leaves the model on that sampler."""
    best: tuple[int, int] | None = None  # (nfe, steps)
    for steps in range(1, 4 * budget + 1):
        try:
            model.use_sampler(sampler, steps)
        except ConfigError:  # more steps than the model has (a diffusion's T)
            break
        nfe = model.nfe()
        if nfe > 2 * budget:  # NFE grows with the steps (merged levels aside): no later count fits
            break
        if nfe <= budget and (best is None or nfe > best[0]):
            best = (nfe, steps)
    if best is not None:
        model.use_sampler(sampler, best[1])
    return None if best is None else best[1]


BATCH_SEEDS = 1 << 20  # batch k of a draw with seed s starts from seed s * BATCH_SEEDS + k


@torch.no_grad()
def draw(model: GenerativeModel, n: int, seed: int, batch_size: int) -> Tensor:
    """``n`` samples on the CPU, from the same starting noise for a given ``seed``: every batch is seeded
    anew, so a stochastic sampler's noise within one batch leaves the next batch's start unchanged."""
    batches = []
    for k, i in enumerate(range(0, n, batch_size)):
        torch.manual_seed(seed * BATCH_SEEDS + k)
        batches.append(model.sample(min(batch_size, n - i)).cpu())
    return torch.cat(batches)


def sweep(model: GenerativeModel, quality: Quality, *, budgets: Sequence[int] = DEFAULT_BUDGETS,
          samplers: Sequence[str] | None = None, n: int = 2000, seed: int = 0,
          batch_size: int = 500) -> list[CurvePoint]:
    """Quality of ``n`` samples for every sampler (default: all the family offers) at every NFE budget.
    The model is left on the sampler it had."""
    if not model.samplers:
        raise ConfigError(f"{model.family} has no iterative sampler: its NFE is fixed at {model.nfe()}")
    unknown = sorted(set(samplers or ()) - set(model.samplers))
    if unknown:
        raise ConfigError(f"{model.family} has no sampler {unknown}; it offers {list(model.samplers)}")
    original = model.hp
    points = []
    try:
        for sampler in samplers or model.samplers:
            for budget in sorted(set(budgets)):
                steps = steps_for_budget(model, sampler, budget)
                if steps is None or any(p.sampler == sampler and p.steps == steps for p in points):
                    continue  # no step count fits, or the same one as a smaller budget (a capped T)
                start = time.perf_counter()
                samples = draw(model, n, seed, batch_size)
                seconds = time.perf_counter() - start
                points.append(CurvePoint(sampler, budget, steps, model.nfe(), quality(samples), seconds))
    finally:
        model.hp = original
    return points


def vector_quality(test: Tensor) -> Quality:
    """Energy distance and W2 of vector samples to as many test points (the first ones)."""

    def quality(samples: Tensor) -> dict[str, float]:
        if len(samples) > len(test):
            raise ConfigError(f"{len(samples)} samples but only {len(test)} test points; draw fewer")
        reference = test[: len(samples)]
        return {"w2_test": wasserstein2(samples, reference),
                "energy_distance_test": energy_distance(samples, reference)}

    return quality


def feature_quality(extract: Callable[[Tensor], Tensor], reference: Tensor, name: str) -> Quality:
    """The Fréchet distance (``name``) between Gaussians fitted to ``extract``'s features of the samples
    and the ``reference`` features."""
    stats = feature_statistics(reference)

    def quality(samples: Tensor) -> dict[str, float]:
        return {name: frechet_distance(*stats, *feature_statistics(extract(samples)))}

    return quality


def pixel_features(images: Tensor) -> Tensor:
    """Images as flat vectors in [0, 1]: the space of ``fd_data_space`` when no feature net is at hand."""
    return images.flatten(1).double() / 255


# ---- records ------------------------------------------------------------------------------------------
