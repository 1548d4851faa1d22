"""Rebuild the comparison matrix from run directories: ``python scripts/matrix.py <dirs...> [--out DIR]``.

Every ``metrics.json`` under the given directories counts (a sweep, several sweeps, single runs); the
matrix goes to ``--out`` (default: the first directory) as matrix.md, matrix.csv and matrix.html. Exits 1
when there is nothing to aggregate, 2 when some job has no usable record (they are named in the matrix).
"""

import argparse
import logging
import sys
from pathlib import Path

from genbench.matrix import write_matrix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--out", type=Path, help="where to write the matrix (default: the first directory)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    out = args.out or args.dirs[0]
    try:
        _, found, paths = write_matrix(args.dirs, out)
    except OSError as e:  # --out not writable, a disk full
        logging.error("cannot write the matrix into %s: %s; give another --out", out, e)
        return 1
    if not paths:
        logging.error("no readable metrics.json under %s", " ".join(map(str, args.dirs)))
        return 1
    print("\n".join(map(str, paths)))
    return 2 if found.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
