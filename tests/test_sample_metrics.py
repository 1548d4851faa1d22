"""Sample-quality metrics match their references and behave as their definitions say."""

import math
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.linalg
import torch

from genbench.data.toy import GaussianGrid, GaussianRing, ToyDataModule
from genbench.evaluation.frechet import feature_statistics, frechet_distance
from genbench.evaluation.manifold import manifold_metrics
from genbench.evaluation.modes import mode_coverage
from genbench.evaluation.stage import EvalConfig, evaluate
from genbench.models.base import GenerativeModel
from genbench.models.optim import OptimizationConfig


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


def test_a_sample_exactly_three_std_from_its_mode_is_not_high_quality():
    """PacGAN's code counts a sample when its distance is strictly below 3 std."""
    modes = torch.tensor([[0.0, 0.0], [10.0, 0.0]], dtype=torch.float64)
    on_edge = mode_coverage(torch.tensor([[3.0, 0.0]], dtype=torch.float64), modes, std=1.0)
    inside = mode_coverage(torch.tensor([[2.999, 0.0]], dtype=torch.float64), modes, std=1.0)
    assert on_edge["modes_covered"] == 0 and on_edge["high_quality_fraction"] == 0.0
    assert inside["modes_covered"] == 1 and inside["high_quality_fraction"] == 1.0


@dataclass
class _NoOptions(OptimizationConfig):  # a family's schema, with no options of its own
    pass


class _KnownModel(GenerativeModel):
    """A stand-in family with known samples and likelihood, so the evaluation stage's own counting is
    tested: it samples a generator collapsed onto mode 0 with one stray sample at each other mode's centre,
    and its log-likelihood is the data's true log-density minus ``offset`` (so its KL is ``offset``)."""

    family = "known"
    config_schema = _NoOptions
    likelihood_kind = "exact"

    def __init__(self, distribution, offset: float) -> None:
        super().__init__((2,))
        self.distribution, self.offset, self.requests, self.scored = distribution, offset, [], []

    def sample(self, n: int, labels=None) -> torch.Tensor:
        self.requests.append(n)
        stray = self.distribution.modes[1:]
        bulk = self.distribution.modes[0] + self.distribution.std * torch.randn(n, 2)
        return torch.cat([stray, bulk])[:n]

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        self.scored.append(len(x))
        return self.distribution.log_prob(x.double()) - self.offset

    def nfe(self) -> int:
        return 1


FAST_EVAL = {"speed_batch_size": 8, "speed_repeats": 1, "speed_warmup": 0, "plot_samples_vector": 200}


def test_evaluation_counts_modes_by_pacgans_rule_over_2500_samples(tmp_path):
    """A collapsed generator with stray samples: PacGAN captures every mode that one high-quality sample
    reaches; the thresholded variant (20 samples by default) sees the collapse."""
    torch.manual_seed(0)
    dm = ToyDataModule(name="gaussians8", n_test=500)
    model = _KnownModel(dm.distribution, offset=0.0)
    metrics = evaluate(model, dm, EvalConfig(**FAST_EVAL), tmp_path).metrics
    assert 2500 in model.requests  # PacGAN's sample count, drawn for the mode metrics
    assert metrics["modes_covered"] == 8 and metrics["mode_coverage"] == 1.0 and metrics["modes_total"] == 8
    assert metrics["modes_covered_thresholded"] == 1
    # 7 stray samples at centres and 2493 draws of mode 0, of which 98.9% lie within 3 std.
    assert metrics["high_quality_fraction"] == pytest.approx((7 + 0.989 * 2493) / 2500, abs=0.005)


@pytest.mark.parametrize("max_test_batches", [None, 3])
@pytest.mark.parametrize("likelihood_batch_size", [None, 100])
def test_kl_uses_the_same_test_points_for_both_terms(tmp_path, max_test_batches, likelihood_batch_size):
    """A model off the true log-density by a constant 0.5 nats has KL exactly 0.5, whatever the number of
    samples drawn and test points scored (it was 0.5 plus the gap between two test subsets' mean log p);
    the same test points in the same numbers whether the model scores the loader's batches or larger ones."""
    torch.manual_seed(0)
    dm = ToyDataModule(name="gaussians8", n_test=1000, batch_size=64)
    model = _KnownModel(dm.distribution, offset=0.5)
    cfg = EvalConfig(**FAST_EVAL, max_test_batches=max_test_batches,
                     likelihood_batch_size=likelihood_batch_size)
    metrics = evaluate(model, dm, cfg, tmp_path).metrics
    n_scored = 1000 if max_test_batches is None else 3 * 64
    size = likelihood_batch_size or 64
    assert model.scored == [size] * (n_scored // size) + ([n_scored % size] if n_scored % size else [])
    assert metrics["kl_data_to_model_nats"] == pytest.approx(0.5, abs=1e-9)
    assert metrics["kl_data_to_model_nats_se"] == pytest.approx(0.0, abs=1e-9)  # the same offset everywhere
    n = 1000 if max_test_batches is None else 3 * 64
    nll = -(dm.distribution.log_prob(dm.split_tensor("test")[:n].double()) - 0.5)
    assert metrics["test_examples"] == n
    assert metrics["nll_nats"] == pytest.approx(nll.mean().item(), abs=1e-9)
    assert metrics["nll_nats_se"] == pytest.approx(nll.std().item() / n**0.5, rel=1e-9)
    assert metrics["nll_nats_median"] == pytest.approx(nll.median().item(), abs=1e-9)
    assert metrics["nll_bpd_se"] == pytest.approx(metrics["nll_nats_se"] / (2 * math.log(2)), rel=1e-9)


def test_toy_metrics_of_the_true_distribution_are_ideal_and_a_collapsed_model_is_caught():
    from genbench.evaluation.toy import toy_metrics

    ring = GaussianRing(std=0.05)
    gen = torch.Generator().manual_seed(0)
    test, _ = ring.sample(2000, gen)
    truth, _ = ring.sample(2000, gen)
    ideal = toy_metrics(truth, test, ring)
    assert ideal["energy_distance_test"] < 0.005 and ideal["fd_data_space"] < 0.01
    assert ideal["modes_covered"] == 8 and ideal["high_quality_fraction"] > 0.98
    assert ideal["true_log_density_of_samples"] == pytest.approx(ring.log_prob(test).mean().item(), abs=0.1)
    collapsed = toy_metrics(truth[_ring_component(truth) == 0], test, ring)
    assert collapsed["modes_covered"] == 1 and collapsed["energy_distance_test"] > 0.3
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


def test_rebatched_regroups_a_loaders_inputs_in_order():
    from genbench.evaluation.likelihood import rebatched

    loader = [(torch.arange(i, i + n), None) for i, n in ((0, 64), (64, 64), (128, 64), (192, 10))]
    regrouped = list(rebatched(loader, 100))
    assert [len(x) for x in regrouped] == [100, 100, 2]
    assert torch.equal(torch.cat(regrouped), torch.arange(202))
    assert [len(x) for x in rebatched(loader, None)] == [64, 64, 64, 10]
    assert [len(x) for x in rebatched(loader, 32)] == [32] * 6 + [10]
