"""Image data: IDX and CIFAR readers on files in the real formats, datamodules, slicing and pixel helpers."""

import functools
import gzip
import hashlib
import http.server
import math
import os
import pickle
import threading
from pathlib import Path

import hydra.utils
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from genbench.data import pixels
from genbench.data.formats import (
    download_mnist_like,
    find_raw_file,
    load_cifar_batch,
    read_idx,
    write_cifar_batch,
)
from genbench.data.images import (
    CIFAR10DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
)
from genbench.errors import ConfigError, DatasetError
from genbench.schema import validate_group

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "dataset"
FILE_MODULES = {
    "mnist": MNISTDataModule,
    "fashion_mnist": FashionMNISTDataModule,
    "cifar10": CIFAR10DataModule,
}


# --- IDX files -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trips_plain_and_gzipped(tmp_path, write_idx, suffix):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    image_path = write_idx(tmp_path / f"images{suffix}", images)
    label_path = write_idx(tmp_path / f"labels{suffix}", labels)
    assert np.array_equal(read_idx(image_path, ndim=3), images)
    assert np.array_equal(read_idx(label_path), labels)
    assert read_idx(image_path).flags.writeable


def test_truncated_idx_names_the_file_and_the_sizes(tmp_path, write_idx):
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((10, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte: truncated: header says 10x28x28 = 7840"
                                            r".*delete it and fetch it again"):
        read_idx(path)


def test_idx_with_extra_bytes_or_bad_magic_or_wrong_rank_is_rejected(tmp_path, write_idx):
    path = write_idx(tmp_path / "labels", np.zeros(10, dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data + b"\0")
    with pytest.raises(DatasetError, match="labels: has extra bytes"):
        read_idx(path)
    path.write_bytes(b"\x12\x34" + data[2:])
    with pytest.raises(DatasetError, match=f"{path}: not an IDX file"):
        read_idx(path)
    path.write_bytes(data)
    with pytest.raises(DatasetError, match="expected 3"):
        read_idx(path, ndim=3)


def test_corrupt_gzip_is_a_dataset_error(tmp_path, write_idx):
    path = write_idx(tmp_path / "images.gz", np.zeros((4, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(DatasetError, match="images.gz"):
        read_idx(path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="images.gz"):
        read_idx(path)


def test_find_raw_file_prefers_plain_then_gz_and_explains_a_missing_file(tmp_path):
    (tmp_path / "a.gz").write_bytes(b"")
    assert find_raw_file(tmp_path, "a") == tmp_path / "a.gz"
    (tmp_path / "a").write_bytes(b"")
    assert find_raw_file(tmp_path, "a") == tmp_path / "a"
    with pytest.raises(DatasetError, match=r"expected .*train-images-idx3-ubyte.*dataset\.download=true.*"
                                           r"dataset\.root=<dir> at the folder that holds MNIST/raw/"):
        find_raw_file(tmp_path / "MNIST" / "raw", "train-images-idx3-ubyte")


# --- CIFAR pickles ---------------------------------------------------------------------------------


def test_cifar_batch_round_trips(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, (6, 3072), dtype=np.uint8)
    path = write_cifar_batch(tmp_path / "data_batch_1", data, [0, 9, 2, 3, 4, 5])
    images, labels = load_cifar_batch(path)
    assert images.dtype == np.uint8 and images.shape == (6, 3, 32, 32)
    assert np.array_equal(images[:, 0].reshape(6, -1), data[:, :1024])  # rows hold R, then G, then B planes
    assert labels.dtype == np.int64 and labels.tolist() == [0, 9, 2, 3, 4, 5]


def test_cifar_batch_pickled_by_numpy_1_loads(tmp_path):
    """The real batches name numpy.core (numpy 1.x); numpy 2 writes numpy._core."""
    path = write_cifar_batch(tmp_path / "b", np.full((2, 3072), 7, dtype=np.uint8), [1, 2])
    old_style = path.read_bytes().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray\n_reconstruct" in old_style
    path.write_bytes(old_style)
    images, labels = load_cifar_batch(path)
    assert (images == 7).all() and labels.tolist() == [1, 2]


def test_cifar_batch_with_str_keys_and_newer_protocol_loads(tmp_path):
    path = tmp_path / "batch"
    data = np.zeros((2, 3072), dtype=np.uint8)
    path.write_bytes(pickle.dumps({"data": data, "labels": np.array([1, 2])}, protocol=5))
    assert load_cifar_batch(path)[1].tolist() == [1, 2]


class _Exploit:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_malicious_cifar_pickle_is_refused_without_running_code(tmp_path):
    pwned = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Exploit(pwned), b"labels": []}, protocol=2))
    with pytest.raises(DatasetError, match=r"refusing to load global .*system from .*data_batch_1"):
        load_cifar_batch(path)
    assert not pwned.exists()


def test_truncated_or_malformed_cifar_batch_is_a_dataset_error(tmp_path):
    path = write_cifar_batch(tmp_path / "test_batch", np.zeros((4, 3072), dtype=np.uint8), [0, 1, 2, 3])
    full = path.read_bytes()
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DatasetError, match="test_batch.*extract the archive again"):
        load_cifar_batch(path)
    for labels in ([3.7, 2.2, 0.0, 1.0], ["1", "2", "3", "4"], [True, False, True, False]):  # never coerced
        path.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), dtype=np.uint8), b"labels": labels},
                                      protocol=2))
        with pytest.raises(DatasetError, match="'labels' are not integers"):
            load_cifar_batch(path)
    write_cifar_batch(path, np.zeros((4, 3072), dtype=np.uint8), [0, 1, 2])
    with pytest.raises(DatasetError, match="3 labels for 4 images"):
        load_cifar_batch(path)
    write_cifar_batch(path, np.zeros((4, 1024), dtype=np.uint8), [0, 1, 2, 3])
    with pytest.raises(DatasetError, match="1024 values per image"):
        load_cifar_batch(path)


# --- downloads (offline: a mirror on localhost) ---------------------------------------------------------


@pytest.fixture
def local_mirror(tmp_path):
    """An HTTP server on localhost serving ``tmp_path/mirror``: the download code path without internet."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join()


def test_download_checks_md5_skips_present_files_and_reports_failures(tmp_path, write_idx, local_mirror):
    folder, url = local_mirror
    source = write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(10, dtype=np.uint8))
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    raw = tmp_path / "MNIST" / "raw"
    with pytest.raises(
        DatasetError, match=r"(?s)could not download t10k-labels-idx1-ubyte\.gz.*nowhere.*404.*corrupted"
    ):
        download_mnist_like(raw, [(source.name, "0" * 32)], [f"{url}nowhere/", url])  # 404, then bad md5
    assert not (raw / source.name).exists()
    download_mnist_like(raw, [(source.name, md5)], [f"{url}nowhere/", url])  # the second mirror works
    assert read_idx(find_raw_file(raw, "t10k-labels-idx1-ubyte")).tolist() == list(range(10))
    download_mnist_like(raw, [(source.name, "0" * 32)], ["http://127.0.0.1:9/"])  # present: not fetched


# --- datamodules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, shape, n_train, n_test",
    [
        ("mnist", (1, 28, 28), 64, 32),
        ("fashion_mnist", (1, 28, 28), 64, 32),
        ("cifar10", (3, 32, 32), 40, 16),
    ],
)
def test_file_datamodules_give_uint8_images_and_labels(fake_image_root, name, shape, n_train, n_test):
    dm = FILE_MODULES[name](root=str(fake_image_root), batch_size=16)
    assert (dm.name, dm.data_shape, dm.num_classes, dm.is_image) == (name, shape, 10, True)
    dm.setup()
    n_val = round(0.1 * n_train)
    for split, n in (("train", n_train - n_val), ("val", n_val), ("test", n_test)):
        x = dm.split_tensor(split)
        assert x.shape == (n, *shape) and x.dtype == torch.uint8
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, *shape) and y.dtype == torch.int64 and y.min() >= 0 and y.max() <= 9
    assert int(x.float().std()) > 0


def test_val_is_carved_from_train_by_split_seed(fake_image_root):
    def splits(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        dm = MNISTDataModule(root=str(fake_image_root), val_fraction=0.25, split_seed=seed)
        dm.setup()
        return dm.split_tensor("train"), dm.split_tensor("val")

    train, val = splits(0)
    assert len(train) == 48 and len(val) == 16
    everything = read_idx(fake_image_root / "MNIST" / "raw" / "train-images-idx3-ubyte")
    rows = {t.numpy().tobytes() for t in torch.cat([train, val])}
    assert rows == {img.tobytes() for img in everything[:, None]}  # a partition of the train file
    assert torch.equal(splits(0)[1], val) and not torch.equal(splits(1)[1], val)


def test_training_on_a_slice_of_the_test_files(fake_image_root):
    dm = FashionMNISTDataModule(
        root=str(fake_image_root),
        train_split="test",
        train_slice=[0, 24],
        test_slice=[24, 32],
        val_fraction=0.25,
    )
    dm.setup()
    assert [len(dm.split_tensor(s)) for s in ("train", "val", "test")] == [18, 6, 8]
    test_file = read_idx(fake_image_root / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte.gz")
    assert np.array_equal(dm.split_tensor("test").numpy()[:, 0], test_file[24:32])
    seen = {t.numpy().tobytes() for t in torch.cat([dm.split_tensor("train"), dm.split_tensor("val")])}
    assert seen == {img.tobytes() for img in test_file[:24, None]}


@pytest.mark.parametrize(
    "options, keys",
    [
        (
            {"train_split": "test", "train_slice": [0, 20], "test_slice": [10, 32]},
            ["test_slice", "train_slice"],
        ),
        ({"train_split": "test", "train_slice": [0, 20]}, ["test_slice", "train_slice"]),
        ({"train_slice": [5, 5]}, ["train_slice"]),
        ({"test_slice": [-1, 4]}, ["test_slice"]),
        ({"train_split": "valid"}, ["train_split"]),
    ],
)
def test_bad_splits_raise_config_error_before_reading_files(tmp_path, options, keys):
    with pytest.raises(ConfigError) as error:
        CIFAR10DataModule(root=str(tmp_path / "absent"), **options)
    for key in keys:
        assert f"dataset.{key}" in str(error.value)


def test_slice_past_the_end_names_the_key_and_the_length(fake_image_root):
    dm = MNISTDataModule(
        root=str(fake_image_root), train_split="test", train_slice=[0, 40], test_slice=[40, 50]
    )
    with pytest.raises(ConfigError, match=r"dataset\.train_slice=\[0, 40\] reaches past the 32 rows"):
        dm.setup()


def test_a_partly_extracted_cifar_folder_is_fetched_again_not_taken_as_whole(tmp_path, monkeypatch):
    """Only test_batch present used to count as extracted: data_batch_3 missing then had no remedy."""
    from genbench.data import formats

    folder = tmp_path / "cifar-10-batches-py"
    for name in ("data_batch_1", "data_batch_2", "data_batch_4", "data_batch_5", "test_batch"):
        write_cifar_batch(folder / name, np.zeros((2, 3072), dtype=np.uint8), [0, 1])
    fetched = []

    def offline(url, dest, **kwargs):
        fetched.append(url)
        raise OSError("offline")

    monkeypatch.setattr(formats, "download", offline)
    with pytest.raises(DatasetError, match="could not download CIFAR-10"):
        formats.download_cifar10(tmp_path)
    assert len(fetched) == 1
    with pytest.raises(DatasetError, match="data_batch_3. The folder is incomplete: delete it"):
        CIFAR10DataModule(root=str(tmp_path), download=True).setup()
    write_cifar_batch(folder / "data_batch_3", np.zeros((2, 3072), dtype=np.uint8), [0, 1])
    formats.download_cifar10(tmp_path)  # whole: nothing to fetch
    assert len(fetched) == 1


def test_missing_files_and_mismatched_labels_are_dataset_errors(fake_image_root, tmp_path, write_idx):
    # Where the file was expected, and every way to get it: download=true, the archive's URL, dataset.root.
    with pytest.raises(DatasetError, match=r"cifar-10-batches-py.*data_batch_1.*dataset\.download=true.*"
                                           r"https://www\.cs\.toronto\.edu/~kriz/cifar-10-python\.tar\.gz.*"
                                           r"dataset\.root=<dir>"):
        CIFAR10DataModule(root=str(tmp_path)).setup()
    raw = fake_image_root / "MNIST" / "raw"
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(31, dtype=np.uint8))
    with pytest.raises(
        DatasetError, match="t10k-images-idx3-ubyte and .*t10k-labels-idx1-ubyte: 32 images but 31"
    ):
        MNISTDataModule(root=str(fake_image_root)).setup()


def test_digits_are_bundled_8x8_uint8_with_fixed_splits():
    dm = DigitsDataModule(batch_size=64)
    assert (dm.name, dm.data_shape, dm.num_classes) == ("digits", (1, 8, 8), 10)
    dm.setup()
    sizes = [len(dm.split_tensor(s)) for s in ("train", "val", "test")]
    assert sum(sizes) == 1797 and sizes[2] == round(0.2 * 1797) and sizes[1] == round(0.1 * 1797)
    x = dm.split_tensor("train")
    assert x.dtype == torch.uint8 and x.max() == 255 and x.min() == 0
    assert set(torch.unique(x).tolist()) <= {round(v * 255 / 16) for v in range(17)}
    again = DigitsDataModule()
    again.setup()
    assert torch.equal(again.split_tensor("test"), dm.split_tensor("test"))
    with pytest.raises(ConfigError, match="dataset.val_fraction"):
        DigitsDataModule(val_fraction=0.5, test_fraction=0.5)


@pytest.mark.parametrize("workers", [0, 2])
def test_loaders_read_a_batch_at_a_time_the_batches_torch_makes_from_each_example(workers, monkeypatch):
    """One indexing of each tensor per batch (a tuple per example, stacked again, was most of a toy step's
    data time), and the same batches, in the same order and types, with worker processes too."""
    dm = DigitsDataModule(batch_size=64, num_workers=workers)
    dm.setup()
    torch.manual_seed(0)
    one_by_one = list(DataLoader(TensorDataset(*dm.train_set.tensors), batch_size=64, shuffle=True))
    if workers == 0:  # the examples are never read one at a time
        monkeypatch.setattr(TensorDataset, "__getitem__", lambda self, index: pytest.fail("read one example"))
    torch.manual_seed(0)
    batched = list(dm.train_dataloader())
    assert len(batched) == len(one_by_one) == math.ceil(len(dm.train_set) / 64)
    for (x, y), (x_ref, y_ref) in zip(batched, one_by_one, strict=True):
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


@pytest.mark.parametrize("name", ["digits", *FILE_MODULES])
def test_yaml_configs_build_image_datamodules(name, fake_image_root):
    node = OmegaConf.merge(
        {"paths": {"data_dir": str(fake_image_root)}}, {"dataset": OmegaConf.load(CONFIGS / f"{name}.yaml")}
    )
    validate_group(node.dataset, "dataset")
    dm = hydra.utils.instantiate(node.dataset)
    dm.setup()
    assert dm.name == name and dm.split_tensor("test").dtype == torch.uint8


# --- pixel helpers ---------------------------------------------------------------------------------


def test_pixel_maps_have_the_documented_ranges_and_round_trip():
    x = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    unit, symmetric = pixels.to_unit(x), pixels.to_symmetric(x)
    assert (unit.min(), unit.max()) == (0.0, 1.0) and (symmetric.min(), symmetric.max()) == (-1.0, 1.0)
    assert torch.equal(pixels.from_unit(unit), x) and torch.equal(pixels.from_symmetric(symmetric), x)
    assert pixels.from_unit(torch.tensor([-0.5, 2.0])).tolist() == [0, 255]
    assert pixels.from_symmetric(torch.tensor([-3.0, 0.0, 3.0])).tolist() == [0, 128, 255]


def test_dequantize_stays_in_its_bin_even_at_255():
    x = torch.arange(256).to(torch.uint8).repeat(200)
    y = pixels.dequantize(x, torch.Generator().manual_seed(0))
    assert y.dtype == torch.float32 and ((y >= x) & (y < x.float() + 1)).all()
    assert y.sub(x).mean().item() == pytest.approx(0.5, abs=0.01)
    assert torch.equal(y, pixels.dequantize(x, torch.Generator().manual_seed(0)))
    nearly_one = torch.tensor([1 - 2**-24])
    assert pixels.dequantize(torch.tensor([255], dtype=torch.uint8), None).item() < 256
    assert (torch.tensor([255.0]) + nearly_one).item() == 256.0  # why dequantize needs its guard


def test_bits_per_dim_and_rescale():
    assert pixels.bits_per_dim(784 * math.log(2) * 1.5, 784) == pytest.approx(1.5)
    assert torch.allclose(pixels.bits_per_dim(torch.tensor([3072 * math.log(2)]), 3072), torch.tensor([1.0]))
    # A uniform density on [0, 1)^D is uniform on [0, 256)^D after rescaling: log p = -D log 256.
    assert pixels.log_density_rescale(0.0, 10, 256) == pytest.approx(-10 * math.log(256))
    assert pixels.bits_per_dim(-pixels.log_density_rescale(0.0, 10, 256), 10) == pytest.approx(8.0)


def test_gzip_fixture_files_are_really_gzipped(fake_image_root):
    with gzip.open(fake_image_root / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte.gz") as f:
        assert f.read(4) == b"\x00\x00\x08\x01"
