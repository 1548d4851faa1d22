"""A sweep that stopped is finished in its own directory (``resume_sweep=true``): the jobs that ended as an
outcome of their family keep their records, the others run again, from their checkpoint where they left
one, and the matrix covers every job (genbench.sweeps)."""

import os
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from genbench import sweeps
from genbench.matrix.runs import find_runs, read_run
from genbench.results import provenance, read_record, write_record
from genbench.searched_keys import RefuseSearchesOfMissingKeys
from genbench.sweep_config import EARLIER_RECORD, resume_command
from genbench.sweeps import RefuseDirsWithRecords, ddp_processes_run_this_job, settle_earlier_attempt
from tests.helpers import CONFIG_DIR, in_a_hydra_run, train_py

QUICK = ["trainer=debug", "trainer.max_epochs=null", "trainer.max_steps=20", "callbacks=none",
         "eval.speed_repeats=1", "eval.speed_batch_size=8", "eval.plot_samples_vector=200"]


def test_a_sweep_stopped_by_ctrl_c_is_finished_in_its_directory_as_if_it_never_stopped(tmp_path):
    """Ctrl-C in the GAN's job (step 12 of 20; its checkpoint at step 10) ended the sweep with exit 130 and
    no matrix; the flow's job never ran. Run again, the sweep refused its directory (that refusal, naming
    resume_sweep=true, is tests/test_run_faults.py's); now, with resume_sweep=true, the VAE's record is
    kept as it was, the GAN goes on from its checkpoint to the weights and loss curve of a run that was never
    stopped, the flow runs, and the matrix holds all three."""
    sweep = tmp_path / "sweep"
    args = ["-m", "model=vae,gan,flow", *QUICK, "+callbacks.interrupt._target_=tests.faults.InterruptsOnce",
            f"+callbacks.interrupt.marker={tmp_path / 'fired'}", "+callbacks.interrupt.family=gan",
            f"hydra.sweep.dir={sweep}"]
    first = train_py(args, tmp_path)
    assert first.returncode == 130, first.stderr[-3000:]
    interrupted = read_record(sweep / "1" / "metrics.json")
    assert interrupted["status"] == "interrupted"
    command = "finish the sweep with: python train.py -m model=vae,gan,flow trainer=debug "
    assert command in interrupted["error"]
    assert interrupted["error"].endswith(f"hydra.sweep.dir={sweep} resume_sweep=true")
    assert not (sweep / "2").exists() and not (sweep / "matrix.md").exists()
    vae_record = (sweep / "0" / "metrics.json").read_bytes()

    again = train_py([*args, "resume_sweep=true"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (sweep / "0" / "metrics.json").read_bytes() == vae_record
    attempt = sweep / "1" / "attempt_1"
    assert read_record(attempt / EARLIER_RECORD)["status"] == "interrupted"
    gan = read_run(sweep / "1" / "metrics.json")
    assert gan.status == "ok" and gan.config["ckpt_path"] == str(attempt / "checkpoints" / "last.ckpt")
    found = find_runs([sweep])
    assert sorted((r.family, r.status) for r in found.runs) == [("flow", "ok"), ("gan", "ok"), ("vae", "ok")]
    assert not found.skipped and "| vae | gan | flow |" in (sweep / "matrix.md").read_text()

    straight = tmp_path / "straight"
    assert train_py(["model=gan", *QUICK, f"hydra.run.dir={straight}"], tmp_path).returncode == 0
    weights = [torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
               for d in (sweep / "1", straight)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert gan.loss_curve() == read_run(straight / "metrics.json").loss_curve()
    assert gan.metrics["train_steps"] == read_record(straight / "metrics.json")["metrics"]["train_steps"]


def test_a_stopped_optuna_search_finishes_with_the_trials_and_best_of_one_never_stopped(tmp_path):
    """The search's sampler is seeded and a kept trial gives back its recorded value, so the finished
    search asks for the same trials; it needs the sweep's saved config, which Hydra's Optuna sweeper did
    not write."""
    search = ["hparams_search=vae_optuna", "hydra.sweeper.n_trials=2", *QUICK, "logger=none"]
    stopped = [*search, "+callbacks.interrupt._target_=tests.faults.InterruptsOnce",
               f"+callbacks.interrupt.marker={tmp_path / 'fired'}", "+callbacks.interrupt.job=1",
               f"hydra.sweep.dir={tmp_path / 'stopped'}"]
    assert train_py(stopped, tmp_path).returncode == 130
    assert read_record(tmp_path / "stopped" / "1" / "metrics.json")["status"] == "interrupted"
    again = train_py([*stopped, "resume_sweep=true"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "job 0: kept the record" in again.stdout + again.stderr
    assert train_py([*search, f"hydra.sweep.dir={tmp_path / 'straight'}"], tmp_path).returncode == 0
    runs = {d: [read_record(tmp_path / d / str(k) / "metrics.json") for k in range(2)]
            for d in ("stopped", "straight")}
    for finished, straight in zip(runs["stopped"], runs["straight"], strict=True):
        assert finished["provenance"]["config"]["model"] == straight["provenance"]["config"]["model"]
        assert finished["metrics"]["val_nll_bpd"] == straight["metrics"]["val_nll_bpd"]
    best = [yaml.safe_load((tmp_path / d / "optimization_results.yaml").read_text()) for d in runs]
    assert best[0] == best[1]


def _sweep_config(sweep: Path, overrides: list[str], params: dict | None = None) -> DictConfig:
    return OmegaConf.create({"resume_sweep": True, "hydra": {
        "sweep": {"dir": str(sweep)}, "overrides": {"task": overrides}, "sweeper": {"params": params}}})


@pytest.mark.parametrize(("saved", "now", "message"), [
    (None, ["model=vae,gan"], "holds no sweep to finish (no readable multirun.yaml"),
    ((["model=vae,gan", "seed=0,1"], None), ["model=vae,gan", "seed=0,1,2"],
     "ran with the overrides 'model=vae,gan seed=0,1', this one has 'model=vae,gan seed=0,1,2'"),
    ((["experiment=x"], {"model": "glob(*)"}), ["experiment=x"],
     "swept hydra.sweeper.params={'model': 'glob(*)'}, this one {'model': 'vae,gan'}"),
], ids=["no sweep there", "other overrides", "other sweeper parameters"])
def test_a_sweep_is_finished_only_by_the_same_sweep(tmp_path, capsys, saved, now, message):
    """The overrides and the sweeper's parameters number the jobs: another sweep would find its jobs'
    directories holding other configs' records."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    if saved is not None:
        overrides, params = saved
        (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
            "overrides": {"task": [*overrides, "resume_sweep=false"]}, "sweeper": {"params": params}}}))
    params_now = {"model": "vae,gan"} if saved and saved[1] else None
    resumed = _sweep_config(sweep, [*now, "resume_sweep=true"], params_now)
    with pytest.raises(SystemExit) as exit_info:
        RefuseDirsWithRecords().on_multirun_start(resumed)
    assert exit_info.value.code == 1 and message in capsys.readouterr().err
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "overrides": {"task": now}, "sweeper": {"params": params_now}}}))
    RefuseDirsWithRecords().on_multirun_start(resumed)  # the same sweep: accepted


@pytest.mark.parametrize("start", ["on_run_start", "on_multirun_start"])
def test_a_resume_sweep_that_is_no_bool_is_refused_before_any_job(tmp_path, capsys, start):
    """``resume_sweep=abc`` was read as true: a sweep into a directory of records finished that sweep,
    moving its earlier attempts aside, and a single run was told it cannot finish a sweep."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    saved = {"hydra": {"overrides": {"task": ["model=vae,gan"]}}}  # the same sweep: finished, were abc true
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(saved))
    config = OmegaConf.merge(_sweep_config(sweep, ["model=vae,gan"]),
                             {"resume_sweep": "abc", "hydra": {"run": {"dir": str(tmp_path / "run")}}})
    with pytest.raises(SystemExit) as exit_info:
        getattr(RefuseDirsWithRecords(), start)(config)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == ("error: bad config value for 'resume_sweep': 'abc' is not a bool: "
                                       "give resume_sweep=true or resume_sweep=false\n")


def _multirun_config(overrides: list[str], swept: list[str]) -> DictConfig:
    """A sweep's config as Hydra gives it to callbacks: the sweeps of the command line (``swept``) among its
    overrides, not applied."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    cfg.hydra.overrides.task = [*overrides, *swept]
    return cfg


@pytest.mark.parametrize(("overrides", "swept", "message"), [
    (["hparams_search=vae_optuna", "model=gan"], [],
     "hparams_search=vae_optuna sweeps model.beta, which model=gan does not have: search a model that has it "
     "(model=vae), or options of gan's own"),
    (["hparams_search=vae_optuna", "model=flow"], [],
     "hparams_search=vae_optuna sweeps model.latent_dim, model.beta, which model=flow does not have: search "
     "a model that has them (model=vae), or options of flow's own"),
    (["model=ebm"], ["seed=0,1", "model.latent_dim=2,4"],
     "the command line sweeps model.latent_dim, which model=ebm does not have: search a model that has it "
     "(model=gan, model=vae), or options of ebm's own"),
    (["model=vae"], ["dataset.noise=0.1,0.2"], "the command line sweeps dataset.noise, which dataset=moons "
     "does not have"),
])
def test_a_sweep_of_an_option_its_config_lacks_is_refused_naming_the_search_and_the_models_that_have_it(
        overrides, swept, message, capsys):
    """Hydra stopped such a sweep at its first job with "Could not override 'model.beta'", naming neither
    the search that set it nor the model that lacks it."""
    with pytest.raises(SystemExit) as exit_info:
        RefuseSearchesOfMissingKeys().on_multirun_start(_multirun_config(overrides, swept))
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == f"error: {message}\n"


@pytest.mark.parametrize(("overrides", "swept"), [
    (["hparams_search=vae_optuna", "model=vae"], []),
    (["model=ebm"], ["model.latent_dim=2,4", "model=vae,gan"]),  # each family's job checks its own options
    (["model=vae"], ["+model.unknown=1,2"]),  # an added key: the job's config check names it
])
def test_a_sweep_of_options_its_config_has_or_of_a_swept_group_is_accepted(overrides, swept):
    RefuseSearchesOfMissingKeys().on_multirun_start(_multirun_config(overrides, swept))


def test_the_search_refusal_stops_a_sweep_before_its_first_job(tmp_path):
    sweep = tmp_path / "sweep"
    done = train_py(["-m", "hparams_search=vae_optuna", "model=gan", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert done.returncode == 1
    assert "error: hparams_search=vae_optuna sweeps model.beta, which model=gan does not have" in done.stderr
    assert not list(sweep.glob("*/metrics.json"))


def test_a_sweep_is_finished_with_other_values_of_options_that_change_no_measurement(tmp_path, capsys):
    """A job whose loader process the out-of-memory killer took is told to use fewer loader processes and to
    finish the sweep: the two were at odds, as another dataset.num_workers was refused as another sweep."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    saved = ["model=vae,gan", "seed=0,1", "dataset.num_workers=4", "logger=wandb"]
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": saved}}}))
    finishing = [*saved, "dataset.num_workers=0", "logger=none", "~callbacks.sample_grids"]
    RefuseDirsWithRecords().on_multirun_start(_sweep_config(sweep, [*finishing, "resume_sweep=true"]))
    for other in ("seed=0", "dataset.num_workers=0,1", "dataset.batch_size=64"):  # a job's data or numbering
        resumed = _sweep_config(sweep, [*saved, other, "resume_sweep=true"])
        with pytest.raises(SystemExit):
            RefuseDirsWithRecords().on_multirun_start(resumed)
        assert f"this one has '{' '.join([*saved, other])}'" in capsys.readouterr().err


def test_a_sweep_of_evaluations_is_finished_by_eval_py_which_its_command_names(tmp_path, capsys):
    """``eval.py`` is ``train.py train=false``: the command that finished a sweep of evaluations was
    ``python train.py ...``, which would have trained its jobs; and train.py was let finish it."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "job": {"name": "eval"}, "overrides": {"task": ["ckpt_path=a.ckpt,b.ckpt"]}}}))
    assert resume_command(sweep) == (f"python eval.py -m ckpt_path=a.ckpt,b.ckpt hydra.sweep.dir={sweep} "
                                     "resume_sweep=true")
    resumed = _sweep_config(sweep, ["ckpt_path=a.ckpt,b.ckpt", "resume_sweep=true"])
    resumed.hydra.job = {"name": "train"}
    with pytest.raises(SystemExit):
        RefuseDirsWithRecords().on_multirun_start(resumed)
    assert "ran eval.py, this one is train.py; finish it with eval.py" in capsys.readouterr().err
    resumed.hydra.job.name = "eval"
    RefuseDirsWithRecords().on_multirun_start(resumed)  # the same sweep: accepted


def test_resume_sweep_in_a_single_run_is_refused_naming_what_resumes_a_run(capsys):
    with pytest.raises(SystemExit):
        RefuseDirsWithRecords().on_run_start(OmegaConf.create({"resume_sweep": True,
                                                               "hydra": {"run": {"dir": "x"}}}))
    assert "a single run resumes with ckpt_path=<run>/checkpoints/last.ckpt" in capsys.readouterr().err


@pytest.fixture
def job_config():
    """A run's config inside a Hydra job (what Hydra writes into a job's directory before it runs)."""
    with in_a_hydra_run(["model=gan", "hydra.job.name=train"]) as job:
        yield job


def _earlier(job: Path, config: dict, status: str, failed_in: str | None = None, error: str = "an error",
             checkpoint: bool = True) -> None:
    """What an earlier attempt of a job left: its record, its checkpoint, a log of its own."""
    (job / ".hydra").mkdir(parents=True)
    (job / "train.log").write_text("this attempt's log\n")
    (job / "csv").mkdir()
    (job / "csv" / "metrics.csv").write_text("step,train/loss\n0,1.0\n")
    if checkpoint:
        (job / "checkpoints").mkdir()
        (job / "checkpoints" / "last.ckpt").write_bytes(b"a checkpoint")
    prov = {**provenance(config, 0, datetime.now()), **({"failed_in": failed_in} if failed_in else {})}
    write_record(job / "metrics.json", status=status, family="gan", dataset="moons", seed=0, metrics={},
                 provenance=prov, **({} if status == "ok" else {"error": error}))


@pytest.mark.parametrize(("status", "failed_in", "error"), [
    ("ok", None, None), ("diverged", "training", "DivergedError: loss is nan"),
    ("failed", "training", "RuntimeError: a crash in training"),
], ids=["ok", "diverged", "crashed in training"])
def test_a_job_that_ended_as_an_outcome_of_its_family_keeps_its_record(tmp_path, job_config, status,
                                                                        failed_in, error):
    """What the matrix measures (quality, divergence, crashes in training) is not run again: a new draw
    of a diverged run would hide it from the stability row."""
    job = tmp_path / "0"
    _earlier(job, OmegaConf.to_container(job_config), status, failed_in, error or "")
    before = (job / "metrics.json").read_bytes()
    kept = settle_earlier_attempt(job_config, job, OmegaConf.to_container(job_config))
    assert kept is not None and kept["status"] == status and (job / "metrics.json").read_bytes() == before
    assert job_config.ckpt_path is None and not list(job.glob("attempt_*"))


@pytest.mark.parametrize(("status", "failed_in", "error"), [
    ("interrupted", "training", "Interrupted: interrupted by SIGTERM"),
    ("failed", "evaluation", "OutOfMemoryError: CUDA out of memory"),
    ("failed", "worker", "TerminatedWorkerError: a worker died"),
    ("failed", "machine", "OSError: [Errno 28] No space left on device"),
    ("failed", "setup", "FileNotFoundError: missing dataset file"),
    ("failed", "training", "ConfigError: bad config value"),
], ids=["interrupted", "failed in evaluation", "dead worker", "disk full", "failed in setup", "config error"])
def test_a_job_that_did_not_finish_goes_on_from_its_checkpoint(tmp_path, job_config, status, failed_in,
                                                               error):
    """Interrupts and failures of the config, the data, the evaluation or a worker say nothing of the
    family: the job runs again, from where its earlier attempt's checkpoint stopped."""
    job = tmp_path / "1"
    _earlier(job, OmegaConf.to_container(job_config), status, failed_in, error)
    assert settle_earlier_attempt(job_config, job, OmegaConf.to_container(job_config)) is None
    attempt = job / "attempt_1"
    assert sorted(p.name for p in job.iterdir()) == [".hydra", "attempt_1", "train.log"]
    assert sorted(p.name for p in attempt.iterdir()) == ["checkpoints", "csv", EARLIER_RECORD]
    assert job_config.ckpt_path == str(attempt / "checkpoints" / "last.ckpt")
    assert read_record(attempt / EARLIER_RECORD)["status"] == status


def test_a_job_killed_before_its_record_or_of_another_config_runs_again(tmp_path, job_config):
    """A job killed before it wrote a record goes on from its checkpoint; a record of another config (the
    jobs numbered otherwise: a family added to a glob) is moved aside and its checkpoint, of that other
    config, is not used. A second attempt goes to attempt_2."""
    job = tmp_path / "2"
    _earlier(job, OmegaConf.to_container(job_config), "ok")
    (job / "metrics.json").unlink()
    assert settle_earlier_attempt(job_config, job, OmegaConf.to_container(job_config)) is None
    assert job_config.ckpt_path == str(job / "attempt_1" / "checkpoints" / "last.ckpt")

    job_config.ckpt_path = None
    other = OmegaConf.to_container(job_config)
    other["model"]["latent_dim"] = 99
    (job / "checkpoints").mkdir()
    (job / "checkpoints" / "last.ckpt").write_bytes(b"another config's checkpoint")
    write_record(job / "metrics.json", status="ok", family="gan", dataset="moons", seed=0, metrics={},
                 provenance=provenance(other, 0, datetime.now()))
    assert settle_earlier_attempt(job_config, job, OmegaConf.to_container(job_config)) is None
    assert job_config.ckpt_path is None
    assert sorted(p.name for p in (job / "attempt_2").iterdir()) == ["checkpoints", EARLIER_RECORD]


def test_a_job_stopped_again_before_its_first_checkpoint_goes_on_from_the_earlier_attempts(tmp_path,
                                                                                            job_config):
    job = tmp_path / "4"
    _earlier(job, OmegaConf.to_container(job_config), "interrupted", "training", "Interrupted: SIGINT")
    assert settle_earlier_attempt(job_config, job, OmegaConf.to_container(job_config)) is None
    first = job / "attempt_1" / "checkpoints" / "last.ckpt"
    assert job_config.ckpt_path == str(first)
    config = OmegaConf.to_container(job_config)  # the second attempt, stopped before a checkpoint of its own
    write_record(job / "metrics.json", status="interrupted", family="gan", dataset="moons", seed=0,
                 metrics={}, provenance={**provenance(config, 0, datetime.now()), "failed_in": "training"},
                 error="Interrupted: SIGTERM", checkpoint=str(first))
    job_config.ckpt_path = None
    assert settle_earlier_attempt(job_config, job, OmegaConf.to_container(job_config)) is None
    assert job_config.ckpt_path == str(first) and (job / "attempt_2" / EARLIER_RECORD).is_file()


def test_a_job_that_never_started_runs(tmp_path, job_config):
    job = tmp_path / "3"
    (job / ".hydra").mkdir(parents=True)
    (job / "train.log").write_text("")
    assert settle_earlier_attempt(job_config, job, OmegaConf.to_container(job_config)) is None
    assert sorted(p.name for p in job.iterdir()) == [".hydra", "train.log"] and job_config.ckpt_path is None


def test_a_sweep_with_jobs_that_can_run_again_names_the_command_that_finishes_it(tmp_path, caplog):
    """A job that failed on its data (a file not there yet) runs again once the cause is fixed; a diverged
    one is an outcome of its family, kept."""
    from genbench.matrix.callback import WriteMatrix

    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    (sweep / "1").mkdir()
    saved = {"hydra": {"overrides": {"task": ["model=vae,gan", "resume_sweep=true"],  # finished once before
                                     "hydra": ["hydra/launcher=joblib", f"hydra.sweep.dir={sweep}",
                                               "hydra.mode=MULTIRUN"]}}}
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(saved))
    started = provenance({}, 0, datetime.now())
    write_record(sweep / "0" / "metrics.json", status="failed", family="vae", dataset="mnist", seed=0,
                 metrics={}, provenance={**started, "failed_in": "setup"},
                 error="FileNotFoundError: missing dataset file")
    write_record(sweep / "1" / "metrics.json", status="diverged", family="gan", dataset="mnist", seed=0,
                 metrics={}, provenance={**started, "failed_in": "training"},
                 error="DivergedError: loss is nan")
    with pytest.raises(SystemExit):
        WriteMatrix().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    command = ("python train.py -m hydra/launcher=joblib model=vae,gan "
               f"hydra.sweep.dir={sweep} resume_sweep=true")
    assert ("1 of them can run again in this sweep once their cause is fixed (the others keep their "
            f"records): {command}") in caplog.text


def test_a_sweep_jobs_ddp_processes_are_started_on_the_job_alone_and_its_checkpoint(tmp_path, monkeypatch):
    """Lightning starts a job's other DDP processes with ``sys.argv`` and ``hydra.run.dir``: the job's own
    overrides, as a single run, in its directory, with the checkpoint a resumed sweep's job goes on from
    (rank zero alone had it: the others would have trained from the start); all put back after the job."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True,
                      overrides=["model=gan", "resume_sweep=true", f"hydra.runtime.output_dir={tmp_path}"])
        job = compose(config_name="train", overrides=["model=gan", "resume_sweep=true"])
    cfg.hydra.mode = RunMode.MULTIRUN
    job.ckpt_path = str(tmp_path / "attempt_1" / "checkpoints" / "last.ckpt")
    sweep_argv = ["train.py", "-m", "model=vae,gan", "resume_sweep=true"]
    monkeypatch.setattr(sys, "argv", sweep_argv)
    monkeypatch.setenv("MASTER_PORT", "1234")
    monkeypatch.delenv("LOCAL_RANK", raising=False)  # put back however the test ends
    HydraConfig.instance().set_config(cfg)
    try:
        with ddp_processes_run_this_job(job):
            assert sys.argv == [os.path.abspath("train.py"), "model=gan", f'ckpt_path="{job.ckpt_path}"',
                                "hydra.mode=RUN"]
            assert HydraConfig.get().run.dir == str(tmp_path)
            os.environ.update(LOCAL_RANK="0", MASTER_PORT="5678")  # as Lightning's launcher sets them
        assert sys.argv == sweep_argv
        assert "LOCAL_RANK" not in os.environ and os.environ["MASTER_PORT"] == "1234"
    finally:
        HydraConfig.instance().cfg = None


@pytest.mark.parametrize("entry", [["/repo/train.py"], ["-m", "genbench_entry"]], ids=["script", "module"])
def test_a_ddp_job_in_a_launchers_process_starts_its_processes_as_the_sweep_started(tmp_path, monkeypatch,
                                                                                    entry):
    """A joblib worker or a submitit job runs a job in a process that the launcher started (``python -m
    loky.backend.popen_loky_posix --pipe ...``): Lightning started the job's other DDP processes with that
    module and the job's overrides, which stopped at its arguments. They now start as the sweep's process
    did (kept in the environment by ``KeepSweepEntry``), as Lightning's own function builds the command;
    the worker's ``__main__`` and command line are as before after the job."""
    from importlib.machinery import ModuleSpec

    from lightning_fabric.strategies.launchers.subprocess_script import _hydra_subprocess_cmd

    import __main__

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True,
                      overrides=["model=vae", "seed=1", f"hydra.runtime.output_dir={tmp_path}"])
        job = compose(config_name="train", overrides=["model=vae", "seed=1"])
    cfg.hydra.mode = RunMode.MULTIRUN
    cfg.hydra.runtime.cwd = str(tmp_path)
    worker_spec = ModuleSpec("loky.backend.popen_loky_posix", None)
    worker_argv = ["/loky/popen.py", "--pipe", "9"]
    monkeypatch.setattr(__main__, "__spec__", worker_spec)
    monkeypatch.setattr(sys, "argv", worker_argv)
    monkeypatch.setenv(sweeps.ENTRY_VARIABLE, "")  # put back (unset) however the test ends
    monkeypatch.setattr(sweeps, "_this_process_entry", lambda: entry)  # the sweep's process, started so
    sweeps.KeepSweepEntry().on_multirun_start(cfg)
    monkeypatch.setattr(sweeps, "_this_process_entry", lambda: ["-m", worker_spec.name])  # the worker's
    HydraConfig.instance().set_config(cfg)
    try:
        with ddp_processes_run_this_job(job):
            command, cwd = _hydra_subprocess_cmd(local_rank=1)
        assert command[:len(entry) + 1] == [sys.executable, *entry]
        assert command[len(entry) + 1:] == [
            "model=vae", "seed=1", "hydra.mode=RUN", f'hydra.run.dir="{tmp_path}"',
            "hydra.job.name=train_ddp_process_1", "hydra.output_subdir=null"]
        assert cwd == str(tmp_path)
        assert __main__.__spec__ is worker_spec and sys.argv == worker_argv
    finally:
        HydraConfig.instance().cfg = None
