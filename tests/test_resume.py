"""A resumed run trains the weights the run that was never stopped trains, wherever its checkpoint was
written: inside an epoch (by a callback after a step, or where max_steps ended the first run), or at an
epoch's end of a run bounded by epochs. The loader's order, the random state, the weight average and the
EBM's replay buffer all go on from the checkpoint."""

import csv
import json
import logging
import math
import shutil

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.callbacks import ModelCheckpoint

from genbench.data.resumable import EpochOrder, ResumableLoader
from genbench.train import run
from tests.helpers import compose_train, train_py

BASE = ["trainer=debug", "logger=none", "evaluate=false", "trainer.max_epochs=null"]  # epochs of 5 batches


def _run(out, *overrides, callbacks=()):
    return run(compose_train([*BASE, *overrides, f"paths.output_dir={out}"]), out, callbacks=list(callbacks))


def _apart(a, b) -> float:
    return max((x.float() - y.float()).abs().max().item()
               for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True))


@pytest.mark.parametrize("family", [["model=vae"], ["model=diffusion", "dataset=digits"], ["model=ebm"]],
                         ids=["vae", "diffusion", "ebm"])
def test_a_run_resumed_inside_an_epoch_trains_the_same_weights(tmp_path, family):
    """Checkpoints after steps 3, 5 (the last of the first 5-batch epoch) and 9 of a 12-step run, written by
    callbacks at the end of the batch (the run's own, at an epoch's end: test_train.py). Measured before,
    resumed at step 3 / 9: the VAE 0.010 / 0.0025 apart (Lightning restarted the epoch on a new order and
    the random state was put back one epoch late), diffusion 0.012 / 0.0028 (its average also lacked the
    checkpoint's step), the EBM 0.057 / 0.027 (its replay buffer started again empty)."""
    every = ModelCheckpoint(dirpath=tmp_path / "every", every_n_train_steps=3, save_top_k=-1)
    ends = ModelCheckpoint(dirpath=tmp_path / "every", every_n_train_steps=5, save_top_k=-1)
    whole = _run(tmp_path / "whole", *family, "trainer.max_steps=12", callbacks=[every, ends])
    for step in (3, 5, 9):
        (checkpoint,) = (tmp_path / "every").glob(f"*-step={step}.ckpt")
        plain = shutil.copy(checkpoint, tmp_path / f"step{step}.ckpt")  # Hydra's override grammar: no "="
        resumed = _run(tmp_path / f"resumed{step}", *family, "trainer.max_steps=12", f"ckpt_path={plain}")
        assert resumed.metrics["train_steps"] == 12
        assert _apart(resumed, whole) == 0.0, step


STOPS = {  # the first run's bound, then the bound of the resumed run and of the run never stopped
    "inside an epoch": (["trainer.max_steps=3"], ["trainer.max_steps=12"]),
    "at an epoch's end": (["trainer.max_steps=-1", "trainer.max_epochs=1"],
                          ["trainer.max_steps=-1", "trainer.max_epochs=3"]),
    "at an epoch's end, then by steps": (["trainer.max_steps=-1", "trainer.max_epochs=1"],
                                         ["trainer.max_steps=12"]),
    "at an epoch's end, loaders made again each epoch": (
        ["trainer.max_steps=-1", "trainer.max_epochs=1", "+trainer.reload_dataloaders_every_n_epochs=1"],
        ["trainer.max_steps=-1", "trainer.max_epochs=3", "+trainer.reload_dataloaders_every_n_epochs=1"]),
}


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("stop", list(STOPS))
def test_runs_resumed_where_max_steps_or_max_epochs_stopped_them_train_the_same_weights(tmp_path, stop,
                                                                                       workers):
    """max_steps=3 stops inside the first 5-batch epoch; max_epochs=1 at its end, where the next epoch's
    order is drawn. Measured before: 0.010 apart inside an epoch and at its end. With a worker process
    torch's iterator draws its indices as soon as it exists, and the one Lightning makes and never uses
    on such a resume counted as an epoch: 0.0079 and 0.011 apart at an epoch's end. Loaders made again each
    epoch drew a new order each time, but not where the resumed run began: 0.009 apart."""
    first, total = STOPS[stop]
    data = f"dataset.num_workers={workers}"
    whole = _run(tmp_path / "whole", data, *total)
    _run(tmp_path / "first", data, *first)
    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = _run(tmp_path / "resumed", data, *total, f"ckpt_path={checkpoint}")
    assert resumed.metrics["train_steps"] == whole.metrics["train_steps"]
    assert _apart(resumed, whole) == 0.0


@pytest.mark.parametrize("family", ["vae", "gan"])
def test_a_resumed_run_logs_the_steps_and_losses_the_run_never_stopped_logged(tmp_path, family):
    """Resumed from the end of the first epoch, the run logged steps 6 to 12 where the run never stopped
    logged 5 to 11 (Lightning counts its loggers' step once more on restore). The GAN's steps count
    batches, not its two players' optimizer steps."""
    def losses(out) -> list[tuple[int, float]]:
        with (out / "csv" / "metrics.csv").open() as f:
            rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
        return [(int(r["step"]), float(r["train/loss"])) for r in rows]

    logged = ["logger=csv", "trainer.log_every_n_steps=1", f"model={family}"]
    _run(tmp_path / "whole", *logged, "trainer.max_steps=12")
    _run(tmp_path / "first", *logged, "trainer.max_steps=-1", "trainer.max_epochs=1")
    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    _run(tmp_path / "resumed", *logged, "trainer.max_steps=12", f"ckpt_path={checkpoint}")
    whole, first, resumed = (losses(tmp_path / name) for name in ("whole", "first", "resumed"))
    assert [step for step, _ in first] == [0, 1, 2, 3, 4]
    assert first + resumed == whole


def test_an_epoch_order_resumes_with_the_rest_of_its_epoch_and_then_counts_on():
    torch.manual_seed(0)
    order = EpochOrder(range(10))
    order.set_epoch(0)
    epochs = [list(order) for _ in range(3)]
    assert all(sorted(e) == list(range(10)) for e in epochs) and epochs[0] != epochs[1] != epochs[2]
    again = EpochOrder(range(10))  # drew another base seed
    again.resume(order.seed, epoch=1, skip=4)
    again.set_epoch(2)  # Lightning's count, one ahead after a resume inside an epoch: not followed
    assert list(again) == epochs[1][4:] and list(again) == epochs[2]
    done = EpochOrder(range(10))
    done.resume(order.seed, epoch=0, skip=None)  # the epoch was over: the next one, whole
    assert list(done) == epochs[1]
    fresh = EpochOrder(range(10))  # a run resumed at an epoch's end loads no state; Lightning names the epoch
    fresh.seed = order.seed
    fresh.set_epoch(2)
    assert list(fresh) == epochs[2]


def test_an_epoch_order_of_several_processes_is_distributed_samplers_and_resumes_each_shard():
    """Each process takes the shard torch's DistributedSampler gives it (11 examples on 3: padded to 12),
    and goes on after the examples its batches took."""
    torch.manual_seed(0)
    shards = [EpochOrder(range(11), replicas=3, rank=rank) for rank in range(3)]
    for shard in shards:
        shard.seed = shards[0].seed  # the data module takes rank zero's
        reference = torch.utils.data.DistributedSampler(range(11), num_replicas=3, rank=shard.rank,
                                                        shuffle=True, seed=shard.seed)
        reference.set_epoch(4)
        shard.set_epoch(4)
        assert list(shard) == list(reference) and len(shard) == len(reference) == 4
        resumed = EpochOrder(range(11), replicas=3, rank=shard.rank)
        resumed.resume(shard.seed, epoch=4, skip=2)
        assert list(resumed) == list(reference)[2:]


@pytest.mark.parametrize("sharded", [True, False])
def test_the_training_data_are_sharded_over_ddp_processes_only_where_lightning_would(sharded):
    """``trainer.use_distributed_sampler=false`` tells Lightning to leave every loader as it is, so each
    process takes the whole training set (in rank zero's order). The data module sharded it regardless.
    A two-process DDP trainer on the CPU, made but not started: its sharding is known before it runs."""
    dm = instantiate(compose_train(["dataset=digits"]).dataset)
    dm.setup()
    dm.trainer = pl.Trainer(strategy="ddp", devices=2, accelerator="cpu", use_distributed_sampler=sharded,
                            logger=False, enable_progress_bar=False)
    order = list(dm.train_dataloader().sampler)
    examples = len(dm.train_set)
    if sharded:
        assert len(order) == math.ceil(examples / 2) and len(set(order)) == len(order)
    else:
        assert sorted(order) == list(range(examples))


def _weights(checkpoint) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


DDP = ["trainer=ddp", "trainer.accelerator=cpu", "+trainer.limit_train_batches=5",
       "logger=none", "evaluate=false"]  # two gloo processes, 5-batch epochs


def test_a_ddp_run_resumed_inside_an_epoch_trains_the_same_weights(tmp_path):
    """Stopped by max_steps=3 inside the first 5-batch epoch, resumed to 12 steps. Measured before: 0.0084
    apart (Lightning's DistributedSampler began the interrupted epoch's order again, so the resumed run
    trained on its first batches twice)."""
    def train(name: str, *args: str):
        proc = train_py([*DDP, *args, f"hydra.run.dir={tmp_path / name}"], tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return tmp_path / name / "checkpoints" / "last.ckpt"

    whole = _weights(train("whole", "trainer.max_steps=12"))
    first = train("first", "trainer.max_steps=3")
    resumed = _weights(train("resumed", "trainer.max_steps=12", f"ckpt_path={first}"))
    assert max((whole[k].float() - resumed[k].float()).abs().max().item() for k in whole) == 0.0


def test_a_single_process_checkpoint_resumes_under_ddp(tmp_path):
    """Lightning refused it: the checkpoint holds the loader's place, and DDP's loader was a plain one ("The
    CombinedLoader has 0 stateful loaders, but found 1 states"). Each process skips the batches the one
    process took, which are other examples: it warns."""
    _run(tmp_path / "first", "trainer.max_steps=3")
    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    args = [*DDP, "trainer.max_steps=6", f"ckpt_path={checkpoint}", f"hydra.run.dir={tmp_path / 'ddp'}"]
    proc = train_py(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "written by 1 training processes and this run has 2" in proc.stdout + proc.stderr
    record = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert record["status"] == "ok" and record["metrics"]["train_steps"] == 6


def test_a_loader_with_another_sampler_keeps_no_place(caplog):
    """Lightning rebuilds a training loader with a SequentialSampler to overfit a few batches."""
    data = torch.utils.data.TensorDataset(torch.arange(10))
    loader = ResumableLoader(data, lambda: (2, False), batch_size=3)
    state = loader.state_dict()
    assert state == {"base_seed": loader.sampler.seed, "epoch": -1, "batches_done": 2,
                     "epoch_over": False, "replicas": 1}
    sequential = ResumableLoader(data, lambda: (2, False), sampler=torch.utils.data.SequentialSampler(data),
                                 batch_size=3)
    with caplog.at_level(logging.WARNING):
        sequential.load_state_dict(state)
    assert "not kept with a SequentialSampler" in caplog.text
    assert sequential.state_dict() == {} and [b[0].tolist() for b in sequential][0] == [0, 1, 2]
