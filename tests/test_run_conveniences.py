"""What a user sees around a run: the debug configs, the training progress over the whole budget, the
config tree and the run directory at start, and eval.py as an alias of train.py train=false."""

import logging
import math
import re
import warnings
from types import SimpleNamespace

import pytest
from pytorch_lightning.callbacks import ModelCheckpoint

from genbench import progress as progress_module
from genbench.extras import quiet_known_noise
from genbench.progress import StepProgress
from genbench.train import run
from tests.helpers import compose_train, train_py

DEBUG_TRAINER = {
    "default": {"limit_train_batches": 5, "max_epochs": 1},
    "fdr": {"fast_dev_run": True},
    "overfit": {"overfit_batches": 3},
    "profiler": {"profiler": "simple"},
}
SHORT = {"default": [], "fdr": [], "overfit": ["trainer.max_steps=10"], "profiler": ["trainer.max_steps=5"]}


@pytest.mark.parametrize("option", sorted(DEBUG_TRAINER))
def test_debug_configs_set_their_trainer_options_and_run(option, tmp_path):
    cfg = compose_train([f"debug={option}", f"paths.output_dir={tmp_path}", *SHORT[option]])
    for key, value in DEBUG_TRAINER[option].items():
        assert cfg.trainer[key] == value, key
    assert cfg.logger is None or not cfg.logger  # debug runs write no logger files
    result = run(cfg, tmp_path)
    assert result.metrics["train_steps"] >= 1 and result.metrics["nfe"] == 1
    assert (tmp_path / "samples.png").exists()


def _trainer(max_steps: int, max_epochs: int | None, batches: float) -> SimpleNamespace:
    return SimpleNamespace(max_steps=max_steps, max_epochs=max_epochs, num_training_batches=batches)


def test_lightnings_own_lines_and_the_profilers_report_reach_the_runs_log_once(tmp_path):
    """debug=profiler printed its report to the console alone: the run's train.log held none of
    Lightning's lines (the report, why fit stopped), which Lightning's own console handler kept from it."""
    done = train_py(["debug=profiler", "trainer.max_steps=5", "evaluate=false",
                     f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert done.returncode == 0, done.stderr
    log_file = (tmp_path / "run" / "train.log").read_text()
    assert "FIT Profiler Report" in log_file and "`Trainer.fit` stopped: `max_steps=5` reached" in log_file
    console = done.stdout + done.stderr
    assert console.count("FIT Profiler Report") == 1 and console.count("`Trainer.fit` stopped") == 1


def test_step_progress_total_is_the_first_budget_to_bind():
    bar = StepProgress(bar=False)
    assert bar.total(_trainer(2000, None, 79)) == 2000  # the default: max_steps only
    assert bar.total(_trainer(2000, 1, 5)) == 5  # trainer=debug: one epoch of 5 batches
    assert bar.total(_trainer(-1, 3, 10)) == 30
    assert bar.total(_trainer(-1, None, float("inf"))) is None
    bar._steps_per_batch = 2  # a GAN: two optimizer steps per batch
    assert bar.total(_trainer(2000, 1, 5)) == 10 and bar.total(_trainer(2000, None, 5)) == 2000


@pytest.mark.parametrize(("family", "steps"), [("vae", 20), ("gan", 20)])
def test_training_progress_reports_the_whole_budget_with_an_eta(family, steps, tmp_path, caplog):
    cfg = compose_train([f"model={family}", "debug=default", "trainer.limit_train_batches=1.0",
                         "trainer.max_epochs=null", f"trainer.max_steps={steps}", "evaluate=false",
                         f"paths.output_dir={tmp_path}"])
    with caplog.at_level(logging.INFO, logger="genbench"):
        run(cfg, tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.name == "genbench"]
    progress = [re.match(rf"training: step (\d+)/{steps} \(\d+%\), .* elapsed, ETA \d+:\d\d:\d\d", m)
                for m in lines]
    reached = [int(m.group(1)) for m in progress if m]
    # A line every tenth of the budget (a GAN moves two steps a batch), up to the last step.
    assert len(reached) >= 5 and reached == sorted(reached) and reached[-1] == steps, lines
    # The loss beside it, which a run without a logger (debug=overfit) showed nowhere else
    losses = [float(m.group(1)) for line in lines if (m := re.search(r"; last logged loss (\S+)$", line))]
    assert len(losses) >= 5 and all(math.isfinite(loss) for loss in losses), lines
    assert re.search(rf"training: {steps} steps in \S+ s; last logged loss \S+", " ".join(lines))


def test_a_resumed_runs_last_line_counts_the_steps_it_trained_in_its_time(monkeypatch, caplog):
    """Resumed at step 148 of 300, a run said "training: 300 steps in 1.8 s" of the 152 it trained then."""
    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: clock[0])
    trainer = SimpleNamespace(is_global_zero=True, global_step=148, max_steps=300, max_epochs=None,
                              num_training_batches=float("inf"), callback_metrics={"train/loss": 1.777})
    bar = StepProgress(bar=False)
    with caplog.at_level(logging.INFO, logger="genbench"):
        bar.on_train_start(trainer, None)
        clock[0], trainer.global_step = 1.8, 300
        bar.on_train_end(trainer, None)
    assert caplog.records[-1].getMessage() == ("training: 152 steps (steps 149 to 300: resumed) in 1.8 s; "
                                               "last logged loss 1.777")


def test_a_resumed_runs_checkpoint_callback_does_not_warn_of_its_new_directory(tmp_path):
    """Lightning warned on every resumed run that the checkpoints' directory had changed: genbench resumes
    into a run directory of its own by design, and nothing reads what Lightning does not reload."""
    state = ModelCheckpoint(dirpath=tmp_path / "first").state_dict()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_noise()
        ModelCheckpoint(dirpath=tmp_path / "resumed").load_state_dict(state)
        warnings.warn("a warning of anything else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning of anything else"]


def test_a_long_loop_logs_its_progress_with_an_eta_and_a_short_one_only_its_end(monkeypatch, caplog):
    """Twenty items of 10 s each: a line at each tenth that ends 30 s or more after the last line, but the
    last tenth, which the line that says it is done ends."""
    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: clock[0])

    def items(n: int, seconds: float):
        for i in range(n):
            clock[0] += seconds
            yield i

    with caplog.at_level(logging.INFO, logger="genbench"):
        assert list(progress_module.progress(items(20, 10.0), "scoring", total=20, announce=True)) == list(
            range(20))
    lines = [r.getMessage() for r in caplog.records if r.name == "genbench"]
    assert lines == ["scoring ...", "scoring: 4/20 (20%), 0:00:40 elapsed, ETA 0:02:40",
                     "scoring: 8/20 (40%), 0:01:20 elapsed, ETA 0:02:00",
                     "scoring: 12/20 (60%), 0:02:00 elapsed, ETA 0:01:20",
                     "scoring: 16/20 (80%), 0:02:40 elapsed, ETA 0:00:40", "scoring: done in 200.0 s"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="genbench"):
        list(progress_module.progress(items(20, 0.1), "quick", total=20))
    assert [r.getMessage() for r in caplog.records if r.name == "genbench"] == ["quick: done in 2.0 s"]


def test_the_likelihood_pass_shows_its_progress(monkeypatch, tmp_path, caplog):
    """A flow-matching model's likelihood of MNIST's 2,000 held-out test images ran for minutes with only
    its start line."""
    monkeypatch.setattr(progress_module, "ALIVE_SECONDS", 0.0)
    cfg = compose_train(["model=vae", "dataset=digits", "trainer.max_steps=2", "logger=none",
                         "callbacks=none", "eval.speed_repeats=1", "eval.feature_net=false",
                         "eval.inception=false", "eval.num_samples=16", f"paths.output_dir={tmp_path}"])
    with caplog.at_level(logging.INFO, logger="genbench"):
        run(cfg, tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.name == "genbench"]
    passes = [m for m in lines if m.startswith("evaluation: likelihood of the test split: ")]
    # digits' 359 test images in batches of 128: a line after each of the first 2 of 3
    batches = len([m for m in passes if re.search(r": \d+/3 \(\d+%\), .* ETA ", m)])
    assert ("evaluation: likelihood of the test split ..." in lines and batches == 2
            and passes[-1].startswith("evaluation: likelihood of the test split: done in ")), lines


def test_the_training_eta_adds_the_quality_curves_points_ahead_to_the_trainings_own_rate(monkeypatch,
                                                                                          caplog):
    """Steps of 0.5 s and points of 100 s at steps 25, 44, 79, 141 and 200 (the diffusion run on MNIST):
    at step 80 the elapsed time's rate gave 8:30 for the 120 steps and 2 points left, which take 4:20."""
    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: clock[0])
    points = [25, 44, 79, 141, 200]

    def watching() -> tuple[float, float, int]:  # what QualityCurve.time_spent_and_to_come says
        done = [p for p in points if p <= trainer.global_step]
        ahead = len(points) - len(done)
        return 100.0 * len(done), 100.0 * ahead if done else 0.0, 0 if done else ahead

    trainer = SimpleNamespace(is_global_zero=True, global_step=0, max_steps=200, max_epochs=None,
                              num_training_batches=float("inf"), callback_metrics={})  # no loss logged
    bar = StepProgress(bar=False, watching=watching)
    with caplog.at_level(logging.INFO, logger="genbench"):
        bar.on_train_start(trainer, None)
        for step in range(1, 81):
            clock[0] += 0.5 + (100.0 if step in points else 0.0)
            trainer.global_step = step
            bar.on_train_batch_end(trainer, None, None, None, step - 1)
    lines = [r.getMessage() for r in caplog.records if r.name == "genbench"]
    assert lines[-1] == ("training: step 80/200 (40%), 0:05:40 elapsed (0:05:00 of it the quality curve's), "
                         "ETA 0:04:20")
    # at step 20, before the first point: 90 s of training ahead, and the points' cost not known yet
    assert lines[1] == ("training: step 20/200 (10%), 0:00:10 elapsed, ETA 0:01:30 + the quality curve's 5 "
                        "points ahead, untimed")
