"""A quality-against-NFE curve as a record: ``nfe_curve.json`` (and ``nfe_curve.csv``, one row per point) in
a run directory, written by ``scripts/nfe_sweep.py`` (:mod:`genbench.evaluation.nfe_curve` draws the
points). Reading, tabulating and plotting it needs no model, so the matrix uses this module alone."""

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CURVE_JSON, CURVE_CSV = "nfe_curve.json", "nfe_curve.csv"


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
