"""The matrix page's plots, as self-contained PNG data URLs: the speed-quality Pareto plot with labelled
points, quality against training compute, and the training-loss curves in a grid that fits a page.

Every name on a plot comes from a record: drawn with mathtext off (``to_html`` sets the rc), so a name
like ``$\\evil$`` is text.
"""

import base64
import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

from genbench.matrix.columns import Column  # noqa: E402
from genbench.matrix.table import Matrix  # noqa: E402
from genbench.matrix.verdicts import pareto_front  # noqa: E402
from genbench.nfe_record import curve_figure  # noqa: E402

PANELS_PER_ROW = 4


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _plain(axis) -> None:
    """Plain-text labels on a log axis: the default ones are mathtext, which the page turns off."""
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def _colors(m: Matrix) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: cycle[i % len(cycle)] for i, name in enumerate(m.families)}


def _better_up(ax, m: Matrix, ylabel: str) -> None:
    """Up is better on every quality axis: a lower-is-better metric gets an inverted axis."""
    if m.lower_is_better:
        ax.invert_yaxis()
    ax.set_ylabel(f"{ylabel} ({'lower' if m.lower_is_better else 'higher'} is better: up)")


def _seed_points(m: Matrix, column: Column) -> list[tuple[float, float]]:
    """(ms per sample, quality) of each ok run of ``column`` that measured both."""
    return [(r.metrics["sample_ms_per_sample"], r.metrics[m.quality]) for r in column.ok
            if isinstance(r.metrics.get("sample_ms_per_sample"), (int, float))
            and isinstance(r.metrics.get(m.quality), (int, float))]


def speed_vs_quality(m: Matrix) -> str | None:
    """Mean (and each seed, faint) per column; the Pareto front joined; held-out real data as a line. None
    when no run measured both (no quality metric: a dataset without its feature network)."""
    if not any(_seed_points(m, column) for column in m.columns):
        return None
    quality, speed = m.row("Sample quality"), m.row("Sampling speed")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = _colors(m)
    front = pareto_front(m)
    for column in m.columns:
        q, s = quality.cells[column.name], speed.cells[column.name]
        seeds = _seed_points(m, column)
        ax.scatter([p[0] for p in seeds], [p[1] for p in seeds], s=12, alpha=0.35, color=colors[column.name])
        if q.mean is None or s.mean is None:
            continue
        on_front = column.name in front
        ax.scatter([s.mean], [q.mean], s=70 if on_front else 40, color=colors[column.name],
                   edgecolors="black" if on_front else "none", zorder=3)
        ax.annotate(column.name, (s.mean, q.mean), textcoords="offset points", xytext=(6, 4), fontsize=9)
    points = sorted((speed.cells[c].mean, quality.cells[c].mean) for c in front)
    if len(points) > 1:
        ax.plot([p[0] for p in points], [p[1] for p in points], "k--", lw=0.8, label="Pareto front")
    if quality.reference is not None and quality.reference_at_cells_size:  # else a floor of another size
        ax.axhline(quality.reference.mean, color="0.4", ls=":", lw=1, label="held-out real data")
    ax.set_xscale("log")
    _plain(ax.xaxis)
    ax.set_xlabel("sampling time, ms per sample (log; left is faster)")
    _better_up(ax, m, m.quality)
    ax.set_title(f"{m.dataset}: speed vs quality (best: up and left)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    return _png(fig)


def quality_vs_compute(m: Matrix) -> str | None:
    """Mean curve per column over seeds, min-max band; held-out real data and the common level as lines."""
    summary = m.curves
    if not summary.curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = _colors(m)
    for name, curve in summary.curves.items():
        ax.plot(curve.flops, curve.mean, marker="o", ms=3, color=colors[name],
                label=f"{name} (n={curve.seeds})")
        ax.fill_between(curve.flops, curve.low, curve.high, color=colors[name], alpha=0.15)
    if summary.floor is not None and summary.floor > 0:
        ax.axhline(summary.floor, color="0.4", ls=":", lw=1, label="held-out real data")
    if summary.level is not None and summary.level > 0:
        ax.axhline(summary.level, color="0.2", ls="--", lw=0.8, label="common level")
    ax.set_xscale("log")
    _plain(ax.xaxis)
    if all(v > 0 for c in summary.curves.values() for v in c.low):
        ax.set_yscale("log")
        _plain(ax.yaxis)
    ax.invert_yaxis()
    ax.set_xlabel("training compute, FLOPs (log)")
    ax.set_ylabel(f"{summary.metric} (lower is better: up)")
    ax.set_title(f"{m.dataset}: quality against training compute (mean, min-max over seeds)")
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def training_losses(m: Matrix) -> str:
    """One panel per column, PANELS_PER_ROW to a row, every seed's train/loss."""
    cols = min(PANELS_PER_ROW, len(m.columns))
    rows = math.ceil(len(m.columns) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
    for ax, column in zip(axes.flat, m.columns, strict=False):
        # a run with no seed failed its config check: it never trained
        for run in sorted((r for r in column.runs if r.seed is not None), key=lambda r: r.seed):
            curve = [(s, v) for s, v in run.loss_curve() if math.isfinite(v)]
            if curve:
                ax.plot([s for s, _ in curve], [v for _, v in curve], label=f"seed {run.seed}", lw=1)
        ax.set_title(column.name, fontsize=9)
        ax.set_xlabel("step")
        if ax.get_lines():  # a column whose runs logged no curve gets an empty panel, no legend
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(m.columns):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("train/loss")
    fig.tight_layout()
    return _png(fig)


def nfe_curves(m: Matrix) -> str | None:
    """Quality against NFE, one line per family and sampler, from the runs that have a curve (the lowest
    seed of each column); None when no run has one."""
    curves = [c for c in (column.nfe_curve() for column in m.columns) if c is not None]
    return _png(curve_figure(curves)) if curves else None
