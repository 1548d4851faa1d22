"""Test-set likelihood in nats per example and bits per dimension, with its kind."""

import itertools
import math

import torch
from torch.utils.data import DataLoader

from genbench.data.pixels import bits_per_dim
from genbench.models.base import GenerativeModel


@torch.no_grad()
def test_likelihood(model: GenerativeModel, loader: DataLoader, max_batches: int | None = None) -> dict:
    """Mean negative log-likelihood (and any extra estimates the family offers) over the test split.

    Families whose kind is ``none`` report only the kind, so the matrix can tell "no likelihood" from
    "not measured".
    """
    kind = model.likelihood_kind
    if kind == "none":
        return {"likelihood_kind": kind}
    sums: dict[str, float] = {}
    count = 0
    for x, _ in itertools.islice(loader, max_batches):
        x = x.to(model.device)
        estimates = {"": model.log_likelihood(x), **model.extra_log_likelihoods(x)}
        for name, log_p in estimates.items():
            sums[name] = sums.get(name, 0.0) - log_p.double().sum().item()
        count += len(x)
    out: dict = {"likelihood_kind": kind, "test_examples": count}
    for name, total in sums.items():
        key = f"nll_{name}_" if name else "nll_"
        nats = total / count
        if not math.isfinite(nats):
            raise FloatingPointError(f"test {key}nats is {nats}: the model gives a non-finite likelihood")
        out[f"{key}nats"] = nats
        out[f"{key}bpd"] = float(bits_per_dim(nats, model.data_dim))
    return out
