"""Sample metrics for the 2D sets, whose distribution is known in code.

All but the mode metrics use the same samples and as many test points, so every family is scored alike:
- ``energy_distance_test``: energy distance to held-out data (0 iff the laws match);
- ``fd_data_space``: Fréchet distance of Gaussians fitted in data space (no feature network);
- ``precision/recall/density/coverage_data_space``: the k-NN manifold metrics (k=3) on the points themselves;
- for Gaussian mixtures, PacGAN's mode coverage and share of high-quality samples
  (:mod:`genbench.evaluation.modes`), counted over their own ``mode_samples`` (PacGAN: 2,500);
- where the true density is known: the mean true log-density of the samples (on its support) and the
  share of samples on that support. (``kl_data_to_model_nats`` needs the model's likelihood of the same
  test points: :mod:`genbench.evaluation.likelihood` computes it.)
"""

import torch
from torch import Tensor

from genbench.data.toy import ToyDistribution
from genbench.evaluation.distances import energy_distance
from genbench.evaluation.frechet import feature_statistics, frechet_distance
from genbench.evaluation.manifold import manifold_metrics
from genbench.evaluation.modes import mode_coverage

DATA_SPACE_K = 3  # k of the data-space k-NN metrics (precision, recall, density, coverage): torch-fidelity's


def toy_metrics(samples: Tensor, test: Tensor, distribution: ToyDistribution,
                mode_samples: Tensor | None = None, mode_min_count: int = 20) -> dict[str, float]:
    """``mode_samples``: the samples the mode metrics count (``samples`` when None)."""
    samples, test = samples.detach().cpu().double(), test.detach().cpu().double()
    out = {
        "energy_distance_test": energy_distance(samples, test),
        "fd_data_space": frechet_distance(*feature_statistics(samples), *feature_statistics(test)),
    }
    n = min(len(samples), len(test))
    manifold = manifold_metrics(test[:n], samples[:n], k=DATA_SPACE_K)
    out.update({f"{name}_data_space": value for name, value in manifold.items()})
    if distribution.modes is not None:
        counted = samples if mode_samples is None else mode_samples.detach().cpu()
        out.update(mode_coverage(counted, distribution.modes, distribution.std, min_count=mode_min_count))
    if distribution.has_density:
        log_p = distribution.log_prob(samples)
        on_support = torch.isfinite(log_p)
        out["support_fraction"] = on_support.double().mean().item()
        if on_support.any():
            out["true_log_density_of_samples"] = log_p[on_support].mean().item()
    return out
