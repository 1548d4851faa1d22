"""Training compute and quality curves (issue 15): FLOPs counted on a training step, the log-spaced quality
curve of a run (which must not change the run it watches), and the real-data floor of the metrics."""

import logging
import math
import re
import time

import hydra
import pytest
import pytorch_lightning as pl
import torch

from genbench.data.toy import GaussianGrid
from genbench.errors import ConfigError
from genbench.evaluation.compute import flop_counter
from genbench.evaluation.curves import QualityCurve, log_spaced_steps
from genbench.evaluation.distances import energy_distance
from genbench.evaluation.feature_net import load_feature_net, save_feature_net
from genbench.evaluation.frechet import feature_statistics, frechet_distance
from genbench.evaluation.quality import class_rows
from genbench.evaluation.real import fresh_draws, held_out_split, real_toy_metrics
from genbench.evaluation.reference import reference_images
from genbench.matrix.runs import Run
from genbench.nets.classifier import SmallCNN
from genbench.train import run
from tests.helpers import compose_quiet_run, compose_train


def test_flops_of_a_linear_layer_forward_and_weight_gradient():
    layer = torch.nn.Linear(8, 4, bias=False)
    with flop_counter() as counter:
        layer(torch.randn(16, 8)).sum().backward()
    assert counter.get_total_flops() == 2 * (2 * 16 * 8 * 4)  # x @ W^T, then the gradient of W


def test_flops_are_counted_through_autograd_grad_on_a_leaf():
    """An EBM's Langevin step differentiates the energy with respect to its input, a leaf tensor:
    FlopCounterMode's module tracker breaks there; the totals-only counter does not."""
    net = torch.nn.Linear(2, 3, bias=False)
    z = torch.randn(5, 2, requires_grad=True)
    with flop_counter() as counter:
        torch.autograd.grad(net(z).sum(), z)
    assert counter.get_total_flops() == 2 * (2 * 5 * 2 * 3)  # forward, and the gradient of z


def test_log_spaced_steps_end_at_the_budget():
    assert log_spaced_steps(25, 2000, 4) == [25, 44, 79, 141, 250, 445, 791, 1406, 2000]
    assert log_spaced_steps(1, 3, 10) == [1, 2, 3]  # rounded duplicates dropped
    assert log_spaced_steps(25, 10, 4) == [10]


def test_a_quality_curve_refuses_sample_counts_its_metrics_cannot_use_naming_each(tmp_path):
    """The message listed every option's bound, right or wrong, and a ValueError showed a traceback."""
    expected = ("^bad config value callbacks.quality_curve.vector_samples=3 must be >= 4; "
                "callbacks.quality_curve.image_samples=1 must be >= 2$")
    with pytest.raises(ConfigError, match=expected):
        QualityCurve(str(tmp_path), vector_samples=3, image_samples=1)
    QualityCurve(str(tmp_path), vector_samples=4, mode_samples=1, image_samples=2)


def _weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_a_run_records_its_flops_and_a_quality_curve_that_does_not_change_its_training(tmp_path):
    common = ["model=vae", "dataset=gaussians8", "trainer.max_steps=60", "evaluate=false"]
    watched = run(compose_quiet_run(tmp_path / "curve", [*common, "callbacks.sample_grids.every_n_steps=0",
                                                         "callbacks.quality_curve.first_step=10"]),
                  tmp_path / "curve")
    alone = run(compose_quiet_run(tmp_path / "alone", [*common, "callbacks=none"]), tmp_path / "alone")
    assert torch.equal(_weights(watched.model), _weights(alone.model))  # the curve's sampling is forked off
    metrics = watched.metrics
    assert metrics["train_flops"] == metrics["train_flops_per_example"] * metrics["train_examples"] > 0
    assert alone.metrics["train_flops_per_example"] == metrics["train_flops_per_example"]
    curve = Run(tmp_path / "curve", "vae", "gaussians8", 0, "ok").quality_curve("energy_distance_test")
    assert [step for step, _, _ in curve] == [10, 18, 32, 56, 60]
    assert [flops for _, flops, _ in curve] == [
        metrics["train_flops_per_example"] * 256 * step for step in (10, 18, 32, 56, 60)]
    assert all(math.isfinite(v) and v > 0 for _, _, v in curve)
    assert curve[-1][2] < curve[0][2]  # 60 steps of a VAE beat 10
    assert not (tmp_path / "alone" / "curves.csv").exists()
    # The floor at the curve's own sample size: fresh draws of the mixture, as many as the test points.
    floor = Run(tmp_path / "curve", "vae", "gaussians8", 0, "ok").quality_curve("real_energy_distance_test")
    test = watched.dm.split_tensor("test")[:2000]
    expected = energy_distance(fresh_draws(watched.dm.distribution, len(test), 0).double(), test.double())
    assert [v for _, _, v in floor] == [pytest.approx(expected)] * 5 and 0 < expected < curve[-1][2]


class _FlopsOfEveryBatch(pl.Callback):
    """An independent count: FLOPs of every training batch, each under its own counter."""

    def __init__(self) -> None:
        self.flops: list[int] = []
        self._counter = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._counter = flop_counter().__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._counter.__exit__(None, None, None)
        self.flops.append(self._counter.get_total_flops())


def test_a_gans_flops_average_its_critic_cycle_and_sum_to_every_batchs(tmp_path):
    """With n_critic = 3 the generator steps on every third batch: the first batch alone (a critic step)
    counted 0.87 of the true cost at n_critic = 5. train_flops must be the sum over all batches."""
    every = _FlopsOfEveryBatch()
    # max_steps counts both players: 24 optimizer steps are 18 batches, six cycles of 3 critic + 1 G step.
    result = run(compose_quiet_run(tmp_path, ["model=gan", "dataset=moons", "model.n_critic=3",
                                              "trainer.max_steps=24", "evaluate=false", "callbacks=none"]),
                 tmp_path, callbacks=[every])
    metrics = result.metrics
    assert len(every.flops) == 18 and metrics["train_examples"] == 18 * 256
    cycle = every.flops[:3]
    assert cycle[2] > cycle[0] == cycle[1] and every.flops == cycle * 6  # the G step's batch costs more
    assert metrics["train_flops"] == pytest.approx(sum(every.flops), rel=1e-12)
    assert metrics["train_flops_per_example"] == pytest.approx(sum(cycle) / (3 * 256), rel=1e-12)
    # Training that ends inside the first cycle leaves no FLOP counter on (it stayed on, into the evaluation
    # and a sweep's next jobs in this process).
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    short = run(compose_quiet_run(tmp_path / "short", ["model=gan", "dataset=moons", "model.n_critic=3",
                                                       "trainer.max_steps=2", "evaluate=false",
                                                       "callbacks=none"]), tmp_path / "short")
    assert not _get_current_dispatch_mode_stack() and "train_flops" not in short.metrics


def test_train_seconds_leave_out_the_quality_curves_evaluations(tmp_path, monkeypatch, caplog):
    """The curve watches the training: its evaluations (here 1 s each, at steps 2, 4, 6 and 10) are not
    training time, in the record or in the curve (it once counted them in the record only). The log says
    what they took, as the training's own line counts them in its wall clock."""
    caplog.set_level(logging.INFO, logger="genbench")
    def slow_scorer(self, dm, model):
        return lambda model: time.sleep(1.0) or {"energy_distance_test": 1.0}

    monkeypatch.setattr(QualityCurve, "_make_scorer", slow_scorer)
    started = time.perf_counter()
    result = run(compose_quiet_run(tmp_path, ["model=vae", "dataset=moons", "trainer.max_steps=10",
                                              "evaluate=false", "callbacks.sample_grids.every_n_steps=0",
                                              "callbacks.quality_curve.first_step=2"]), tmp_path)
    wall = time.perf_counter() - started
    rows = Run(tmp_path, "vae", "moons", 0, "ok").quality_curve("energy_distance_test")
    assert [step for step, _, _ in rows] == [2, 4, 6, 10]
    seconds = [float(line.split(",")[3]) for line in (tmp_path / "curves.csv").read_text().splitlines()[1:]]
    assert seconds == sorted(seconds) and seconds[-1] <= result.metrics["train_seconds"]
    assert result.metrics["train_seconds"] < wall - 4.0  # the 4 s of the curve are left out
    assert "at each of steps 2, 4, 6, 10; callbacks.quality_curve.points_per_decade=0" in caplog.text
    said = re.search(r"quality curve: 4 points in ([\d.]+) s, not in the record's train_seconds", caplog.text)
    assert said and 4.0 <= float(said.group(1)) < wall - result.metrics["train_seconds"]
    # The training's progress line says how much of the elapsed time was the curve's (its ETA's arithmetic:
    # tests/test_run_conveniences.py).
    step4 = re.search(r"training: step 4/10 \(40%\), \S+ elapsed \((\S+) of it the quality curve's\), ETA",
                      caplog.text)
    assert step4 and step4.group(1) == "0:00:02", caplog.text


def test_a_resumed_runs_curve_goes_on_from_its_checkpoint_as_if_never_interrupted(tmp_path):
    """Stopped at step 5 and resumed to 12: the resumed run's curves.csv holds the stopped run's points and
    then the same points, with the same values, as the run that was never stopped (it once began again
    at the resume, with every earlier target at once, and kept 2 points of 5)."""
    common = ["model=vae", "dataset=moons", "evaluate=false", "callbacks.sample_grids.every_n_steps=0",
              "callbacks.quality_curve.first_step=2", "+trainer.limit_train_batches=5",
              "trainer.max_epochs=null"]

    def curve(name: str, *overrides: str) -> dict[int, float]:
        run(compose_quiet_run(tmp_path / name, [*common, *overrides]), tmp_path / name)
        return {step: value for step, _, value in
                Run(tmp_path / name, "vae", "moons", 0, "ok").quality_curve("energy_distance_test")}

    whole = curve("whole", "trainer.max_steps=12")
    part = curve("part", "trainer.max_steps=5")
    resumed = curve("resumed", "trainer.max_steps=12", f"ckpt_path={tmp_path / 'part/checkpoints/last.ckpt'}")
    assert list(whole) == [2, 4, 6, 11, 12] and list(part) == [2, 4, 5]
    assert list(resumed) == [2, 4, 5, 6, 11, 12]  # 5: where the first run stopped
    assert all(resumed[step] == part[step] for step in part)
    assert all(resumed[step] == pytest.approx(whole[step], rel=1e-9) for step in (6, 11, 12))


def test_a_quality_curve_on_images_does_not_change_the_training_either(tmp_path):
    """The image curve loads a feature net (its layers initialise from the global random stream) and
    samples: neither may move the training's random stream (the data order of later epochs)."""
    torch.manual_seed(0)
    net = SmallCNN(in_channels=1, image_size=8, num_classes=10)
    save_feature_net(net, tmp_path / "nets" / "digits_cnn.pt", {"dataset": "digits", "test_accuracy": 0.1})
    common = ["model=vae", "dataset=digits", "trainer.max_steps=30", "evaluate=false",
              f"eval.feature_net_dir={tmp_path / 'nets'}", f"eval.cache_dir={tmp_path / 'cache'}"]
    # 30 steps: several epochs of digits
    watched = run(compose_quiet_run(tmp_path / "curve", [*common, "callbacks.sample_grids.every_n_steps=0",
                                                         "callbacks.quality_curve.first_step=10",
                                                         "callbacks.quality_curve.image_samples=50"]),
                  tmp_path / "curve")
    alone = run(compose_quiet_run(tmp_path / "alone", [*common, "callbacks=none"]), tmp_path / "alone")
    assert (tmp_path / "curve" / "curves.csv").read_text().count("\n") == 4  # header, steps 10, 18, 30
    assert torch.equal(_weights(watched.model), _weights(alone.model))
    curve = Run(tmp_path / "curve", "vae", "digits", 0, "ok")
    floor = [v for _, _, v in curve.quality_curve("real_fd_digits_cnn")]
    net = load_feature_net(tmp_path / "nets" / "digits_cnn.pt", torch.device("cpu"))
    reference, held_out = (net.extract(watched.dm.split_tensor(s))[0] for s in ("train", "test"))
    fifty = net.extract(reference_images(watched.dm.split_tensor("test"), 50))[0]  # of the 359 test images
    expected = frechet_distance(*feature_statistics(reference), *feature_statistics(fifty))
    assert floor == [pytest.approx(expected)] * 3
    # Measured: 6.0 times the floor of all 359 (this untrained net): the size is the point of the floor.
    assert expected > 1.5 * frechet_distance(*feature_statistics(reference), *feature_statistics(held_out))
    # More samples than the held-out split holds: no floor at that size, so none at all.
    scorer = QualityCurve(str(tmp_path / "big"), image_samples=400, feature_net_dir=str(tmp_path / "nets"))
    scorer = scorer._make_scorer(watched.dm, watched.model)
    assert set(scorer(watched.model.eval())) == {"fd_digits_cnn"}


def test_an_image_curve_draws_no_more_per_point_than_the_evaluation_stage(tmp_path):
    """A 200-step diffusion run on MNIST with eval.num_samples=500 spent 5 x 408 s on its curve's 2,000
    images per point: 20 times its evaluation's sampling, which the user had made cheap."""
    torch.manual_seed(0)
    net = SmallCNN(in_channels=1, image_size=8, num_classes=10)
    save_feature_net(net, tmp_path / "nets" / "digits_cnn.pt", {"dataset": "digits", "test_accuracy": 0.1})
    cfg = compose_train(["model=vae", "dataset=digits", f"eval.feature_net_dir={tmp_path / 'nets'}",
                         f"paths.output_dir={tmp_path}", "eval.num_samples=40"])
    curve = hydra.utils.instantiate(cfg.callbacks.quality_curve)
    dm = hydra.utils.instantiate(cfg.dataset, _convert_="all")
    model = hydra.utils.instantiate(cfg.model, data_shape=dm.data_shape, num_classes=dm.num_classes,
                                    _convert_="all")
    calls = []
    sample = model.sample
    model.sample = lambda n, *args, **kwargs: calls.append(n) or sample(n, *args, **kwargs)
    floor = curve._make_scorer(dm, model)(model.eval())["real_fd_digits_cnn"]
    assert sum(calls) == 40
    loaded = load_feature_net(tmp_path / "nets" / "digits_cnn.pt", torch.device("cpu"))
    reference = loaded.extract(dm.split_tensor("train"))[0]
    forty = loaded.extract(reference_images(dm.split_tensor("test"), 40))[0]
    expected = frechet_distance(*feature_statistics(reference), *feature_statistics(forty))
    assert floor == pytest.approx(expected)
    default = compose_train(["dataset=digits", f"paths.output_dir={tmp_path}"]).callbacks.quality_curve
    assert hydra.utils.instantiate(default).image_samples == 2000  # under eval.num_samples: 10,000


def test_an_image_curve_whose_reference_holds_one_image_is_left_out_not_the_run(tmp_path, caplog):
    """dataset.val_fraction=0.0005 eval.reference_split=val: a reference of 1 image failed the run in
    training (its covariance went to linalg.eigh), which the matrix counts against the family."""
    torch.manual_seed(0)
    net = SmallCNN(in_channels=1, image_size=8, num_classes=10)
    save_feature_net(net, tmp_path / "nets" / "digits_cnn.pt", {"dataset": "digits", "test_accuracy": 0.1})
    cfg = compose_train(["model=vae", "dataset=digits", f"eval.feature_net_dir={tmp_path / 'nets'}",
                         f"paths.output_dir={tmp_path}", "eval.reference_split=val", "eval.num_samples=40"])
    model = hydra.utils.instantiate(cfg.model, data_shape=(1, 8, 8), num_classes=10, _convert_="all")
    for fraction, images in ((0.0005, 1), (0.002, 4)):
        curve = hydra.utils.instantiate(cfg.callbacks.quality_curve)
        dm = hydra.utils.instantiate(cfg.dataset, val_fraction=fraction, _convert_="all")
        dm.setup()
        assert len(dm.split_tensor("val")) == images
        scorer = curve._make_scorer(dm, model)
        if images == 1:
            assert scorer is None
            assert "the val split, holds 1 images and a Fréchet distance needs 2" in caplog.text
        else:
            assert math.isfinite(scorer(model.eval())["fd_digits_cnn"])


def test_the_real_data_floor_of_the_mode_metrics_is_what_the_mixture_gives(tmp_path):
    grid = GaussianGrid()
    test = grid.sample(2000, torch.Generator().manual_seed(1))[0]
    real = real_toy_metrics(grid, test, 2000, 2500, 20, seed=0, out_dir=tmp_path)
    assert real["real_mode_coverage"] == 1.0 and real["real_modes_covered_thresholded"] == 25
    # A sample of N(mode, std^2 I) lies within 3 std with probability 1 - exp(-9/2) = 0.9889.
    assert real["real_high_quality_fraction"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)
    # Finite samples keep the distance above 0 (the V-statistic's bias is of order E|X-X'| / n).
    assert 0 < real["real_energy_distance_test"] < 0.03 and real["real_precision_data_space"] > 0.9
    assert (tmp_path / "real_samples.png").stat().st_size > 1000


def test_held_out_images_come_from_a_split_the_reference_does_not_use():
    dm = hydra.utils.instantiate(compose_train(["dataset=digits"]).dataset, _convert_="all")
    dm.setup()
    assert held_out_split(dm, "train") == "test"
    assert held_out_split(dm, "test") == "val"


class _EchoLabels:
    """Stands in for a conditional model: each sample is an image filled with its label."""

    device = torch.device("cpu")

    def sample(self, n: int, labels: torch.Tensor) -> torch.Tensor:
        return labels.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).to(torch.uint8)


def test_a_conditional_model_s_picture_has_one_class_per_row():
    images, per_row = class_rows(_EchoLabels(), 10, 64)
    assert per_row == 6 and images.shape == (60, 1, 2, 2)
    assert torch.equal(images[:, 0, 0, 0].view(10, 6), torch.arange(10).view(10, 1).expand(10, 6).byte())
