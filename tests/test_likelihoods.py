"""The observation likelihoods are proper distributions and match reference implementations."""

import torch

from genbench.data.pixels import from_symmetric, to_symmetric
from genbench.models.likelihoods import (
    discretized_logistic_log_prob,
    discretized_logistic_mean,
    gaussian_log_prob,
    sample_discretized_logistic,
    standard_normal_log_prob,
)


def test_gaussian_log_prob_matches_torch_distributions():
    x, mean, log_std = torch.randn(3, 5, 4).unbind(0)
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(x).sum(1)
    torch.testing.assert_close(gaussian_log_prob(x, mean, log_std), ref)
    ref0 = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(1)
    torch.testing.assert_close(standard_normal_log_prob(x), ref0)


def test_discretized_logistic_sums_to_one_over_256_levels():
    levels = to_symmetric(torch.arange(256, dtype=torch.uint8)).view(256, 1)
    for mean, log_scale in [(0.0, -3.0), (0.9, -5.0), (-1.0, -1.0), (0.3, -9.0), (0.0, 1.0)]:
        m = torch.full((256, 1), mean)
        s = torch.full((256, 1), log_scale)
        total = discretized_logistic_log_prob(levels, m, s).exp().sum()
        assert abs(total.item() - 1.0) < 1e-4, (mean, log_scale, total)


def test_discretized_logistic_samples_follow_its_pmf():
    torch.manual_seed(0)
    mean, log_scale = torch.full((200_000, 1), 0.2), torch.full((200_000, 1), -3.0)
    draws = from_symmetric(sample_discretized_logistic(mean, log_scale)).long().flatten()
    freq = torch.bincount(draws, minlength=256).float() / len(draws)
    levels = to_symmetric(torch.arange(256, dtype=torch.uint8)).view(256, 1)
    pmf = discretized_logistic_log_prob(levels, mean[:256], log_scale[:256]).exp()
    assert (freq - pmf).abs().max() < 5e-3


def test_discretized_logistic_mean_matches_the_mean_of_its_draws():
    torch.manual_seed(1)
    mean = torch.tensor([[-1.2, -0.9, 0.0, 0.7, 0.98]])
    log_scale = torch.tensor([[-1.0, -2.0, -4.0, -0.5, -1.5]])
    draws = sample_discretized_logistic(mean.expand(400_000, 5), log_scale.expand(400_000, 5))
    expected = discretized_logistic_mean(mean, log_scale)[0]
    torch.testing.assert_close(expected, draws.mean(0), atol=3e-3, rtol=0)
