"""Sample metrics for the 2D sets, whose distribution is known in code.

All of them use the same samples and the first ``n`` test points, so every family is scored alike:
- ``energy_distance_test``: energy distance to held-out data (0 iff the laws match);
- ``fd_data_space``: Fréchet distance of Gaussians fitted in data space (no feature network);
- ``precision/recall/density/coverage_data_space``: the k-NN manifold metrics (k=3) on the points themselves;
- for Gaussian mixtures, mode coverage (modes with at least ``mode_min_count`` samples within 3 std of
  their centre) and the share of high-quality samples (within 3 std of a mode);
- where the true density is known: the mean true log-density of the samples (on its support), the
  share of samples on that support, and ``kl_data_to_model_nats`` = E_data[log p_data - log p_model],
  estimated on test points from the model's test NLL (an upper bound when the likelihood is a bound).
"""

import torch
from torch import Tensor

from genbench.data.toy import ToyDistribution
from genbench.evaluation.distances import energy_distance
from genbench.evaluation.frechet import feature_statistics, frechet_distance
from genbench.evaluation.manifold import manifold_metrics
from genbench.evaluation.modes import mode_coverage


def toy_metrics(samples: Tensor, test: Tensor, distribution: ToyDistribution,
                nll_nats: float | None = None, mode_min_count: int = 1) -> dict[str, float]:
    samples, test = samples.detach().cpu().double(), test.detach().cpu().double()
    out = {
        "energy_distance_test": energy_distance(samples, test),
        "fd_data_space": frechet_distance(*feature_statistics(samples), *feature_statistics(test)),
    }
    n = min(len(samples), len(test))
    manifold = manifold_metrics(test[:n], samples[:n], k=3)
    out.update({f"{name}_data_space": value for name, value in manifold.items()})
    if distribution.modes is not None:
        out.update(mode_coverage(samples, distribution.modes, distribution.std, min_count=mode_min_count))
    if distribution.has_density:
        log_p = distribution.log_prob(samples)
        on_support = torch.isfinite(log_p)
        out["support_fraction"] = on_support.double().mean().item()
        if on_support.any():
            out["true_log_density_of_samples"] = log_p[on_support].mean().item()
        if nll_nats is not None:
            out["kl_data_to_model_nats"] = nll_nats + distribution.log_prob(test).mean().item()
    return out
