"""Test-set likelihood in nats per example and bits per dimension, with its Monte Carlo error bar and a
robust companion.

Every estimate is a mean over test examples of per-example values, so each comes with
- ``<name>_se``: its standard error, std of the per-example values / sqrt(n). It covers both the draw of
  the test set and a family's own Monte Carlo noise (the diffusion bound's timesteps, the VAE's posterior
  draws, the flow's dequantization), which adds to the per-example variance;
- ``<name>_median``: the median per-example value, which a handful of badly modelled test points cannot
  drag; a mean far above the median says that a few points decide it (a dropped mode, say).

Where the data's true log-density is known (2D sets), ``kl_data_to_model_nats`` is the mean over the same
test points of log p_data(x) - log p_model(x), with its standard error: an estimate of KL(p_data || p_model),
an upper bound on it when the likelihood is a lower bound.
"""

import itertools
import math
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from genbench.data.pixels import bits_per_dim
from genbench.models.base import GenerativeModel
from genbench.progress import progress


def _mean_se_median(values: Tensor) -> tuple[float, float | None, float]:
    """Mean, its standard error (None for a single value) and median of per-example values."""
    n = len(values)
    se = (values.std() / math.sqrt(n)).item() if n > 1 else None
    return values.mean().item(), se, values.median().item()


def _summary(name: str, values: Tensor, data_dim: int | None) -> dict[str, float]:
    """``<name>_nats``, ``_nats_se`` and ``_nats_median``; the same in bits/dim when ``data_dim`` is given."""
    mean, se, median = _mean_se_median(values)
    if not math.isfinite(mean):
        raise FloatingPointError(f"test {name}_nats is {mean}: the model gives a non-finite likelihood")
    out = {f"{name}_nats": mean, f"{name}_nats_median": median}
    if se is not None:
        out[f"{name}_nats_se"] = se
    if data_dim is not None:
        out.update({f"{name}_bpd{suffix}": float(bits_per_dim(value, data_dim))
                    for suffix, value in (("", mean), ("_se", se), ("_median", median)) if value is not None})
    return out


def rebatched(loader: Iterable, batch_size: int | None) -> Iterator[Tensor]:
    """The inputs of ``loader``'s batches regrouped into batches of ``batch_size`` (the last one smaller),
    in order; ``None``: the loader's own. A likelihood that calls its network a hundred times per batch
    (flow matching's ODE, diffusion's bound) keeps a GPU busy only in batches larger than training's."""
    if batch_size is None:
        yield from (x for x, _ in loader)
        return
    pending: list[Tensor] = []
    held = 0  # examples in pending
    for x, _ in loader:
        pending.append(x)
        held += len(x)
        while held >= batch_size:
            joined = torch.cat(pending)
            yield joined[:batch_size]
            pending, held = [joined[batch_size:]], held - batch_size
    if held:
        yield torch.cat(pending)


@torch.no_grad()
def seeded_log_likelihoods(model: GenerativeModel, batches: Iterable[Tensor], seed: int) -> Tensor:
    """log p (nats, float64, on the CPU) of each example of ``batches``, from ``seed``: two calls with one
    seed draw the same dequantization noise and probes, so their difference is the model's change alone
    (another ODE grid, TF32)."""
    torch.manual_seed(seed)
    return torch.cat([model.log_likelihood(x.to(model.device)).double().cpu() for x in batches])


@torch.no_grad()
def test_likelihood(model: GenerativeModel, loader: DataLoader, max_batches: int | None = None,
                    data_log_density: Callable[[Tensor], Tensor] | None = None,
                    batch_size: int | None = None, description: str = "likelihood") -> dict:
    """Mean negative log-likelihood (and any extra estimates the family offers) over the test split, each
    with its standard error and median; with ``data_log_density`` (the data's true log p, per example),
    also ``kl_data_to_model_nats`` on the same test points. ``max_batches`` counts the loader's batches;
    the model sees them regrouped in batches of ``batch_size`` (:func:`rebatched`).

    Families whose kind is ``none`` report only the kind, so the matrix can tell "no likelihood" from
    "not measured". ``description`` names the pass in its progress (:func:`genbench.progress.progress`).
    """
    kind = model.likelihood_kind
    if kind == "none":
        return {"likelihood_kind": kind}
    nll: dict[str, list[Tensor]] = {}
    kl: list[Tensor] = []
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    batches = progress(itertools.islice(loader, max_batches), description, total, announce=True)
    for x in rebatched(batches, batch_size):
        x = x.to(model.device)
        estimates = {"": model.log_likelihood(x), **model.extra_log_likelihoods(x)}
        for name, log_p in estimates.items():
            nll.setdefault(f"nll_{name}" if name else "nll", []).append(-log_p.double().cpu())
        if data_log_density is not None:
            kl.append(data_log_density(x.double()).cpu() + nll["nll"][-1])
    out: dict = {"likelihood_kind": kind, "test_examples": sum(len(v) for v in nll["nll"])}
    for name, values in nll.items():
        out.update(_summary(name, torch.cat(values), model.data_dim))
    if kl:
        mean, se, _ = _mean_se_median(torch.cat(kl))
        out["kl_data_to_model_nats"] = mean
        if se is not None:
            out["kl_data_to_model_nats_se"] = se
    return out
