"""Image metrics through the evaluation stage: FID against torchmetrics with the same Inception network,
offline behaviour, the reference-feature cache and per-metric provenance."""

import hashlib
import json
import math
import pickle
from pathlib import Path

import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from genbench.data.images import DigitsDataModule
from genbench.errors import FeatureExtractorUnavailable
from genbench.evaluation import EvalConfig, evaluate, inception
from genbench.evaluation.feature_net import FeatureNet, save_feature_net
from genbench.evaluation.inception import InceptionFeatures, find_weights, load_inception, save_random_weights
from genbench.evaluation.quality import QualitySettings, feature_metrics
from genbench.models.vae import VAE
from genbench.nets.classifier import SmallCNN
from genbench.train import task
from tests.helpers import compose_train


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory) -> Path:
    """torch-fidelity's Inception-v3 with random weights (the real ones cannot be downloaded here)."""
    return save_random_weights(tmp_path_factory.mktemp("inception") / "inception-random.pt")


def test_fid_equals_torchmetrics_on_the_same_images_and_network(random_inception):
    generator = torch.Generator().manual_seed(1)
    real = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=generator)
    fake = (real.float() * 0.7 + 30).round().to(torch.uint8)  # a darker, lower-contrast copy
    extractor = InceptionFeatures(random_inception)
    settings = QualitySettings(kid_subsets=2, kid_subset_size=8, manifold_k=3, manifold_samples=16,
                               score_splits=2, seed=0)
    ours = feature_metrics("inception", extractor.extract(real), extractor.extract(fake), settings)
    # antialias=False: torchmetrics then resizes as TF 1.x does, which is what FID is defined with.
    reference = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(random_inception),
                                         antialias=False)
    reference.update(real, real=True)
    reference.update(fake, real=False)
    expected = reference.compute().item()
    assert expected > 1.0  # the copies really differ in feature space
    assert ours["fid_inception"] == pytest.approx(expected, rel=1e-4)


def test_inception_weights_are_never_unpickled_as_code(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    bad = tmp_path / "weights.pt"
    bad.write_bytes(pickle.dumps({"Conv2d_1a_3x3.conv.weight": Payload()}))
    with pytest.raises(FeatureExtractorUnavailable, match="not a plain state dict"):
        InceptionFeatures(bad)
    assert not marker.exists()
    wrong = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(FeatureExtractorUnavailable, match="Inception-v3"):
        InceptionFeatures(wrong)


def test_missing_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FeatureExtractorUnavailable, match="eval.inception_weights=<path>"):
        find_weights(None, download=False)
    with pytest.raises(FeatureExtractorUnavailable, match="no such file"):
        find_weights(str(tmp_path / "absent.pt"), download=False)
    with pytest.raises(FeatureExtractorUnavailable, match="cannot be read"):  # the run records why, goes on
        InceptionFeatures(tmp_path)  # a directory: reading it fails as an unreadable file's read does


def test_a_file_in_the_cache_that_is_not_fids_weights_is_refused(tmp_path, monkeypatch):
    """The cached file is named by its SHA-256: another file under that name (random weights, a truncated
    download) would give FIDs no one can compare; a path given on purpose is taken as it is."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cached = inception.cached_weights_path()
    cached.parent.mkdir(parents=True)
    save_random_weights(cached)
    with pytest.raises(FeatureExtractorUnavailable, match="delete it to download it again"):
        load_inception(None, download=False, device=torch.device("cpu"))
    given = load_inception(str(cached), download=False, device=torch.device("cpu"))
    assert given.checksum == hashlib.sha256(cached.read_bytes()).hexdigest()  # the bytes it loaded


def test_a_run_without_inception_weights_completes_and_records_why(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cfg = compose_train(["dataset=digits", "trainer=debug", "logger=none", f"paths.output_dir={tmp_path}",
                         f"paths.root_dir={tmp_path}", "eval.inception_download=false", "eval.num_samples=8",
                         "eval.speed_repeats=1", "eval.speed_batch_size=4"])
    task(cfg)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "ok"
    assert "fid_inception" not in record["metrics"] and "nll_bpd" in record["metrics"]
    for name in ("fid_inception", "kid_inception", "is_inception"):
        assert "eval.inception_weights" in record["unavailable"][name]
    assert "train_feature_net.py dataset=digits" in record["unavailable"]["fd_digits_cnn"]


def _digits_feature_net(directory: Path) -> FeatureNet:
    torch.manual_seed(0)
    net = SmallCNN(in_channels=1, image_size=8, num_classes=10)  # untrained is enough to count calls
    return save_feature_net(net, directory / "digits_cnn.pt", {"dataset": "digits", "test_accuracy": 0.1})


def test_second_evaluation_reuses_cached_real_features(tmp_path, monkeypatch):
    net = _digits_feature_net(tmp_path / "nets")
    extracted: list[int] = []
    original = FeatureNet.extract
    monkeypatch.setattr(FeatureNet, "extract", lambda self, images, *args: extracted.append(len(images))
                        or original(self, images, *args))
    dm = DigitsDataModule()
    model = VAE(data_shape=dm.data_shape)
    cfg = EvalConfig(num_samples=40, inception=False, feature_net_dir=str(tmp_path / "nets"),
                     cache_dir=str(tmp_path / "cache"), speed_repeats=1, speed_batch_size=4,
                     kid_subset_size=20, kid_subsets=5, score_splits=2)
    first = evaluate(model, dm, cfg, tmp_path)
    n_real = len(dm.split_tensor("train"))
    assert extracted == [n_real, 40, 40]  # the reference, the samples, held-out real test images
    second = evaluate(model, dm, cfg, tmp_path)
    assert extracted[3:] == [40]  # generated images only: no real image went through the network again
    assert second.metrics["fd_digits_cnn"] == first.metrics["fd_digits_cnn"] > 0
    prov = second.provenance["digits_cnn"]
    weights = (tmp_path / "nets" / "digits_cnn.pt").read_bytes()
    assert prov["sha256"] == hashlib.sha256(weights).hexdigest() == net.checksum
    assert prov["reference"]["from_cache"] and not first.provenance["digits_cnn"]["reference"]["from_cache"]
    assert prov["reference"]["n_real"] == n_real and prov["n_generated"] == 40
    assert set(prov["metrics"]) == {k for k in second.metrics
                                    if "_digits_cnn" in k and not k.startswith("real_")}
    # A different number of reference images is a different cache entry.
    evaluate(model, dm, EvalConfig(**{**cfg.__dict__, "num_real": 100}), tmp_path)
    assert extracted[4:] == [100, 40]  # held-out real images: still cached


class _LabelledImages:
    """A stand-in conditional model that returns real test digits: of the requested class when it obeys,
    of the next class when it does not."""

    device = torch.device("cpu")

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, obey: bool) -> None:
        self.by_class = [images[labels == c] for c in range(10)]
        self.obey = obey

    def sample(self, n: int, labels: torch.Tensor) -> torch.Tensor:
        wanted = labels if self.obey else (labels + 1) % 10
        pools = [self.by_class[int(c)] for c in wanted]
        return torch.stack([pool[i % len(pool)] for i, pool in enumerate(pools)])


def test_conditional_accuracy_tells_a_model_that_obeys_its_labels_from_one_that_does_not():
    from genbench.evaluation.feature_net import train_feature_net
    from genbench.evaluation.quality import conditional_accuracy

    dm = DigitsDataModule()
    net, test_accuracy = train_feature_net(dm, epochs=5, lr=3e-3, seed=0)
    classifier = FeatureNet(net=net.eval(), path=Path("not-saved.pt"), name="digits_cnn", dataset="digits",
                            checksum="", test_accuracy=test_accuracy, config={})
    images, labels = dm.test_set.tensors
    obeys = conditional_accuracy(_LabelledImages(images, labels, True), classifier, 10, 200, 64, 50)
    ignores = conditional_accuracy(_LabelledImages(images, labels, False), classifier, 10, 200, 64, 50)
    assert obeys > 0.9 and ignores < 0.1


def test_evaluating_a_conditional_model_records_its_conditional_accuracy(tmp_path):
    _digits_feature_net(tmp_path / "nets")
    dm = DigitsDataModule()
    model = VAE(data_shape=dm.data_shape, num_classes=10, conditional=True)
    cfg = EvalConfig(num_samples=40, conditional_samples=30, inception=False,
                     feature_net_dir=str(tmp_path / "nets"), speed_repeats=1, speed_batch_size=4,
                     kid_subset_size=20, kid_subsets=5, score_splits=2)
    result = evaluate(model, dm, cfg, tmp_path)
    assert 0.0 <= result.metrics["conditional_accuracy_digits_cnn"] <= 1.0
    assert result.provenance["digits_cnn"]["conditional_samples"] == 30
    assert "conditional_accuracy_digits_cnn" in result.provenance["digits_cnn"]["metrics"]


class _CountingExtractor:
    """A stand-in extractor: mean pixel as the feature, counting the images it sees."""

    name, checksum, feature_dim = "mean", "0" * 64, 1

    def __init__(self) -> None:
        self.seen = 0

    def extract(self, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen += len(images)
        means = images.float().flatten(1).mean(1, keepdim=True)
        return means, means


def test_the_cache_key_changes_with_the_code_that_prepares_images_for_the_extractor(tmp_path):
    """Same weights, another torch-fidelity (which resizes images for Inception): never the old entry."""
    from genbench.evaluation.reference import cache_file

    images = torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    plain, old, new = _CountingExtractor(), _CountingExtractor(), _CountingExtractor()
    old.code_version, new.code_version = "torch-fidelity 0.3.0", "torch-fidelity 0.4.0"
    names = {cache_file(tmp_path, "digits", "train", e, images).name for e in (plain, old, new)}
    assert len(names) == 3


def test_the_cache_key_says_tf32_where_a_gpu_extractor_ran_with_it(tmp_path):
    """A TF32 GPU run's real features (about 1e-3 of an FD from float32's) are never a float32 run's."""
    import types

    from genbench.evaluation.reference import cache_file
    from genbench.performance import tf32_mode

    def on(device: str) -> types.SimpleNamespace:
        weight = types.SimpleNamespace(device=torch.device(device))
        return types.SimpleNamespace(net=types.SimpleNamespace(parameters=lambda: iter([weight])),
                                     name="digits_cnn", checksum="0" * 64)

    images = torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    names = {}
    for device in ("cpu", "cuda"):
        for tf32 in (False, True):
            with tf32_mode(tf32):
                names[device, tf32] = cache_file(tmp_path, "digits", "train", on(device), images).name
    assert names["cpu", False] == names["cpu", True] == names["cuda", False]  # a CPU has no TF32
    assert names["cuda", True] != names["cuda", False] and "-tf32-" in names["cuda", True]


def test_a_corrupt_feature_cache_entry_is_recomputed_and_replaced(tmp_path, caplog):
    from genbench.evaluation.reference import cache_file, reference_features

    images = torch.randint(0, 256, (30, 1, 8, 8), dtype=torch.uint8)
    extractor = _CountingExtractor()
    path = cache_file(tmp_path, "digits", "train", extractor, images)
    path.write_bytes(b"not a torch file")
    features, _, prov = reference_features(extractor, images, dataset="digits", split="train",
                                           cache_dir=tmp_path, batch_size=8)
    assert extractor.seen == 30 and not prov["from_cache"] and str(path) in caplog.text
    again, _, prov = reference_features(extractor, images, dataset="digits", split="train",
                                        cache_dir=tmp_path, batch_size=8)
    assert extractor.seen == 30 and prov["from_cache"] and torch.equal(again, features)


def test_a_cache_entry_of_the_wrong_shape_is_recomputed_with_a_warning(tmp_path, caplog):
    from genbench.evaluation.reference import cache_file, reference_features

    images = torch.randint(0, 256, (30, 1, 8, 8), dtype=torch.uint8)
    extractor = _CountingExtractor()
    path = cache_file(tmp_path, "digits", "train", extractor, images)
    for wrong in ({"features": torch.zeros(30, 5), "logits": torch.zeros(30, 1)},  # 5-d features, not 1-d
                  {"features": torch.zeros(29, 1), "logits": torch.zeros(29, 1)},  # 29 rows for 30 images
                  {"features": torch.zeros(30, 1)}):  # no logits
        torch.save(wrong, path)
        features, logits, prov = reference_features(extractor, images, dataset="digits", split="train",
                                                    cache_dir=tmp_path, batch_size=8)
        assert features.shape == (30, 1) and logits.shape == (30, 1) and not prov["from_cache"]
        assert f"ignoring unusable feature cache {path}" in caplog.text
    assert extractor.seen == 90
    assert list(tmp_path.iterdir()) == [path]  # the temporary file of each rewrite is gone


class _PixelFeatures:
    """A feature network of the simplest kind: the image's pixels as features, no logits."""

    name, checksum, feature_dim = "pixels", "none", 64

    def extract(self, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        return images.flatten(1).double(), torch.zeros(len(images), 1)

    def provenance(self) -> dict:
        return {"extractor": "raw pixels"}


def test_a_feature_network_added_to_the_registry_is_scored_with_no_other_edit(tmp_path, monkeypatch):
    from genbench.evaluation.feature_networks import FEATURE_NETWORKS, FeatureNetwork

    monkeypatch.setitem(FEATURE_NETWORKS, "pixels", FeatureNetwork(
        name=lambda dm: "pixels", wanted=lambda cfg, dm: True, load=lambda cfg, dm, device: _PixelFeatures(),
        classifier=False))
    dm = DigitsDataModule()
    cfg = EvalConfig(num_samples=40, num_real=200, inception=False, feature_net=False, speed_repeats=1,
                     speed_batch_size=4, kid_subset_size=20, kid_subsets=5, score_splits=2)
    result = evaluate(VAE(data_shape=dm.data_shape), dm, cfg, tmp_path)
    assert result.metrics["fd_pixels"] > 0 and result.metrics["real_fd_pixels"] < result.metrics["fd_pixels"]
    assert result.provenance["pixels"]["extractor"] == "raw pixels"


def test_samples_are_compared_with_a_smaller_held_out_floor_at_its_own_size(tmp_path, monkeypatch):
    """digits holds 359 test images: 600 samples are also scored on their first 359 (at_real_n_), the value
    the floor is compared with. The model here draws real digits (of the train split; the reference is
    val), so it is as good as real data, and its 600 samples score better than the 359-image floor."""
    from genbench.evaluation.feature_networks import FEATURE_NETWORKS, FeatureNetwork
    from genbench.evaluation.frechet import feature_statistics, frechet_distance

    monkeypatch.setitem(FEATURE_NETWORKS, "pixels", FeatureNetwork(
        name=lambda dm: "pixels", wanted=lambda cfg, dm: True, load=lambda cfg, dm, device: _PixelFeatures(),
        classifier=False))
    dm = DigitsDataModule()
    dm.setup()
    train = dm.split_tensor("train")
    unseen = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))]
    drawn: list[torch.Tensor] = []

    def real_digits(n: int, labels=None) -> torch.Tensor:  # without replacement
        drawn.append(unseen[sum(map(len, drawn)):][:n])
        return drawn[-1]

    model = VAE(data_shape=dm.data_shape)
    monkeypatch.setattr(model, "sample", real_digits)
    settings = {"inception": False, "feature_net": False, "speed_repeats": 1, "speed_batch_size": 4,
                "kid_subset_size": 50, "kid_subsets": 5, "score_splits": 2, "reference_split": "val",
                "max_test_batches": 1}
    metrics = evaluate(model, dm, EvalConfig(num_samples=600, **settings), tmp_path).metrics
    first = torch.cat([d for d in drawn if len(d) > 4])[:359]  # the quality metrics' draws (timing's: 4)
    val = dm.split_tensor("val")
    assert metrics["at_real_n_fd_pixels"] == pytest.approx(frechet_distance(
        *feature_statistics(val.flatten(1).double()), *feature_statistics(first.flatten(1).double())))
    # Measured over 10 orders of the draws: fd at 600 samples 0.67-0.79 of the floor, always below
    # at_real_n (0.77-0.97 of it): the 359-image floor is no floor for 600 samples.
    assert metrics["fd_pixels"] < min(0.85 * metrics["real_fd_pixels"], metrics["at_real_n_fd_pixels"])
    assert {"at_real_n_kid_pixels", "at_real_n_precision_pixels", "at_real_n_recall_pixels"} <= set(metrics)
    (tmp_path / "small").mkdir()
    small = evaluate(model, dm, EvalConfig(num_samples=300, **settings), tmp_path / "small").metrics
    assert "real_fd_pixels" in small and not any(k.startswith("at_real_n_") for k in small)


def test_train_full_references_the_training_images_before_the_validation_hold_out(tmp_path, monkeypatch):
    """FID papers take CIFAR-10's 50,000 training images as the reference; genbench's train split holds
    45,000 (val_fraction 0.1). eval.reference_split=train_full is train and val together; its floor comes
    from the test split, which it leaves out."""
    from genbench.evaluation.feature_networks import FEATURE_NETWORKS, FeatureNetwork
    from genbench.evaluation.frechet import feature_statistics, frechet_distance
    from genbench.evaluation.real import held_out_split

    monkeypatch.setitem(FEATURE_NETWORKS, "pixels", FeatureNetwork(
        name=lambda dm: "pixels", wanted=lambda cfg, dm: True, load=lambda cfg, dm, device: _PixelFeatures(),
        classifier=False))
    dm = DigitsDataModule()
    dm.setup()
    train, val, test = (dm.split_tensor(s) for s in ("train", "val", "test"))
    full = dm.split_tensor("train_full")
    assert torch.equal(full, torch.cat([train, val])) and len(val) > 0
    assert held_out_split(dm, "train_full") == "test" and held_out_split(dm, "train") == "test"
    assert held_out_split(dm, "test") == "val"
    samples = test[:300]
    model = VAE(data_shape=dm.data_shape)
    monkeypatch.setattr(model, "sample", lambda n, labels=None: samples[:n])
    cfg = EvalConfig(num_samples=300, reference_split="train_full", inception=False, feature_net=False,
                     speed_repeats=1, speed_batch_size=4, kid_subset_size=50, kid_subsets=5, score_splits=2,
                     max_test_batches=1)
    metrics = evaluate(model, dm, cfg, tmp_path).metrics
    stats = [feature_statistics(x.flatten(1).double()) for x in (full, samples)]
    assert metrics["fd_pixels"] == pytest.approx(frechet_distance(*stats[0], *stats[1]), rel=1e-9)
    assert metrics["fd_pixels"] != pytest.approx(frechet_distance(
        *feature_statistics(train.flatten(1).double()), *stats[1]), rel=1e-6)


def test_a_feature_cache_that_cannot_be_written_costs_the_run_nothing(tmp_path, monkeypatch, caplog):
    """A full disk under the cache: the features are still the run's, with a warning that names the file."""
    import genbench.files
    from genbench.evaluation.reference import cache_file, reference_features
    from tests.faults import FullDisk

    images = torch.randint(0, 256, (30, 1, 8, 8), dtype=torch.uint8)
    extractor = _CountingExtractor()
    monkeypatch.setattr(genbench.files, "open", FullDisk.opened, raising=False)
    features, logits, prov = reference_features(extractor, images, dataset="digits", split="train",
                                                cache_dir=tmp_path, batch_size=8)
    path = cache_file(tmp_path, "digits", "train", extractor, images)
    assert torch.equal(features, extractor.extract(images)[0]) and logits.shape == (30, 1)
    assert not prov["from_cache"] and prov["cache_file"] is None
    assert f"could not write the feature cache {path}" in caplog.text and "No space left" in caplog.text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("test_fraction, n_test, lost", [
    (0.001, 2, ["precision_pixels", "recall_pixels", "density_pixels", "coverage_pixels"]),
    (0.0005, 1, ["fd_pixels", "kid_pixels", "kid_pixels_std", "precision_pixels", "recall_pixels",
                 "density_pixels", "coverage_pixels"]),
])
def test_a_split_of_a_few_images_costs_the_metrics_it_cannot_give_not_the_run(tmp_path, monkeypatch,
                                                                             test_fraction, n_test, lost):
    """dataset.test_fraction=0.001 leaves digits 2 test images: as the reference or as the held-out floor
    they failed the whole evaluation in the k-NN metrics (k + 1 points of each set). Now those metrics are
    unavailable, saying why, and the rest are measured."""
    from genbench.evaluation.feature_networks import FEATURE_NETWORKS, FeatureNetwork

    monkeypatch.setitem(FEATURE_NETWORKS, "pixels", FeatureNetwork(
        name=lambda dm: "pixels", wanted=lambda cfg, dm: True, load=lambda cfg, dm, device: _PixelFeatures(),
        classifier=False))
    dm = DigitsDataModule(test_fraction=test_fraction)
    dm.setup()
    assert len(dm.split_tensor("test")) == n_test
    model = VAE(data_shape=dm.data_shape)
    settings = {"num_samples": 40, "inception": False, "feature_net": False, "speed_repeats": 1,
                "speed_batch_size": 4, "kid_subset_size": 20, "kid_subsets": 5, "score_splits": 2}
    kept = {"classifier_score_pixels"} | ({"fd_pixels", "kid_pixels"} - set(lost))
    for reference, out in (("test", "as_reference"), ("train", "as_floor")):
        (tmp_path / out).mkdir()
        result = evaluate(model, dm, EvalConfig(reference_split=reference, **settings), tmp_path / out)
        prefix = "" if reference == "test" else "real_"
        small = f"(test split) holds {n_test} images" if reference == "test" else \
            f"the floor {n_test} of the test split"
        for name in lost:
            assert prefix + name not in result.metrics
            assert small in result.unavailable[prefix + name]
        assert all(math.isfinite(result.metrics[prefix + name]) for name in kept)
        if reference == "test":  # the floor (val images) is scored against the same small reference
            assert "give that split more" in result.unavailable["precision_pixels"]
            assert small in result.unavailable["real_precision_pixels"]
            assert ("real_fd_pixels" in result.metrics) == ("fd_pixels" in kept)
        else:  # the samples, cut to the floor's size
            assert small in result.unavailable["at_real_n_precision_pixels"]
            assert {"precision_pixels", "fd_pixels"} <= set(result.metrics)
