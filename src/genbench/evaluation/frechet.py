"""Fréchet distance between Gaussians fitted to two feature sets (the statistic behind FID).

FD = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)). The trace of the matrix square root is computed as the
sum of square roots of the eigenvalues of S1^(1/2) S2 S1^(1/2), a symmetric PSD matrix, in float64: no
complex parts to discard and no iterative sqrtm whose error depends on conditioning.
"""

import torch
from torch import Tensor

MIN_SAMPLES = 2  # an unbiased covariance divides by N - 1: one image has none (linalg.eigh failed on it)


def feature_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance of (N, D) features, in float64."""
    f = features.double().flatten(1)
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(matrix: Tensor) -> Tensor:
    eigvals, eigvecs = torch.linalg.eigh(matrix)
    return (eigvecs * eigvals.clamp_min(0).sqrt()) @ eigvecs.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    value = (mu1 - mu2).pow(2).sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return max(value.item(), 0.0)
