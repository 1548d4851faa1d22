"""The one way genbench fetches a file (dataset files, Inception weights): with a timeout and a checksum.

``urlopen`` without a timeout waits forever on a server that accepts the connection and never answers;
here every connection attempt and every read gives up after ``timeout`` seconds with an error naming the
URL. The file is streamed into a unique temporary name beside its destination and renamed only once its
checksum matches, so a failed or concurrent download never leaves a partial file under the real name.
"""

import hashlib
import http.client
import urllib.error
import urllib.request
from pathlib import Path

from genbench.files import replacing

TIMEOUT_S = 60.0  # per connection attempt and per read; a stalled server fails the run after this long
_BLOCK = 1 << 20


class DownloadError(OSError):
    """A download failed: no answer in time, an HTTP or network error, or a checksum mismatch."""


def download(url: str, dest: Path, *, md5: str | None = None, sha256_prefix: str | None = None,
             timeout: float | None = None) -> None:
    """Fetch ``url`` into ``dest``, checking the file's MD5 or the start of its SHA-256 when given;
    ``timeout`` seconds (default :data:`TIMEOUT_S`) per connection attempt and per read."""
    timeout = TIMEOUT_S if timeout is None else timeout
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    digests = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    request = urllib.request.Request(url, headers={"User-Agent": "genbench"})
    try:
        with replacing(dest) as tmp:
            with urllib.request.urlopen(request, timeout=timeout) as response, tmp.open("wb") as f:
                for block in iter(lambda: response.read(_BLOCK), b""):
                    f.write(block)
                    for digest in digests.values():
                        digest.update(block)
            got_md5, got_sha = digests["md5"].hexdigest(), digests["sha256"].hexdigest()
            if md5 is not None and got_md5 != md5:
                raise DownloadError(f"{url}: md5 {got_md5} is not the expected {md5}: the download is "
                                    "corrupted")
            if sha256_prefix is not None and not got_sha.startswith(sha256_prefix):
                raise DownloadError(f"{url}: sha256 {got_sha} does not start with the expected "
                                    f"{sha256_prefix}: the download is corrupted")
    except TimeoutError as e:  # socket.timeout, on connect or on any read
        raise DownloadError(f"{url}: no answer within {timeout:g} s (timed out)") from e
    except (urllib.error.URLError, http.client.HTTPException) as e:  # HTTPError, a cut-off response
        raise DownloadError(f"{url}: {e}") from e
