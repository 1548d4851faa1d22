"""Feature nets: the digits classifier learns, round-trips through its files, and refuses a changed or
tampered file (its metrics become unavailable, the run goes on)."""

import dataclasses
import hashlib
import json
import pickle
import shlex
import time

import pytest
import torch
from hydra import compose, initialize_config_dir

from genbench.data.images import DigitsDataModule, MNISTDataModule
from genbench.data.pixels import to_unit
from genbench.errors import FeatureExtractorUnavailable
from genbench.evaluation import EvalConfig, evaluate
from genbench.evaluation.feature_net import (
    FeatureNetSchema,
    feature_net_path,
    load_feature_net,
    save_feature_net,
    train_feature_net,
)
from genbench.models.vae import VAE
from genbench.nets.classifier import SmallCNN
from genbench.trained_run import one_line_errors
from tests.helpers import CONFIG_DIR, in_a_hydra_run, run_script

FIX = "python scripts/train_feature_net.py dataset=digits"


@pytest.fixture(scope="module")
def trained():
    """A digits net trained once for the module (about 1 s on one thread)."""
    dm = DigitsDataModule()
    start = time.perf_counter()
    net, accuracy = train_feature_net(dm, epochs=5, lr=3e-3, seed=0)
    return dm, net, accuracy, time.perf_counter() - start


@pytest.fixture
def saved(trained, tmp_path):
    dm, net, accuracy, _ = trained
    path = feature_net_path(tmp_path / "feature_nets", dm.name)
    save_feature_net(net, path, {"dataset": dm.name, "test_accuracy": accuracy, "config": {"epochs": 5}})
    return path


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_small_cnn_gives_features_and_logits_for_every_image_shape(shape):
    net = SmallCNN(shape[0], shape[1], num_classes=10, feature_dim=64)
    x = torch.rand(3, *shape)
    assert net.features(x).shape == (3, 64) and net(x).shape == (3, 10)


def test_digits_net_trains_to_over_90_percent_test_accuracy_quickly(trained):
    _, _, accuracy, seconds = trained
    assert accuracy > 0.9
    assert seconds < 30


def test_saved_net_loads_with_the_same_outputs_and_its_checksum(trained, saved):
    dm, net, accuracy, _ = trained
    loaded = load_feature_net(saved)
    record = json.loads(saved.with_suffix(".json").read_text())
    assert record["sha256"] == hashlib.sha256(saved.read_bytes()).hexdigest() == loaded.checksum
    assert record["arch"] == net.arch and torch.__version__.startswith(record["versions"]["torch"])
    assert (loaded.name, loaded.dataset, loaded.num_classes) == ("digits_cnn", "digits", 10)
    assert loaded.test_accuracy == accuracy and loaded.provenance()["config"] == {"epochs": 5}

    images = dm.split_tensor("test")[:37]
    features, logits = loaded.extract(images, batch_size=16)
    assert features.shape == (37, 128) and logits.shape == (37, 10)
    assert features.dtype == logits.dtype == torch.float32
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(features, net.features(to_unit(images)))
        torch.testing.assert_close(logits, net(to_unit(images)))
    with pytest.raises(ValueError, match="uint8"):
        loaded.extract(to_unit(images))


def test_a_changed_weights_file_is_refused_naming_the_fix(saved):
    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 1
    saved.write_bytes(bytes(data))
    with pytest.raises(FeatureExtractorUnavailable, match="sha256") as error:
        load_feature_net(saved)
    assert FIX in str(error.value) and str(saved) in str(error.value)

    other = SmallCNN(1, 8, 10).state_dict()
    torch.save(other, saved)  # a valid file, but not the net the record describes
    with pytest.raises(FeatureExtractorUnavailable, match="sha256"):
        load_feature_net(saved)


def test_missing_weights_or_record_is_refused_naming_the_fix(saved, tmp_path):
    saved.with_suffix(".json").unlink()
    with pytest.raises(FeatureExtractorUnavailable, match="record") as error:
        load_feature_net(saved)
    assert FIX in str(error.value)
    with pytest.raises(FeatureExtractorUnavailable, match="no such file") as error:
        load_feature_net(feature_net_path(tmp_path / "elsewhere", "digits"))
    assert FIX in str(error.value)


def test_script_trains_and_writes_the_net_and_its_record(tmp_path):
    args = ["dataset=digits", "epochs=1", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = run_script("scripts/train_feature_net.py", args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = tmp_path / "feature_nets" / "digits_cnn.pt"
    loaded = load_feature_net(path)
    assert f"{path} sha256={loaded.checksum} test_accuracy=" in proc.stdout
    assert loaded.provenance()["config"]["epochs"] == 1


def test_a_missing_net_names_a_command_that_trains_it_on_the_data_the_run_reads(fake_image_root, tmp_path):
    """A run on MNIST's test files alone (the README's recipe) was told to run
    ``train_feature_net.py dataset=mnist``, which looks for the train files under the default root."""
    for train_file in (fake_image_root / "MNIST" / "raw").glob("train-*"):
        train_file.unlink()
    dm = MNISTDataModule(root=str(fake_image_root), train_split="test", train_slice=[0, 24],
                         test_slice=[24, 32])
    model = VAE(data_shape=dm.data_shape, num_classes=10)
    cfg = EvalConfig(num_samples=8, inception=False, feature_net_dir=str(tmp_path / "nets"), speed_repeats=1,
                     speed_batch_size=4, plot_samples_image=4)
    said = evaluate(model, dm, cfg, tmp_path).unavailable["fd_mnist_cnn"]
    command = shlex.split(said.split("Train it with: ")[1])
    assert command[:3] == ["python", "scripts/train_feature_net.py", "dataset=mnist"], said
    proc = run_script(command[1], [*command[2:], "epochs=1", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fd_mnist_cnn" in evaluate(model, dm, cfg, tmp_path).metrics


def _refusal(script, tmp_path, caplog, args: list[str]) -> str:
    """What scripts/train_feature_net.py logs as it exits 2 on ``args``, run in this process (a process of
    its own takes 10-20 s here to import and refuse): its ``main`` is Hydra's wrapper of these two calls."""
    with (in_a_hydra_run([*args, f"paths.root_dir={tmp_path}"], config_name="feature_net") as cfg,
          pytest.raises(SystemExit) as exit_info, one_line_errors()):
        script("train_feature_net").train(cfg)
    assert exit_info.value.code == 2
    return "\n".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")


def test_a_ctrl_c_ends_a_script_in_one_line_with_the_shells_status(caplog):
    """scripts/train_feature_net.py, nfe_sweep.py, bench_likelihood_grid.py: a Ctrl-C printed a traceback
    through Hydra's and contextlib's frames."""
    with pytest.raises(SystemExit) as exit_info, one_line_errors():
        raise KeyboardInterrupt
    assert exit_info.value.code == 130
    assert "interrupted (Ctrl-C) before the script finished: it wrote nothing more" in caplog.text


def test_the_script_names_a_bad_option_in_one_line_and_exits_2_without_a_traceback(tmp_path):
    proc = run_script("scripts/train_feature_net.py", ["dataset=moons", f"hydra.run.dir={tmp_path / 'run'}"],
                      tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr  # Hydra's log goes to stdout
    assert ("[ERROR] - dataset=moons has no labelled images, and a feature net is an image classifier"
            in output) and "Traceback" not in output


@pytest.mark.parametrize(("args", "says"), [
    (["dataset=moons"], "dataset=moons has no labelled images, and a feature net is an image classifier"),
    (["dataset=mnist"], "missing dataset file: expected "),
    (["dataset=digits", "dataset.batch_size=0"], "bad config value dataset.batch_size=0: must be >= 1")])
def test_the_script_names_a_bad_dataset_before_it_writes_anything(script, tmp_path, caplog, args, says):
    """They ended in tracebacks: a ValueError, the DatasetError, and Hydra's InstantiationException."""
    assert says in _refusal(script, tmp_path, caplog, args)
    assert not (tmp_path / "feature_nets").exists()


@pytest.mark.parametrize(("args", "says"), [
    (["epochs=0"], "bad config value epochs=0: must be >= 1"),
    (["lr=nan"], "bad config value lr=nan: must be a finite number"),
    (["+widht=64"], "unknown top-level config key(s) ['widht']; valid ones are"),
    (["out_path={tmp}/a_file/net.pt"],
     "cannot write the feature net to {tmp}/a_file/net.pt: {tmp}/a_file is not a folder this user can write "
     "into; give another out_path"),
    (["hydra.job.chdir=true"], "hydra.job.chdir=true is not supported: the run would start inside its run "
     "directory")])
def test_the_script_refuses_bad_options_before_it_trains(script, tmp_path, caplog, capsys, args, says):
    """Tracebacks all, the path's only after the training it would have kept; a misspelt key was ignored."""
    (tmp_path / "a_file").write_text("")
    args, says = [a.format(tmp=tmp_path) for a in args], says.format(tmp=tmp_path)
    assert says in _refusal(script, tmp_path, caplog, ["dataset=digits", *args])
    assert "epoch 1/" not in capsys.readouterr().out + caplog.text


def test_the_scripts_yaml_lists_its_schemas_defaults():
    """configs/feature_net.yaml is what a user reads; FeatureNetSchema checks it: the two must not drift."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="feature_net")
    options = {f.name for f in dataclasses.fields(FeatureNetSchema)}
    assert {k: cfg[k] for k in options} == dataclasses.asdict(FeatureNetSchema())


def _replace_with_updated_checksum(saved, data: bytes | None = None, drop: str | None = None) -> None:
    """Tamper with the net as someone who also rewrites its record's sha256 would."""
    record_path = saved.with_suffix(".json")
    record = json.loads(record_path.read_text())
    if data is not None:
        saved.write_bytes(data)
    record.pop(drop, None)
    record["sha256"] = hashlib.sha256(saved.read_bytes()).hexdigest()
    record_path.write_text(json.dumps(record))


@pytest.mark.parametrize("tamper", [
    {"data": b"\x80\x04not a torch file"},  # torch.load: UnpicklingError
    {"data": pickle.dumps(print)},  # a pickle naming a global: refused by weights_only
    {"drop": "test_accuracy"},  # a record missing a field: KeyError
])
def test_a_tampered_net_with_a_matching_checksum_makes_its_metrics_unavailable(saved, tmp_path, tamper):
    _replace_with_updated_checksum(saved, **tamper)
    with pytest.raises(FeatureExtractorUnavailable, match="does not load as the net") as error:
        load_feature_net(saved)
    assert FIX in str(error.value)
    if "drop" in tamper:  # the whole evaluation: finished, with the net's metrics unavailable
        dm = DigitsDataModule()
        model = VAE(data_shape=dm.data_shape, num_classes=10)
        cfg = EvalConfig(num_samples=8, inception=False, feature_net_dir=str(saved.parent), speed_repeats=1,
                         speed_batch_size=4, plot_samples_image=4)
        result = evaluate(model, dm, cfg, tmp_path)
        assert "does not load" in result.unavailable["fd_digits_cnn"] and "nll_bpd" in result.metrics
