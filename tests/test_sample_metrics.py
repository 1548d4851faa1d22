"""Sample-quality metrics match their references and behave as their definitions say."""

import numpy as np
import pytest
import scipy.linalg
import torch

from genbench.data.toy import GaussianGrid, GaussianRing
from genbench.evaluation.frechet import feature_statistics, frechet_distance
from genbench.evaluation.manifold import manifold_metrics
from genbench.evaluation.modes import mode_coverage


def _scipy_frechet(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


@pytest.mark.parametrize("dim", [2, 16, 64])
def test_frechet_distance_matches_scipy_sqrtm(dim):
    rng = np.random.default_rng(dim)
    a, b = rng.normal(size=(dim, dim)), rng.normal(size=(dim, dim))
    s1, s2 = a @ a.T + 0.1 * np.eye(dim), b @ b.T + 0.1 * np.eye(dim)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    ours = frechet_distance(*(torch.from_numpy(t) for t in (mu1, s1, mu2, s2)))
    assert ours == pytest.approx(_scipy_frechet(mu1, s1, mu2, s2), rel=1e-6)


def test_frechet_distance_is_zero_on_itself_and_grows_with_a_shift():
    torch.manual_seed(0)
    x = torch.randn(2000, 8)
    stats = feature_statistics(x)
    assert frechet_distance(*stats, *stats) < 1e-8
    shifted = [frechet_distance(*stats, *feature_statistics(x + s)) for s in (0.1, 0.5, 1.0, 2.0)]
    assert shifted == sorted(shifted)
    # A pure shift by s in every one of 8 dimensions moves the means by 8 s^2 and leaves the covariance.
    assert shifted[-1] == pytest.approx(8 * 2.0**2, rel=1e-9)


def test_precision_recall_of_a_set_against_itself_is_one():
    torch.manual_seed(0)
    x = torch.randn(500, 4)
    m = manifold_metrics(x, x, k=3)
    assert m["precision"] == 1.0 and m["recall"] == 1.0 and m["coverage"] == 1.0
    fresh = manifold_metrics(x, torch.randn(500, 4), k=3)
    assert fresh["precision"] > 0.8 and fresh["recall"] > 0.8 and 0.7 < fresh["density"] < 1.3


def test_samples_from_half_the_modes_have_recall_one_half():
    grid = GaussianGrid(grid_size=4, spacing=4.0, std=0.1)  # 16 well-separated modes
    gen = torch.Generator().manual_seed(0)
    real, component = grid.sample(4000, gen)
    fake_all, fake_component = grid.sample(8000, gen)
    half = fake_all[fake_component < 8][:2000]  # 8 of 16 modes, about 250 samples each
    full = fake_all[:4000]  # all 16 modes at the same density per mode
    m, m_full = manifold_metrics(real, half, k=3), manifold_metrics(real, full, k=3)
    assert m["precision"] > 0.95
    assert m["recall"] == pytest.approx((component < 8).double().mean().item(), abs=0.05)  # about 0.5
    # Coverage also misses a few far-tail real balls at any sample size: half the modes, half the coverage.
    assert m["coverage"] / m_full["coverage"] == pytest.approx(0.5, abs=0.05)


def test_mode_coverage_of_one_mode_and_of_all_modes_of_gaussians8():
    ring = GaussianRing()  # 8 modes, radius 1, std 0.01
    gen = torch.Generator().manual_seed(0)
    x, component = ring.sample(4000, gen)
    one = mode_coverage(x[component == 0], ring.modes, ring.std)
    everything = mode_coverage(x, ring.modes, ring.std)
    assert (one["modes_covered"], everything["modes_covered"]) == (1, 8)
    assert one["mode_coverage"] == 1 / 8 and everything["mode_coverage"] == 1.0
    assert everything["high_quality_fraction"] > 0.98  # 3 std holds 98.9% of a 2D Gaussian's mass
    off_ring = mode_coverage(torch.zeros(100, 2), ring.modes, ring.std)
    assert off_ring["modes_covered"] == 0 and off_ring["high_quality_fraction"] == 0.0


def test_toy_metrics_of_the_true_distribution_are_ideal_and_a_collapsed_model_is_caught():
    from genbench.evaluation.toy import toy_metrics

    ring = GaussianRing(std=0.05)
    gen = torch.Generator().manual_seed(0)
    test, _ = ring.sample(2000, gen)
    truth, _ = ring.sample(2000, gen)
    true_nll = -ring.log_prob(test).mean().item()  # a model equal to the data: KL = 0
    ideal = toy_metrics(truth, test, ring, nll_nats=true_nll)
    assert ideal["energy_distance_test"] < 0.005 and ideal["fd_data_space"] < 0.01
    assert ideal["modes_covered"] == 8 and ideal["high_quality_fraction"] > 0.98
    assert ideal["kl_data_to_model_nats"] == pytest.approx(0.0, abs=1e-5)  # float32 vs float64 log p
    assert ideal["true_log_density_of_samples"] == pytest.approx(-true_nll, abs=0.1)
    collapsed = toy_metrics(truth[_ring_component(truth) == 0], test, ring, nll_nats=true_nll + 2.0)
    assert collapsed["modes_covered"] == 1 and collapsed["energy_distance_test"] > 0.3
    assert collapsed["kl_data_to_model_nats"] == pytest.approx(2.0)
    # Data-space precision/recall tell the two apart: a collapsed model is precise but misses 7/8 of the data.
    assert ideal["precision_data_space"] > 0.9 and ideal["recall_data_space"] > 0.9
    assert collapsed["precision_data_space"] > 0.9 and collapsed["recall_data_space"] < 0.25


def _ring_component(x: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, GaussianRing().modes).argmin(1)


def test_checkerboard_support_fraction():
    from genbench.data.toy import Checkerboard
    from genbench.evaluation.toy import toy_metrics

    board = Checkerboard()
    gen = torch.Generator().manual_seed(0)
    x, _ = board.sample(1000, gen)
    off = torch.tensor([[0.5, -0.5]]).repeat(1000, 1)  # a white square of the 4x4 board over [-4, 4]^2
    assert toy_metrics(x, x, board)["support_fraction"] == 1.0
    assert toy_metrics(torch.cat([x, off]), x, board)["support_fraction"] == pytest.approx(0.5)
