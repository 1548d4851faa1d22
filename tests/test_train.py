"""End to end: train.py trains, evaluates and writes a valid record; failures are recorded, not lost."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from genbench.extras import announce
from genbench.results import SCHEMA_VERSION, read_record
from genbench.train import run
from tests.helpers import (
    DATASETS,
    FAMILIES,
    FILE_DATASETS,
    compose_quiet_run,
    compose_train,
    run_script,
    train_py,
)

REQUIRED_METRICS = ("nll_nats", "nll_bpd", "nll_nats_se", "nll_bpd_median", "likelihood_kind",
                    "nll_iwae_nats", "nll_iwae_nats_se", "sample_ms_per_sample", "sample_batch_size", "nfe",
                    "num_parameters", "train_seconds")


# Small evaluation settings: the smoke test checks the wiring, not the numbers.
SMOKE_EVAL = ["eval.speed_batch_size=4", "eval.speed_repeats=1", "eval.speed_warmup=0",
              "eval.plot_samples_image=4", "eval.plot_samples_vector=200", "eval.mode_samples=200",
              "eval.num_samples=16", "eval.num_real=32", "eval.inception=false", "eval.score_splits=2",
              "eval.kid_subsets=2"]
# The same for a family's own evaluation options, its sampler's and likelihood's steps (the same code at
# fewer steps): flow matching's 32 RK4 steps of Hutchinson divergences took 20-50 s of each image dataset's
# smoke run here, and the samplers' 100 steps half of diffusion's 4-10 s.
SMOKE_MODEL = {"flow_matching": ["model.likelihood_steps=2", "model.sampling_steps=4"],
               "diffusion": ["model.sampling_steps=4"], "ebm": ["model.sample_steps=4"]}


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("family", FAMILIES)
def test_debug_run_of_every_family_on_every_dataset(family, dataset, tmp_path, fake_image_root):
    overrides = [f"model={family}", f"dataset={dataset}", "trainer=debug", "logger=none",
                 f"paths.output_dir={tmp_path}", f"paths.root_dir={tmp_path}", *SMOKE_EVAL,
                 *SMOKE_MODEL.get(family, [])]
    if dataset in FILE_DATASETS:
        overrides.append(f"dataset.root={fake_image_root}")
    result = run(compose_train(overrides), tmp_path)
    metrics, model, dm = result.metrics, result.model, result.dm
    assert model.family == family and dm.name == dataset
    assert metrics["nfe"] >= 1 and metrics["sample_ms_per_sample"] > 0 and metrics["num_parameters"] > 0
    assert metrics["train_steps"] >= 1  # debug: at most 5 batches (a GAN counts 2 optimizer steps each)
    if metrics["likelihood_kind"] != "none":
        assert math.isfinite(metrics["nll_nats"]) and math.isfinite(metrics["nll_bpd"])
    if not dm.is_image:
        assert math.isfinite(metrics["energy_distance_test"]) and math.isfinite(metrics["fd_data_space"])
    samples = model.sample(3)
    assert samples.shape == (3, *dm.data_shape)
    assert samples.dtype == (torch.uint8 if dm.is_image else torch.float32)
    assert (tmp_path / "samples.png").stat().st_size > 1000


def test_train_py_debug_subprocess_writes_a_valid_metrics_json(tmp_path):
    run_dir = tmp_path / "run"
    proc = train_py(["trainer=debug", f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_record(run_dir / "metrics.json")
    assert record["schema"] == SCHEMA_VERSION and record["status"] == "ok"
    assert (record["family"], record["dataset"], record["seed"]) == ("vae", "moons", 0)
    for key in REQUIRED_METRICS:
        assert key in record["metrics"], key
    prov = record["provenance"]
    assert prov["config"]["model"]["latent_dim"] == 8 and prov["versions"]["torch"]
    assert "git_commit" in prov
    assert (run_dir / "samples.png").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "csv" / "metrics.csv").exists()
    output = proc.stdout + proc.stderr
    assert "bits/dim" in output
    # At start: where the run writes and the composed config; none of the noise every run used to print.
    assert f"run directory: {run_dir}" in output and "CONFIG" in output and "latent_dim: 8" in output
    assert (run_dir / "config_tree.log").exists()
    assert "Tip" not in output and "LeafSpec" not in output, output[-3000:]

    # Re-evaluating the saved checkpoint (loaded with weights_only) with eval.py, the alias of
    # train.py train=false, reproduces the likelihood.
    eval_dir = tmp_path / "eval"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    args = ["trainer=debug", f"ckpt_path={ckpt}", f"hydra.run.dir={eval_dir}"]
    proc = run_script("eval.py", args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = read_record(eval_dir / "metrics.json")["metrics"]
    assert again["nll_nats"] == pytest.approx(record["metrics"]["nll_nats"], rel=1e-6)
    # It trained nothing: its training totals are the checkpoint's (seconds: up to the checkpoint's writing).
    assert again["train_steps"] == record["metrics"]["train_steps"]
    assert 0 < again["train_seconds"] <= record["metrics"]["train_seconds"]
    assert "train_device" not in again and "train_precision" not in again


def test_bad_value_exits_nonzero_naming_the_key_and_records_the_failure(tmp_path):
    run_dir = tmp_path / "run"
    proc = train_py(["trainer=debug", "model.latent_dim=0", f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode != 0
    assert "model.latent_dim" in proc.stdout + proc.stderr
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and "model.latent_dim" in record["error"]


def test_a_failure_records_the_stage_it_happened_in(tmp_path, monkeypatch):
    """The matrix counts only crashes in training against a family's stability: the record says where."""
    from genbench.models.vae import VAE
    from genbench.train import task

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    def failed_in(name: str, overrides: list[str]) -> str:
        out = tmp_path / name
        with pytest.raises((SystemExit, RuntimeError)):
            task(compose_train(["trainer=debug", "logger=none", f"paths.output_dir={out}", *overrides]))
        record = read_record(out / "metrics.json")
        assert record["status"] == "failed"
        return record["provenance"]["failed_in"]

    assert failed_in("config", ["model.latent_dim=0"]) == "setup"
    # Lightning reads the data inside Trainer.fit: a missing file is still setup, not the family's training
    assert failed_in("data", ["dataset=cifar10", f"dataset.root={tmp_path / 'empty'}"]) == "setup"
    with monkeypatch.context() as patch:
        patch.setattr("genbench.train.evaluate", boom)  # the evaluation stage, after training finished
        assert failed_in("evaluation", []) == "evaluation"
        finished = read_record(tmp_path / "evaluation" / "metrics.json")["metrics"]  # kept, not lost
        assert finished["train_steps"] == 5 and finished["train_examples"] == 5 * 256
        assert finished["train_flops"] > 0 and "nll_bpd" not in finished
    with monkeypatch.context() as patch:
        patch.setattr("genbench.train.training_flops", boom)  # the training's bookkeeping after fit
        assert failed_in("bookkeeping", []) == "training"
        last = tmp_path / "evaluation" / "checkpoints" / "last.ckpt"  # trained to its budget already
        assert failed_in("resumed", [f"ckpt_path={last}"]) == "training"  # fit had nothing left to do
        # It wrote no checkpoint of its own: its record names the one it resumed from, to resume again.
        assert read_record(tmp_path / "resumed" / "metrics.json")["checkpoint"] == str(last)
    monkeypatch.setattr(VAE, "training_step", boom)
    assert failed_in("training", []) == "training"


def test_nan_loss_is_recorded_as_diverged_with_the_fix(tmp_path, monkeypatch):
    from genbench.models.vae import VAE
    from genbench.train import task

    def nan_elbo(self, x, labels=None, beta=1.0):
        return self.encode(x)[0].sum(1) * float("nan")

    monkeypatch.setattr(VAE, "elbo", nan_elbo)
    cfg = compose_train(["trainer=debug", "logger=none", f"paths.output_dir={tmp_path}"])
    with pytest.raises(SystemExit):
        task(cfg)
    record = read_record(tmp_path / "metrics.json")
    assert record["status"] == "diverged"
    assert "nan" in record["error"] and "model.optimizer.lr" in record["error"]


def test_a_nan_just_before_a_checkpoint_never_replaces_the_good_one(tmp_path, monkeypatch):
    """The loss turns NaN on the last batch of epoch 2 (step 5), just before its checkpoint: the write
    stops, so epoch 1's checkpoint (step 3) stays, finite, and the record names the step the log shows.
    Measured before: both checkpoints of that epoch held NaN weights, and the good one was deleted."""
    from genbench.models.vae import VAE
    from genbench.train import task

    elbo = VAE.elbo

    def nan_at_step_5(self, x, labels=None, beta=1.0):
        value = elbo(self, x, labels, beta)
        return value * float("nan") if self.trainer.global_step == 5 else value

    monkeypatch.setattr(VAE, "elbo", nan_at_step_5)
    cfg = compose_train(["trainer=debug", "trainer.max_epochs=3", "trainer.limit_train_batches=3",
                         "logger=none", f"paths.output_dir={tmp_path}"])
    with pytest.raises(SystemExit):
        task(cfg)
    record = read_record(tmp_path / "metrics.json")
    assert record["status"] == "diverged" and "at step 5 (epoch 1)" in record["error"]
    kept = ["epoch=0-step=3.ckpt", "last.ckpt"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == kept
    for name in kept:
        ckpt = torch.load(tmp_path / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert ckpt["global_step"] == 3 and all(v.isfinite().all() for v in ckpt["state_dict"].values())


def test_a_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    from genbench.models.vae import VAE

    first, second = tmp_path / "first", tmp_path / "second"
    base = ["trainer=debug", "logger=none", "eval.speed_repeats=1"]
    run(compose_train([*base, f"paths.output_dir={first}"]), first)  # stops after one 5-step epoch
    ckpt = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    first_seconds = ckpt["callbacks"]["ExampleCounter"]["train_seconds"]  # up to its checkpoint
    assert first_seconds > 0 and ckpt["callbacks"]["ExampleCounter"]["examples_all_processes"] == 5 * 256
    executed = []
    original_step = VAE.training_step
    monkeypatch.setattr(VAE, "training_step", lambda self, *a: executed.append(1) or original_step(self, *a))
    resumed = [*base, "trainer.max_epochs=null", "trainer.max_steps=12",
               f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}", f"paths.output_dir={second}"]
    result = run(compose_train(resumed), second)
    metrics = result.metrics
    # Resumed at step 5, it runs only the 7 steps left of the budget of 12; from scratch it would run 12.
    assert metrics["train_steps"] == 12 and len(executed) == 7
    # Cost counts the model's whole training: the 5 batches of the first run and the 7 of this one (toy
    # batches of 256), and the first run's seconds up to its checkpoint plus this run's.
    assert metrics["train_examples"] == 12 * 256
    assert metrics["train_seconds"] > first_seconds
    assert metrics["train_examples_per_second"] == pytest.approx(12 * 256 / metrics["train_seconds"])
    assert metrics["train_flops"] == pytest.approx(metrics["train_flops_per_example"] * 12 * 256)
    # The same weights as the run that was never interrupted: the random stream (data order, noise) goes on
    # from the checkpoint. Measured without it: 0.007 apart at most; with it, 0.
    whole = run(compose_train([*resumed[:-2], "evaluate=false", f"paths.output_dir={tmp_path / 'whole'}"]),
                tmp_path / "whole")
    apart = max((a - b).abs().max().item() for a, b in zip(result.model.state_dict().values(),
                                                           whole.model.state_dict().values(), strict=True))
    assert apart < 1e-6, apart
    assert metrics["peak_memory_kind"] == "process_max_rss" and metrics["peak_memory_mb"] > 50
    assert metrics["train_peak_memory_kind"] == "process_max_rss"
    assert 50 < metrics["train_peak_memory_mb"] <= metrics["peak_memory_mb"]  # evaluation came after
    # Resumed at its budget (nothing left to train): the same totals, FLOPs included (from the checkpoint).
    done = [*base, "trainer.max_epochs=null", "trainer.max_steps=12", "evaluate=false",
            f"ckpt_path={second / 'checkpoints' / 'last.ckpt'}", f"paths.output_dir={tmp_path / 'third'}"]
    executed.clear()
    again = run(compose_train(done), tmp_path / "third").metrics
    assert not executed and again["train_examples"] == 12 * 256
    assert again["train_flops"] == metrics["train_flops"]
    # The checkpoint holds the seconds at its writing, the record those at the training's end: the writing
    # itself lies between (0.4 ms more than this run's own no-op fit, once in 3 suite runs: was >=).
    assert again["train_seconds"] == pytest.approx(metrics["train_seconds"], abs=0.1)
    # A checkpoint from before examples were counted over all processes: read as one process's count.
    ckpt["callbacks"]["ExampleCounter"] = {"examples": 5 * 256, "train_seconds": first_seconds}
    torch.save(ckpt, tmp_path / "old.ckpt")
    old = [*resumed[:-2], f"ckpt_path={tmp_path / 'old.ckpt'}", "evaluate=false",
           f"paths.output_dir={tmp_path / 'fourth'}"]
    assert run(compose_train(old), tmp_path / "fourth").metrics["train_examples"] == 12 * 256
    at_its_end = [*base, f"ckpt_path={tmp_path / 'old.ckpt'}", "evaluate=false",
                  f"paths.output_dir={tmp_path / 'fifth'}"]  # nothing left to train: it said 0 examples
    assert run(compose_train(at_its_end), tmp_path / "fifth").metrics["train_examples"] == 5 * 256


def test_examples_count_every_process_and_carry_over_a_resume_with_another_number_of_them():
    """Trained on 2 DDP processes for 10 batches of 128 each, resumed on 1 for 4: 2,560 + 512 examples
    (the counter once stored one process's count and multiplied by the processes of the resumed run)."""
    from types import SimpleNamespace

    from genbench.evaluation.cost import ExampleCounter

    batch = (torch.zeros(128, 2),)
    ddp, counter = SimpleNamespace(world_size=2), ExampleCounter()
    for i in range(10):
        counter.on_train_batch_end(ddp, None, None, batch, i)
    resumed = ExampleCounter()
    resumed.load_state_dict(counter.state_dict())
    single = SimpleNamespace(world_size=1)
    resumed.on_train_start(single, None)
    for i in range(4):
        resumed.on_train_batch_end(single, None, None, batch, i)
    assert counter.examples == 2560 and resumed.examples == 2560 + 512


def test_torch_threads_apply_to_the_run_and_its_ddp_processes_and_are_put_back(tmp_path, monkeypatch):
    """Lightning's DDP launcher sets its own thread count unless OMP_NUM_THREADS is set; a sweep's next
    job in this process must not inherit this run's count."""
    import os

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    seen = []
    monkeypatch.setattr("genbench.train._run", lambda *a: seen.append(
        (torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"))))
    run(compose_train(["trainer=debug", "logger=none", f"torch_threads={before + 1}",
                       f"paths.output_dir={tmp_path}"]), tmp_path)
    assert seen == [(before + 1, str(before + 1))]
    assert torch.get_num_threads() == before and "OMP_NUM_THREADS" not in os.environ


@pytest.mark.parametrize("family, steps", [("gan", 4), ("vae", 5)])
def test_a_family_trains_for_its_budget_and_records_it(family, steps, tmp_path):
    """budget_steps.<family> replaces trainer.max_steps for that family alone, and the record says so."""
    from genbench.train import task

    cfg = compose_train([f"model={family}", "trainer=debug", "trainer.max_steps=5", "budget_steps={gan: 4}",
                         "logger=none", "evaluate=false", f"paths.output_dir={tmp_path}"])
    task(cfg)
    record = read_record(tmp_path / "metrics.json")
    assert record["status"] == "ok"
    assert record["metrics"]["train_steps"] == steps  # optimizer steps (a GAN's D and G steps both count)
    assert record["provenance"]["config"]["trainer"]["max_steps"] == steps


@pytest.mark.parametrize(("epochs", "what"), [("null", "unset (Lightning would take 1,000 epochs)"),
                                              ("-1", "-1 (no end)")])
def test_a_training_that_nothing_bounds_is_a_recorded_config_error(epochs, what, tmp_path):
    """trainer.max_steps=-1 with max_epochs unset trained Lightning's silent default of 1,000 epochs; a
    family's budget_steps makes the same options fine."""
    from genbench.train import task

    common = ["trainer.max_steps=-1", f"trainer.max_epochs={epochs}", "logger=none", "callbacks=none",
              "evaluate=false"]
    with pytest.raises(SystemExit):
        task(compose_train([*common, f"paths.output_dir={tmp_path / 'unbounded'}"]))
    record = read_record(tmp_path / "unbounded" / "metrics.json")
    assert record["status"] == "failed" and record["provenance"]["failed_in"] == "setup"
    assert record["error"] == (f"ConfigError: trainer.max_steps=-1 trains until trainer.max_epochs, which "
                               f"is {what}: give trainer.max_steps=<optimizer steps> or "
                               "trainer.max_epochs=<epochs>")
    task(compose_train([*common, "budget_steps={vae: 3}", f"paths.output_dir={tmp_path / 'budget'}"]))
    record = read_record(tmp_path / "budget" / "metrics.json")
    assert record["status"] == "ok" and record["metrics"]["train_steps"] == 3


def test_a_budget_for_no_family_is_a_recorded_config_error(tmp_path):
    from genbench.train import task

    cfg = compose_train(["trainer=debug", "budget_steps={difusion: 8000}", "logger=none",
                         f"paths.output_dir={tmp_path}"])
    with pytest.raises(SystemExit):
        task(cfg)
    record = read_record(tmp_path / "metrics.json")
    assert record["status"] == "failed" and "budget_steps names ['difusion']" in record["error"]


@pytest.mark.parametrize(("trainer", "named"), [
    pytest.param(["trainer=gpu"], "trainer.accelerator=gpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has a GPU")),
    (["trainer=ddp", "trainer.strategy=ddp_nonsense"], "trainer.strategy=ddp_nonsense")])
def test_a_trainer_lightning_refuses_here_is_a_recorded_config_error_naming_the_fix(tmp_path, trainer, named):
    """trainer=gpu on a laptop ended in Hydra's InstantiationException around Lightning's "No supported gpu
    backend found!", which names neither the option nor what to use instead."""
    from genbench.train import task

    with pytest.raises(SystemExit):
        task(compose_train([*trainer, "logger=none", f"paths.output_dir={tmp_path}"]))
    record = read_record(tmp_path / "metrics.json")
    assert record["status"] == "failed" and record["provenance"]["failed_in"] == "setup"
    assert record["error"].startswith("ConfigError: Lightning refuses trainer.accelerator=")
    assert named in record["error"]
    assert "use trainer=default (the accelerator there is), trainer=cpu" in record["error"]


def test_the_validation_likelihood_is_the_val_splits_and_changes_no_other_number(tmp_path):
    """eval.val_likelihood=true adds val_nll_* of the validation split (what hparams_search=vae_optuna
    selects on: it selected on the test NLL it then reported) and leaves every other number as it was."""
    from genbench.evaluation.likelihood import test_likelihood

    common = ["trainer=debug", "eval.speed_repeats=1", "eval.speed_warmup=0", "eval.plot_samples_vector=200",
              "dataset.n_val=300"]
    plain = run(compose_quiet_run(tmp_path / "plain", common), tmp_path / "plain")
    scored = run(compose_quiet_run(tmp_path / "val", [*common, "eval.val_likelihood=true"]), tmp_path / "val")
    unrepeatable = ("sample_ms", "peak_memory", "train_peak_memory", "train_seconds",
                    "train_examples_per_second")
    measured = {k: v for k, v in plain.metrics.items() if not k.startswith(unrepeatable)}
    assert measured == {k: scored.metrics[k] for k in measured}
    torch.manual_seed(0)  # the evaluation's seed
    expected = test_likelihood(scored.model, scored.dm.val_dataloader())
    val = {k.removeprefix("val_"): v for k, v in scored.metrics.items() if k.startswith("val_")}
    assert val.pop("examples") == expected.pop("test_examples") == 300
    assert val == {k: v for k, v in expected.items() if k.startswith("nll_")}
    assert val["nll_bpd"] != plain.metrics["nll_bpd"]  # the test split's: 5,000 other points


@pytest.mark.parametrize("overrides, message", [
    (["eval.val_likelihood=true", "dataset.n_val=0"],
     "eval.val_likelihood=true, but dataset=moons holds no val examples (train 20000, val 0, test 5000): "
     "give it some (dataset.val_fraction, or dataset.n_val on 2D sets) or set eval.val_likelihood=false"),
    # 0.0002 of 1,797 images rounds to none: the run trained, then failed its evaluation with KeyError: 'nll'
    (["dataset=digits", "dataset.test_fraction=0.0002"],
     "the evaluation scores the test split, but dataset=digits holds no test examples (train 1617, val 180, "
     "test 0): give it some (dataset.test_fraction on digits, dataset.n_test on 2D sets, "
     "dataset.test_slice on files) or set evaluate=false"),
    (["dataset=digits", "dataset.val_fraction=0", "eval.reference_split=val"],
     "eval.reference_split=val is the image metrics' reference, but dataset=digits holds no val examples "
     "(train 1438, val 0, test 359): give it images or reference another split"),
])
def test_an_empty_split_the_run_needs_is_a_config_error_before_training(tmp_path, overrides, message):
    from genbench.train import task

    with pytest.raises(SystemExit):
        task(compose_quiet_run(tmp_path, ["trainer=debug", *overrides]))
    record = read_record(tmp_path / "metrics.json")
    assert record["status"] == "failed" and record["provenance"]["failed_in"] == "setup"
    assert record["error"] == f"ConfigError: {message}"
    assert "train_steps" not in record["metrics"] and not (tmp_path / "checkpoints").exists()


def test_evaluating_a_checkpoint_on_an_empty_test_split_is_a_config_error(tmp_path):
    from genbench.train import task

    common = ["trainer=debug", "dataset=digits", "model=vae"]
    task(compose_quiet_run(tmp_path / "trained", common))
    ckpt = tmp_path / "trained" / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit):
        task(compose_quiet_run(tmp_path / "eval", [*common, "train=false", f"ckpt_path={ckpt}",
                                                    "dataset.test_fraction=0.0002"]))
    record = read_record(tmp_path / "eval" / "metrics.json")
    assert record["status"] == "failed" and "holds no test examples" in record["error"]


def test_a_sweeps_objective_names_a_metric_the_record_lacks(caplog):
    """A misspelt optimized_metric made every trial of an Optuna search fail with no word of why."""
    from genbench.train import objective

    record = {"status": "ok", "metrics": {"val_nll_bpd": 1.5, "nll_bpd": 1.4, "val_nll_nats": 2.0}}
    assert objective(record, "val_nll_bpd") == 1.5 and not caplog.records
    assert objective(record, "val_nll_bdp") is None
    said = "optimized_metric=val_nll_bdp is not in this run's metrics.json (did you mean val_nll_bpd"
    assert said in caplog.text
    assert objective({**record, "status": "failed"}, "val_nll_bpd") is None


def test_validation_and_sample_pictures_do_not_change_the_training(tmp_path):
    """Diffusion's validation draws Monte Carlo timesteps and the pictures draw samples: on their own random
    stream, a run that validates every epoch and draws pictures trains to the same weights as one with
    neither, so how a run is watched never changes its numbers."""
    common = ["model=diffusion", "dataset=gaussians8", "dataset.n_train=1024", "trainer.max_steps=24",
              "evaluate=false"]  # 4 batches an epoch
    watched = run(compose_quiet_run(tmp_path / "watched", [*common, "callbacks.sample_grids.every_n_steps=5",
                                                           "callbacks.sample_grids.n_vector=50",
                                                           "callbacks.quality_curve.points_per_decade=0"]),
                  tmp_path / "watched")
    alone = run(compose_quiet_run(tmp_path / "alone", [*common, "callbacks=none",
                                                       "+trainer.limit_val_batches=0"]), tmp_path / "alone")
    assert len(list((tmp_path / "watched" / "samples").glob("*.png"))) == 4  # steps 5, 10, 15, 20
    assert watched.model.trainer.fit_loop.epoch_loop.val_loop.batch_progress.total.completed > 0
    for p, q in zip(watched.model.parameters(), alone.model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("family", ["flow", "autoregressive"])
def test_likelihood_families_log_their_training_loss_every_n_steps_with_its_bits_per_dim(family, tmp_path):
    """Training values reach the loggers on the steps they write (every ``trainer.log_every_n_steps``), and a
    family fitted by maximum likelihood logs its loss in bits per dimension too: loss / (D ln 2)."""
    cfg = compose_quiet_run(tmp_path, [f"model={family}", "dataset=digits", "logger=csv", "evaluate=false",
                                       "callbacks=none", "trainer.max_steps=9",
                                       "trainer.log_every_n_steps=3"])
    run(cfg, tmp_path)
    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == [2, 5, 8]
    for r in rows:
        assert float(r["train/bpd"]) == pytest.approx(float(r["train/loss"]) / (64 * math.log(2)), rel=1e-6)


def test_the_peak_memory_of_every_visible_gpu_starts_again_at_each_run(monkeypatch):
    """torch resets the current GPU's peak when given no device: a run that trains or evaluates on
    another (eval.device=cuda:1) reported the largest peak of the sweep's jobs before it there. Two GPUs
    are simulated: torch's functions are replaced, so what is checked is which devices are reset, and that
    nothing is reset before CUDA has started. torch refuses that ("Invalid device argument"): on the H100
    every GPU run failed there, before training (BENCHMARKS.md)."""
    from genbench.evaluation.cost import reset_peak_memory

    reset, started = [], {"cuda": False}

    def reset_like_torch(device=None):
        if not started["cuda"]:
            raise RuntimeError("Invalid device argument : did you call init?")
        reset.append(device)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: started["cuda"])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", reset_like_torch)
    reset_peak_memory()  # a run's start, before CUDA's first use: nothing allocated, nothing to reset
    assert reset == []
    started["cuda"] = True  # a later job of the same sweep
    reset_peak_memory()
    assert reset == [0, 1]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux's /proc resets the peak")
def test_each_run_reports_its_own_peak_memory_not_an_earlier_jobs_in_the_same_process():
    """A sweep's jobs share a process (Hydra's basic launcher): the peak must start again at each run.
    Measured before: a job after one with a 6.9 GB peak reported 6.9 GB; alone it peaked at 0.9 GB."""
    from genbench.evaluation.cost import peak_memory, reset_peak_memory

    cpu = torch.device("cpu")
    assert reset_peak_memory()
    before = peak_memory(cpu, True)["peak_memory_mb"]
    earlier_job = torch.ones(100 * 2**20)  # 400 MiB, touched
    del earlier_job
    assert peak_memory(cpu, True)["peak_memory_mb"] > before + 350
    assert reset_peak_memory()
    peak = peak_memory(cpu, True)
    assert peak["peak_memory_kind"] == "process_max_rss" and peak["peak_memory_mb"] < before + 50


def test_the_stage_a_run_is_in_is_known_outside_its_thread():
    """The watcher of a DDP run's processes records a run whose main thread is stuck: it names the stage
    the run was in as a failure there would be named (training only once it started)."""
    from genbench.stages import current_stage, stage

    started = {"yet": False}
    assert current_stage() == "setup"
    with stage("training", lambda: started["yet"]):
        assert current_stage() == "setup"  # Lightning still prepares the data and the model
        started["yet"] = True
        assert current_stage() == "training"
        with stage("evaluation"):
            assert current_stage() == "evaluation"
        assert current_stage() == "training"
    assert current_stage() == "setup"


@pytest.mark.parametrize(("value", "printed"), [("true", True), ("false", False), ("abc", False)])
def test_the_config_tree_is_printed_only_for_a_print_config_the_config_check_reads_as_true(
        tmp_path, capsys, value, printed):
    """``extras.print_config=abc`` printed the whole tree before the config check refused the value."""
    announce(OmegaConf.create({"model": {"latent_dim": 8}, "extras": {"print_config": value}}), tmp_path)
    assert ("CONFIG" in capsys.readouterr().out) == printed
    assert (tmp_path / "config_tree.log").exists() == printed
