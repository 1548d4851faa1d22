"""Every way a run ends leaves a true metrics.json: signals, checkpoints that differ from the command line
or hold NaN weights, NaN samples, a missing checkpoint, run directories that are taken (issue 14)."""

import fcntl
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from genbench.config import validate
from genbench.errors import ConfigError
from genbench.matrix.runs import read_run
from genbench.results import provenance, read_record, write_record
from genbench.stages import dead_loader_worker
from genbench.train import instantiate, run, task
from genbench.trained_run import TRAINED_AS, read_trained_as
from tests.helpers import compose_train, in_a_hydra_run, start_train_py, train_py, wait_for

QUICK = ["trainer=debug", "logger=none", "eval.speed_repeats=1", "eval.speed_batch_size=8",
         "eval.plot_samples_vector=200"]


def test_sigint_and_sigterm_record_an_interrupted_run_naming_its_checkpoint(tmp_path):
    """Ctrl-C exited 1 and SIGTERM exited 0, both without a record. The two runs go at once: startup
    dominates their time."""
    endless = [*QUICK, "trainer.max_epochs=null", "trainer.max_steps=1000000"]
    runs = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        run_dir = tmp_path / sig.name / "run"
        runs[sig] = (start_train_py([*endless, f"hydra.run.dir={run_dir}"], tmp_path / sig.name), run_dir)
    try:
        for sig, (proc, run_dir) in runs.items():
            ckpt = run_dir / "checkpoints" / "last.ckpt"
            wait_for(lambda ckpt=ckpt, proc=proc: ckpt.is_file() or proc.poll() is not None, what=str(ckpt))
            proc.send_signal(sig)
            assert proc.wait(timeout=120) == 128 + sig, (run_dir.parent / "train_py.log").read_text()[-3000:]
            record = read_record(run_dir / "metrics.json")
            assert record["status"] == "interrupted" and sig.name in record["error"]
            assert record["checkpoint"] == str(ckpt) and ckpt.is_file()
            assert f"ckpt_path={ckpt}" in record["error"]
    finally:  # a failed check must not leave an endless run behind
        for proc, _ in runs.values():
            if proc.poll() is None:
                proc.kill()


@pytest.mark.parametrize(("fault", "named"), [
    ([], "RankFailed: the training process of local rank 1 (pid"),
    (["+callbacks.rank_dies.raises=true", "+callbacks.rank_dies.busy_seconds=0"],
     "local rank 1's log says: failed: RuntimeError: injected failure of rank 1")], ids=["exits", "raises"])
def test_a_ddp_run_whose_other_process_dies_records_it(tmp_path, fault, named):
    """Rank 1 exits with code 3 while rank zero works on its own (as drawing sample pictures): Lightning's
    watcher of the processes SIGKILLed rank zero, exit 137 and no metrics.json. Or rank 1 raises while
    rank zero waits for it in a collective: the record named only rank zero's closed connection. Now rank
    zero records the failure naming the process, its exit code and what its log says; it exits 1."""
    run_dir = tmp_path / "run"
    done = train_py(["trainer=ddp", "trainer.accelerator=cpu", "trainer.max_steps=40", "logger=none",
                     "evaluate=false", "+callbacks.rank_dies._target_=tests.faults.RankDies", *fault,
                     f"hydra.run.dir={run_dir}"], tmp_path)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    record = read_record(run_dir / "metrics.json")
    assert record["status"] == "failed" and record["provenance"]["failed_in"] == "training"
    assert named in record["error"] and "the training process of local rank 1" in record["error"]
    assert "exited with code" in record["error"], record["error"]


def test_a_ddp_run_whose_rank_dies_before_the_rendezvous_is_recorded_by_the_watcher(tmp_path, monkeypatch):
    """Rank 1 exits before the processes' rendezvous, where rank zero waits for it and runs no Python: it
    never raised RankFailed, the watcher killed it after GRACE_SECONDS (60 s: exit 137 after 69 s), and
    there was no metrics.json. Now the watcher writes the record first (a grace of 3 s here)."""
    monkeypatch.setenv("GENBENCH_RANK_GRACE_SECONDS", "3")
    run_dir = tmp_path / "run"
    done = train_py(["trainer=ddp", "trainer.accelerator=cpu", "trainer.max_steps=10", "logger=none",
                     "evaluate=false", "+callbacks.early._target_=tests.faults.DiesBeforeRendezvous",
                     f"hydra.run.dir={run_dir}"], tmp_path)
    assert done.returncode == -signal.SIGKILL, done.stdout[-2000:] + done.stderr[-2000:]  # 137 in a shell
    record = read_record(run_dir / "metrics.json")
    assert record["status"] == "failed" and record["provenance"]["failed_in"] == "setup"
    assert "RankFailed: the training process of local rank 1" in record["error"]
    assert "exited with code 3" in record["error"] and "did not answer within 3 s" in record["error"]


def _stuck_rank_zero() -> subprocess.Popen:
    """A stand-in for rank zero waiting where no Python runs: the dead rank's signal does not stop it."""
    stuck = ("import signal, time; signal.signal(signal.SIGUSR2, signal.SIG_IGN); print(1, flush=True); "
             "time.sleep(30)")
    rank_zero = subprocess.Popen([sys.executable, "-c", stuck], stdout=subprocess.PIPE)
    assert rank_zero.stdout.readline().strip() == b"1"  # its handler is in place
    return rank_zero


def _watching(monkeypatch, grace: float, rank_exit: int, written: list, stuck: bool = True):
    """genbench's watcher of a dead rank 1 (exited with ``rank_exit``) and a rank zero that is stuck (or
    a plain ``sleep``, which the dead rank's signal ends), recording into ``written``."""
    from lightning_fabric.strategies.launchers import subprocess_script

    from genbench import interrupts

    monkeypatch.setattr(interrupts, "GRACE_SECONDS", grace)
    interrupts.watch_training_processes()
    interrupts.record_if_stuck(lambda status, error: written.append((status, error)))
    rank_zero = _stuck_rank_zero() if stuck else subprocess.Popen(["sleep", "30"])
    rank_one = subprocess.Popen([sys.executable, "-c", f"import sys; sys.exit({rank_exit})"])
    rank_one.wait()
    watcher = subprocess_script._ChildProcessObserver(main_pid=rank_zero.pid, child_processes=[rank_one])
    return watcher, rank_zero


@pytest.mark.parametrize(("rank_exit", "status"), [(3, "failed"), (128 + signal.SIGTERM, "interrupted")])
def test_the_watcher_records_the_run_where_rank_zero_does_not_answer(monkeypatch, rank_exit, status):
    """On real processes: rank zero does not answer the dead rank's signal, or had SIGTERM itself and does
    not end; the watcher records the run, then kills it; once only."""
    written: list = []
    watcher, rank_zero = _watching(monkeypatch, 1.0, rank_exit, written)
    try:
        assert watcher._run() is True
        assert rank_zero.wait(timeout=10) == -signal.SIGKILL
        ((recorded_status, error),) = written
        assert recorded_status == status and "local rank 1" in error and f"code {rank_exit}" in error
        assert "did not answer within 1 s" in error
        watcher._terminate_all()  # the run is recorded now: another look writes nothing more
        assert len(written) == 1
    finally:
        rank_zero.kill()
        rank_zero.wait()


def test_the_watcher_waits_for_rank_zeros_own_record_and_then_leaves_it(monkeypatch):
    """Rank zero writing its record past the grace: the watcher neither writes over it nor kills rank zero
    mid-write (a partial temporary file left behind), and once it is written leaves rank zero alone."""
    from genbench import interrupts

    written: list = []
    watcher, rank_zero = _watching(monkeypatch, 0.5, 3, written)
    try:
        with interrupts.recording():  # rank zero's record, taking longer than the grace
            looking = threading.Thread(target=watcher._run)
            looking.start()
            time.sleep(1.5)
            assert not written and rank_zero.poll() is None
        looking.join(timeout=10)
        assert not looking.is_alive() and not written and rank_zero.poll() is None
    finally:
        rank_zero.kill()
        rank_zero.wait()


@pytest.mark.parametrize(("rank_exit", "recorded", "rank_zero_ends"), [
    (3, False, -signal.SIGUSR2),  # signalled: RankFailed where signals_raise handles it
    (128 + signal.SIGTERM, False, -signal.SIGKILL),  # rank zero had the signal too: not signalled again
    (3, True, None)])  # the run is recorded: left alone
def test_the_watcher_of_ddp_processes_signals_rank_zero_only_for_a_failure_it_has_not_recorded(
        monkeypatch, rank_exit, recorded, rank_zero_ends):
    """Lightning's watcher (lightning_fabric's _ChildProcessObserver) as genbench makes it, on real
    processes: a stand-in for rank zero (sleep) and one for rank 1 that exits with ``rank_exit``. A signal
    after the run's record killed rank zero (SIGUSR2's default) or replaced its interrupt by a failure."""
    from genbench import interrupts

    watcher, rank_zero = _watching(monkeypatch, 1.0, rank_exit, [], stuck=False)
    if recorded:
        with interrupts.recording():
            pass
    try:
        assert watcher._run() is True  # found the dead process and acted
        time.sleep(1.5)
        assert rank_zero.poll() == rank_zero_ends
        if rank_zero_ends == -signal.SIGUSR2:
            assert "local rank 1" in interrupts._watch.failure and "code 3" in interrupts._watch.failure
    finally:
        rank_zero.kill()
        rank_zero.wait()


def test_a_dead_ranks_signal_after_the_run_does_nothing_and_processes_started_later_keep_its_default():
    """By default SIGUSR2 ends a process (exit 140): after signals_raise's block (the run has recorded and
    ends, or the next job of a sweep starts) a watcher's late signal must not. Ignoring it (SIG_IGN) would
    pass on to every process started later, whose SIGUSR2 then did nothing."""
    from genbench.interrupts import RANK_FAILED, signals_raise

    with signals_raise():
        pass
    os.kill(os.getpid(), RANK_FAILED)
    time.sleep(0.05)  # still here
    later = subprocess.Popen(["sleep", "30"])
    later.send_signal(RANK_FAILED)
    assert later.wait(timeout=10) == -RANK_FAILED


def test_train_false_without_a_checkpoint_is_a_config_error():
    with pytest.raises(ConfigError, match="train=false .*ckpt_path=<a checkpoint>"):
        validate(compose_train(["train=false"]))


@pytest.fixture(scope="module")
def gan_checkpoint(tmp_path_factory) -> Path:
    """A GAN trained for a few debug steps on moons (latent_dim 16)."""
    out = tmp_path_factory.mktemp("gan")
    run(compose_train(["model=gan", *QUICK, f"paths.output_dir={out}"]), out)
    return out / "checkpoints" / "last.ckpt"


def _evaluate(ckpt: Path, out: Path, *extra: str) -> dict:
    cfg = compose_train(["model=gan", *QUICK, "train=false", f"ckpt_path={ckpt}", f"paths.output_dir={out}",
                         *extra])
    try:
        task(cfg)
    except SystemExit as e:  # a diverged single run exits non-zero after writing its record
        assert e.code == 1
    return read_record(out / "metrics.json")


def _edited_checkpoint(source: Path, target: Path, edit: Callable[[dict], object]) -> Path:
    """A copy of checkpoint ``source`` as an older genbench would have saved it (``edit`` changes it)."""
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, target)
    return target


@pytest.mark.parametrize(("given", "recorded", "status"), [("abc", None, "failed str"),
                                                        ("1.5", None, "failed float"), ("'3'", 3, "ok")])
def test_a_seed_that_is_no_integer_is_refused_by_name_and_still_leaves_a_record(tmp_path, given, recorded,
                                                                               status):
    """``seed=abc`` ended in a traceback before the run had a record; a quoted integer was recorded as no
    seed while the run used it."""
    out = tmp_path / "run"
    cfg = compose_train([*QUICK, f"seed={given}", "evaluate=false", f"paths.output_dir={out}"])
    status, _, given_type = status.partition(" ")
    if status == "failed":
        with pytest.raises(SystemExit):
            task(cfg)
    else:
        task(cfg)
    record = read_record(out / "metrics.json")
    assert (record["status"], record["seed"], record["provenance"]["seed"]) == (status, recorded, recorded)
    if status == "failed":
        assert record["provenance"]["failed_in"] == "setup"
        assert record["error"] == (f"ConfigError: bad config value for 'seed': Value '{given}' of type "
                                   f"'{given_type}' could not be converted to Integer")
        assert read_run(out / "metrics.json").seed is None


@pytest.mark.parametrize("train", [True, False])
def test_a_checkpoint_cut_short_or_of_garbage_is_a_config_error_naming_it(gan_checkpoint, tmp_path, train):
    """Resumed (train=true) or evaluated (train=false): torch's own error told the user to load the file
    with weights_only=False, which would run whatever it holds."""
    data = gan_checkpoint.read_bytes()
    for name, content in (("cut.ckpt", data[: len(data) // 2]), ("garbage.ckpt", b"not a checkpoint" * 64)):
        bad = tmp_path / name
        bad.write_bytes(content)
        out = tmp_path / f"{name}-{train}"
        cfg = compose_train(["model=gan", *QUICK, f"train={str(train).lower()}", f"ckpt_path={bad}",
                             f"paths.output_dir={out}"])
        with pytest.raises(SystemExit):
            task(cfg)
        record = read_record(out / "metrics.json")
        assert record["status"] == "failed" and record["provenance"]["failed_in"] == "setup"
        assert f"ckpt_path={bad} cannot be read" in record["error"]
        assert "cut short or not a checkpoint" in record["error"]
        assert "weights_only=False" not in record["error"]


@pytest.mark.parametrize("unit", ["steps", "epochs"])
def test_resuming_a_checkpoint_past_max_steps_or_max_epochs_is_refused_and_at_them_finishes_its_evaluation(
        tmp_path_factory, tmp_path, unit):
    """Resumed with a lower trainer.max_steps (or max_epochs), Lightning trained nothing and the record read
    ok, with a config of less training than its model had had."""
    trained = tmp_path_factory.mktemp("two_epochs")
    run(compose_train(["model=gan", *QUICK, "trainer.max_epochs=2", f"paths.output_dir={trained}"]), trained)
    ckpt = trained / "checkpoints" / "last.ckpt"
    done = read_trained_as(ckpt).training[f"train_{unit}"]
    for limit in (done - 1, done):
        out = tmp_path / str(limit)
        cfg = compose_train(["model=gan", *QUICK, "trainer.max_epochs=2", f"ckpt_path={ckpt}",
                             f"trainer.max_{unit}={limit}", f"paths.output_dir={out}"])
        if limit < done:
            with pytest.raises(SystemExit):
                task(cfg)
        else:
            task(cfg)
        record = read_record(out / "metrics.json")
        if limit < done:
            assert (record["status"], record["provenance"]["failed_in"]) == ("failed", "setup")
            assert (f"ckpt_path={ckpt} has trained {done} {unit}, past this run's "
                    f"trainer.max_{unit}={limit}, so resuming it would train none: give trainer.max_{unit} "
                    f"above {done} to train on, or evaluate it (python eval.py ckpt_path={ckpt} "
                    "model=gan dataset=moons)") in record["error"]
        else:
            assert (record["status"], record["metrics"][f"train_{unit}"]) == ("ok", done)


def test_a_checkpoint_cut_short_anywhere_is_named_as_cut_short(gan_checkpoint, tmp_path):
    """torch fails on a file cut short with other errors at other lengths, some an OSError (EINVAL), which
    had been reported as a file that cannot be opened."""
    data = gan_checkpoint.read_bytes()
    errors = Counter()
    for length in range(0, len(data), 499):
        bad = tmp_path / "cut.ckpt"
        bad.write_bytes(data[:length])
        with pytest.raises(ConfigError, match="cut short or not a checkpoint") as error:
            read_trained_as(bad)
        errors[str(error.value).split("(")[1].split(":")[0]] += 1
    assert errors["OSError"] > 0 and errors["RuntimeError"] > 0  # both of torch's ways are exercised


def test_a_checkpoint_is_recorded_with_its_own_hyperparameters(gan_checkpoint, tmp_path, caplog):
    record = _evaluate(gan_checkpoint, tmp_path, "model.latent_dim=4", "model.optimizer.lr=0.5")
    assert record["status"] == "ok" and record["checkpoint"] == str(gan_checkpoint)
    model_cfg = record["provenance"]["config"]["model"]
    # the evaluated model's, not 4 and 0.5
    assert (model_cfg["latent_dim"], model_cfg["optimizer"]["lr"]) == (16, 1e-3)
    assert model_cfg["_target_"] == "genbench.models.gan.GAN" and record["capabilities"]["has_latent"]
    assert ("model.latent_dim=4 (the checkpoint's: 16), model.optimizer.lr=0.5 (the checkpoint's: 0.001)"
            in caplog.text)


def test_a_checkpoint_with_nan_weights_is_diverged_naming_them(gan_checkpoint, tmp_path):
    ckpt = torch.load(gan_checkpoint, map_location="cpu", weights_only=True)
    name = next(k for k in ckpt["state_dict"] if k.startswith("generator") and k.endswith("weight"))
    ckpt["state_dict"][name] = torch.full_like(ckpt["state_dict"][name], math.nan)
    torch.save(ckpt, tmp_path / "nan.ckpt")
    record = _evaluate(tmp_path / "nan.ckpt", tmp_path / "run")
    assert record["status"] == "diverged"  # no evaluation metric; the checkpoint's training totals
    assert set(record["metrics"]) == {"train_steps", "train_epochs", "train_examples", "train_seconds",
                                      "train_flops_per_example", "train_flops"}
    assert f"not finite in checkpoint {tmp_path / 'nan.ckpt'}: {name}" in record["error"]


def test_nan_samples_make_the_run_diverged_naming_the_metrics(gan_checkpoint, tmp_path, monkeypatch):
    from genbench.models.gan import GAN

    sample = GAN.sample
    monkeypatch.setattr(GAN, "sample", lambda self, n, labels=None: sample(self, n, labels) * math.nan)
    record = _evaluate(gan_checkpoint, tmp_path)
    assert record["status"] == "diverged" and record["metrics"]["energy_distance_test"] == "nan"
    assert "energy_distance_test=nan" in record["error"] and "not finite" in record["error"]
    assert record["metrics"]["nfe"] == 1  # the finite measurements are kept


@pytest.mark.parametrize(("kind", "where"), [("disk_full", "machine"), ("bug", "training")])
def test_a_run_that_fails_in_training_on_the_machines_limits_is_not_a_crash_of_the_family(tmp_path, kind,
                                                                                          where):
    """A disk that filled up while training was recorded as failed in training, which the matrix counts
    against the family's stability (and a resumed sweep keeps)."""
    out = tmp_path / kind
    with pytest.raises((OSError, RuntimeError)):  # a single run raises it on: Hydra prints the traceback
        task(compose_train([*QUICK, f"paths.output_dir={out}", f"+callbacks.fault.kind={kind}",
                            "+callbacks.fault._target_=tests.faults.RaisesInTraining"]))
    record = read_record(out / "metrics.json")
    assert record["status"] == "failed" and record["provenance"]["failed_in"] == where
    assert ("No space left on device" if kind == "disk_full" else "a bug in the family's") in record["error"]
    assert read_run(out / "metrics.json").crashed_in_training == (where == "training")


def test_a_killed_data_loader_process_is_a_failure_of_the_machine_naming_the_fix_and_the_checkpoint(tmp_path):
    """torch's "DataLoader worker (pid N) is killed by signal: Killed." (the out-of-memory killer's way) was
    recorded as a crash in training, which the matrix counts against the family, without the checkpoint
    to resume from or what to change."""
    run_dir = tmp_path / "run"
    done = train_py([*QUICK, "trainer.max_epochs=null", "trainer.max_steps=1000000", "dataset.num_workers=1",
                     "+callbacks.fault._target_=tests.faults.KillsLoaderWorker", "+callbacks.fault.step=12",
                     f"hydra.run.dir={run_dir}"], tmp_path)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    record = read_record(run_dir / "metrics.json")
    # the error in the message: this read training once (a fresh clone's suite, 2026-11-28), cause unseen
    assert (record["status"], record["provenance"]["failed_in"]) == ("failed", "machine"), record["error"]
    # torch's news of it: "DataLoader worker (pid ...) ..." or the connection to the worker reset
    assert "a process loading the data died" in record["error"]
    assert "fewer loader processes (dataset.num_workers=1)" in record["error"]
    ckpt = run_dir / "checkpoints" / "last.ckpt"  # written at the end of each 5-batch epoch
    assert record["checkpoint"] == str(ckpt) and f"resume with ckpt_path={ckpt}" in record["error"]
    assert not read_run(run_dir / "metrics.json").crashed_in_training


def _read_after_killing_its_worker(data: TensorDataset) -> tuple[str, bool]:
    """The error reading a loader's batches after its worker is killed with batches queued, and whether it
    reads as a dead worker. The loader is gone on return, so its worker's death is no news to the next."""
    batches = iter(DataLoader(data, batch_size=64, num_workers=1, prefetch_factor=4))
    next(batches)
    time.sleep(0.2)  # the worker queues batches
    os.kill(batches._workers[0].pid, signal.SIGKILL)
    caught: list[BaseException] = []
    try:  # torch's SIGCHLD handler raises its RuntimeError wherever it runs: inside the except clause too
        try:
            for _ in range(len(batches)):
                next(batches)
        except (RuntimeError, OSError, EOFError) as e:
            caught.append(e)
        time.sleep(0.1)  # a SIGCHLD still pending runs its handler here, not after the try
    except RuntimeError as e:
        caught.append(e)
    if not caught:
        return "no error", False
    return "; ".join(f"{type(e).__name__}: {e}" for e in caught), all(dead_loader_worker(e) for e in caught)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # torch's SIGCHLD in __del__
def test_every_way_torch_tells_of_a_killed_data_loader_process_is_known():
    """torch raises its RuntimeError where it sees the death, or, before the worker is reaped, the error of
    reading a batch it can no longer hand over (ConnectionResetError, about 1 time in 10 here). Each way
    must read as a dead worker, not as a bug of the family."""
    data = TensorDataset(torch.randn(2048, 32, 32))
    for _ in range(8):
        error, known = _read_after_killing_its_worker(data)
        assert known, error
    assert not dead_loader_worker(RuntimeError("a bug in the family's training step"))
    assert not dead_loader_worker(ConnectionResetError(104, "reset outside a data loader"))


def _existing_record(run_dir: Path) -> dict:
    run_dir.mkdir(parents=True)
    return write_record(run_dir / "metrics.json", status="failed", family="vae", dataset="moons", seed=0,
                        metrics={}, provenance=provenance({}, 0, datetime.now()), error="an earlier run")


def test_a_run_directory_holding_a_record_or_a_live_run_is_refused(tmp_path, caplog):
    taken = tmp_path / "taken"
    before = _existing_record(taken)
    with pytest.raises(SystemExit) as exit_info:
        task(compose_train([*QUICK, f"paths.output_dir={taken}"]))
    assert exit_info.value.code == 1 and read_record(taken / "metrics.json") == before  # untouched
    assert f"run directory {taken} already holds the record of another run" in caplog.text

    busy = tmp_path / "busy"
    busy.mkdir()
    fd = os.open(busy, os.O_RDONLY)  # another run holding the directory
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SystemExit):
            task(compose_train([*QUICK, f"paths.output_dir={busy}"]))
    finally:
        os.close(fd)
    assert not (busy / "metrics.json").exists() and "in use by another run" in caplog.text


def test_a_run_or_sweep_into_a_directory_with_records_is_refused_before_hydra_writes_there(tmp_path):
    """train.py: Hydra saved the new run's .hydra/ files (and the announcement its config_tree.log) beside
    the old record before the run refused the directory; a sweep run again had each job refused, then wrote
    a matrix of the old records and exited 0."""
    from tests.helpers import train_py

    single, sweep = tmp_path / "single", tmp_path / "sweep"
    _existing_record(single)
    _existing_record(sweep / "0")
    (single / ".hydra").mkdir()
    (single / ".hydra" / "overrides.yaml").write_text("- the earlier run's overrides\n")
    again = {"run": (["trainer=debug", f"hydra.run.dir={single}"], single),
             "sweep": (["-m", "model=vae,gan", "trainer=debug", f"hydra.sweep.dir={sweep}"], sweep)}
    for what, (args, directory) in again.items():
        proc = train_py([*args, "logger=none"], tmp_path)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert f"{what} directory {directory} already holds the record of another run" in proc.stderr
    assert "; or, to finish that sweep, run it again with resume_sweep=true" in proc.stderr  # the sweep's
    assert (single / ".hydra" / "overrides.yaml").read_text() == "- the earlier run's overrides\n"
    assert sorted(p.name for p in single.iterdir()) == [".hydra", "metrics.json"]
    assert sorted(p.name for p in sweep.iterdir()) == ["0"] and not (sweep / "matrix.md").exists()


def test_runs_started_in_the_same_second_get_different_directories():
    from hydra import compose, initialize_config_dir

    from tests.helpers import CONFIG_DIR

    dirs = []
    for _ in range(2):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            dirs.append(compose(config_name="train", return_hydra_config=True).hydra.run.dir)
    assert dirs[0] != dirs[1]


def test_a_checkpoint_of_another_model_version_is_a_recorded_config_error(tmp_path):
    """A checkpoint whose tensors this version's model does not have (the EBM's data_mean/data_std before
    they moved into its standardizer) ends with a record that says so, not a bare state_dict trace."""

    trained = tmp_path / "trained"
    task(compose_train(["model=ebm", "dataset=gaussians8", "trainer=debug", "logger=none", "evaluate=false",
                        f"paths.output_dir={trained}"]))
    def as_before(ckpt: dict) -> None:
        state = ckpt["state_dict"]
        state["data_mean"], state["data_std"] = state.pop("standardize.mean"), state.pop("standardize.std")

    old = _edited_checkpoint(trained / "checkpoints" / "last.ckpt", tmp_path / "old.ckpt", as_before)
    out = tmp_path / "eval"
    with pytest.raises(SystemExit):
        task(compose_train(["model=ebm", "dataset=gaussians8", "trainer=debug", "logger=none", "train=false",
                            f"ckpt_path={old}", f"paths.output_dir={out}"]))
    record = read_record(out / "metrics.json")
    assert record["status"] == "failed"
    assert "does not fit this version's ebm" in record["error"] and "git_commit" in record["error"]


def test_a_checkpoint_with_an_option_renamed_since_is_a_recorded_config_error(gan_checkpoint, tmp_path):
    """Options renamed since a checkpoint was saved (model.lr before model.optimizer) end with a record that
    names the option, not a dataclass's TypeError."""
    def as_before(ckpt: dict) -> None:
        ckpt["hyper_parameters"]["lr"] = ckpt["hyper_parameters"].pop("optimizer")["lr"]

    old = _edited_checkpoint(gan_checkpoint, tmp_path / "old.ckpt", as_before)
    record = _evaluate(old, tmp_path / "eval")  # a failed single run exits 1
    assert record["status"] == "failed"
    assert "does not fit this version's gan (its option 'lr' is not one of this version's)" in record["error"]


@pytest.mark.parametrize("train", [True, False])
def test_a_checkpoint_resumed_or_evaluated_as_another_family_or_dataset_names_the_training_runs(
        gan_checkpoint, tmp_path, train):
    """Evaluating a moons GAN with model=vae told the user that another genbench had saved it; with
    dataset=digits it failed on a matrix product's shapes; and with dataset=gaussians8 (the same shape) it
    was resumed or evaluated and recorded as a gaussians8 run."""
    trained_as = read_trained_as(gan_checkpoint)
    assert (trained_as.family, trained_as.dataset, trained_as.data_shape, trained_as.num_classes) == (
        "gan", "moons", (2,), None)
    assert trained_as.options["latent_dim"] == 16
    holds = "holds model=gan trained on dataset=moons, and this run asks for"
    for wrong, expected in (
            ("model=vae", f"{holds} model=vae: pass the training run's model=gan dataset=moons"),
            ("dataset=gaussians8", f"{holds} dataset=gaussians8 (its record would name a dataset the model "
                                   "never trained on): pass the training run's dataset=moons"),
            ("dataset=digits", f"{holds} dataset=digits")):
        out = tmp_path / wrong.replace("=", "_")
        with pytest.raises(SystemExit):
            task(compose_train(["model=gan", *QUICK, f"train={str(train).lower()}",
                                f"ckpt_path={gan_checkpoint}", f"paths.output_dir={out}", wrong]))
        record = read_record(out / "metrics.json")
        assert record["status"] == "failed" and record["provenance"]["failed_in"] == "setup"
        assert expected in record["error"] and ".hydra/overrides.yaml" in record["error"], record["error"]
        assert "train_steps" not in record["metrics"] and "sample_ms_per_sample" not in record["metrics"]


def test_a_run_resuming_a_checkpoint_with_other_model_options_is_a_config_error_naming_them(gan_checkpoint,
                                                                                             tmp_path):
    """A resumed run's optimizer state, its learning rate among it, is the checkpoint's, and its record
    names one config: another lr was recorded but not used, and another latent size failed on the state
    dict's shapes. The same for the options that choose the training's examples and batches: another
    batch size or data distribution trained on silently, recorded as the whole training's, and the
    epoch's place, counted in batches, skipped other examples. Evaluating (train=false) takes the
    checkpoint's model options with a warning instead."""
    out = tmp_path / "resumed"
    with pytest.raises(SystemExit):
        task(compose_train(["model=gan", *QUICK, f"ckpt_path={gan_checkpoint}", "model.latent_dim=8",
                            "model.optimizer.lr=0.5", "+model.optimizer.foreach=false",
                            "dataset.batch_size=64", "dataset.params.noise=0.3",
                            "trainer.precision=bf16-mixed", f"paths.output_dir={out}"]))
    record = read_record(out / "metrics.json")
    assert record["status"] == "failed" and record["provenance"]["failed_in"] == "setup"
    assert (f"ckpt_path={gan_checkpoint} resumes a model trained with other options than this run's: "
            "model.latent_dim=8 (the checkpoint's: 16), model.optimizer.foreach=False (the checkpoint's: "
            "absent), model.optimizer.lr=0.5 (the checkpoint's: 0.001), dataset.batch_size=64 (the "
            "checkpoint's: 256), dataset.params.noise=0.3 (the checkpoint's: 0.1), trainer.precision="
            "'bf16-mixed' (the checkpoint's: '32-true'); a resumed run goes on with the checkpoint's model, "
            "optimizer and data") in record["error"]


def test_a_run_resuming_a_checkpoint_under_other_trainer_options_that_change_its_steps_is_refused(tmp_path):
    """Another precision, gradient clipping or accumulation trained the rest of the run otherwise, and its
    record (``train_precision`` among it) stated the resumed run's options for the whole training. The
    trainer's spellings of the same options (``32`` for ``32-true``, the clipping algorithm ``norm`` it
    takes by default) resume."""
    trained = tmp_path / "trained"
    run(compose_train([*QUICK, "trainer.gradient_clip_val=1", f"paths.output_dir={trained}"]), trained)
    ckpt = trained / "checkpoints" / "last.ckpt"
    out = tmp_path / "other"
    with pytest.raises(SystemExit):
        task(compose_train([*QUICK, f"ckpt_path={ckpt}", "trainer.gradient_clip_val=2",
                            "+trainer.accumulate_grad_batches=2", f"paths.output_dir={out}"]))
    record = read_record(out / "metrics.json")
    assert record["status"] == "failed" and record["provenance"]["failed_in"] == "setup"
    assert ("other options than this run's: trainer.accumulate_grad_batches=2 (the checkpoint's: 1), "
            "trainer.gradient_clip_val=2.0 (the checkpoint's: 1.0); a resumed run") in record["error"]
    same = tmp_path / "same"
    task(compose_train([*QUICK, f"ckpt_path={ckpt}", "trainer.gradient_clip_val=1.0", "trainer.precision=32",
                        "+trainer.gradient_clip_algorithm=norm", f"paths.output_dir={same}"]))
    assert read_record(same / "metrics.json")["status"] == "ok"


@pytest.mark.parametrize("train", [True, False])
def test_a_run_resuming_or_evaluating_a_checkpoint_as_another_seed_is_refused(gan_checkpoint, tmp_path,
                                                                              train):
    """A seed sweep over one checkpoint (``-m seed=0,1 ckpt_path=...``) trained the same weights in every job,
    as a resumed run goes on with the checkpoint's random state, and recorded them as seeds 0 and 1: the
    matrix's spread over seeds was the evaluation's noise alone."""
    assert read_trained_as(gan_checkpoint).seed == 0
    out = tmp_path / "run"
    with pytest.raises(SystemExit):
        task(compose_train(["model=gan", *QUICK, f"train={str(train).lower()}", f"ckpt_path={gan_checkpoint}",
                            "seed=1", f"paths.output_dir={out}"]))
    record = read_record(out / "metrics.json")
    assert record["status"] == "failed" and record["provenance"]["failed_in"] == "setup"
    assert (f"ckpt_path={gan_checkpoint} holds a model trained with seed=0, and this run would record it as "
            "seed=1's: give seed=0") in record["error"]
    assert ("eval.seed=<n> draws other noise for the evaluation" in record["error"]) is not train


def test_an_evaluation_without_seed_on_its_command_line_takes_the_checkpoints(gan_checkpoint, tmp_path):
    """As it takes the checkpoint's model options: a seed sweep's job, evaluated with its model= and dataset=
    alone, is that seed's run, where the default seed=0 was refused as another seed's. A seed given on the
    command line is still checked."""
    seeded = _edited_checkpoint(gan_checkpoint, tmp_path / "seed3.ckpt",
                                lambda ckpt: ckpt[TRAINED_AS].update(seed=3))
    args = ["model=gan", *QUICK, "train=false", f"ckpt_path={seeded}"]
    with in_a_hydra_run([*args, f"paths.output_dir={tmp_path / 'eval'}"]) as cfg:
        task(cfg)
    record = read_record(tmp_path / "eval" / "metrics.json")
    assert record["status"] == "ok" and record["seed"] == 3 and record["provenance"]["config"]["seed"] == 3
    with (in_a_hydra_run([*args, "seed=1", f"paths.output_dir={tmp_path / 'seed1'}"]) as cfg,
          pytest.raises(SystemExit)):
        task(cfg)
    assert "holds a model trained with seed=3" in read_record(tmp_path / "seed1" / "metrics.json")["error"]


def test_evaluating_a_checkpoint_on_data_chosen_otherwise_than_its_training_warns_naming_the_options(
        gan_checkpoint, tmp_path, caplog):
    """Its record states the evaluation's dataset options, which are not those the model trained on."""
    record = _evaluate(gan_checkpoint, tmp_path / "eval", "dataset.params.noise=0.3", "dataset.n_test=500",
                       "dataset.batch_size=500")
    assert record["status"] == "ok" and record["provenance"]["config"]["dataset"]["params"]["noise"] == 0.3
    assert (f"evaluating {gan_checkpoint} on data chosen otherwise than its training's: "
            "dataset.params.noise=0.3 (the checkpoint's: 0.1); the record states this run's dataset options"
            ) in caplog.text
    # the splits no training reads are the evaluation's own, and its batches do not choose its data
    assert "dataset.n_test" not in caplog.text and "dataset.batch_size" not in caplog.text


@pytest.mark.parametrize("dataset", ["moons", "mnist"])
def test_a_resumed_run_may_change_where_and_how_the_data_is_read_and_the_splits_no_training_reads(dataset):
    """The documented fix of a killed loader process is resuming with dataset.num_workers=0; a moved data
    folder is dataset.root; validation and the evaluation read the other splits."""
    def training_options(*overrides: str) -> dict:
        return instantiate(compose_train([f"dataset={dataset}", *overrides]).dataset).training_options()

    trained = training_options()
    free = {"moons": ["dataset.num_workers=2", "dataset.n_val=10", "dataset.n_test=100"],
            "mnist": ["dataset.num_workers=2", "dataset.root=/elsewhere", "dataset.download=true",
                      "dataset.test_slice=[0,100]"]}[dataset]
    assert all(training_options(option) == trained for option in free)
    bound = {"moons": ["dataset.batch_size=64", "dataset.n_train=100", "dataset.split_seed=1",
                       "dataset.params.noise=0.3"],
             "mnist": ["dataset.batch_size=64", "dataset.split_seed=1", "dataset.val_fraction=0.2",
                       "dataset.train_slice=[0,100]"]}[dataset]
    assert all(training_options(option) != trained for option in bound)


def test_a_checkpoint_from_before_checkpoints_named_their_training_is_still_checked_by_its_data(
        gan_checkpoint, tmp_path):
    """Without the family and dataset: another data shape is named as such, and a state dict that does not fit
    says it may be another family's."""
    old = _edited_checkpoint(gan_checkpoint, tmp_path / "old.ckpt", lambda ckpt: ckpt.pop(TRAINED_AS))
    trained_as = read_trained_as(old)
    assert (trained_as.family, trained_as.dataset, trained_as.data_shape) == (None, None, (2,))
    record = _evaluate(old, tmp_path / "digits", "dataset=digits")
    assert record["status"] == "failed"
    assert ("holds a model of data shape [2] (classes: None), and dataset=digits has [1, 8, 8] (classes: 10)"
            in record["error"])
    record = _evaluate(old, tmp_path / "vae", "model=vae")
    assert record["status"] == "failed"
    assert "does not fit this version's vae" in record["error"] and "another family" in record["error"]
    assert _evaluate(old, tmp_path / "same")["status"] == "ok"


def test_an_option_newer_than_a_checkpoint_takes_its_default_without_a_warning(gan_checkpoint, tmp_path,
                                                                               caplog):
    """A checkpoint saved before an option existed (the AR model's sampler) gets the option's default,
    and no warning that the config's value differs from a None in the checkpoint."""
    old = _edited_checkpoint(gan_checkpoint, tmp_path / "old.ckpt",
                             lambda ckpt: ckpt["hyper_parameters"].pop("loss"))
    record = _evaluate(old, tmp_path / "eval")
    assert record["status"] == "ok" and record["provenance"]["config"]["model"]["loss"] == "ns"
    assert "model.loss" not in caplog.text


def test_the_grace_a_stuck_rank_zero_gets_must_be_a_finite_number_of_seconds(monkeypatch):
    """``inf`` made the watcher's wait raise in its thread (no record, no kill); a word failed at import
    with a bare ValueError; a negative number killed rank zero at once."""
    from genbench.interrupts import _grace_seconds

    monkeypatch.setenv("GENBENCH_RANK_GRACE_SECONDS", "2.5")
    assert _grace_seconds() == 2.5
    for bad in ("abc", "inf", "nan", "-1"):
        monkeypatch.setenv("GENBENCH_RANK_GRACE_SECONDS", bad)
        with pytest.raises(ValueError, match=f"GENBENCH_RANK_GRACE_SECONDS='{bad}' .* finite number >= 0"):
            _grace_seconds()
    monkeypatch.delenv("GENBENCH_RANK_GRACE_SECONDS")
    assert _grace_seconds() == 60.0
