"""The project's founding comparison, as commonly taught (issue 15; the EBM has no column there), kept as
data so every matrix can print it beside the measured words and mark each cell agrees / disagrees / not
measured (the rule is in :mod:`genbench.matrix.rules`, "Founding comparison")."""

from dataclasses import dataclass

from genbench.matrix.rules import FOUNDING_FAMILIES
from genbench.matrix.table import Matrix

TABLE = {  # property (a matrix row) -> the word for VAE, GAN, Flow, AR, Diffusion
    "Sample quality": ("Medium", "High", "Medium", "High", "Excellent"),
    "Diversity": ("High", "Low (mode collapse)", "High", "High", "High"),
    "Training stability": ("Stable", "Unstable", "Stable", "Stable", "Stable"),
    "Likelihood": ("Approx (ELBO)", "None", "Exact", "Exact", "Approx (ELBO)"),
    "Sampling speed": ("Fast", "Fast", "Slow", "Very slow", "Slow"),
    "Latent space": ("Yes", "Yes", "Yes", "No", "Implicit"),
    "Conditioning": ("Easy", "Moderate", "Easy", "Easy", "Easy"),
}
SAME = {"Approx (ELBO)": "Approx (bound)", "Easy": "Yes", "Moderate": "Yes"}  # founding word -> measured
NOT_MEASURED = ("", "n/a", "n=1", "Config error")


@dataclass
class Comparison:
    prop: str
    family: str  # the founding table's name (VAE, ...)
    founding: str
    measured: list[tuple[str, str]]  # (column, measured word) for each column of the family
    verdict: str  # agrees, disagrees, not measured (or mixed, when the family's columns differ)


def _word(word: str) -> str:
    """A word as compared: the founding synonyms mapped, "(mode collapse)" (a gloss of Low) dropped."""
    return SAME.get(word, word).removesuffix(" (mode collapse)")


def _verdict(founding: str, measured: str) -> str:
    if measured in NOT_MEASURED:
        return "not measured"
    return "agrees" if _word(founding) == _word(measured) else "disagrees"


def compare(m: Matrix) -> list[Comparison]:
    """Every cell of the founding table against the matrix's words for the same property and family."""
    out = []
    for prop, words in TABLE.items():
        cells = m.row(prop).cells
        for (name, family), founding in zip(FOUNDING_FAMILIES.items(), words, strict=True):
            measured = [(c.name, cells[c.name].label) for c in m.columns if c.family == family]
            verdicts = {_verdict(founding, word) for _, word in measured} or {"not measured"}
            out.append(Comparison(prop, name, founding, measured,
                                  verdicts.pop() if len(verdicts) == 1 else "mixed"))
    return out
