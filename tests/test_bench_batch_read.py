"""scripts/bench_batch_read.py: it times both reads of a batch, of the loader alone and of training runs,
and leaves genbench's batched read in place."""

import json

import torch
from torch.utils.data import TensorDataset

from genbench.data.base import Examples
from genbench.data.images import DigitsDataModule


def test_the_benchmark_times_both_reads_and_puts_the_batched_one_back(script, tmp_path, monkeypatch):
    bench = script("bench_batch_read")
    batched = Examples.__getitems__
    rows = bench.main(["--datasets", "digits", "--batches", "3", "--runs", "vae:moons", "--steps", "3",
                       "--repeats", "2", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "bench_batch_read.json").read_text()) == json.loads(json.dumps(rows))
    assert [row["what"] for row in rows] == ["loader digits", "vae on moons, 3 steps"]
    for row in rows:
        assert row["per_example"] > 0 and row["batched"] > 0 and row["threads"] == torch.get_num_threads()
    assert [len(times) for times in rows[1]["repeats"].values()] == [2, 2]
    assert Examples.__getitems__ is batched
    read = []  # the examples read one at a time
    monkeypatch.setattr(TensorDataset, "__getitem__",
                        lambda self, i: read.append(i) or tuple(t[i] for t in self.tensors))
    dm = DigitsDataModule(batch_size=8)
    dm.setup()
    with bench.read("per_example"):
        next(iter(dm.train_dataloader()))
    assert len(read) == 8
    next(iter(dm.train_dataloader()))
    assert len(read) == 8
