"""The comparison matrix of one dataset: one column per family (and config, :mod:`genbench.matrix.columns`),
one row per property, a measured cell with its spread over seeds and a word derived from it by the rules
of :mod:`genbench.matrix.rules`, never typed in. Rows with a real-data floor carry it as their reference.
"""

import logging
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from genbench.matrix import rules
from genbench.matrix.columns import TRAINING_LIMITS, Column, build_columns, shown
from genbench.matrix.compute import CurveSummary, summarize_curves
from genbench.matrix.runs import Run
from genbench.nfe_record import nfe_to_reach
from genbench.results import AT_REAL_N_PREFIX as AT_REAL_N
from genbench.results import REAL_PREFIX as REAL

REFERENCE = "held-out real data"
log = logging.getLogger(__name__)


@dataclass
class Cell:
    text: str  # the measured value with its spread, as shown
    label: str  # the word the rules give it
    mean: float | None = None
    std: float | None = None
    n: int = 0
    ratio: float | None = None  # what the word was read from, where a scale gave it
    compared: float | None = None  # the mean value the ratio compared with the floor, where not ``mean``
    per_run: tuple[float, ...] = ()  # each run's number behind ``ratio`` (else ``mean``), for ties


@dataclass
class Row:
    name: str
    metric: str  # which metric the row uses, named in the table
    cells: dict[str, Cell] = field(default_factory=dict)
    reference: Cell | None = None  # held-out real data scored the same way
    reference_at_cells_size: bool = True  # False: some cell's runs scored their floor at another size


@dataclass
class Matrix:
    dataset: str
    columns: list[Column]
    rows: list[Row]
    runs: list[Run]
    quality: str  # the metric of the quality row (the y axis of the speed-vs-quality plot)
    lower_is_better: bool
    curves: CurveSummary
    warnings: list[str] = field(default_factory=list)

    @property
    def families(self) -> list[str]:
        """The column names, in order."""
        return [c.name for c in self.columns]

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)


def _values(runs: list[Run], metric: str) -> list[float]:
    out = []
    for run in runs:
        value = run.metrics.get(metric)
        if run.ok and type(value) in (int, float) and math.isfinite(value):
            out.append(float(value))
    return out


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def coefficient_of_variation(values: Sequence[float]) -> float | None:
    """Sample standard deviation over the absolute mean; None under two values or at a mean of 0."""
    if len(values) < 2 or not (mean := statistics.fmean(values)):
        return None
    return statistics.stdev(values) / abs(mean)


def _fmt(values: list[float], of: int, unit: str = "") -> str:
    """Mean ± std, "(n=1)" alone for one value, and "(n=k)" when k is less than the ``of`` runs."""
    mean, std = _stats(values)
    if mean is None:
        return "n/a"
    if std is None:
        return f"{mean:.3g}{unit} (n=1)"
    return f"{mean:.3g} ± {std:.2g}{unit}" + (f" (n={len(values)})" if len(values) < of else "")


def number(x: float | None, fmt: str = ".3g") -> str:
    """``x`` formatted, or n/a."""
    return "n/a" if x is None else format(x, fmt)


def _missing(column: Column) -> str:
    """Why a column has no value: its runs' outcomes."""
    errors = sum(r.config_error for r in column.runs)
    other = [r.status for r in column.runs if not r.ok and not r.config_error]
    parts = ([f"{errors} config error{'s' * (errors > 1)}"] if errors else []) + other
    return "n/a" + (f" ({', '.join(parts)})" if parts else "")


def _ratio(value: float, anchor: float, lower_is_better: bool) -> float:
    """How many times worse than ``anchor`` (>= 1 when worse; inf when it cannot be compared)."""
    if value <= 0 or anchor <= 0:
        return 1.0 if value == anchor else (0.0 if (value < anchor) == lower_is_better else math.inf)
    return value / anchor if lower_is_better else anchor / value


Word = Callable[[Column, float, list[float]], tuple]


def _numeric_row(name: str, metric: str, columns: list[Column], word: Word, unit: str = "",
                 shown: str | None = None) -> Row:
    """Mean ± std of ``metric`` per column; ``word(column, its mean, every column's mean)`` gives (label,
    ratio)."""
    row = Row(name, shown or metric)
    values = {c.name: _values(c.runs, metric) for c in columns}
    means = [statistics.fmean(v) for v in values.values() if v]
    for column in columns:
        vs = values[column.name]
        mean, std = _stats(vs)
        if mean is None:
            row.cells[column.name] = Cell(_missing(column), "n/a")
            continue
        label, ratio = word(column, mean, means)
        row.cells[column.name] = Cell(_fmt(vs, len(column.runs), unit), label, mean, std, len(vs), ratio,
                                      per_run=tuple(vs))
    return row


Pair = tuple[float, float, bool]  # a run's value at its floor's sample size, the floor, whether resized


def _finite(x: object) -> bool:
    return type(x) in (int, float) and math.isfinite(x)


def _against_floor(column: Column, metric: str) -> tuple[list[Pair], int]:
    """(value, floor, resized) of each ok run whose record holds a real-data floor at its samples' size
    (the value: its ``at_real_n_<metric>`` where it recorded one, resized, else ``metric``); and how many
    runs were left out: records from before ``at_real_n_`` whose floor had fewer images than samples."""
    pairs, left_out = [], 0
    for run in column.runs:
        floor, at_n = run.metrics.get(REAL + metric), run.metrics.get(AT_REAL_N + metric)
        value = run.metrics.get(metric) if at_n is None else at_n
        if not (run.ok and _finite(floor) and _finite(value)):
            continue
        if at_n is None and run.floor_has_fewer_images:
            left_out += 1
            continue
        pairs.append((float(value), float(floor), at_n is not None))
    return pairs, left_out


def _note_floor(row: Row, cell: Cell, metric: str, letter: str, pairs: list[Pair], left_out: int) -> None:
    """Say in ``cell`` where its ratio (``letter``) compared ``at_real_n_`` values with the floor, and from
    how many of its runs (the others have no floor at their samples' size); mark the row where a floor was
    compared with values of another size."""
    resized = [value for value, _, was in pairs if was]
    if resized:
        cell.compared = statistics.fmean(value for value, _, _ in pairs)
        which = "" if len(resized) == len(pairs) else f" in {len(resized)} of {len(pairs)} runs"
        at_n = statistics.fmean(resized)
        cell.text += f" (at the floor's sample size: {AT_REAL_N}{metric} {at_n:.3g}{which})"
    if not pairs:
        cell.text += "; no real-data value at its samples' size"
    elif len(pairs) < cell.n:
        cell.text += (f" ({letter} from {len(pairs)} of {cell.n} runs: the others have no real-data value "
                      "at their samples' size)")
    row.reference_at_cells_size &= not resized and not left_out


def _reference(runs: list[Run], metric: str) -> Cell | None:
    values = _values(runs, REAL + metric)
    return Cell(_fmt(values, len(values)), "", *_stats(values), len(values)) if values else None


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


def _quality_row(quality: str, lower: bool, columns: list[Column], reference: Cell | None) -> Row:
    """r per run against its own record's floor, averaged over the column's runs; to the best column
    where no run of the dataset has a floor."""
    floors = {c.name: _against_floor(c, quality) for c in columns}
    anchored = reference is not None
    anchor_name = "held-out real data" if anchored else "the best column (no real-data value recorded)"

    per_run: dict[str, tuple[float, ...]] = {}

    def word(column: Column, mean: float, means: list[float]) -> tuple[str, float | None]:
        if not anchored:
            best = min(means) if lower else max(means)
            ratios = [_ratio(value, best, lower) for value in _values(column.runs, quality)]
            ratio = _ratio(mean, best, lower)
        elif pairs := floors[column.name][0]:
            ratios = [_ratio(value, floor, lower) for value, floor, _ in pairs]
            ratio = statistics.fmean(ratios)
        else:
            return "n/a", None
        per_run[column.name] = tuple(ratios)
        return rules.QUALITY.word(ratio), ratio

    row = _numeric_row("Sample quality", quality, columns, word,
                       shown=f"{quality}, {'lower' if lower else 'higher'} is better; r to {anchor_name}")
    for name, cell in row.cells.items():
        cell.per_run = per_run.get(name, ())
    row.reference = reference
    _show_ratios(row)
    for column in columns:
        cell = row.cells[column.name]
        if anchored and cell.mean is not None:
            _note_floor(row, cell, quality, "r", *floors[column.name])
    return row


def _diversity_row(diversity: str, columns: list[Column], reference: Cell | None) -> Row:
    """s per run against its own record's floor, averaged over the column's runs; the value itself where
    no run of the dataset has a floor."""
    collapse = " (mode collapse)" if diversity == "mode_coverage" else ""
    floors = {c.name: _against_floor(c, diversity) for c in columns}
    floors = {name: ([p for p in pairs if p[1] > 0], left_out) for name, (pairs, left_out) in floors.items()}
    anchored = reference is not None and reference.mean is not None and reference.mean > 0

    def word(column: Column, mean: float, means: list[float]) -> tuple[str, float | None]:
        if not anchored:
            share = mean
        elif pairs := floors[column.name][0]:
            share = statistics.fmean(value / floor for value, floor, _ in pairs)
        else:
            return "n/a", None
        label = rules.DIVERSITY.word(share)
        return label + (collapse if label == rules.DIVERSITY.last else ""), share

    row = _numeric_row("Diversity", diversity, columns, word,
                       shown=diversity + ("; s to held-out real data" if anchored else ""))
    row.reference = reference
    if anchored:
        _show_ratios(row, "s")
        for column in columns:
            cell = row.cells[column.name]
            if cell.mean is not None:
                _note_floor(row, cell, diversity, "s", *floors[column.name])
    return row


def _floors_of_another_size(runs: list[Run]) -> list[str]:
    """A warning naming the records whose real-data floor had fewer images than their samples, with no
    ``at_real_n_`` metrics to compare with it (written before those existed)."""
    old = [r for r in runs if r.ok and r.floor_has_fewer_images and not any(k.startswith(AT_REAL_N)
                                                                            for k in r.metrics)]
    if not old:
        return []
    return [f"{len(old)} run{'s' * (len(old) > 1)} scored held-out real data on fewer images than their "
            f"samples and recorded no {AT_REAL_N}<metric> (written before it existed), so their r and s "
            "are left out; evaluate their checkpoints again with eval.py: "
            + ", ".join(str(r.path) for r in old)]


def build_matrix(dataset: str, runs: list[Run]) -> Matrix:
    """The matrix of one dataset from all its runs (ok, failed, diverged and interrupted)."""
    columns, warnings = build_columns(runs)
    warnings += _floors_of_another_size(runs)
    for warning in warnings:
        log.warning("%s: %s", dataset, warning)
    measured = {k for r in runs if r.ok for k in r.metrics}
    quality, lower = quality_metric(dataset, measured)
    diversity = diversity_metric(dataset, measured, quality)
    curves = summarize_curves(dataset, columns, runs)
    cost = "train_flops" if "train_flops" in measured else "train_seconds"
    speed = _numeric_row("Sampling speed", "sample_ms_per_sample", columns, _to_least(rules.SPEED), " ms")
    _show_ratios(speed)
    _append(speed, columns, "nfe", "NFE {:.0f}")
    _append_nfe_to_reach(speed, columns)
    compute = _numeric_row("Training compute", cost, columns, _to_least(rules.COST),
                           " FLOPs" if cost == "train_flops" else " s")
    _show_ratios(compute)
    for name, fmt in (("train_examples", "{:,.0f} examples"), ("train_seconds", "{:.3g} s"),
                      ("num_parameters", "{:,.0f} params")):
        if name != cost:
            _append(compute, columns, name, fmt)
    rows = [
        _budget_row(columns, curves),
        _quality_row(quality, lower, columns, _reference(runs, quality)),
        _diversity_row(diversity, columns, _reference(runs, diversity)),
        _stability_row(columns, quality),
        _likelihood_row(columns),
        speed,
        compute,
        _capability_row("Latent space", "latent_space", columns),
        _capability_row("Conditioning", "conditioning", columns,
                        next((k for k in sorted(measured) if k.startswith("conditional_accuracy_")), None)),
    ]
    return Matrix(dataset, columns, rows, runs, quality, lower, curves, warnings)


def _to_least(scale: rules.Scale) -> Word:
    """Words by the ratio to the least mean of the row (the fastest, the cheapest)."""
    def word(column: Column, mean: float, means: list[float]) -> tuple[str, float]:
        ratio = _ratio(mean, min(means), True)
        return scale.word(ratio), ratio
    return word


def _show_ratios(row: Row, letter: str = "r") -> None:
    """Each cell's ratio (``letter``: r, or s for diversity), the number its word was read from."""
    for cell in row.cells.values():
        if cell.ratio is not None:
            cell.text += f"; {letter} {cell.ratio:.3g}"


def _append(row: Row, columns: list[Column], metric: str, fmt: str) -> None:
    """Add the mean of ``metric`` to each cell that has a value (NFE beside sampling time)."""
    for column in columns:
        mean = _stats(_values(column.runs, metric))[0]
        if mean is not None and row.cells[column.name].mean is not None:
            row.cells[column.name].text += ", " + fmt.format(mean)


def _append_nfe_to_reach(row: Row, columns: list[Column]) -> None:
    """Beside the sampling time: the fewest NFE at which the column's quality-against-NFE curve (its lowest
    seed that has one) reaches ``rules.NFE_FRACTION`` of its best, and with which sampler."""
    for column in columns:
        curve = column.nfe_curve()
        reach = nfe_to_reach(curve, rules.NFE_FRACTION) if curve else None
        if reach is not None and row.cells[column.name].mean is not None:
            row.cells[column.name].text += (f", {rules.NFE_FRACTION:.0%} of best {reach['metric']} at NFE "
                                            f"{reach['nfe']} ({reach['sampler']})")


def budget_of(column: Column) -> str:
    """The steps the column's models trained for: ``trainer.max_steps``, and, where its runs stopped at
    another number of steps (``max_epochs``, ``max_time``, ``fast_dev_run``, a debug preset's batch limits),
    the limits set and the steps they trained; for records of eval.py (``train=false``, whose max_steps is
    the evaluation's config), the steps of the checkpoints evaluated."""
    steps = " / ".join(sorted({f"{v:.0f}" for v in _values(column.runs, "train_steps")}, key=int))
    if column.evaluated_only:
        return f"evaluated checkpoints of {steps or 'unrecorded'} steps"
    budget = column.setup.get("trainer.max_steps", "not recorded")
    if steps and steps != budget:
        limits = [f"{key.removeprefix('trainer.')} {shown(value)}" for key in TRAINING_LIMITS
                  if (value := column.setup.get(key)) not in (None, "null", "false", "0")]
        budget += f" ({'; '.join([*limits, f'trained {steps} step' + 's' * (steps != '1')])})"
    return budget


def _budget_row(columns: list[Column], curves: CurveSummary) -> Row:
    """The budget each column trained for, and where its quality curve was at the end of it."""
    row = Row("Budget", "trainer.max_steps; examples seen; the quality curve at the end")
    for column in columns:
        budget = budget_of(column)
        examples = _stats(_values(column.runs, "train_examples"))[0]
        text = (budget if column.evaluated_only else f"max_steps {budget}") + (
            f", {examples:,.0f} examples" if examples is not None else "")
        row.cells[column.name] = Cell(text, curves.trend.get(column.name) or "")
    return row


def _stability_row(columns: list[Column], quality: str) -> Row:
    row = Row("Training stability", f"runs that diverged or crashed in training; CV of {quality} over "
                                    "seeds; loss oscillation")
    for column in columns:
        runs = column.runs
        errors = sum(r.config_error for r in runs)
        crashed = sum(r.crashed_in_training for r in runs)
        broken = crashed + sum(r.status == "diverged" for r in runs)
        elsewhere = sum(r.status == "failed" for r in runs) - errors - crashed  # evaluation, machine, worker
        values = _values(runs, quality)
        cv = coefficient_of_variation(values)
        oscillations = [o for r in runs if r.ok and (o := loss_oscillation(r)) is not None]
        osc = max(oscillations) if oscillations else None
        finished = sum(r.ok for r in runs)
        text = (f"{broken}/{len(runs) - errors} diverged or crashed in training"
                + (f", {errors} config error{'s' * (errors > 1)}" if errors else "")
                + (f", {elsewhere} failed on something else" if elsewhere else "")
                + f", CV {number(cv, '.2f')}, osc {number(osc, '.2f')}")
        spread = (cv or 0.0) > rules.CV_LIMIT or (osc or 0.0) > rules.OSCILLATION_LIMIT
        if broken or spread:
            label = "Unstable"
        elif finished == 0:
            label = "Config error" if errors else "n/a"
        elif finished == 1:
            label = "n=1"
        else:
            label = "Stable"
        row.cells[column.name] = Cell(text, label, cv, None, finished, per_run=tuple(values))
    return row


def _likelihood_row(columns: list[Column]) -> Row:
    row = _numeric_row("Likelihood", "nll_bpd", columns, lambda c, m, ms: ("", None), " bits/dim",
                       shown="nll_bpd; SE nll_bpd_se, median nll_bpd_median")
    for column in columns:
        kinds = {r.metrics.get("likelihood_kind") for r in column.runs if r.ok} - {None}
        kind = kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else None)
        cell = row.cells[column.name]
        cell.label = rules.LIKELIHOOD_WORDS.get(kind, "n/a")
        if kind == "none":
            cell.text = "none"
            continue
        se, median = (_stats(_values(column.runs, f"nll_bpd_{part}"))[0] for part in ("se", "median"))
        if se is not None:
            cell.text += f", SE {se:.2g}"
        if median is not None:
            cell.text += f", median {median:.3g}"
    return row


def _capability_row(name: str, key: str, columns: list[Column], accuracy: str | None = None) -> Row:
    """Words from the capability flag ``key``; ``accuracy`` names a measured metric added to the text."""
    row = Row(name, f"capability flag: {key}" + (f"; measured: {accuracy}" if accuracy else ""))
    for column in columns:
        caps = next((r.capabilities for r in column.runs if r.capabilities), {})
        text = str(caps.get(key, "n/a"))
        values = _values(column.runs, accuracy) if accuracy else []
        if values:
            text += f"; {accuracy} {_fmt(values, len(column.runs))}"
        if not caps:
            label = "n/a"
        elif key == "latent_space":
            # "latent": explicit | implicit | none (records before it carry only the has_latent flag)
            kind = caps.get("latent", "explicit" if caps.get("has_latent") else "none")
            label = {"explicit": "Yes", "implicit": "Implicit"}.get(kind, "No")
        else:
            label = "Yes" if caps.get("supports_labels") else "No"
        row.cells[column.name] = Cell(text, label)
    return row


def build_matrices(runs: list[Run]) -> list[Matrix]:
    return [build_matrix(d, [r for r in runs if r.dataset == d]) for d in sorted({r.dataset for r in runs})]
