"""The comparison matrix: runs' ``metrics.json`` aggregated per dataset into families x properties."""

from pathlib import Path

from genbench.matrix.render import write_all
from genbench.matrix.runs import Run, find_runs
from genbench.matrix.table import Matrix, build_matrices


def write_matrix(dirs: list[Path], out_dir: Path) -> tuple[list[Matrix], list[Path]]:
    """Aggregate every run under ``dirs`` and write matrix.md/.csv/.html into ``out_dir``."""
    matrices = build_matrices(find_runs(dirs))
    return matrices, write_all(matrices, out_dir) if matrices else []


__all__ = ["Matrix", "Run", "build_matrices", "find_runs", "write_all", "write_matrix"]
