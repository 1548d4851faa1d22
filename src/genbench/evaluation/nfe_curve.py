"""Sample quality against the number of network evaluations (NFE), for families with iterative samplers.

:func:`sweep` draws the same number of samples, from the same starting noise, with every sampler a family
offers (``GenerativeModel.samplers``) at each NFE budget: the step count is the largest whose NFE fits the
budget (Heun: 2 steps - 1, midpoint: 2 steps, ...), and the NFE the sampler reports is what is recorded.
Quality on 2D data: the energy distance and W2 (the exact optimal matching of equal-size samples,
:func:`~genbench.evaluation.distances.wasserstein2`) to as many test points; on images: the Fréchet
distance in the dataset classifier's features (``fd_<dataset>_cnn``) against the reference split, or, where
that net is not trained, between Gaussians fitted to the pixels (``fd_data_space``). Each curve also holds
the same metric between real data and the test or reference set (``floor``: what a perfect model scores
at that sample size).

A curve is written as ``nfe_curve.json`` (the record) and ``nfe_curve.csv`` (one row per point) into a
run directory; :func:`read_curve`, :func:`curve_figure` and :func:`nfe_to_reach` are what a report needs.
"""

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from genbench.errors import ConfigError  # noqa: E402
from genbench.evaluation.distances import energy_distance, wasserstein2  # noqa: E402
from genbench.evaluation.frechet import feature_statistics, frechet_distance  # noqa: E402
from genbench.models.base import GenerativeModel  # noqa: E402

CURVE_JSON, CURVE_CSV = "nfe_curve.json", "nfe_curve.csv"
DEFAULT_BUDGETS = (5, 10, 20, 50, 100)
Quality = Callable[[Tensor], dict[str, float]]  # samples -> metrics (lower is better)


@dataclass
class CurvePoint:
    sampler: str
    budget: int  # the NFE asked for
    steps: int
    nfe: int  # the NFE the sampler made (<= budget)
    metrics: dict[str, float]
    seconds: float  # wall-clock of drawing the samples


@dataclass
class Curve:
    family: str
    dataset: str
    metric: str  # the headline metric of ``points`` (lower is better)
    n_samples: int
    seed: int
    floor: dict[str, float]  # the metrics of real data at the same sample size
    points: list[CurvePoint] = field(default_factory=list)
    checkpoint: str | None = None

    def best(self) -> CurvePoint:
        return min(self.points, key=lambda p: p.metrics[self.metric])


def steps_for_budget(model: GenerativeModel, sampler: str, budget: int) -> int | None:
    """The step count of ``sampler`` whose NFE is the largest within ``budget`` (the fewest steps among
    equals); None when even one step costs more. Leaves the model on that sampler."""
    best: tuple[int, int] | None = None  # (nfe, steps)
    for steps in range(1, 4 * budget + 1):
        try:
            model.use_sampler(sampler, steps)
        except ConfigError:  # more steps than the model has (a diffusion's T)
            break
        nfe = model.nfe()
        if nfe > 2 * budget:  # NFE grows with the steps (merged levels aside): no later count fits
            break
        if nfe <= budget and (best is None or nfe > best[0]):
            best = (nfe, steps)
    if best is not None:
        model.use_sampler(sampler, best[1])
    return None if best is None else best[1]


@torch.no_grad()
def draw(model: GenerativeModel, n: int, seed: int, batch_size: int) -> Tensor:
    """``n`` samples on the CPU, from the same starting noise for a given ``seed``."""
    torch.manual_seed(seed)
    return torch.cat([model.sample(min(batch_size, n - i)).cpu() for i in range(0, n, batch_size)])


def sweep(model: GenerativeModel, quality: Quality, *, budgets: Sequence[int] = DEFAULT_BUDGETS,
          samplers: Sequence[str] | None = None, n: int = 2000, seed: int = 0,
          batch_size: int = 500) -> list[CurvePoint]:
    """Quality of ``n`` samples for every sampler (default: all the family offers) at every NFE budget.
    The model is left on the sampler it had."""
    if not model.samplers:
        raise ConfigError(f"{model.family} has no iterative sampler: its NFE is fixed at {model.nfe()}")
    unknown = sorted(set(samplers or ()) - set(model.samplers))
    if unknown:
        raise ConfigError(f"{model.family} has no sampler {unknown}; it offers {list(model.samplers)}")
    original = model.hp
    points = []
    try:
        for sampler in samplers or model.samplers:
            for budget in sorted(set(budgets)):
                steps = steps_for_budget(model, sampler, budget)
                if steps is None or any(p.sampler == sampler and p.steps == steps for p in points):
                    continue  # no step count fits, or the same one as a smaller budget (a capped T)
                start = time.perf_counter()
                samples = draw(model, n, seed, batch_size)
                seconds = time.perf_counter() - start
                points.append(CurvePoint(sampler, budget, steps, model.nfe(), quality(samples), seconds))
    finally:
        model.hp = original
    return points


def vector_quality(test: Tensor) -> Quality:
    """Energy distance and W2 of vector samples to as many test points (the first ones)."""

    def quality(samples: Tensor) -> dict[str, float]:
        if len(samples) > len(test):
            raise ConfigError(f"{len(samples)} samples but only {len(test)} test points; draw fewer")
        reference = test[: len(samples)]
        return {"w2_test": wasserstein2(samples, reference),
                "energy_distance_test": energy_distance(samples, reference)}

    return quality


def feature_quality(extract: Callable[[Tensor], Tensor], reference: Tensor, name: str) -> Quality:
    """The Fréchet distance (``name``) between Gaussians fitted to ``extract``'s features of the samples
    and the ``reference`` features."""
    stats = feature_statistics(reference)

    def quality(samples: Tensor) -> dict[str, float]:
        return {name: frechet_distance(*stats, *feature_statistics(extract(samples)))}

    return quality


def pixel_features(images: Tensor) -> Tensor:
    """Images as flat vectors in [0, 1]: the space of ``fd_data_space`` when no feature net is at hand."""
    return images.flatten(1).double() / 255


# ---- records ------------------------------------------------------------------------------------------
def write_curve(curve: Curve, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / CURVE_JSON, out_dir / CURVE_CSV
    json_path.write_text(json.dumps(asdict(curve), indent=2))
    names = sorted({name for p in curve.points for name in p.metrics})
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["family", "dataset", "sampler", "budget", "steps", "nfe", *names, "seconds"])
        for p in curve.points:
            writer.writerow([curve.family, curve.dataset, p.sampler, p.budget, p.steps, p.nfe,
                             *(p.metrics.get(name, "") for name in names), f"{p.seconds:.3f}"])
    return [json_path, csv_path]


def read_curve(run_dir: Path) -> Curve | None:
    """The curve of a run directory, or None where no sweep was run."""
    path = Path(run_dir) / CURVE_JSON
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        record["points"] = [CurvePoint(**p) for p in record["points"]]
        return Curve(**record)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path} is not a curve this version reads ({type(e).__name__}: {e}); "
                         "rerun scripts/nfe_sweep.py on its checkpoint") from e


def markdown_table(curve: Curve) -> str:
    """One row per sampler, one column per NFE budget: the headline metric there (with the NFE the sampler
    made where it is below the budget)."""
    budgets = sorted({p.budget for p in curve.points})
    lines = ["| sampler | " + " | ".join(f"NFE {b}" for b in budgets) + " |",
             "| --- |" + " --- |" * len(budgets)]
    for sampler in dict.fromkeys(p.sampler for p in curve.points):
        cells = []
        for budget in budgets:
            point = next((p for p in curve.points if p.sampler == sampler and p.budget == budget), None)
            text = "" if point is None else f"{point.metrics[curve.metric]:.4g}"
            cells.append(text + (f" ({point.nfe})" if point is not None and point.nfe != budget else ""))
        lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
    floor = curve.floor.get(curve.metric)
    note = f"; real data: {floor:.4g}" if floor is not None else ""
    return (f"{curve.family} on {curve.dataset}, {curve.metric} of {curve.n_samples} samples "
            f"(lower is better{note}; in parentheses the NFE made where below the budget)\n\n"
            + "\n".join(lines))


def nfe_to_reach(curve: Curve, fraction: float = 0.9) -> dict[str, float | int | str] | None:
    """The fewest NFE at which some sampler's quality reaches ``fraction`` of the family's best, quality
    taken as best metric / metric (the metrics are distances, lower is better); None for an empty curve."""
    if not curve.points:
        return None
    best = curve.best().metrics[curve.metric]
    good = [p for p in curve.points
            if p.metrics[curve.metric] <= best / fraction or math.isclose(p.metrics[curve.metric], best)]
    first = min(good, key=lambda p: (p.nfe, p.metrics[curve.metric]))
    return {"nfe": first.nfe, "sampler": first.sampler, "fraction": fraction,
            "metric": curve.metric, "value": first.metrics[curve.metric], "best": best,
            "best_nfe": curve.best().nfe, "best_sampler": curve.best().sampler}


def curve_figure(curves: Sequence[Curve], ax: plt.Axes | None = None) -> plt.Figure:
    """Metric against NFE (log scale), one line per family and sampler; the real-data floor dashed."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    for curve in curves:
        for sampler in dict.fromkeys(p.sampler for p in curve.points):
            points = sorted((p.nfe, p.metrics[curve.metric]) for p in curve.points if p.sampler == sampler)
            ax.plot(*zip(*points, strict=True), marker="o", label=f"{curve.family} {sampler}")
        floor = curve.floor.get(curve.metric)
        if floor is not None:
            ax.axhline(floor, linestyle="--", color="grey", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE per sample (log)")
    metrics = sorted({c.metric for c in curves})
    ax.set_ylabel(", ".join(metrics) + " (log; dashed: real data)")
    datasets = sorted({c.dataset for c in curves})
    ax.set_title(f"{', '.join(datasets)}: quality against NFE")
    ax.legend(fontsize=7)
    return ax.figure
