"""Readers for the raw MNIST-style IDX files and CIFAR-10 pickles, and their optional download.

Both readers check the files against their own headers and raise :class:`DatasetError` naming the file
on anything off, so a half-downloaded dataset fails at load time rather than as a shape error mid-run.
Downloads go through :func:`genbench.download.download` (a timeout, a checksum, an atomic rename).
CIFAR batches are pickles: they are read with :class:`RestrictedUnpickler`, which only builds numpy
arrays, so a tampered file cannot run code.
"""

import codecs
import gzip
import math
import pickle
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from genbench.download import download
from genbench.errors import DatasetError

try:  # numpy >= 2 pickles name numpy._core; numpy 1.x pickles (and real CIFAR files) numpy.core
    from numpy._core import multiarray, numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray, numeric

_IDX_UBYTE = 0x08
_CIFAR_PIXELS = 3 * 32 * 32
_BLOCK = 1 << 20


def _read_exactly(f: BinaryIO, n: int, path: Path, what: str) -> bytes:
    data = f.read(n)
    if len(data) < n:
        raise DatasetError(f"{path}: truncated inside the {what} ({len(data)} of {n} bytes)")
    return data


def _read_payload(f: BinaryIO, expected: int) -> bytes:
    """At most ``expected + 1`` bytes, in blocks: a file holding more than its header declares (a gzip
    that inflates to far more) is caught after one extra byte, never read whole."""
    blocks, held = [], 0
    while held <= expected:
        block = f.read(min(_BLOCK, expected + 1 - held))
        if not block:
            break
        blocks.append(block)
        held += len(block)
    return b"".join(blocks)


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (plain or ``.gz``), checking its header against its payload.

    ``ndim``, when given, is the number of dimensions the caller expects (3 for images, 1 for labels).
    The header is read first and bounds the rest: at most the declared size plus one byte is read (or
    decompressed), so a file larger than it says costs no more memory than an honest one.
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
                raise DatasetError(f"{path}: not an IDX file (bad magic number {magic.hex() or 'empty'})")
            code, dims = magic[2], magic[3]
            if code != _IDX_UBYTE:
                raise DatasetError(f"{path}: IDX dtype code 0x{code:02x} is not unsigned bytes (0x08)")
            if dims == 0 or (ndim is not None and dims != ndim):
                expected_dims = ndim or "at least 1"
                raise DatasetError(f"{path}: IDX header says {dims} dimensions, expected {expected_dims}")
            sizes = _read_exactly(f, 4 * dims, path, "header")
            shape = tuple(int.from_bytes(sizes[4 * i : 4 * i + 4], "big") for i in range(dims))
            expected = math.prod(shape)
            raw = _read_payload(f, expected)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DatasetError(
            f"{path}: cannot read ({e}); the file is corrupt, delete it and fetch it again"
        ) from e
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has extra bytes"
        held = str(len(raw)) if len(raw) < expected else f"more than {expected}"
        raise DatasetError(
            f"{path}: {what}: header says {'x'.join(map(str, shape))} = {expected} bytes, file holds {held}; "
            f"the file is corrupt or incomplete, delete it and fetch it again"
        )
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape).copy()


def find_raw_file(raw_dir: str | Path, stem: str) -> Path:
    """``raw_dir/stem`` or else ``raw_dir/stem.gz``; a DatasetError saying how to get it if neither."""
    raw_dir = Path(raw_dir)
    for candidate in (raw_dir / stem, raw_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"missing dataset file: expected {raw_dir / stem} (or {stem}.gz there). Set dataset.download=true "
        f"on a machine with network, or copy torchvision's raw MNIST files there (the files of a "
        f"torchvision {raw_dir.parent.name}/raw folder), or point dataset.root=<dir> at the folder that "
        f"holds {raw_dir.parent.name}/raw/."
    )


_NUMPY_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): multiarray._reconstruct for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): multiarray.scalar for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): numeric._frombuffer for core in ("core", "_core")},
    # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(text, "latin1").
    ("_codecs", "encode"): codecs.encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild numpy arrays, dtypes and scalars besides plain containers."""

    def __init__(self, file: Any, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.source = getattr(file, "name", "a pickle stream")  # for the error message

    def find_class(self, module: str, name: str) -> Any:
        allowed = _NUMPY_GLOBALS.get((module, name))
        if allowed is None:
            raise DatasetError(
                f"refusing to load global {module}.{name} from {self.source}: CIFAR batches hold only "
                "arrays, lists, numbers and strings"
            )
        return allowed


def _field(batch: dict, key: str) -> Any:
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    return None


def write_cifar_batch(path: str | Path, data: np.ndarray, labels: Sequence[int]) -> Path:
    """A CIFAR-10 batch file as the real ones are: a protocol-2 pickle of a dict with bytes keys (for tests
    and benchmarks that need the format without the data)."""
    path = Path(path)
    batch = {
        b"batch_label": path.name.encode(),
        b"labels": [int(label) for label in labels],
        b"data": np.ascontiguousarray(data, dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(data))],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(batch, f, protocol=2)
    return path


def load_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 3, 32, 32) and labels int64 (N,) of one CIFAR-10 batch file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            batch = RestrictedUnpickler(f, encoding="bytes").load()
    except DatasetError:
        raise
    except Exception as e:  # a corrupt pickle can fail in many ways (EOFError, UnpicklingError, ...)
        raise DatasetError(f"{path}: not a readable CIFAR batch ({type(e).__name__}: {e}); the file is "
                           "corrupt or incomplete, delete its folder and extract the archive again") from e
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: a CIFAR batch is a dict, found {type(batch).__name__}")
    data, labels = _field(batch, "data"), _field(batch, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DatasetError(f"{path}: 'data' must be a uint8 array of N x {_CIFAR_PIXELS}")
    if data.shape[1] != _CIFAR_PIXELS:
        raise DatasetError(f"{path}: 'data' has {data.shape[1]} values per image, expected {_CIFAR_PIXELS}")
    if labels is None:
        raise DatasetError(f"{path}: no 'labels' entry")
    try:
        labels = np.asarray(labels)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{path}: 'labels' are not integers ({e})") from e
    if labels.dtype.kind not in "iu":  # never round floats, parse strings or count booleans as classes
        raise DatasetError(f"{path}: 'labels' are not integers (found {labels.dtype})")
    labels = labels.astype(np.int64)
    if labels.shape != (len(data),):
        raise DatasetError(f"{path}: {labels.size} labels for {len(data)} images")
    return data.reshape(-1, 3, 32, 32), labels


def download_mnist_like(
    raw_dir: str | Path, resources: Sequence[tuple[str, str]], mirrors: Sequence[str]
) -> None:
    """Fetch the (filename, md5) ``resources`` into ``raw_dir``, trying each mirror; kept gzipped."""
    raw_dir = Path(raw_dir)
    for filename, md5 in resources:
        stem = filename.removesuffix(".gz")
        if (raw_dir / stem).is_file() or (raw_dir / filename).is_file():
            continue
        errors = []
        for mirror in mirrors:
            try:
                download(f"{mirror}{filename}", raw_dir / filename, md5=md5)
                break
            except OSError as e:  # DownloadError (timeout, HTTP error, bad md5) or a local write error
                errors.append(str(e))
        else:
            raise DatasetError(
                f"could not download {filename} into {raw_dir}:\n  " + "\n  ".join(errors) + "\nCheck the "
                "network, or copy torchvision's raw files there and set dataset.download=false."
            )


def download_cifar10(root: str | Path) -> None:
    """Fetch and extract torchvision's CIFAR-10 archive into ``root/cifar-10-batches-py``."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import extract_archive

    root = Path(root)
    batches = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list]
    if all((root / CIFAR10.base_folder / name).is_file() for name in batches):  # else a partial extraction
        return
    archive = root / CIFAR10.filename
    try:
        download(CIFAR10.url, archive, md5=CIFAR10.tgz_md5)
        extract_archive(str(archive), str(root))  # its md5 matched: the genuine archive
    except (OSError, tarfile.TarError) as e:
        raise DatasetError(
            f"could not download CIFAR-10 from {CIFAR10.url} into {root}: {e}. Check the network, or extract "
            f"{CIFAR10.filename} there yourself and set dataset.download=false."
        ) from e
