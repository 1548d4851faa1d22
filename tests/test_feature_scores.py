"""Feature-based scores (KID, Inception Score, class coverage, blocked manifold metrics) match torch-fidelity
and torchmetrics on the same inputs and behave as their definitions say."""

import numpy as np
import pytest
import scipy.spatial
import torch
from torch import nn
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kernel_mmd, kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd

from genbench.evaluation.manifold import BOUNDARY_RTOL, manifold_metrics
from genbench.evaluation.scores import (
    class_coverage,
    inception_score,
    kernel_inception_distance,
    polynomial_mmd2,
)


def _features(n: int, dim: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return shift + scale * torch.randn(n, dim, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize(("degree", "gamma", "coef0"), [(3, None, 1.0), (2, 0.05, 0.5)])
def test_polynomial_mmd2_matches_torch_fidelity_and_torchmetrics(degree, gamma, coef0):
    x, y = _features(300, 64, 0), _features(300, 64, 1, shift=0.3, scale=1.2)
    ours = polynomial_mmd2(x, y, degree=degree, gamma=gamma, coef0=coef0)
    kernel = {"degree": degree, "gamma": gamma, "coef0": coef0}
    reference = kernel_mmd(x.numpy(), y.numpy(), **{f"kid_kernel_poly_{k}": v for k, v in kernel.items()})
    assert ours == pytest.approx(reference, rel=1e-6)
    assert ours == pytest.approx(poly_mmd(x, y, degree, gamma, coef0).item(), rel=1e-6)


def test_polynomial_mmd2_of_unequal_sets_is_the_pairwise_u_statistic():
    x, y = _features(7, 3, 0), _features(5, 3, 1, shift=1.0)

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    within_x = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    within_y = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    cross = sum(k(a, b) for a in x for b in y) / (7 * 5)
    assert polynomial_mmd2(x, y) == pytest.approx((within_x + within_y - 2 * cross).item(), rel=1e-12)


def test_kid_matches_torch_fidelity_on_one_full_subset_and_on_its_own_subsets():
    real, fake = _features(400, 32, 0), _features(350, 32, 1, shift=0.2)
    reference = kid_features_to_metric(real[:350], fake, kid_subsets=1, kid_subset_size=350, verbose=False)
    mean, std = kernel_inception_distance(real[:350], fake, subsets=1, subset_size=350)
    assert mean == pytest.approx(reference["kernel_inception_distance_mean"], rel=1e-6) and std == 0.0
    # Several subsets: score torch-fidelity's own draws (RandomState(rng_seed).choice, real then fake).
    reference = kid_features_to_metric(real, fake, kid_subsets=8, kid_subset_size=100, verbose=False)
    rng = np.random.RandomState(2020)  # torch-fidelity's default rng_seed
    mmds = []
    for _ in range(8):
        real_rows, fake_rows = rng.choice(400, 100, replace=False), rng.choice(350, 100, replace=False)
        mmds.append(polynomial_mmd2(real[real_rows], fake[fake_rows]))
    assert np.mean(mmds) == pytest.approx(reference["kernel_inception_distance_mean"], rel=1e-6)
    assert np.std(mmds) == pytest.approx(reference["kernel_inception_distance_std"], rel=1e-6)


@pytest.mark.filterwarnings("ignore:Metric .* will save all extracted features")
def test_kid_draws_the_same_subsets_as_torchmetrics_from_the_global_generator():
    real, fake = _features(300, 16, 0), _features(250, 16, 1, shift=0.2)
    metric = KernelInceptionDistance(feature=nn.Identity(), subsets=6, subset_size=100)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    torch.manual_seed(0)
    reference = [t.item() for t in metric.compute()]
    torch.manual_seed(0)
    ours = kernel_inception_distance(real, fake, subsets=6, subset_size=100)
    assert ours == pytest.approx(reference, rel=1e-6)


def test_kid_is_about_zero_for_one_law_grows_with_a_shift_and_shrinks_its_subsets_to_fit():
    x, x2 = _features(1000, 32, 0), _features(1000, 32, 1)

    def kid(fake: torch.Tensor) -> float:
        return kernel_inception_distance(x, fake, subsets=10, subset_size=500, generator=torch.Generator())[0]

    same, *shifted = (kid(x2 + s) for s in (0.0, 0.2, 0.5, 1.0))
    assert shifted == sorted(shifted) and abs(same) < 0.05 * shifted[0]
    shrunk, fitted = (
        kernel_inception_distance(x, x2[:50], subsets=3, generator=torch.Generator().manual_seed(1), **size)
        for size in ({}, {"subset_size": 50})
    )
    assert shrunk == fitted  # fewer rows than subset_size: subsets of min(len(real), len(fake))


@pytest.mark.parametrize(("n", "splits"), [(1000, 10), (1000, 3), (997, 7)])
def test_inception_score_matches_torch_fidelity(n, splits):
    logits = 3 * torch.randn(n, 10, generator=torch.Generator().manual_seed(n + splits))
    reference = isc_features_to_metric(logits, splits=splits)  # shuffles with RandomState(2020)
    ours = inception_score(logits[np.random.RandomState(2020).permutation(n)], splits=splits)
    assert ours == pytest.approx(tuple(reference.values()), rel=1e-5)
    unshuffled = isc_features_to_metric(logits, splits=splits, shuffle=False)
    assert inception_score(logits, splits) == pytest.approx(tuple(unshuffled.values()), rel=1e-5)


@pytest.mark.filterwarnings("ignore:Metric .* will save all extracted features")
def test_inception_score_agrees_with_torchmetrics_up_to_its_bessel_corrected_std():
    logits = 3 * torch.randn(1000, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    metric = InceptionScore(feature=nn.Identity(), splits=4)  # N divisible by splits: the same chunks
    metric.update(logits)
    torch.manual_seed(0)
    tm_mean, tm_std = (t.item() for t in metric.compute())
    torch.manual_seed(0)
    mean, std = inception_score(logits[torch.randperm(1000)], splits=4)
    assert mean == pytest.approx(tm_mean, rel=1e-6)
    assert std * (4 / 3) ** 0.5 == pytest.approx(tm_std, rel=1e-6)  # torchmetrics divides by splits - 1


def test_inception_score_of_confident_even_and_of_identical_predictions():
    labels = torch.arange(1000) % 10
    confident = 50.0 * nn.functional.one_hot(labels, 10).double()
    assert inception_score(confident, splits=5)[0] == pytest.approx(10.0, rel=1e-9)
    grouped = confident[labels.argsort(stable=True)]  # 100 of class 0, then 100 of class 1, ...
    assert inception_score(grouped, splits=1)[0] == pytest.approx(10.0, rel=1e-9)
    assert inception_score(grouped, splits=10)[0] == pytest.approx(1.0)  # why rows must be in random order
    identical = torch.randn(1, 10).repeat(500, 1)
    assert inception_score(identical, splits=5) == pytest.approx((1.0, 0.0), abs=1e-12)
    assert inception_score(1e3 * torch.eye(10)[:2].repeat(50, 1), splits=1)[0] == pytest.approx(2.0)  # no NaN


def test_class_coverage_of_one_class_of_even_classes_and_with_a_minimum_share():
    def logits(labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(labels, 10).float()

    one = class_coverage(logits(torch.full((100,), 3)), num_classes=10)
    assert one == {"class_coverage": 0.1, "class_entropy": 0.0, "class_max_share": 1.0}
    even = class_coverage(logits(torch.arange(1000) % 10), num_classes=10)
    assert even == pytest.approx({"class_coverage": 1.0, "class_entropy": 1.0, "class_max_share": 0.1})
    stray = torch.cat([torch.arange(900) % 9, torch.full((2,), 9)])  # class 9 hit by 2 of 902 samples
    assert class_coverage(logits(stray), num_classes=10)["class_coverage"] == 1.0
    assert class_coverage(logits(stray), num_classes=10, min_share=0.05)["class_coverage"] == 0.9
    with pytest.raises(ValueError, match="logits"):
        class_coverage(logits(stray), num_classes=12)


def _dense_manifold_metrics(real: torch.Tensor, fake: torch.Tensor, k: int) -> dict[str, float]:
    """The definitions on whole (M, N) matrices, as manifold_metrics computed them before blocking."""
    real_radii = torch.cdist(real, real).kthvalue(k + 1, dim=1).values
    fake_radii = torch.cdist(fake, fake).kthvalue(k + 1, dim=1).values
    fake_to_real = torch.cdist(fake, real)
    inside_real = fake_to_real <= real_radii[None, :]
    strictly_inside_real = fake_to_real < real_radii[None, :] * (1 - BOUNDARY_RTOL)
    inside_fake = (fake_to_real <= fake_radii[:, None]).T  # real i inside fake ball j
    return {
        "precision": inside_real.any(1).double().mean().item(),
        "recall": inside_fake.any(1).double().mean().item(),
        "density": (strictly_inside_real.double().sum(1).mean() / k).item(),
        "coverage": strictly_inside_real.any(0).double().mean().item(),
    }


@pytest.mark.parametrize("block_size", [1, 64, 1024])
def test_blocked_manifold_metrics_equal_the_dense_computation(block_size):
    real, fake = _features(300, 8, 0), _features(250, 8, 1, shift=0.3, scale=0.8)
    for k in (3, 5):
        blocked = manifold_metrics(real, fake, k, block_size=block_size)
        assert blocked == _dense_manifold_metrics(real, fake, k)


def test_manifold_metrics_need_k_plus_one_points_of_each_set():
    """With k or fewer, torch's kthvalue failed with "selected number k out of range" (eval.num_samples=2)."""
    real, fake = _features(4, 8, 0), _features(4, 8, 1)
    assert set(manifold_metrics(real, fake, k=3)) == {"precision", "recall", "density", "coverage"}
    with pytest.raises(ValueError, match="k=3 need more than 3 points in each set, got 4 real and 3 generat"):
        manifold_metrics(real, fake[:3], k=3)


@pytest.mark.parametrize("k", [3, 5])
def test_precision_recall_match_torch_fidelity(k):
    real, fake = _features(600, 16, 0), _features(500, 16, 1, shift=0.5, scale=1.1)
    # torch-fidelity's convention: features_1 is generated, features_2 real.
    reference = prc_features_to_metric(fake, real, prc_neighborhood=k, verbose=False)
    ours = manifold_metrics(real, fake, k, block_size=128)
    assert ours["precision"] == pytest.approx(reference["precision"], abs=1e-6)
    assert ours["recall"] == pytest.approx(reference["recall"], abs=1e-6)
    assert 0.1 < ours["precision"] < 0.99 and 0.1 < ours["recall"] < 0.99  # neither side saturated


def _naeem_density_coverage(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Density and coverage as Naeem et al.'s code (clovaai/generative-evaluation-prdc) writes them."""
    real_radii = np.sort(scipy.spatial.distance.cdist(real, real), axis=1)[:, k]
    real_fake = scipy.spatial.distance.cdist(real, fake)
    density = (real_fake < real_radii[:, None]).sum(axis=0).mean() / k
    coverage = (real_fake.min(axis=1) < real_radii).mean()
    return float(density), float(coverage)


@pytest.mark.parametrize("k", [3, 5])
def test_density_and_coverage_use_the_authors_strict_inequality_on_duplicated_points(k):
    """Generated sets that copy real points (memorization): a copy lies exactly on the ball of each real
    point whose k-th neighbour it is; the authors count it outside."""
    real = _features(500, 2, 0)
    copies = manifold_metrics(real, real.clone(), k)
    assert copies["density"] == 1.0 and copies["coverage"] == 1.0  # (k + 1) / k with a boundary counted in
    assert copies["precision"] == 1.0 and copies["recall"] == 1.0
    half_copied = torch.cat([real[:250], _features(250, 2, 1)])
    density, coverage = _naeem_density_coverage(real.numpy(), half_copied.numpy(), k)  # exact distances
    for block_size in (1, 64, 1024):  # blocks change torch.cdist's rounding, not the result
        ours = manifold_metrics(real, half_copied, k, block_size=block_size)
        assert (ours["density"], ours["coverage"]) == pytest.approx((density, coverage), abs=1e-12)
