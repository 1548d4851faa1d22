"""The comparison matrix: one column per family, one row per property, a measured cell with its spread
over seeds and a word derived from it by the rules below, never typed in.

Rules (``RULES`` is rendered under every table):
- Sample quality: images use ``fid_inception`` when measured, else ``fd_<dataset>_cnn`` (lower is
  better); 2D sets use ``precision_data_space`` (the share of samples on the data's k-NN manifold, higher
  is better). Ratio r of the best family's value to this one's (>= 1): r <= 1.1 Excellent, <= 1.5 High,
  <= 3 Medium, else Low.
- Diversity: ``mode_coverage`` on Gaussian mixtures (PacGAN's rule: the share of modes that are the
  nearest mode of at least one of 2,500 samples lying within 3 std of it), else ``recall_data_space``
  (2D) or ``recall_<x>`` (images, same extractor as quality): >= 0.9 High, >= 0.6 Medium, else Low;
  "Low (mode collapse)" when mode coverage is the metric.
- Training stability: Unstable when any run failed or diverged, the quality metric's coefficient of
  variation over seeds exceeds 0.25, or the late-training loss oscillation exceeds 0.25; else Stable.
  Oscillation = std of ``train/loss`` over the last quarter of logged steps / its range over the run.
- Likelihood: mean test bits/dim, with its Monte Carlo standard error (``nll_bpd_se``) and the median
  per-example bits/dim (``nll_bpd_median``: a mean far above it is decided by a few test points), each
  averaged over seeds; the word is the kind: exact -> Exact, bound -> Approx (bound), quadrature ->
  Approx (quadrature), none -> None.
- Sampling speed: ms per sample (batch of ``eval.speed_batch_size``) and NFE; ratio r to the fastest
  family: r <= 5 Fast, <= 100 Slow, else Very slow.
- Training cost: wall-clock of training and parameters; ratio to the cheapest: <= 2 Cheap, <= 5 Moderate,
  else Expensive.
- Latent space, Conditioning: from the interface's capability flags (not measurements): Yes / Implicit /
  No, with what the latent is and how labels enter; on labelled images a conditional model's cell adds
  ``conditional_accuracy_<x>`` (share of samples the dataset classifier assigns to the requested label).
"""

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from genbench.matrix.runs import FAILED, Run

RULES = __doc__.split("Rules (``RULES`` is rendered under every table):\n", 1)[1].strip()
FAMILY_ORDER = ["vae", "gan", "flow", "autoregressive", "ebm", "diffusion"]


@dataclass
class Cell:
    text: str  # the measured value with its spread, as shown
    label: str  # the word the rules give it
    mean: float | None = None
    std: float | None = None
    n: int = 0


@dataclass
class Row:
    name: str
    metric: str  # which metric the row uses, named in the table
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass
class Matrix:
    dataset: str
    families: list[str]
    rows: list[Row]
    runs: list[Run]
    quality: str  # the metric of the quality row (the y axis of the speed-vs-quality plot)


def _values(runs: list[Run], metric: str) -> list[float]:
    out = []
    for run in runs:
        value = run.metrics.get(metric)
        if run.ok and isinstance(value, (int, float)) and math.isfinite(value):
            out.append(float(value))
    return out


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _fmt(mean: float | None, std: float | None, unit: str = "") -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.3g} ± {std:.2g}{unit}"


def _by_ratio(best: float, value: float, lower_is_better: bool, steps: list[tuple[float, str]],
              last: str) -> str:
    if value <= 0 or best <= 0:
        ratio = 1.0 if value == best else math.inf
    else:
        ratio = value / best if lower_is_better else best / value
    return next((word for limit, word in steps if ratio <= limit), last)


def _absolute(value: float, steps: list[tuple[float, str]], last: str) -> str:
    return next((word for limit, word in steps if value >= limit), last)


def quality_metric(dataset: str, measured: set[str]) -> tuple[str, bool]:
    """(metric, lower_is_better) of the quality row, given the metrics this dataset's runs measured."""
    if "precision_data_space" in measured:
        return "precision_data_space", False
    return ("fid_inception" if "fid_inception" in measured else f"fd_{dataset}_cnn"), True


def diversity_metric(dataset: str, measured: set[str], quality: str) -> str:
    if "mode_coverage" in measured:
        return "mode_coverage"
    if "recall_data_space" in measured:
        return "recall_data_space"
    return "recall_inception" if quality == "fid_inception" else f"recall_{dataset}_cnn"


def loss_oscillation(run: Run) -> float | None:
    """Std of train/loss over the last quarter of logged steps divided by its range over the whole run."""
    losses = [loss for _, loss in run.loss_curve() if math.isfinite(loss)]
    if len(losses) < 8:
        return None
    spread = max(losses) - min(losses)
    tail = losses[-max(2, len(losses) // 4):]
    return statistics.pstdev(tail) / spread if spread > 0 else 0.0


def _numeric_row(name: str, metric: str, groups: dict[str, list[Run]],
                 label: Callable[[float, list[float]], str], unit: str = "", shown: str | None = None,
                 extra: tuple[str, str] | None = None) -> Row:
    """Mean ± std of ``metric`` per family, worded by ``label(mean, all families' means)``; ``extra`` is a
    (metric, format) whose mean is appended to the text (NFE beside sampling time)."""
    row = Row(name, shown or metric)
    values = {f: _values(rs, metric) for f, rs in groups.items()}
    stats = {f: _stats(v) for f, v in values.items()}
    present = [m for m, _ in stats.values() if m is not None]
    for family, (mean, std) in stats.items():
        cell = Cell(_fmt(mean, std, unit), label(mean, present) if mean is not None else "n/a", mean, std,
                    len(values[family]))
        extra_mean = _stats(_values(groups[family], extra[0]))[0] if extra else None
        if extra_mean is not None:
            cell.text += ", " + extra[1].format(extra_mean)
        row.cells[family] = cell
    return row


def build_matrix(dataset: str, runs: list[Run]) -> Matrix:
    """The matrix of one dataset from all its runs (ok, failed and diverged)."""
    families = sorted({r.family for r in runs}, key=lambda f: (FAMILY_ORDER.index(f) if f in FAMILY_ORDER
                                                                else len(FAMILY_ORDER), f))
    groups = {f: [r for r in runs if r.family == f] for f in families}
    measured = {k for r in runs if r.ok for k in r.metrics}
    quality, lower = quality_metric(dataset, measured)
    def quality_label(m: float, ms: list[float]) -> str:
        best = min(ms) if lower else max(ms)
        return _by_ratio(best, m, lower, [(1.1, "Excellent"), (1.5, "High"), (3, "Medium")], "Low")

    quality_name = f"{quality}, {'lower' if lower else 'higher'} is better"
    diversity = diversity_metric(dataset, measured, quality)
    collapse = " (mode collapse)" if diversity == "mode_coverage" else ""
    rows = [
        _numeric_row("Sample quality", quality, groups, quality_label, shown=quality_name),
        _numeric_row("Diversity", diversity, groups,
                     lambda m, ms: _absolute(m, [(0.9, "High"), (0.6, "Medium")], "Low" + collapse)),
        _stability_row(groups, quality),
        _likelihood_row(groups),
        _numeric_row("Sampling speed", "sample_ms_per_sample", groups,
                     lambda m, ms: _by_ratio(min(ms), m, True, [(5, "Fast"), (100, "Slow")], "Very slow"),
                     " ms", extra=("nfe", "NFE {:.0f}")),
        _numeric_row("Training cost", "train_seconds", groups,
                     lambda m, ms: _by_ratio(min(ms), m, True, [(2, "Cheap"), (5, "Moderate")], "Expensive"),
                     " s", extra=("num_parameters", "{:,.0f} params")),
        _capability_row("Latent space", "latent_space", groups),
        _capability_row("Conditioning", "conditioning", groups,
                        next((k for k in sorted(measured) if k.startswith("conditional_accuracy_")), None)),
    ]
    return Matrix(dataset, families, rows, runs, quality)


def _stability_row(groups: dict[str, list[Run]], quality: str) -> Row:
    row = Row("Training stability", f"failed or diverged runs; CV of {quality} over seeds; loss oscillation")
    for family, runs in groups.items():
        failed = sum(r.status in FAILED for r in runs)
        mean, std = _stats(_values(runs, quality))
        cv = std / abs(mean) if mean else None
        oscillations = [o for r in runs if r.ok and (o := loss_oscillation(r)) is not None]
        osc = max(oscillations) if oscillations else None
        unstable = failed > 0 or (cv is not None and cv > 0.25) or (osc is not None and osc > 0.25)
        text = (f"{failed}/{len(runs)} failed, CV {'n/a' if cv is None else f'{cv:.2f}'}, "
                f"osc {'n/a' if osc is None else f'{osc:.2f}'}")
        label = "Unstable" if unstable else "Stable"
        row.cells[family] = Cell(text, label, failed / len(runs), None, len(runs))
    return row


LIKELIHOOD_WORDS = {"exact": "Exact", "bound": "Approx (bound)", "quadrature": "Approx (quadrature)",
                    "none": "None"}


def _likelihood_row(groups: dict[str, list[Run]]) -> Row:
    row = _numeric_row("Likelihood", "nll_bpd", groups, lambda m, ms: "", " bits/dim",
                       shown="nll_bpd; SE nll_bpd_se, median nll_bpd_median")
    for family, runs in groups.items():
        kinds = {r.metrics.get("likelihood_kind") for r in runs if r.ok} - {None}
        kind = kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else None)
        cell = row.cells[family]
        cell.label = LIKELIHOOD_WORDS.get(kind, "n/a")
        if kind == "none":
            cell.text = "none"
            continue
        se, median = (_stats(_values(runs, f"nll_bpd_{part}"))[0] for part in ("se", "median"))
        if se is not None:
            cell.text += f", SE {se:.2g}"
        if median is not None:
            cell.text += f", median {median:.3g}"
    return row


def _capability_row(name: str, key: str, groups: dict[str, list[Run]], accuracy: str | None = None) -> Row:
    """Words from the capability flag ``key``; ``accuracy`` names a measured metric added to the text."""
    row = Row(name, f"capability flag: {key}" + (f"; measured: {accuracy}" if accuracy else ""))
    for family, runs in groups.items():
        caps = next((r.capabilities for r in runs if r.capabilities), {})
        text = str(caps.get(key, "n/a"))
        mean, std = _stats(_values(runs, accuracy)) if accuracy else (None, None)
        if mean is not None:
            text += f"; {accuracy} {_fmt(mean, std)}"
        if not caps:
            label = "n/a"
        elif key == "latent_space":
            label = "Yes" if caps.get("has_latent") else ("Implicit" if text.startswith("implicit") else "No")
        else:
            label = "Yes" if caps.get("supports_labels") else "No"
        row.cells[family] = Cell(text, label)
    return row


def build_matrices(runs: list[Run]) -> list[Matrix]:
    return [build_matrix(d, [r for r in runs if r.dataset == d]) for d in sorted({r.dataset for r in runs})]
