"""Sample-quality scores on classifier features and logits: KID, Inception Score and class coverage.

- KID (Bińkowski et al., 2018, "Demystifying MMD GANs"): the unbiased estimate of the squared MMD with the
  cubic polynomial kernel k(x, y) = (x.y / dim + 1)^3, averaged over random subsets. Unlike FID it has an
  unbiased estimator, so it can be compared across sample sizes and is about 0 for two samples of one law.
- Inception Score (Salimans et al., 2016): exp(E_x KL(p(y|x) || p(y))), high when each sample is classified
  confidently and the classes are spread out; computed per split as torch-fidelity and torchmetrics do.
- Class coverage: which classes a classifier finds among the samples, a direct reading of mode dropping
  (the labelled-data analogue of counting modes covered on a toy mixture).
"""

import math

import torch
from torch import Tensor


def polynomial_mmd2(
    x: Tensor, y: Tensor, *, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> float:
    """Unbiased MMD^2 between (M, D) and (N, D) samples with k(x, y) = (gamma x.y + coef0)^degree.

    Within-set kernel sums leave out the diagonal (k(x_i, x_i) is no independent pair) and the cross term
    averages all M N pairs (MMD_u^2 of Gretton et al., 2012); for M = N this is torch-fidelity's ``mmd2``
    with mmd_est="unbiased". gamma defaults to 1 / D. Computed in float64.
    """
    x, y = x.double().flatten(1), y.double().flatten(1)
    m, n = len(x), len(y)
    if min(m, n) < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples per set, got {m} and {n}")
    gamma = 1.0 / x.shape[1] if gamma is None else gamma

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        return (gamma * (a @ b.T) + coef0) ** degree

    k_xx, k_yy = kernel(x, x), kernel(y, y)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return (within_x + within_y - 2 * kernel(x, y).mean()).item()


def kernel_inception_distance(
    real: Tensor,
    fake: Tensor,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """KID as (mean, std) of ``polynomial_mmd2`` over ``subsets`` random subsets of each set.

    Defaults are the paper's and torch-fidelity's (100 subsets of 1000). Each subset draws ``subset_size``
    rows without replacement, independently for the two sets; when a set has fewer rows, ``subset_size``
    becomes min(len(real), len(fake)) rather than failing as torch-fidelity does (small evaluation runs).
    The std is the population std over subsets (numpy's default, as torch-fidelity and torchmetrics).
    """
    size = min(subset_size, len(real), len(fake))
    kernel = {"degree": degree, "gamma": gamma, "coef0": coef0}
    mmds = []
    for _ in range(subsets):
        real_rows = torch.randperm(len(real), generator=generator)[:size]
        fake_rows = torch.randperm(len(fake), generator=generator)[:size]
        mmds.append(polynomial_mmd2(real[real_rows], fake[fake_rows], **kernel))
    values = torch.tensor(mmds, dtype=torch.float64)
    return values.mean().item(), values.std(correction=0).item()


def inception_score(logits: Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception Score of (N, C) classifier logits as (mean, std) over ``splits`` contiguous chunks.

    Chunk i holds rows [i N // splits, (i + 1) N // splits), as in torch-fidelity. Rows are not shuffled:
    pass them in random order (i.i.d. samples are; samples generated class by class are not, and a chunk
    of one class scores 1). torch-fidelity and torchmetrics shuffle with their own seeds first. p(y) is
    each chunk's mean prediction, its log taken as a logsumexp of log-probabilities so that a class no
    sample gives any mass cannot make 0 * log 0 a NaN. Population std, as torch-fidelity (torchmetrics
    uses the Bessel-corrected std). Computed in float64.
    """
    if not 1 <= splits <= len(logits):
        raise ValueError(f"splits must be between 1 and the number of samples ({len(logits)}), got {splits}")
    log_p = logits.double().log_softmax(dim=1)
    n = len(log_p)
    scores = []
    for i in range(splits):
        chunk = log_p[i * n // splits : (i + 1) * n // splits]
        log_marginal = chunk.logsumexp(dim=0) - math.log(len(chunk))
        kl = (chunk.exp() * (chunk - log_marginal)).sum(dim=1).mean()
        scores.append(kl.exp())
    values = torch.stack(scores)
    return values.mean().item(), values.std(correction=0).item()


def class_coverage(logits: Tensor, num_classes: int, min_share: float = 0.0) -> dict[str, float]:
    """How evenly a classifier's argmax predictions on the samples spread over ``num_classes`` classes.

    - ``class_coverage``: share of classes hit, a hit being at least one sample and at least ``min_share``
      of all samples (e.g. 0.5 / num_classes: at least half a fair share, so stray misclassifications of
      a dropped class do not count it as covered).
    - ``class_entropy``: entropy of the predicted-class histogram over log(num_classes): 1 when the classes
      are equally frequent, 0 when every sample is one class.
    - ``class_max_share``: share of the most frequent class (1 / num_classes at best).
    """
    if logits.dim() != 2 or logits.shape[1] != num_classes:
        raise ValueError(f"expected (N, {num_classes}) logits, got shape {tuple(logits.shape)}")
    if num_classes < 2:
        raise ValueError("class entropy needs at least 2 classes")
    counts = torch.bincount(logits.argmax(dim=1), minlength=num_classes).double()
    shares = counts / counts.sum()
    hit = (counts > 0) & (shares >= min_share)
    entropy = torch.special.xlogy(shares, shares.reciprocal()).sum() / math.log(num_classes)  # 0 log 0 = 0
    return {
        "class_coverage": hit.double().mean().item(),
        "class_entropy": entropy.item(),
        "class_max_share": shares.max().item(),
    }
