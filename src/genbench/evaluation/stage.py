"""One evaluation stage for every family: likelihood, sampling speed, cost, 2D sample metrics and a
picture of samples."""

from dataclasses import dataclass
from pathlib import Path

import torch

from genbench.config import Schema, param
from genbench.data.base import GenerativeDataModule
from genbench.evaluation.likelihood import test_likelihood
from genbench.evaluation.plots import save_samples_png
from genbench.evaluation.speed import sampling_speed
from genbench.evaluation.toy import toy_metrics
from genbench.models.base import GenerativeModel


@dataclass
class EvalConfig(Schema):
    seed: int = param(0, ge=0)  # seeds the stochastic parts of evaluation (bounds, samples)
    max_test_batches: int | None = param(None, ge=1)  # None: the whole test split
    speed_batch_size: int = param(256, ge=1)
    speed_repeats: int = param(10, ge=1)
    speed_warmup: int = param(2, ge=0)
    plot_samples_vector: int = param(2000, ge=2)  # 2D sets: samples for samples.png and the 2D metrics
    plot_samples_image: int = param(64, ge=1)


def evaluate(model: GenerativeModel, dm: GenerativeDataModule, cfg: EvalConfig, out_dir: Path) -> dict:
    """Measure ``model`` on ``dm``'s test split and write ``samples.png`` into ``out_dir``."""
    torch.manual_seed(cfg.seed)
    model.eval()
    dm.setup("test")
    metrics = test_likelihood(model, dm.test_dataloader(), cfg.max_test_batches)
    metrics.update(sampling_speed(model, cfg.speed_batch_size, cfg.speed_repeats, cfg.speed_warmup))
    metrics["nfe"] = model.nfe()
    metrics["num_parameters"] = model.num_parameters()
    n_plot = cfg.plot_samples_image if dm.is_image else cfg.plot_samples_vector
    with torch.no_grad():
        samples = model.sample(n_plot)
    test = dm.split_tensor("test")
    distribution = getattr(dm, "distribution", None)
    if distribution is not None:
        metrics.update(toy_metrics(samples, test[:n_plot], distribution, metrics.get("nll_nats")))
    title = f"{model.family} on {dm.name}: {n_plot} samples"
    save_samples_png(samples, test, out_dir / "samples.png", title)
    return metrics
