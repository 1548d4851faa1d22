"""The bottom line of a matrix: which column to pick for each need, and the speed-quality Pareto front,
by the rules named in :mod:`genbench.matrix.rules` ("Bottom line")."""

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from genbench.matrix import rules
from genbench.matrix.table import Cell, Matrix, coefficient_of_variation


@dataclass
class Verdict:
    need: str
    choice: str | None  # a column name; None: no column qualifies
    why: str
    tied: list[str] = field(default_factory=list)  # columns the seeds cannot tell from the choice

    @property
    def pick(self) -> str:
        """The choice as shown: the columns it ties with named beside it."""
        if self.choice is None:
            return "none"
        return self.choice + (f" (tied with {', '.join(self.tied)})" if self.tied else "")


def tied(a: Sequence[float], b: Sequence[float]) -> bool | None:
    """Whether two columns' per-run numbers have means within ``rules.TIE_SE`` standard errors of their
    difference (Welch's); None where either has fewer than two runs, whose spread is unknown."""
    if len(a) < 2 or len(b) < 2:
        return None
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return abs(statistics.fmean(a) - statistics.fmean(b)) <= rules.TIE_SE * se


def cv_standard_error(cv: float, n: int) -> float:
    """The standard error of the coefficient of variation of ``n`` normal draws, by the delta method
    (Kendall & Stuart) with n - 1 for n: cv * sqrt((1 + 2 cv^2) / (2 (n - 1))), within 9% of a simulation's
    from 3 draws on (with n it was 12% low at 3)."""
    return cv * math.sqrt((1 + 2 * cv**2) / (2 * (n - 1)))


def cvs_tied(a: Sequence[float], b: Sequence[float]) -> bool | None:
    """Whether two columns' per-run numbers have coefficients of variation within ``rules.TIE_SE``
    standard errors of their difference (:func:`cv_standard_error`); None where either has fewer than two
    runs (or a mean of 0: no CV)."""
    cv_a, cv_b = coefficient_of_variation(a), coefficient_of_variation(b)
    if cv_a is None or cv_b is None:
        return None
    se = math.hypot(cv_standard_error(cv_a, len(a)), cv_standard_error(cv_b, len(b)))
    return abs(cv_a - cv_b) <= rules.TIE_SE * se


def _with_ties(verdict: Verdict, cells: dict[str, Cell], among: list[str], shown: Callable[[Cell], str],
               tie: Callable[[Sequence[float], Sequence[float]], bool | None] = tied) -> Verdict:
    """``verdict`` with the columns of ``among`` its choice ties with by the per-run numbers of ``cells``
    (``shown`` gives a tied column's number in the why), and those it could not be compared with."""
    if verdict.choice is None:
        return verdict
    mine = cells[verdict.choice].per_run
    others = [c for c in among if c != verdict.choice]
    if len(mine) < 2:
        if others:
            verdict.why += "; one run: not tested for a tie"
        return verdict
    verdict.tied = [c for c in others if tie(mine, cells[c].per_run)]
    if verdict.tied:
        means = ", ".join(f"{c} {shown(cells[c])}" for c in verdict.tied)
        verdict.why += f"; within the seeds' spread of it: {means}"
    untested = [c for c in others if tie(mine, cells[c].per_run) is None]
    if untested:
        verdict.why += f"; not tested for a tie (fewer than 2 runs): {', '.join(untested)}"
    return verdict


def _quality(m: Matrix) -> dict[str, float]:
    """r of each column that has one (lower is better): the value the quality word was read from, which
    compares columns whose runs had floors of different sizes where their shown values cannot."""
    return {c: cell.ratio for c, cell in m.row("Sample quality").cells.items() if cell.ratio is not None}


def _best(m: Matrix, need: str, among: list[str], why: str = "") -> Verdict:
    """The column of ``among`` with the best quality (lowest r), with its ties."""
    quality = _quality(m)
    candidates = [c for c in among if c in quality]
    if not candidates:
        return Verdict(need, None, "no quality measured" if not why else "no measured column has it")
    best = min(candidates, key=quality.__getitem__)
    verdict = Verdict(need, best, why + _quality_why(m, best))
    return _with_ties(verdict, m.row("Sample quality").cells, candidates, lambda cell: f"r {cell.ratio:.3g}")


def _labelled(m: Matrix, row: str, labels: tuple[str, ...]) -> list[str]:
    return [c for c, cell in m.row(row).cells.items() if cell.label in labels]


def _quality_why(m: Matrix, column: str) -> str:
    """The value and its word; r, and the value it was read from where that is not the one shown."""
    cell = m.row("Sample quality").cells[column]
    ratio = "" if cell.ratio is None else f", r {cell.ratio:.3g}"
    compared = "" if cell.compared is None else f" from {cell.compared:.3g} at the floor's sample size"
    return f"{m.quality} {cell.mean:.3g} ({cell.label}{ratio}{compared})"


def bottom_line(m: Matrix) -> list[Verdict]:
    out = [_best(m, "Best sample quality", m.families)]

    speed = m.row("Sampling speed").cells
    good = [c for c in _labelled(m, "Sample quality", rules.GOOD_QUALITY) if speed[c].mean is not None]
    need = f"Fastest sampling at good quality ({' or '.join(rules.GOOD_QUALITY)})"
    if good:
        fastest = min(good, key=lambda c: speed[c].mean)
        why = f"{speed[fastest].mean:.3g} ms/sample, {_quality_why(m, fastest)}"
        out.append(_with_ties(Verdict(need, fastest, why), speed, good,
                              lambda cell: f"{cell.mean:.3g} ms/sample"))
    else:
        out.append(Verdict(need, None, f"no column reaches {' or '.join(rules.GOOD_QUALITY)} quality"))

    likelihood = m.row("Likelihood").cells
    exact = [c for c in _labelled(m, "Likelihood", ("Exact",)) if likelihood[c].mean is not None]
    if exact:
        nll = min(exact, key=lambda c: likelihood[c].mean)
        verdict = Verdict("Exact likelihood", nll, f"nll_bpd {likelihood[nll].mean:.3g}")
        out.append(_with_ties(verdict, likelihood, exact, lambda cell: f"nll_bpd {cell.mean:.3g}"))
    else:
        out.append(Verdict("Exact likelihood", None, "no column has an exact likelihood"))

    for need, row in (("Latent space", "Latent space"), ("Conditioning", "Conditioning")):
        out.append(_best(m, need, _labelled(m, row, ("Yes",)), "best quality with the capability: "))

    # At good quality, as for speed: on gaussians25 the GAN's precision of 0.02 (Low) varied least over
    # the seeds, and "most stable: gan" read as advice to train one.
    stability = m.row("Training stability").cells
    good_quality = set(_labelled(m, "Sample quality", rules.GOOD_QUALITY))
    stable = [c for c in _labelled(m, "Training stability", ("Stable",))
              if stability[c].mean is not None and c in good_quality]
    need = f"Most stable at good quality ({' or '.join(rules.GOOD_QUALITY)})"
    if stable:
        steady = min(stable, key=lambda c: stability[c].mean)
        verdict = Verdict(need, steady, f"CV of {m.quality} over seeds {stability[steady].mean:.2f}, "
                                        f"{_quality_why(m, steady)}")
        out.append(_with_ties(verdict, stability, stable, lambda cell: f"CV {cell.mean:.2f}", cvs_tied))
    else:
        out.append(Verdict(need, None, f"no Stable column of {' or '.join(rules.GOOD_QUALITY)} quality has "
                                       "a CV (2 or more seeds with a quality value)"))
    return out


def pareto_front(m: Matrix) -> list[str]:
    """Columns that no other column beats on sampling time or quality (r) while matching it on the other,
    fastest first. To beat is to have a better mean the seeds can tell apart (:func:`tied`; with one run, a
    better value); to match, a mean as good or tied."""
    quality, speed = m.row("Sample quality").cells, m.row("Sampling speed").cells
    axes = [{c: (speed[c].mean, speed[c].per_run) for c in speed if speed[c].mean is not None},
            {c: (quality[c].ratio, quality[c].per_run) for c in quality if quality[c].ratio is not None}]
    columns = [c for c in m.families if all(c in axis for axis in axes)]

    def dominated(c: str) -> bool:
        def beats(o: str, axis: dict) -> bool:
            return axis[o][0] < axis[c][0] and tied(axis[o][1], axis[c][1]) is not True

        def matches(o: str, axis: dict) -> bool:
            return axis[o][0] <= axis[c][0] or tied(axis[o][1], axis[c][1]) is True
        return any(all(matches(o, a) for a in axes) and any(beats(o, a) for a in axes)
                   for o in columns if o != c)
    return sorted((c for c in columns if not dominated(c)), key=lambda c: axes[0][c][0])
