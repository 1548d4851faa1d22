"""Loggers, launchers and sweepers, run for real: an offline W&B run read back from disk, TensorBoard event
files, a joblib multirun with its matrix, and an Optuna search."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from genbench.train import run
from tests.helpers import compose_train, train_py

FAST_EVAL = ["eval.speed_repeats=1", "eval.speed_batch_size=8", "eval.plot_samples_vector=200",
             "eval.mode_samples=200"]


def _wandb_records(run_file: Path) -> list[dict]:
    """The records of an offline W&B run, read back with wandb's own reader."""
    wandb_cli = Path(sys.executable).parent / "wandb"
    out = subprocess.run([str(wandb_cli), "leet", "inspect", "--json", str(run_file)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_tensorboard_event_files_hold_the_metrics_and_a_picture(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_train(["trainer=debug", "logger=tensorboard", f"paths.output_dir={tmp_path}",
                         "callbacks.sample_grids.every_n_steps=2", *FAST_EVAL])
    metrics = run(cfg, tmp_path).metrics
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert events.Scalars("test/nll_nats")[-1].value == pytest.approx(metrics["nll_nats"], rel=1e-6)
    assert events.Scalars("train/loss")  # the training curve
    assert events.Images("samples")  # sample grids during training


def test_offline_wandb_sweep_logs_metrics_images_and_the_matrix_table(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "model=vae,gan", "trainer=debug", "logger=[csv,wandb]", f"hydra.sweep.dir={sweep}",
            "callbacks.sample_grids.every_n_steps=2", *FAST_EVAL]
    proc = train_py(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "anonymous setting" not in proc.stdout + proc.stderr  # wandb's warning about Lightning's None
    assert "'reinit' is deprecated" not in proc.stdout + proc.stderr
    runs = sorted(sweep.glob("*/wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 2  # one offline run per job, nothing needed a login
    for run_file in runs:
        records = _wandb_records(run_file)
        logged = {k for r in records if r["type"] == "history" for k in r["history"]["item"]}
        assert {"test/nfe", "test/sample_ms_per_sample", "train/loss", "samples.path"} <= logged
        images = [r["history"]["item"]["samples.path"] for r in records
                  if r["type"] == "history" and "samples.path" in r["history"]["item"]]
        assert all((run_file.parent / "files" / path).is_file() for path in images)
        config = {k for r in records if r["type"] == "config" for k in r["config"]["update"]}
        assert {"family", "dataset", "seed", "config"} <= config
    tables = list(sweep.glob("wandb/offline-run-*/files/media/table/matrix_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert {row[3] for row in table["data"]} == {"vae", "gan", "held-out real data"}  # the column's name
    assert (sweep / "matrix.md").is_file()


@pytest.mark.parametrize("launcher", [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                                      ["hydra/launcher=submitit_local"]], ids=["joblib", "submitit_local"])
def test_parallel_launchers_run_two_families_and_write_the_matrix(launcher, tmp_path):
    sweep = tmp_path / "sweep"
    proc = train_py(["-m", *launcher, "torch_threads=1", "model=vae,flow", "trainer=debug", "logger=csv",
                      f"hydra.sweep.dir={sweep}", *FAST_EVAL], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    statuses = {json.loads(p.read_text())["family"]: json.loads(p.read_text())["status"]
                for p in sweep.glob("*/metrics.json")}
    assert statuses == {"vae": "ok", "flow": "ok"}
    assert "| Property (metric) | vae | flow |" in (sweep / "matrix.md").read_text()


def test_optuna_sweeper_runs_every_trial_past_a_failed_one_and_reports_the_best(tmp_path):
    """latent_dim 0 is a config error: those trials fail, and the search goes on (a NaN objective stopped
    it at the first); the sweep exits 1, as any sweep with a failed job does."""
    sweep = tmp_path / "sweep"
    proc = train_py(["hparams_search=vae_optuna", "hydra.sweeper.n_trials=4", "trainer=debug", "logger=none",
                     "model.latent_dim=choice(0,8)", f"hydra.sweep.dir={sweep}",
                     *FAST_EVAL], tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    ok = [r for r in records if r["status"] == "ok"]
    assert len(records) == 4 and 0 < len(ok) < 4, [r["status"] for r in records]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    # chosen on the validation split's NLL: the test split's would bias the test NLL the records report
    assert best["best_value"] == pytest.approx(min(r["metrics"]["val_nll_bpd"] for r in ok))
    assert set(best["best_params"]) == {"model.optimizer.lr", "model.latent_dim", "model.beta"}
    assert best["best_params"]["model.latent_dim"] == 8 and (sweep / "matrix.md").is_file()


def test_an_optuna_search_whose_every_trial_fails_still_writes_its_matrix(tmp_path):
    """Optuna's "No trials are completed yet" stopped the search before Hydra's end-of-sweep callbacks: no
    matrix, and a traceback for an exit. It now ends as a sweep with failed jobs: matrix, exit 1."""
    sweep = tmp_path / "sweep"
    proc = train_py(["hparams_search=vae_optuna", "hydra.sweeper.n_trials=2", "trainer=debug", "logger=none",
                     "model.latent_dim=0", f"hydra.sweep.dir={sweep}", *FAST_EVAL], tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "every trial of the search failed" in output and "Traceback" not in output
    records = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert [r["status"] for r in records] == ["failed", "failed"]
    assert "latent_dim" in records[0]["error"]
    assert (sweep / "matrix.md").is_file() and not (sweep / "optimization_results.yaml").exists()


def test_two_process_ddp_run_evaluates_once_like_a_single_process_evaluation(tmp_path):
    ddp_dir, eval_dir = tmp_path / "ddp", tmp_path / "eval"
    proc = train_py(["trainer=ddp", "trainer.accelerator=cpu", "trainer.max_steps=20", "logger=csv",
                      f"hydra.run.dir={ddp_dir}", *FAST_EVAL], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = list(tmp_path.rglob("metrics.json"))
    assert records == [ddp_dir / "metrics.json"]  # one record, written by rank zero only
    ddp = json.loads(records[0].read_text())
    assert ddp["status"] == "ok" and ddp["metrics"]["train_processes"] == 2
    proc = train_py(["train=false", f"ckpt_path={ddp_dir / 'checkpoints' / 'last.ckpt'}", "logger=none",
                      f"hydra.run.dir={eval_dir}", *FAST_EVAL], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = json.loads((eval_dir / "metrics.json").read_text())
    for name in ("nll_nats", "nll_iwae_nats", "energy_distance_test", "precision_data_space"):
        assert ddp["metrics"][name] == pytest.approx(single["metrics"][name], rel=1e-6), name


def test_a_sweep_of_ddp_runs_trains_each_job_on_its_own_processes_which_keep_one_model(tmp_path):
    """Lightning starts a DDP run's other process with the command line of the process that runs the job
    (in a sweep: -m and its lists), so that process ran the whole sweep, its jobs joining other jobs' DDP
    groups, and wrote the matrix again. The job's own command line alone was not enough: the sweep's next
    job found the last's LOCAL_RANK and process group and failed ("Connection closed by peer"). Each job
    now trains on its own two processes. The GAN's D step leaves G's parameters without a gradient (and
    its G step D's): under plain DDP its run failed at its first step ("parameters that were not used in
    producing the loss"). Each job's processes end with one model: gradients averaged, every step."""
    sweep = tmp_path / "sweep"
    proc = train_py(["-m", "model=vae,gan", "trainer=ddp", "trainer.accelerator=cpu", "trainer.max_steps=12",
                     "logger=none", "callbacks=none", f"hydra.sweep.dir={sweep}",
                     "+callbacks.replica._target_=tests.faults.SavesReplica",
                     "+callbacks.replica.directory=${hydra:runtime.output_dir}", *FAST_EVAL], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr  # the DDP processes' too: they inherit the sweep's
    assert output.count("Launching 2 jobs") == 1 and output.count("matrix of 1 dataset(s) written") == 1
    jobs = [sweep / "0", sweep / "1"]
    assert sorted(tmp_path.rglob("metrics.json")) == [job / "metrics.json" for job in jobs]
    for job, family in zip(jobs, ("vae", "gan"), strict=True):
        record = json.loads((job / "metrics.json").read_text())
        assert (record["family"], record["status"], record["metrics"]["train_processes"]) == (family, "ok", 2)
        rank_one = (job / "train_ddp_process_1.log").read_text()  # the job's own run, in its directory
        assert f"run directory: {job}\n" in rank_one and "Launching" not in rank_one
        replicas = [torch.load(job / f"replica_{rank}.pt", weights_only=True) for rank in (0, 1)]
        assert replicas[0].keys() == replicas[1].keys()
        assert all(torch.equal(replicas[0][k], replicas[1][k]) for k in replicas[0])
    assert ("gan under DDP: each step leaves some parameters without a gradient"
            in (jobs[1] / "train_ddp_process_1.log").read_text())


@pytest.mark.parametrize("launcher", [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                                      ["hydra/launcher=submitit_local"]], ids=["joblib", "submitit_local"])
def test_a_ddp_sweep_under_a_launchers_processes_trains_each_job_on_processes_that_run_train_py(tmp_path,
                                                                                               launcher):
    """joblib runs a job in a worker process started as ``python -m loky.backend.popen_loky_posix --pipe
    <n>``, submitit_local as ``python -m submitit.core._submit <folder>``; Lightning started the job's
    other DDP process with that command line, which stopped at its arguments, and the job was recorded as
    failed after the rendezvous' 60 s wait."""
    sweep = tmp_path / "sweep"
    proc = train_py(["-m", *launcher, "model=vae", "trainer=ddp", "trainer.accelerator=cpu",
                     "trainer.max_steps=5", "logger=none", "callbacks=none", f"hydra.sweep.dir={sweep}",
                     *FAST_EVAL], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((sweep / "0" / "metrics.json").read_text())
    assert (record["status"], record["metrics"]["train_processes"]) == ("ok", 2)
    assert f"run directory: {sweep / '0'}\n" in (sweep / "0" / "train_ddp_process_1.log").read_text()


def test_the_matrix_table_gets_a_wandb_run_of_its_own_where_a_jobs_run_was_left_open(tmp_path):
    """A job that failed before its end leaves its W&B run open in the sweep's process; wandb.init() would
    return that run, and the table would be logged into the job's run."""
    import wandb

    from genbench.matrix.wandb_table import log_matrix_table

    job = wandb.init(project="genbench-test", dir=str(tmp_path), mode="offline", name="job")
    job_dir = Path(job.dir).parent
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    table_dir = log_matrix_table([], sweep, "genbench-test", mode="offline")
    assert table_dir != job_dir and table_dir.parent == sweep / "wandb"
    assert wandb.run is None  # both ended
