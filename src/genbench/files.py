"""Safe file writes and reads shared by records, caches and downloads.

Writes go to a temporary file with a name no other writer can pick (pid and random suffix) beside the
target and are renamed over it, so concurrent writers never share a half-written file and a killed
process never leaves one. Reads of files someone else may have planted refuse anything but a regular file
of bounded size, and never block on a FIFO.
"""

import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A fresh temporary path beside ``path``; when the block succeeds it atomically replaces ``path``.

    The temporary file is created empty (honouring the umask) so its name is claimed; on any failure or
    interrupt it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def save_atomically(obj: object, path: Path) -> None:
    """``torch.save`` of ``obj`` to ``path`` (as :func:`replacing` writes) through a Python file, so that a
    full disk raises OSError (ENOSPC) naming ``path``. Given a path, torch's own writer raises a RuntimeError
    there that names neither ("unexpected pos 704 vs 598"); given a file, it still raises that error when it
    closes the archive, over the file's OSError, which is found in the chain and raised instead."""
    path = Path(path)
    try:
        with replacing(path) as tmp, open(tmp, "wb") as file:
            torch.save(obj, file)
    except (OSError, RuntimeError) as e:
        cause = next((c for c in _chain(e) if isinstance(c, OSError)), None)
        if cause is None:
            raise
        raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from e


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the errors it was raised from or while handling, innermost last."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``; ValueError otherwise.

    A FIFO or device planted under the name is refused from its ``stat`` without being opened (opening
    one can block or have side effects); the open is non-blocking and checked again with ``fstat``, so a
    swap between the two checks cannot slip through either.
    """
    _check_regular(path, os.stat(path), max_bytes)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        _check_regular(path, os.fstat(fd), max_bytes)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ValueError(f"{path} grew past the {max_bytes} bytes allowed while being read")
    return data


def _check_regular(path: Path, info: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} is not a regular file")
    if info.st_size > max_bytes:
        raise ValueError(f"{path} holds {info.st_size} bytes, more than the {max_bytes} allowed")
