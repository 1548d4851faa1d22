"""The comparison matrix: runs' ``metrics.json`` aggregated per dataset into families x properties."""

from pathlib import Path

from genbench.matrix.render import write_all
from genbench.matrix.runs import Found, Run, Skipped, find_runs
from genbench.matrix.table import Matrix, build_matrices


def write_matrix(dirs: list[Path], out_dir: Path) -> tuple[list[Matrix], Found, list[Path]]:
    """Aggregate every run under ``dirs`` and write matrix.md/.csv/.html into ``out_dir``.

    The files are written when there is anything to show: a run, or a job that left no usable record
    (named under "Jobs without a usable record"). Returns the matrices, what was found, and the paths.
    """
    found = find_runs(dirs)
    matrices = build_matrices(found.runs)
    return matrices, found, write_all(matrices, found.skipped, out_dir) if found.runs or found.skipped else []


__all__ = ["Found", "Matrix", "Run", "Skipped", "build_matrices", "find_runs", "write_all", "write_matrix"]
