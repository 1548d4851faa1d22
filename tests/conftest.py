"""Shared fixtures: tiny image datasets written in the real on-disk formats (no download needed)."""

import gzip
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

# The suite runs on the CPU wherever it runs, as on CI: on a machine with a GPU, `debug`'s and the default
# trainer take it (accelerator auto), and tests that check CPU records and CPU numerics failed there (on the
# H100, BENCHMARKS.md). GENBENCH_TEST_GPU=1 leaves the GPU visible for the GPU-only tests, which skip without
# one (scripts/bench_gpu_session.sh runs them so). Set before torch looks for a device, and inherited by the
# workers and the scripts that tests start.
if os.environ.get("GENBENCH_TEST_GPU") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from genbench.data.formats import write_cifar_batch  # noqa: E402
from tests.helpers import ROOT  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Torch on one intra-op thread for the whole suite (as `make test` sets OMP_NUM_THREADS=1): the test
    models are tiny, and on a busy 2-core machine a second thread spins and slows runs many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def fresh_genbench_root(tmp_path_factory):
    """In-process runs read and write under a root of their own, as on a fresh clone (scripts the tests start
    get one each). With the repository's (``paths.root_dir``: ``.``) they took a user's trained dataset
    classifiers in feature_nets/, so the quality curve evaluated inside the training steps that some tests
    watch (12 failed), and wrote real features into the user's cache/."""
    before = os.environ.get("GENBENCH_ROOT")
    os.environ["GENBENCH_ROOT"] = str(tmp_path_factory.mktemp("genbench_root"))
    yield Path(os.environ["GENBENCH_ROOT"])
    if before is None:
        del os.environ["GENBENCH_ROOT"]
    else:
        os.environ["GENBENCH_ROOT"] = before


@pytest.fixture
def script(monkeypatch) -> Callable[[str], ModuleType]:
    """Imports scripts/<name>.py as a module; each script module imported meanwhile (the ones asked for and
    those they import, as bench_host_step imports bench_gpu) is dropped from sys.modules afterwards (whether
    or not the test passed), so no test sees another's copy."""
    scripts = ROOT / "scripts"
    monkeypatch.syspath_prepend(str(scripts))
    before = set(sys.modules)
    yield importlib.import_module
    for name in set(sys.modules) - before:
        if Path(getattr(sys.modules[name], "__file__", None) or "/").parent == scripts:
            del sys.modules[name]


MNIST_ROWS = {"train": 64, "t10k": 32}
CIFAR_TRAIN_ROWS_PER_BATCH = 8
CIFAR_TEST_ROWS = 16


def write_idx_file(path: Path, array: np.ndarray) -> Path:
    """An IDX file of unsigned bytes as MNIST ships it; gzipped when ``path`` ends in .gz."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


@pytest.fixture
def write_idx() -> Callable[[Path, np.ndarray], Path]:
    return write_idx_file


@pytest.fixture
def fake_image_root(tmp_path: Path) -> Path:
    """A data root with MNIST (plain IDX), FashionMNIST (gzipped IDX) and CIFAR-10 (5 + 1 batches).

    MNIST-style sets have 64 train and 32 test images of 28x28, CIFAR 5 x 8 train and 16 test images;
    labels cycle through 0..9 so every class occurs.
    """
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for folder, suffix in (("MNIST", ""), ("FashionMNIST", ".gz")):
        raw = root / folder / "raw"
        for prefix, n in MNIST_ROWS.items():
            write_idx_file(raw / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)))
            write_idx_file(raw / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n) % 10)
    batches = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = CIFAR_TEST_ROWS if name == "test_batch" else CIFAR_TRAIN_ROWS_PER_BATCH
        write_cifar_batch(batches / name, rng.integers(0, 256, (n, 3072)), list(np.arange(n) % 10))
    return root
