"""The bottom line of a matrix: which column to pick for each need, and the speed-quality Pareto front,
by the rules named in :mod:`genbench.matrix.rules` ("Bottom line")."""

from dataclasses import dataclass

from genbench.matrix import rules
from genbench.matrix.table import Matrix


@dataclass
class Verdict:
    need: str
    choice: str | None  # a column name; None: no column qualifies
    why: str


def _quality(m: Matrix) -> dict[str, float]:
    """r of each column that has one (lower is better): the value the quality word was read from, which
    compares columns whose runs had floors of different sizes where their shown values cannot."""
    return {c: cell.ratio for c, cell in m.row("Sample quality").cells.items() if cell.ratio is not None}


def _best(m: Matrix, among: list[str]) -> str | None:
    quality = _quality(m)
    candidates = [c for c in among if c in quality]
    return min(candidates, key=quality.__getitem__) if candidates else None


def _labelled(m: Matrix, row: str, labels: tuple[str, ...]) -> list[str]:
    return [c for c, cell in m.row(row).cells.items() if cell.label in labels]


def _quality_why(m: Matrix, column: str) -> str:
    """The value and its word; r, and the value it was read from where that is not the one shown."""
    cell = m.row("Sample quality").cells[column]
    ratio = "" if cell.ratio is None else f", r {cell.ratio:.3g}"
    compared = "" if cell.compared is None else f" from {cell.compared:.3g} at the floor's sample size"
    return f"{m.quality} {cell.mean:.3g} ({cell.label}{ratio}{compared})"


def bottom_line(m: Matrix) -> list[Verdict]:
    out = []
    best = _best(m, m.families)
    out.append(Verdict("Best sample quality", best, _quality_why(m, best) if best else "no quality measured"))

    speed = {c: cell.mean for c, cell in m.row("Sampling speed").cells.items() if cell.mean is not None}
    good = [c for c in _labelled(m, "Sample quality", rules.GOOD_QUALITY) if c in speed]
    fastest = min(good, key=speed.__getitem__) if good else None
    out.append(Verdict(f"Fastest sampling at good quality ({' or '.join(rules.GOOD_QUALITY)})", fastest,
                       f"{speed[fastest]:.3g} ms/sample, {_quality_why(m, fastest)}" if fastest
                       else f"no column reaches {' or '.join(rules.GOOD_QUALITY)} quality"))

    likelihood = m.row("Likelihood").cells
    exact = [c for c in _labelled(m, "Likelihood", ("Exact",)) if likelihood[c].mean is not None]
    nll = min(exact, key=lambda c: likelihood[c].mean) if exact else None
    out.append(Verdict("Exact likelihood", nll, f"nll_bpd {likelihood[nll].mean:.3g}" if nll
                       else "no column has an exact likelihood"))

    for need, row in (("Latent space", "Latent space"), ("Conditioning", "Conditioning")):
        pick = _best(m, _labelled(m, row, ("Yes",)))
        out.append(Verdict(need, pick, f"best quality with the capability: {_quality_why(m, pick)}" if pick
                           else "no measured column has it"))

    stability = m.row("Training stability").cells
    stable = [c for c in _labelled(m, "Training stability", ("Stable",)) if stability[c].mean is not None]
    steady = min(stable, key=lambda c: stability[c].mean) if stable else None
    out.append(Verdict("Most stable", steady, f"CV of {m.quality} over seeds {stability[steady].mean:.2f}"
                       if steady else "no Stable column has a CV (2 or more seeds with a quality value)"))
    return out


def pareto_front(m: Matrix) -> list[str]:
    """Columns that no other matches or beats on both sampling time and quality (r) while beating on one,
    fastest first."""
    quality = _quality(m)
    speed = {c: cell.mean for c, cell in m.row("Sampling speed").cells.items() if cell.mean is not None}
    points = {c: (speed[c], quality[c]) for c in quality if c in speed}

    def dominated(c: str) -> bool:
        s, q = points[c]
        return any(s2 <= s and q2 <= q and (s2, q2) != (s, q) for o, (s2, q2) in points.items() if o != c)
    return sorted((c for c in points if not dominated(c)), key=lambda c: points[c][0])
