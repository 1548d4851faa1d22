"""The evaluation stage runs where the model trained, in batches sized for that device, and streams its
samples through the feature networks instead of holding them all."""

import os

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import SingleDeviceStrategy

from genbench.errors import ConfigError
from genbench.evaluation import Evaluation, speed
from genbench.evaluation import device as device_module
from genbench.evaluation.device import DEVICE_TYPES, device_name, evaluation_device
from genbench.evaluation.quality import sample_features
from genbench.evaluation.stage import batch_size_for
from genbench.models.vae import VAE
from genbench.train import run
from tests.helpers import compose_train


class _CountingExtractor:
    """Features = per-image pixel mean and max; records the size of every batch it sees."""

    name = "counting"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def extract(self, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(len(images))
        x = images.float().flatten(1)
        return torch.stack([x.mean(1), x.amax(1)], 1), x[:, :3]


class _Model:
    """Samples images from a seeded stream; records how many it handed out per call."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.generator = torch.Generator().manual_seed(0)
        self.calls: list[int] = []

    def sample(self, n: int) -> torch.Tensor:
        self.calls.append(n)
        return torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=self.generator)


def test_samples_stream_through_the_extractors_batch_by_batch():
    model, extractor = _Model(), _CountingExtractor()
    out, shown = sample_features(model, [extractor], n=1050, batch_size=200, feature_batch_size=64, keep=10)
    # Never more than one batch of samples alive: each goes through the extractor as it is drawn.
    assert model.calls == [200] * 5 + [50] and extractor.calls == model.calls
    features, logits = out["counting"]
    assert features.shape == (1050, 2) and logits.shape == (1050, 3)
    # The same numbers as drawing every image first and extracting them at once.
    everything = _Model().sample(1050)
    expected = _CountingExtractor().extract(everything)
    assert torch.equal(features, expected[0]) and torch.equal(logits, expected[1])
    assert torch.equal(shown, everything[:10])


def test_batch_sizes_fill_a_gpu_and_stay_small_on_a_cpu():
    assert batch_size_for(torch.device("cpu"), None, cpu=500, gpu=2000) == 500
    assert batch_size_for(torch.device("cuda", 0), None, cpu=500, gpu=2000) == 2000
    assert batch_size_for(torch.device("cuda", 0), 32, cpu=500, gpu=2000) == 32  # a setting wins
    assert batch_size_for(torch.device("cpu"), None, cpu=None, gpu=500) is None  # the loader's batches


def test_auto_is_the_device_the_model_trained_on_and_a_named_device_must_exist(monkeypatch):
    assert evaluation_device("auto", torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert evaluation_device("cpu", torch.device("cuda", 0)) == torch.device("cpu")
    with pytest.raises(ConfigError, match="eval.device='gpu0' is not a device"):
        evaluation_device("gpu0", torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"eval.device='meta': not a kind of device .* \(cpu, cuda, mps\)"):
        evaluation_device("meta", torch.device("cpu"))  # a device torch knows, that holds no data
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            evaluation_device("cuda", torch.device("cpu"))
    if not torch.backends.mps.is_available():
        with pytest.raises(ConfigError, match="MPS is not available"):
            evaluation_device("mps", torch.device("cpu"))
    # A machine with two GPUs (simulated): cuda:1 exists, cuda:2 fails before training, naming both.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert evaluation_device("cuda:1", torch.device("cpu")) == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"'cuda:2' but this machine has 2 GPU\(s\), cuda:0 to cuda:1"):
        evaluation_device("cuda:2", torch.device("cpu"))


def test_a_device_is_named_by_its_hardware(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: Some\nmodel name\t: Test CPU 9000 @ 3.0GHz\n\n"
                       "processor\t: 1\nmodel name\t: Test CPU 9000 @ 3.0GHz\n")
    monkeypatch.setattr(device_module, "CPUINFO", cpuinfo)
    assert device_name(torch.device("cpu")) == "Test CPU 9000 @ 3.0GHz"
    monkeypatch.setattr(device_module, "CPUINFO", tmp_path / "absent")  # not Linux: what the platform says
    monkeypatch.setattr(device_module.platform, "processor", lambda: "arm")
    assert device_name(torch.device("cpu")) == "arm"
    assert device_name(torch.device("meta")) == "meta"


def test_the_record_names_the_hardware_that_trained_and_sampled(tmp_path):
    # debug's trainer takes whatever accelerator there is: on a GPU machine this ran on cuda:0 and failed
    result = run(compose_train(["debug=default", "trainer.accelerator=cpu", f"paths.output_dir={tmp_path}"]),
                 tmp_path)
    m = result.metrics
    assert m["train_device"] == m["sample_device"] == "cpu"
    assert m["train_device_name"] == m["sample_device_name"] == device_name(torch.device("cpu")) != ""


@pytest.fixture
def second_device(monkeypatch):
    """A second device on a CPU machine: the trainer's root device reads as ``meta`` once ``flip()`` is called
    (after training, or from the start for train=false), and ``evaluate`` records where the model is."""
    state = {"meta": False, "evaluated_on": None}
    monkeypatch.setattr("genbench.evaluation.device.DEVICE_TYPES", (*DEVICE_TYPES, "meta"))  # for eval.device
    original = SingleDeviceStrategy.root_device
    monkeypatch.setattr(SingleDeviceStrategy, "root_device", property(
        lambda self: torch.device("meta") if state["meta"] else original.fget(self)))

    def evaluate(model, dm, cfg, out_dir):
        state["evaluated_on"] = model.device
        return Evaluation()

    monkeypatch.setattr("genbench.train.evaluate", evaluate)
    monkeypatch.setattr("genbench.train._check_finite_weights", lambda model, where: None)  # no meta values
    monkeypatch.setattr("genbench.train.peak_memory",
                        lambda device, since_reset: {"peak_memory_kind": f"read on {device.type}"})
    state["flip"] = lambda: state.update(meta=True)
    return state


class _Flip(pl.Callback):
    def __init__(self, flip) -> None:
        self.flip = flip

    def on_fit_end(self, trainer, pl_module) -> None:
        self.flip()


def test_evaluation_runs_on_the_trainers_root_device_after_training(tmp_path, second_device):
    cfg = compose_train(["debug=default", f"paths.output_dir={tmp_path}"])
    result = run(cfg, tmp_path, callbacks=[_Flip(second_device["flip"])])
    # Lightning's teardown put the model back on the CPU after fit; the evaluation moved it to the device
    # the trainer ran on.
    assert second_device["evaluated_on"] == torch.device("meta") == result.model.device


def test_each_peak_is_read_on_its_own_device_where_eval_device_evaluates_elsewhere(tmp_path, second_device):
    """The record had one peak, the evaluation device's: with eval.device another device than the one
    that trained, the training's peak was lost. The training device's is now read when training ends."""
    metrics = run(compose_train(["debug=default", "trainer.accelerator=cpu", "eval.device=meta",
                                 f"paths.output_dir={tmp_path}"]), tmp_path).metrics
    assert second_device["evaluated_on"] == torch.device("meta")
    assert metrics["train_peak_memory_kind"] == "read on cpu"
    assert metrics["peak_memory_kind"] == "read on meta"


def test_train_false_loads_the_checkpoint_onto_the_trainers_device(tmp_path, second_device, monkeypatch):
    trained = tmp_path / "trained"
    run(compose_train(["debug=default", f"paths.output_dir={trained}"]), trained)
    second_device["flip"]()
    load, mapped = VAE.load_from_checkpoint, []

    def load_recording_where(path, map_location=None, **kw):  # meta tensors hold no values to load
        mapped.append(map_location)
        return load(path, map_location="cpu", **kw)

    monkeypatch.setattr(VAE, "load_from_checkpoint", load_recording_where)
    out = tmp_path / "eval"
    cfg = compose_train(["debug=default", "train=false", f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}",
                         f"paths.output_dir={out}"])
    run(cfg, out)
    assert mapped == [torch.device("meta")] and second_device["evaluated_on"] == torch.device("meta")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and GENBENCH_TEST_GPU=1")
@pytest.mark.parametrize("train", [True, False])
def test_a_gpu_run_is_evaluated_on_its_gpu(tmp_path, train):
    trained = tmp_path / "trained"
    result = run(compose_train(["debug=default", "trainer=gpu", f"paths.output_dir={trained}"]), trained)
    if not train:
        out = tmp_path / "eval"
        ckpt = trained / "checkpoints" / "last.ckpt"
        result = run(compose_train(["debug=default", "trainer=gpu", "train=false", f"ckpt_path={ckpt}",
                                    f"paths.output_dir={out}"]), out)
    assert result.metrics["sample_device"] == "cuda:0"
    assert result.metrics["sample_device_name"] == torch.cuda.get_device_name(0)
    assert result.metrics["peak_memory_kind"] == "cuda_max_allocated"
    if train:
        assert result.metrics["train_peak_memory_kind"] == "cuda_max_allocated"
        assert 0 < result.metrics["train_peak_memory_mb"] <= result.metrics["peak_memory_mb"]
        assert result.metrics["train_device"] == "cuda:0"
        assert result.metrics["train_device_name"] == torch.cuda.get_device_name(0)


def test_the_suite_runs_on_the_cpu_unless_the_gpu_tests_are_asked_for():
    """On a machine with a GPU, configs with accelerator auto trained there and CPU records' tests failed:
    conftest hides CUDA from the suite (and the scripts it starts) unless GENBENCH_TEST_GPU=1."""
    if os.environ.get("GENBENCH_TEST_GPU") == "1":
        pytest.skip("GENBENCH_TEST_GPU=1: the GPU stays visible")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "" and not torch.cuda.is_available()


class _SlowSampler:
    """Each sample() call takes ``seconds`` of a fake clock: a 100-step diffusion sampler on a CPU."""

    device = torch.device("cpu")

    def __init__(self, clock: list[float], seconds: float) -> None:
        self.clock, self.seconds, self.calls = clock, seconds, 0

    def sample(self, n: int) -> torch.Tensor:
        self.clock[0] += self.seconds
        self.calls += 1
        return torch.zeros(n, 2)


@pytest.mark.parametrize(("seconds", "max_seconds", "warm", "timed"), [
    (30.0, 60.0, 2, 3),     # a diffusion model's sample(256) on MNIST on this CPU: 3 timed calls, not 10
    (70.0, 60.0, 1, 3),     # flow matching's: one warm-up call
    (25.0, 60.0, 2, 3),     # the third reaches the budget
    (7.0, 60.0, 2, 9),      # 9 x 7 s = 63 s
    (0.01, 60.0, 2, 10),    # a fast sampler makes all of them
    (70.0, None, 2, 10)])   # no budget: all of them
def test_timed_calls_stop_once_they_take_the_budget_but_never_under_three(monkeypatch, seconds, max_seconds,
                                                                          warm, timed):
    """A 200-step diffusion run on MNIST with eval.num_samples=500 spent 2 + 10 calls of sample(256) on its
    timing: 3,072 samples, six times those of its quality metrics."""
    clock = [0.0]
    monkeypatch.setattr(speed.time, "perf_counter", lambda: clock[0])
    model = _SlowSampler(clock, seconds)
    result = speed.sampling_speed(model, 256, repeats=10, warmup=2, max_seconds=max_seconds)
    assert (model.calls, result["sample_repeats"]) == (warm + timed, timed)
    assert result["sample_ms_per_batch"] == pytest.approx(1000 * seconds)
