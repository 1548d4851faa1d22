"""The standard FID network: torch-fidelity's TF-compatible Inception-v3, loaded without unpickling code.

torch-fidelity's port reproduces the TensorFlow graph FID was defined with (bilinear resizing to 299x299
as TF 1.x does it, 2048-d pool features, 1008-way logits). We use its architecture but load the weights
ourselves with ``weights_only=True`` (torch-fidelity itself unpickles a given path with
``weights_only=False``), and record the file's SHA-256 so every FID says which weights made it.

Weights come from ``eval.inception_weights`` or torch-fidelity's download cache (torch hub's
``checkpoints`` folder), downloaded there when possible (with a timeout: a stalled server makes the
Inception metrics unavailable instead of hanging the run). Offline, :class:`FeatureExtractorUnavailable`
says where to put the file.
"""

import hashlib
import io
from importlib import metadata
from pathlib import Path
from unittest import mock

import torch
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
from torch import Tensor

from genbench.download import download as fetch
from genbench.errors import FeatureExtractorUnavailable
from genbench.files import save_atomically
from genbench.progress import progress

WEIGHTS_URL = tf_inception.URL_INCEPTION_V3
WEIGHTS_FILE = WEIGHTS_URL.rsplit("/", 1)[-1]  # weights-inception-2015-12-05-6726825d.pth
WEIGHTS_HASH_PREFIX = WEIGHTS_FILE.rsplit("-", 1)[-1].split(".")[0]  # first hex digits of its SHA-256
POOL, LOGITS = "2048", "logits_unbiased"


def cached_weights_path() -> Path:
    """Where torch-fidelity keeps (and downloads) the Inception weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def find_weights(path: str | None, download: bool) -> Path:
    """The weights file to use: ``path`` if given, else the cache, downloading into it if allowed (the
    cached file's hash is checked where it is read: :func:`load_inception`)."""
    if path:
        given = Path(path).expanduser()
        if not given.is_file():
            raise FeatureExtractorUnavailable(f"eval.inception_weights={path}: no such file")
        return given
    cached = cached_weights_path()
    fix = f"put {WEIGHTS_FILE} ({WEIGHTS_URL}) there or pass eval.inception_weights=<path>"
    if cached.is_file():
        return cached
    if not download:
        raise FeatureExtractorUnavailable(f"no Inception weights at {cached} and eval.inception_download "
                                          f"is false; {fix}")
    try:
        fetch(WEIGHTS_URL, cached, sha256_prefix=WEIGHTS_HASH_PREFIX)
    except OSError as e:  # DownloadError: a timeout, an HTTP error, a bad hash
        raise FeatureExtractorUnavailable(f"no Inception weights at {cached} and the download failed "
                                          f"({e}); {fix}") from e
    return cached


def load_inception(path: str | None, download: bool, device: torch.device) -> "InceptionFeatures":
    """The network with the weights of ``eval.inception_weights`` (``path``), taken as they are, or the
    cache's, which must be FID's: the cache names the file by its hash (a truncated download or another
    file there would give FIDs no one can compare)."""
    return InceptionFeatures(find_weights(path, download), device, None if path else WEIGHTS_HASH_PREFIX)


def save_random_weights(path: Path, seed: int = 0) -> Path:
    """torch-fidelity's Inception-v3 with random He-initialised weights (the 2048-d pool features stay away
    from zero), saved as a plain state dict: for tests and timings where the real weights cannot be
    downloaded; its FID is not comparable with anyone's."""
    torch.manual_seed(seed)
    with mock.patch.object(tf_inception, "load_state_dict_from_url", return_value={}), \
            mock.patch.object(tf_inception.FeatureExtractorInceptionV3, "load_state_dict"):
        net = tf_inception.FeatureExtractorInceptionV3("random", [POOL])
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    save_atomically(net.state_dict(), path)
    return path


class InceptionFeatures:
    """Pool features and logits of uint8 images; grey images are repeated to three channels. ``hash_prefix``:
    how the weights file's SHA-256 must begin."""

    def __init__(self, weights: Path, device: torch.device | str = "cpu",
                 hash_prefix: str | None = None) -> None:
        try:
            data = Path(weights).read_bytes()  # read once: the hash recorded is of the bytes loaded
        except OSError as e:
            raise FeatureExtractorUnavailable(f"{weights} cannot be read ({e})") from e
        self.checksum = hashlib.sha256(data).hexdigest()
        if hash_prefix and not self.checksum.startswith(hash_prefix):
            raise FeatureExtractorUnavailable(
                f"{weights} is not {WEIGHTS_FILE}: its SHA-256 starts {self.checksum[:8]}, not {hash_prefix} "
                "(an incomplete download, or another file under its name); delete it to download it again, "
                "or pass eval.inception_weights=<path> for other weights")
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # not a tensor-only file: never unpickle it as code
            raise FeatureExtractorUnavailable(f"{weights} is not a plain state dict of tensors ({e})") from e
        # torch-fidelity loads the state dict inside its constructor; hand it ours instead of its loader's.
        with mock.patch.object(tf_inception, "load_state_dict_from_url", return_value=state):
            try:
                self.net = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", [POOL, LOGITS])
            except Exception as e:  # missing or unexpected keys, wrong shapes or types of a tampered file
                raise FeatureExtractorUnavailable(f"{weights} does not hold torch-fidelity's Inception-v3 "
                                                  f"weights: {e}") from e
        self.net.to(device)
        self.path = weights
        self.code_version = f"torch-fidelity {metadata.version('torch-fidelity')}"  # resizes: a cache key
        self.name = "inception"
        self.feature_dim = int(POOL)

    @torch.no_grad()
    def extract(self, images: Tensor, batch_size: int = 64) -> tuple[Tensor, Tensor]:
        device = next(self.net.parameters()).device
        features, logits = [], []
        batches = images.split(batch_size)
        for batch in progress(batches, f"Inception features of {len(images)} images", total=len(batches)):
            if batch.shape[1] == 1:
                batch = batch.expand(-1, 3, -1, -1)
            pool, logit = self.net(batch.to(device))
            features.append(pool.cpu())
            logits.append(logit.cpu())
        return torch.cat(features), torch.cat(logits)

    def provenance(self) -> dict:
        return {
            "extractor": "torch-fidelity InceptionV3: TF-compatible resize to 299, 2048-d pool, "
                         "logits_unbiased",
            "weights": str(self.path),
            "sha256": self.checksum,
            "torch_fidelity": metadata.version("torch-fidelity"),
        }
