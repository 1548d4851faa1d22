"""Quality against training compute, per column: the runs' ``curves.csv`` averaged over seeds, and what a
reader wants from them: the value at the budget, the best value reached, the FLOPs needed to reach a
quality level every column is judged at, and where the curve was at the end of the budget (its trend).
"""

import logging
import math
import statistics
from dataclasses import dataclass, field

from genbench.matrix import rules
from genbench.matrix.columns import Column
from genbench.matrix.runs import Run
from genbench.results import REAL_PREFIX as REAL

log = logging.getLogger(__name__)
CURVE_METRICS = ("fd_{dataset}_cnn", "energy_distance_test")  # the first any run's curve holds; lower wins


@dataclass
class MeanCurve:
    """One column's curve: per step, the mean FLOPs and the mean, min and max value over its seeds."""

    steps: list[int]
    flops: list[float]
    mean: list[float]
    low: list[float]
    high: list[float]
    seeds: int


@dataclass
class CurveSummary:
    metric: str | None  # None: no run of the dataset wrote a curve
    floor: float | None = None  # held-out real data's value of the metric at the curves' sample size
    floor_range: tuple[float, float] | None = None  # its least and greatest over the runs, where they differ
    level: float | None = None  # the common quality level
    curves: dict[str, MeanCurve] = field(default_factory=dict)
    best: dict[str, tuple[float, float]] = field(default_factory=dict)  # column -> (value, FLOPs)
    to_level: dict[str, float | None] = field(default_factory=dict)  # column -> FLOPs, None: not reached
    trend: dict[str, str | None] = field(default_factory=dict)  # rules.TRENDS; None: too short to tell


def mean_curve(runs: list[Run], metric: str, column: str = "") -> MeanCurve | None:
    """The runs' curves averaged at the steps every one of them measured (``column`` names them in a
    warning where they share none)."""
    curves = [c for r in runs if r.ok and (c := r.quality_curve(metric))]
    if not curves:
        return None
    common = sorted(set.intersection(*({s for s, _, _ in c} for c in curves)))
    if not common:
        log.warning("%s: its runs' %s curves share no step (other callbacks.quality_curve settings?), so "
                    "it has no mean curve", column or runs[0].family, metric)
        return None
    points = [{s: (f, v) for s, f, v in c} for c in curves]
    flops = [statistics.fmean(p[s][0] for p in points) for s in common]
    values = [[p[s][1] for p in points] for s in common]
    return MeanCurve(common, flops, [statistics.fmean(v) for v in values], [min(v) for v in values],
                     [max(v) for v in values], len(curves))


def trend(curve: MeanCurve, floor: float | None = None) -> str | None:
    """Past its best (it ended more than ``FLAT_GAIN`` worse than its best point), Flattened (its last
    half-decade of compute improved it by less than ``FLAT_GAIN``, relative), else Still improving; None
    when the curve spans less than half a decade of compute. Relative changes: a curve's first drop from
    an untrained model is orders of magnitude, and would make any later gain look small. A value below
    held-out real data's (``floor``) counts as the floor's: at the curve's sample size the metric cannot
    tell such samples from real data, and moves below it are noise (on moons at 2,000 points the floor
    itself ranged 0.0012 to 0.0047 over three seeds)."""
    mean = curve.mean if floor is None else [max(v, floor) for v in curve.mean]
    last, best = mean[-1], min(mean)
    half_decade_ago = curve.flops[-1] / math.sqrt(10)
    earlier = [v for f, v in zip(curve.flops, mean, strict=True) if f <= half_decade_ago]
    if not earlier:
        return None
    if last > best * (1 + rules.FLAT_GAIN):
        return "Past its best"
    return "Flattened" if earlier[-1] - last < rules.FLAT_GAIN * earlier[-1] else "Still improving"


def summarize_curves(dataset: str, columns: list[Column], runs: list[Run]) -> CurveSummary:
    for template in CURVE_METRICS:
        metric = template.format(dataset=dataset)
        curves = {c.name: curve for c in columns if (curve := mean_curve(c.runs, metric, c.name))}
        if curves:
            break
    else:
        return CurveSummary(None)
    reals = [floor[-1][2] for r in runs if r.ok and (floor := r.quality_curve(REAL + metric))]
    summary = CurveSummary(metric, statistics.fmean(reals) if reals else None, curves=curves)
    if reals and min(reals) < max(reals):  # each seed draws its own held-out sample: how far it moves
        summary.floor_range = (min(reals), max(reals))
    for name, curve in curves.items():
        i = min(range(len(curve.mean)), key=curve.mean.__getitem__)
        summary.best[name] = (curve.mean[i], curve.flops[i])
        summary.trend[name] = trend(curve, summary.floor)
    # Not below held-out real data's value: a level real data does not reach is one of noise.
    summary.level = max(statistics.median(value for value, _ in summary.best.values()),
                        summary.floor if summary.floor is not None else -math.inf)
    for name, curve in curves.items():
        summary.to_level[name] = next((f for f, v in zip(curve.flops, curve.mean, strict=True)
                                       if v <= summary.level), None)
    return summary
